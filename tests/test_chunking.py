"""Token windows: coverage, size, overlap, half-window progress, word boundaries, re-tokenisation."""

import math
import random
import re
import zlib

import pytest

from indexer.chunking import Chunk, chunk_document, plan_windows, text_slices


def words_of(lengths):
    """word_ids for words made of the given numbers of tokens."""
    return [w for w, n in enumerate(lengths) for _ in range(n)]


def word_starts(word_ids):
    """For every token, the index of the first token of its word."""
    starts = []
    for i, w in enumerate(word_ids):
        starts.append(starts[-1] if i and word_ids[i - 1] == w else i)
    return starts


def check_windows(word_ids, windows, window, overlap):
    """Coverage, size, overlap, at least half a window of progress, and the count bound that follows."""
    n = len(word_ids)
    first = word_starts(word_ids)
    assert windows[0][0] == 0 and windows[-1][1] == n
    assert len(windows) <= max(1, math.ceil((n - overlap) / (window / 2)))
    covered = bytearray(n)
    for (s, e), nxt in zip(windows, windows[1:] + [None]):
        assert 0 < e - s <= window
        covered[s:e] = b"\x01" * (e - s)
        if nxt is None:
            continue
        assert s + window / 2 <= nxt[0] <= e - overlap  # progress, overlap and no gap
        if e < n and first[e] < e:  # a cut inside a word: only for a word too long to back off
            assert first[e] < s + window / 2 + overlap
        if first[nxt[0]] < nxt[0]:  # a start inside a word: likewise
            assert first[nxt[0]] < s + window / 2
    assert all(covered)


@pytest.mark.parametrize("seed", range(40))
def test_random_documents_with_long_words_are_covered_with_half_window_progress(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([1, 1, 1, 2, 3, 7, 40, 300]) for _ in range(rng.randint(1, 150))]
    word_ids = words_of(lengths)
    window, overlap = rng.choice([(10, 2), (30, 8), (62, 8), (254, 32), (5, 0), (7, 3), (2, 1), (1, 0)])
    windows = plan_windows(word_ids, window=window, overlap=overlap)
    check_windows(word_ids, windows, window, overlap)


def test_one_space_free_word_of_5000_tokens_takes_a_few_dozen_windows_not_thousands():
    windows = plan_windows(words_of([5000]), window=254, overlap=32)
    check_windows(words_of([5000]), windows, 254, 32)
    assert len(windows) == math.ceil((5000 - 254) / (254 - 32)) + 1  # hard cuts at full windows: 23


def test_short_document_is_one_window():
    assert plan_windows(words_of([1, 2, 1]), window=10, overlap=2) == [(0, 4)]


def test_cuts_move_back_to_word_starts():
    # words of 3 tokens: a window of 10 would cut word 3 in the middle; it ends at 9 instead
    windows = plan_windows(words_of([3] * 8), window=10, overlap=2)
    assert windows[0] == (0, 9)
    assert all(s % 3 == 0 and e % 3 == 0 for s, e in windows)


def test_a_word_longer_than_the_window_is_cut_hard():
    windows = plan_windows(words_of([25]), window=10, overlap=2)
    check_windows(words_of([25]), windows, 10, 2)
    assert windows[:2] == [(0, 10), (8, 18)]


@pytest.mark.parametrize("window,overlap", [(0, 0), (10, 10), (10, -1), (10, 6)])
def test_invalid_window_or_overlap_is_refused(window, overlap):
    with pytest.raises(ValueError, match="window|overlap"):
        plan_windows([0, 1, 2], window=window, overlap=overlap)


def piece_tokenize(texts):
    """A WordPiece-like stand-in: a word's first piece is 1 character, continuation pieces 3, and a
    continuation piece has other ids than the same characters at a word start (like `##`)."""
    out = []
    for text in texts:
        ids, offsets, word_ids = [], [], []
        for w, m in enumerate(re.finditer(r"\S+", text)):
            cuts = [m.start(), m.start() + 1] + list(range(m.start() + 4, m.end(), 3)) + [m.end()]
            cuts = sorted(set(c for c in cuts if m.start() <= c <= m.end()))
            for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
                ids.append(zlib.crc32((("##" if k else "") + text[a:b]).encode()) % 30000)
                offsets.append((a, b))
                word_ids.append(w)
        out.append(type("Tokens", (), {"ids": ids, "offsets": offsets, "word_ids": word_ids}))
    return out


def check_chunks(content, chunks, tokenize, window):
    """Every chunk re-tokenises to exactly its ids and fits the window; every token's characters are in a chunk."""
    assert [c.position for c in chunks] == list(range(len(chunks)))
    covered = bytearray(len(content))
    for c in chunks:
        assert c.text == content[c.char_start : c.char_end]
        assert tuple(tokenize([c.text])[0].ids) == c.token_ids and 0 < c.n_tokens <= window
        covered[c.char_start : c.char_end] = b"\x01" * (c.char_end - c.char_start)
    for a, b in tokenize([content])[0].offsets:
        assert all(covered[a:b]), f"characters {a}:{b} ({content[a:b]!r}) are in no chunk"


@pytest.mark.parametrize("seed", range(25))
def test_chunks_retokenise_to_their_ids_and_cover_the_text(seed):
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.choice([1, 3, 5, 9, 40, 400]))) for _ in range(rng.randint(1, 120))]
    content = " ".join(words)
    window, overlap = rng.choice([(6, 0), (10, 2), (30, 8), (62, 8)])
    chunks = list(chunk_document("d", content, piece_tokenize, window=window, overlap=overlap, slice_chars=rng.choice([40, 200, 10**6])))
    check_chunks(content, chunks, piece_tokenize, window)
    assert {c.doc_id for c in chunks} == {"d"}


def test_a_window_starting_inside_a_word_stores_its_own_tokenisation_shortened_to_fit():
    # one word of 1 + 3*11 characters: 12 pieces; windows of 4 with hard cuts start inside it, where
    # the text tokenises as 1 + 3 + 3 + ... characters: 5 pieces for 4 planned ones, so it is shortened
    content = "a" + "bcd" * 11
    chunks = list(chunk_document("d", content, piece_tokenize, window=4, overlap=0))
    check_chunks(content, chunks, piece_tokenize, 4)
    assert chunks[0].text == "abcdbcdbcd" and chunks[1].char_start == 10
    assert len(piece_tokenize([content[10:22]])[0].ids) == 5 and chunks[1].text == content[10:20]


def test_text_slices_end_before_whitespace_or_cut_hard_in_a_space_free_run():
    content = "alpha beta gamma delta epsilon " * 3 + "x" * 50
    slices = list(text_slices(content, 20))
    assert slices[0][0] == 0 and slices[-1][1] == len(content)
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    for a, b in slices[:-1]:
        assert b - a <= 20
        assert content[b].isspace() or set(content[a + 10 : b]) == {"x"}  # hard cut only where no space is near


def test_sliced_chunks_equal_whole_text_windows_when_slices_end_at_spaces():
    rng = random.Random(7)
    content = " ".join("".join(rng.choice("abcdefgh") for _ in range(rng.choice([1, 3, 5, 9]))) for _ in range(600))
    whole = piece_tokenize([content])[0]
    expected = [(whole.offsets[s][0], whole.offsets[e - 1][1], tuple(whole.ids[s:e]))
                for s, e in plan_windows(whole.word_ids, window=30, overlap=8)]
    calls = []

    def recording(texts):
        calls.extend(len(t) for t in texts)
        return piece_tokenize(texts)

    chunks = list(chunk_document("d", content, recording, window=30, overlap=8, slice_chars=500))
    assert [(c.char_start, c.char_end, c.token_ids) for c in chunks] == expected
    assert max(calls) <= 500 < len(content)  # the text was tokenised in slices, never whole


def test_chunk_keeps_its_token_count_when_the_ids_are_dropped():
    chunk = Chunk("d", 0, "alpha beta", 0, 10, (5, 6))
    assert chunk.embedded().token_ids == () and chunk.embedded().n_tokens == 2


def test_any_valid_max_tokens_alone_makes_a_valid_chunking_config():
    """The default overlap follows max_tokens (issue 13: `ChunkingConfig(max_tokens=32)` raised, its fixed default
    overlap of 32 being more than half the window)."""
    from indexer.config import DEFAULT_OVERLAP, ChunkingConfig

    for max_tokens in (8, 16, 32, 63, 256, 512):
        config = ChunkingConfig(max_tokens=max_tokens)
        assert config.overlap == min(DEFAULT_OVERLAP, max_tokens // 8)
        assert ChunkingConfig(max_tokens=max_tokens, overlap=config.overlap) == config
    assert ChunkingConfig(max_tokens=256, overlap=0).overlap == 0
    with pytest.raises(ValueError, match="overlap must be between 0 and half of max_tokens"):
        ChunkingConfig(max_tokens=32, overlap=16)
