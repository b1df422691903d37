"""The order of every ranking, in one place: best score first, equal scores by descending document id as a TREC
run file writes it (`encode_trec_id`).

That is the order trec_eval (and pytrec_eval, which BEIR and MTEB score with) ranks a run in, whatever ranks the
file states; the Searcher's rankings follow it too, so the app shows documents of equal score in the order the
metrics scored them.
"""

from __future__ import annotations

import unicodedata
from typing import Mapping
from urllib.parse import quote, unquote


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """(doc, score) best first, ties by descending doc id as written in a run file (encode_trec_id):
    the order trec_eval ranks that run file in."""
    return sorted(sorted(docs.items(), key=lambda item: encode_trec_id(item[0]), reverse=True), key=lambda item: -item[1])


def encode_trec_id(text: str) -> str:
    """An id as one token of a TREC run file, whose fields are separated by whitespace.

    '%', whitespace (every character `str.split` splits on) and control characters become %XX of
    their UTF-8 bytes, as in a URL: `notes/bee keeping.md` is written `notes/bee%20keeping.md`.
    Ids without any of them are written unchanged; `decode_trec_id` reverses it exactly.
    """
    return "".join(quote(ch, safe="") if ch == "%" or ch.isspace() or unicodedata.category(ch) == "Cc" else ch for ch in text)


def decode_trec_id(token: str) -> str:
    """The id that `encode_trec_id` wrote as `token`."""
    return unquote(token, errors="strict")
