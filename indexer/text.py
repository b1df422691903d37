"""Rules about text shared by every reader and by the query path: one home for each.

- `is_blank`: a text with nothing to embed. Whitespace and invisible format characters
  (zero-width space, joiners, BOM, bidi marks: Unicode category Cf) count as blank, so a query
  or a record made only of them is "empty", not a vector of noise.
- `lone_surrogate`: where a text holds a lone UTF-16 surrogate (from a JSON escape such as
  "\\ud800", or from a non-UTF-8 byte in a command-line argument or file name decoded with
  surrogateescape). Such a string cannot be encoded as UTF-8, so the tokenizer, SQLite and
  every printer would fail on it later; readers reject it where it enters.
"""

from __future__ import annotations

import re
import unicodedata

_SURROGATE = re.compile("[\ud800-\udfff]")


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
