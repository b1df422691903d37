"""Token windows: coverage, size, overlap, word boundaries, text spans."""

import random

import pytest

from indexer.chunking import make_chunks, plan_windows


def words_of(lengths):
    """word_ids for words made of the given numbers of tokens."""
    return [w for w, n in enumerate(lengths) for _ in range(n)]


def check_windows(word_ids, windows, window, overlap):
    n = len(word_ids)
    assert windows[0][0] == 0 and windows[-1][1] == n
    covered = set()
    for (s, e), nxt in zip(windows, windows[1:] + [None]):
        assert 0 < e - s <= window
        covered.update(range(s, e))
        if nxt is not None:
            assert s < nxt[0] <= e  # progress, and no gap
            assert e - nxt[0] >= min(overlap, e - s - 1)
    assert covered == set(range(n))


@pytest.mark.parametrize("seed", range(30))
def test_random_documents_are_covered_without_truncation(seed):
    rng = random.Random(seed)
    word_ids = words_of([rng.choice([1, 1, 1, 2, 3, 7]) for _ in range(rng.randint(1, 400))])
    window, overlap = rng.choice([(10, 2), (30, 8), (254, 32), (5, 0)])
    windows = plan_windows(word_ids, window=window, overlap=overlap)
    check_windows(word_ids, windows, window, overlap)


def test_short_document_is_one_window():
    assert plan_windows(words_of([1, 2, 1]), window=10, overlap=2) == [(0, 4)]


def test_cuts_move_back_to_word_starts():
    # words of 3 tokens: a window of 7 would cut word 2 in the middle; it ends at 6 instead
    windows = plan_windows(words_of([3] * 5), window=7, overlap=2)
    assert windows[0] == (0, 6)
    assert all(s % 3 == 0 for s, _ in windows)


def test_a_word_longer_than_the_window_is_cut_hard():
    windows = plan_windows(words_of([25]), window=10, overlap=2)
    check_windows(words_of([25]), windows, 10, 2)
    assert windows[0] == (0, 10)


@pytest.mark.parametrize("window,overlap", [(0, 0), (10, 10), (10, -1)])
def test_invalid_window_or_overlap_is_refused(window, overlap):
    with pytest.raises(ValueError, match="window|overlap"):
        plan_windows([0, 1, 2], window=window, overlap=overlap)


def test_make_chunks_keeps_id_position_text_and_tokens():
    content = "alpha beta gamma delta"
    offsets = [(0, 5), (6, 10), (11, 16), (17, 22)]
    chunks = make_chunks("d1", content, [10, 11, 12, 13], offsets, [0, 1, 2, 3], window=2, overlap=1)
    assert [c.text for c in chunks] == ["alpha beta", "beta gamma", "gamma delta"]
    assert [c.position for c in chunks] == [0, 1, 2]
    assert {c.doc_id for c in chunks} == {"d1"}
    assert chunks[1].token_ids == (11, 12) and chunks[1].char_start == 6 and chunks[1].char_end == 16


def test_make_chunks_refuses_misaligned_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        make_chunks("d", "ab", [1, 2], [(0, 1)], [0, 1], window=4, overlap=0)
