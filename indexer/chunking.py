"""Token windows over a document, as pure functions of its tokenisation.

Windows are cut at word boundaries where possible, so that a chunk's text re-tokenises to
the same tokens that were embedded, and consecutive windows share `overlap` tokens (a little
more when a word straddles the cut). Every token of a document lands in at least one window:
nothing is silently truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Chunk:
    """One window of a document: what is embedded and what is shown for a hit."""

    doc_id: str
    position: int  # 0-based index of the window within its document
    text: str
    char_start: int
    char_end: int
    token_ids: tuple[int, ...]  # content tokens, without the model's special tokens

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def _word_start(word_ids: Sequence[int | None], i: int, floor: int) -> int:
    """First token index (>= floor) of the word that token i belongs to."""
    word = word_ids[i]
    if word is None:
        return i
    while i > floor and word_ids[i - 1] == word:
        i -= 1
    return i


def plan_windows(
    word_ids: Sequence[int | None], *, window: int, overlap: int
) -> list[tuple[int, int]]:
    """Half-open token ranges [start, end) of at most `window` tokens covering all tokens.

    `word_ids[i]` is the word that token i belongs to (None for tokens outside words); a cut
    inside a word moves back to the word's start unless the word alone fills the window.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 token, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    n = len(word_ids)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(start + window, n)
        if end < n and word_ids[end] is not None and word_ids[end] == word_ids[end - 1]:
            snapped = _word_start(word_ids, end, start)
            if snapped > start:
                end = snapped
        windows.append((start, end))
        if end >= n:
            break
        nxt = _word_start(word_ids, max(end - overlap, start + 1), start + 1)
        start = max(nxt, start + 1)
    return windows


def make_chunks(
    doc_id: str,
    content: str,
    token_ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    *,
    window: int,
    overlap: int,
) -> list[Chunk]:
    """Cut one tokenised document into chunks; `offsets` map tokens to character spans of `content`."""
    if not (len(token_ids) == len(offsets) == len(word_ids)):
        raise ValueError(
            f"token_ids ({len(token_ids)}), offsets ({len(offsets)}) and word_ids ({len(word_ids)}) differ in length"
        )
    chunks = []
    for position, (start, end) in enumerate(plan_windows(word_ids, window=window, overlap=overlap)):
        char_start, char_end = offsets[start][0], offsets[end - 1][1]
        chunks.append(
            Chunk(
                doc_id=doc_id,
                position=position,
                text=content[char_start:char_end],
                char_start=char_start,
                char_end=char_end,
                token_ids=tuple(token_ids[start:end]),
            )
        )
    return chunks
