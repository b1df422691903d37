"""Token windows over a document, planned from its tokenisation.

Windows are cut at word boundaries where possible and consecutive windows share `overlap`
tokens. Two rules hold whatever the text:

- Consecutive windows advance by at least half a window (ceil(window / 2) tokens), so a
  document of n tokens has at most ceil((n - overlap) / (window / 2)) windows. A "word" too
  long to back off to its start without breaking that rule (a hash, a URL, base64, a
  space-free script under a SentencePiece or byte-level BPE model) is cut hard, inside it.
- A chunk stores exactly the ids its own text tokenises to (without special tokens), so what
  was embedded is what a reader of the chunk sees. A window that starts or ends inside a word
  tokenises differently on its own (WordPiece's `##` pieces become word starts, BPE's leading
  space marker disappears): its ids are then its text's own tokenisation, and when that is
  longer than the window the text is shortened to fit, with a follow-up chunk wherever the
  next window does not reach back far enough, so that every token of the document stays in
  some chunk: nothing is truncated.

Long texts are tokenised in slices of SLICE_CHARS characters, cut at whitespace where
possible (a slice boundary inside a space-free run is a hard cut), and per-token data is kept
in compact numpy arrays, so memory stays bounded whatever one document's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

#: Characters tokenised at once (about 60k tokens of English); a slice is cut at whitespace
#: in its second half where there is any.
SLICE_CHARS = 1 << 18
_SPACES = " \n\t\r\f\v\xa0\u3000"


class Tokens(Protocol):
    """One text's content tokens, as `Encoder.tokenize` returns them."""

    ids: Sequence[int]
    offsets: Sequence[tuple[int, int]]
    word_ids: Sequence[int | None]


Tokenize = Callable[[Sequence[str]], Sequence[Tokens]]


@dataclass(frozen=True)
class Chunk:
    """One window of a document: what is embedded and what is shown for a hit."""

    doc_id: str
    position: int  # 0-based index of the window within its document
    text: str
    char_start: int
    char_end: int
    token_ids: tuple[int, ...]  # content tokens, without the model's special tokens
    n_tokens: int = field(default=-1)  # len(token_ids), kept when the ids are dropped after embedding

    def __post_init__(self) -> None:
        if self.n_tokens < 0:
            object.__setattr__(self, "n_tokens", len(self.token_ids))

    def embedded(self) -> "Chunk":
        """This chunk without its token ids: what the store keeps once the vectors exist."""
        return replace(self, token_ids=())


def _check(window: int, overlap: int) -> None:
    if window < 1:
        raise ValueError(f"window must be at least 1 token, got {window}")
    if not 0 <= overlap <= window // 2:
        raise ValueError(f"overlap must be in [0, {window // 2}] (half the window), got {overlap}")


def _inside_word(word_ids: Sequence[int | None], i: int) -> bool:
    """Token i continues the word of token i - 1 (a word id of None or below 0 is no word)."""
    w = word_ids[i]
    return w is not None and w >= 0 and w == word_ids[i - 1]


def _word_start(word_ids: Sequence[int | None], i: int, floor: int) -> int:
    """First token index (>= floor) of the word that token i belongs to."""
    while i > floor and _inside_word(word_ids, i):
        i -= 1
    return i


def _plan(
    word_ids: Sequence[int | None], start: int, *, window: int, overlap: int, complete: bool
) -> tuple[list[tuple[int, int]], int]:
    """Windows from `start` on, and where the next one starts.

    With `complete=False` more tokens follow `word_ids`: planning stops before the first window
    that would need to see past them. A window depends only on word_ids[start : start + window + 1],
    so resuming from the returned start over a longer sequence gives the same windows.
    """
    n = len(word_ids)
    half = (window + 1) // 2
    windows: list[tuple[int, int]] = []
    while start < n:
        if not complete and start + window >= n:
            break
        end = min(start + window, n)
        if end < n and _inside_word(word_ids, end):
            # back off to the word's start, unless the next window could then not keep both
            # its overlap and a half-window advance: such a word is cut hard
            snapped = _word_start(word_ids, end, start + half + overlap)
            if not _inside_word(word_ids, snapped):
                end = snapped
        windows.append((start, end))
        if end >= n:
            return windows, n
        target = end - overlap
        nxt = _word_start(word_ids, target, start + half)
        start = target if _inside_word(word_ids, nxt) else nxt
    return windows, start


def plan_windows(word_ids: Sequence[int | None], *, window: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open token ranges [start, end) of at most `window` tokens covering all tokens.

    `word_ids[i]` is the word that token i belongs to (None for tokens outside words).
    """
    _check(window, overlap)
    return _plan(word_ids, 0, window=window, overlap=overlap, complete=True)[0]


def text_slices(content: str, slice_chars: int) -> Iterator[tuple[int, int]]:
    """[start, end) character ranges of at most `slice_chars` covering `content`; each but the last
    ends just before a whitespace character in its second half where there is one."""
    start, n = 0, len(content)
    while start < n:
        end = start + slice_chars
        if end < n:
            cut = max(content.rfind(c, start + slice_chars // 2, end) for c in _SPACES)
            end = cut if cut > start else end
        else:
            end = n
        yield start, end
        start = end


def first_slice(content: str) -> str:
    """The part of `content` that `chunk_document` tokenises first (all of it, for most documents)."""
    start, end = next(text_slices(content, SLICE_CHARS), (0, 0))
    return content[start:end]


class _Buffer:
    """Ids, offsets and word ids of the tokens not yet planned into windows, as compact arrays."""

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int64)
        self.offsets = np.empty((0, 2), np.int64)
        self.word_ids = np.empty(0, np.int64)
        self._next_word = 0

    def extend(self, tok: Tokens, char_base: int) -> None:
        if not len(tok.offsets):
            return
        words = np.array([-1 if w is None else w for w in tok.word_ids], np.int64)
        # word ids restart at 0 in every slice: make them distinct so no word spans a slice boundary
        words[words >= 0] += self._next_word
        self._next_word = int(words.max()) + 1 if (words >= 0).any() else self._next_word
        self.ids = np.concatenate([self.ids, np.asarray(tok.ids, np.int64)])
        self.offsets = np.concatenate([self.offsets, np.asarray(tok.offsets, np.int64).reshape(-1, 2) + char_base])
        self.word_ids = np.concatenate([self.word_ids, words])

    def drop(self, n: int) -> None:
        self.ids, self.offsets, self.word_ids = self.ids[n:], self.offsets[n:], self.word_ids[n:]

    def at_word_boundaries(self, start: int, end: int) -> bool:
        """Whether tokens [start, end) begin a word and end one (window edges that cut no word)."""
        words = self.word_ids
        return not (start > 0 and words[start] >= 0 and words[start] == words[start - 1]) and not (
            end < len(words) and words[end] >= 0 and words[end] == words[end - 1])


def _own_tokens(content: str, start: int, end: int, tokenize: Tokenize, window: int) -> tuple[tuple[int, ...], int]:
    """(ids, end) of content[start:end] tokenised on its own, the end moved back until it fits the window."""
    while True:
        tok = tokenize([content[start:end]])[0]
        if len(tok.ids) <= window:
            return tuple(tok.ids), end
        shorter = start + tok.offsets[window - 1][1]
        end = shorter if start < shorter < end else end - 1


def chunk_document(
    doc_id: str,
    content: str,
    tokenize: Tokenize,
    *,
    window: int,
    overlap: int,
    slice_chars: int | None = None,
    first: Tokens | None = None,
    exact_at_word_boundaries: bool = False,
) -> Iterator[Chunk]:
    """Cut one document into chunks, tokenising it slice by slice; see the module docstring for the rules.

    `tokenize(texts)` gives each text's content tokens with character offsets and word ids
    (`Encoder.tokenize`). Chunks are yielded as they are planned, so a huge document never has
    all its chunks, or all its tokens, in memory at once. `first` is the tokenisation of the
    first slice when the caller already has it (a build tokenises a batch of documents at once).
    `exact_at_word_boundaries` says that the tokenizer gives a span cut at word boundaries the
    same ids in and out of context (WordPiece): a one-slice document's windows that cut no word
    then keep their ids from the whole text, and only the others are tokenised on their own.
    """
    _check(window, overlap)
    buffer = _Buffer()
    position = 0
    owed: tuple[int, int] | None = None  # characters cut from a shortened chunk, not yet in any chunk
    slices = list(text_slices(content, slice_chars or SLICE_CHARS))
    for k, (a, b) in enumerate(slices):
        buffer.extend(first if k == 0 and first is not None else tokenize([content[a:b]])[0], a)
        windows, resume = _plan(buffer.word_ids.tolist(), 0, window=window, overlap=overlap, complete=k == len(slices) - 1)
        spans = [(int(buffer.offsets[s, 0]), int(buffer.offsets[e - 1, 1])) for s, e in windows]
        # the whole text's ids serve where they are the chunk's own: one slice (so no hard slice cut) and no word cut
        reuse = [exact_at_word_boundaries and len(slices) == 1 and buffer.at_word_boundaries(s, e) for s, e in windows]
        retokenised = iter(tokenize([content[cs:ce] for (cs, ce), r in zip(spans, reuse) if not r]) if not all(reuse) else [])
        own = [buffer.ids[s:e].tolist() if r else next(retokenised).ids for (s, e), r in zip(windows, reuse)]
        for (cs, ce), ids in zip(spans, own):
            if owed is not None:
                for chunk in _fill(doc_id, content, owed[0], min(owed[1], cs), tokenize, window, position):
                    yield chunk
                    position += 1
                owed = None
            ids = tuple(ids)
            if len(ids) > window:  # it differs from the planned ids, which fit
                ids, shortened = _own_tokens(content, cs, ce, tokenize, window)
                owed, ce = (shortened, ce), shortened
            yield Chunk(doc_id, position, content[cs:ce], cs, ce, ids)
            position += 1
        buffer.drop(resume)
    if owed is not None:
        yield from _fill(doc_id, content, owed[0], owed[1], tokenize, window, position)


def _fill(doc_id: str, content: str, start: int, stop: int, tokenize: Tokenize, window: int, position: int) -> Iterator[Chunk]:
    """Chunks covering content[start:stop], each its text's own tokenisation cut to fit the window."""
    while start < stop:
        ids, end = _own_tokens(content, start, stop, tokenize, window)
        if not ids:
            return
        yield Chunk(doc_id, position, content[start:end], start, end, ids)
        start, position = end, position + 1
