"""Rules about text shared by every reader and by the query path: one home for each.

- `is_blank`: a text with nothing to embed. Whitespace and invisible format characters
  (zero-width space, joiners, BOM, bidi marks: Unicode category Cf) count as blank, so a query
  or a record made only of them is "empty", not a vector of noise.
- `lone_surrogate`: where a text holds a lone UTF-16 surrogate (from a JSON escape such as
  "\\ud800", or from a non-UTF-8 byte in a command-line argument or file name decoded with
  surrogateescape). Such a string cannot be encoded as UTF-8, so the tokenizer, SQLite and
  every printer would fail on it later; readers reject it where it enters. Text extracted from a
  PDF is the exception: there a lone surrogate is one glyph that a broken font map could not map,
  so `replace_surrogates` turns it into U+FFFD and the rest of the document is kept.
- `content_head`: what precedes a document's text in the content that is embedded (its title and a
  space, BEIR and MTEB's convention), which chunk offsets count in.
- `page_at`: the page a character of a paged document (a PDF) lies on, from the page starts its
  reader records in the document's metadata under `PAGE_STARTS`.
- `pseudo_query`: a query-like text made from a document or chunk (its first QUERY_WORDS words), where
  real queries are wanted and none are at hand: the bench's extra queries and the probes that tune an
  approximate index's search effort.
- `STOP_WORDS`: the English words that count for nothing, alike in the BM25 baseline
  (evaluation.bm25_run) and in the app's highlighting of a query's words in a result.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")

#: Lucene's English stop words (its EnglishAnalyzer's; bm25s's "en"), as in the BM25 of Elasticsearch and
#: Anserini behind published BEIR baselines, so the BM25 baseline stays comparable with theirs. One list for every
#: use: a word BM25 ignores is not highlighted, and a word it matches is.
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
})


#: Words in a pseudo-query. msmarco-5k's 50 real queries have 2-9 words, median 5. Measured at 1,000,000 synthetic
#: vectors (docs/experiments/tuning_probes.py; README, "Approximate search"), a document's first 6 words needed the
#: efSearch the real queries needed in `mean` (recall@10 within 0.004 of theirs from efSearch 1024 to 4096), where
#: the first 8 words were easier (tuned on them, `mean` got efSearch 2,304 at 1M, where the real queries reach about
#: 0.94) and the first 5 harder. In `pooled` every probe made from a document's words was easier than the real queries.
QUERY_WORDS = 6


def pseudo_query(text: str, words: int = QUERY_WORDS) -> str:
    """A query-like text made from a document or chunk: its first `words` words."""
    return " ".join(text.split()[:words])


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text`, or None when it encodes as UTF-8."""
    found = _SURROGATE.search(text)
    return found.start() if found else None


def is_blank(text: str) -> bool:
    """Whether `text` holds nothing but whitespace and invisible format characters (category Cf)."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def describe_surrogate(text: str, what: str) -> str | None:
    """A one-line reason naming `what` and the position, when `text` holds a lone surrogate."""
    at = lone_surrogate(text)
    if at is None:
        return None
    return f"{what} holds a lone surrogate (U+{ord(text[at]):04X}) at character {at}: it is not valid Unicode text"


def content_head(title: str) -> str:
    """What comes before a document's text in its embedded content: the title and a space, or nothing."""
    return f"{title} " if title else ""


def replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (for text extracted, not written, such as a PDF's)."""
    return _SURROGATE.sub("\ufffd", text)


#: Metadata key of a paged document: the character offset in its text where each page starts, one per page in
#: order (the PDF reader writes it; a document without it has no pages).
PAGE_STARTS = "page_starts"


def page_at(page_starts: Any, offset: int) -> int | None:
    """The 1-based page on which character `offset` of a document's text lies, or None when `page_starts` is not a
    list of offsets from 0 in increasing order (a document without pages, or metadata that only looks like it)."""
    if not isinstance(page_starts, list) or not page_starts or page_starts[0] != 0:
        return None
    if not all(type(s) is int for s in page_starts) or any(a > b for a, b in zip(page_starts, page_starts[1:])):
        return None
    # an empty page starts where the next one does: bisect_right gives the last page starting at or before offset
    return bisect_right(page_starts, max(offset, 0))
