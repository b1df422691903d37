"""Ranking agreement (overlap, RBO, movement) and representation geometry, on hand-computed cases."""

import numpy as np
import pytest

from indexer.cli import format_result
from indexer.compare import against_baseline, columns_problem, default_columns, movement, other_ranks, overlap_at_k, rank_biased_overlap
from indexer.explore import anisotropy, describe_representations, judged_similarities, pca_2d
from indexer.search import Hit, SearchResult


def test_overlap_at_k():
    assert overlap_at_k(["a", "b", "c"], ["c", "d", "a"], 3) == 2
    assert overlap_at_k(["a", "b", "c"], ["c", "d", "a"], 1) == 0


def test_rbo_identical_and_disjoint_lists():
    assert rank_biased_overlap(list("abcdef"), list("abcdef")) == pytest.approx(1.0)
    assert rank_biased_overlap(list("abc"), list("xyz")) == 0.0


def test_rbo_by_hand():
    # depth 1: no agreement; depth 2: {x, y} vs {y, z} share y -> A2 = 1/2
    # RBO_ext = A2 * p^2 + (1 - p) / p * (A1 * p + A2 * p^2) = 0.125 + 0.125 with p = 0.5
    assert rank_biased_overlap(["x", "y"], ["y", "z"], p=0.5) == pytest.approx(0.25)


def test_rbo_weights_the_top_more_than_the_bottom():
    top_swap = rank_biased_overlap(list("bacdefghij"), list("abcdefghij"))
    bottom_swap = rank_biased_overlap(list("abcdefghji"), list("abcdefghij"))
    assert top_swap < bottom_swap < 1.0


def test_rbo_rejects_p_outside_the_unit_interval():
    with pytest.raises(ValueError, match="p must be in"):
        rank_biased_overlap(["a"], ["a"], p=1.0)


def test_other_ranks_and_movement():
    assert other_ranks(["a", "b", "c"], ["c", "a"]) == {"a": 2, "b": None, "c": 1}
    assert [movement(1, 2), movement(3, 1), movement(2, 2), movement(4, None)] == ["↓1", "↑2", "=", "only here"]
    # with the depth shown and searched known: below the shown hits, the rank itself; beyond the search, how deep it went
    assert [movement(3, 57, shown=10, searched=100), movement(3, 10, shown=10, searched=100),
            movement(3, None, shown=10, searched=100)] == ["rank 57", "↓7", "not in top 100"]


def test_anisotropy_matches_all_pairs_on_a_small_set():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((6, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sims = v @ v.T
    all_pairs = sims[~np.eye(6, dtype=bool)].mean()
    assert anisotropy(v, pairs=200_000) == pytest.approx(all_pairs, abs=0.01)
    crowded = np.ones((5, 4), np.float32) / 2 + rng.normal(0, 0.01, (5, 4)).astype(np.float32)
    crowded /= np.linalg.norm(crowded, axis=1, keepdims=True)
    assert anisotropy(crowded) > 0.99


def test_pca_2d_keeps_the_main_directions():
    rng = np.random.default_rng(0)
    points = np.zeros((50, 5))
    points[:, 0] = rng.normal(0, 10, 50)
    points[:, 1] = rng.normal(0, 3, 50)
    points[:, 2:] = rng.normal(0, 0.01, (50, 3))
    xy = pca_2d(points)
    assert xy.shape == (50, 2)
    assert abs(np.corrcoef(xy[:, 0], points[:, 0])[0, 1]) > 0.99
    with pytest.raises(ValueError, match="at least 3"):
        pca_2d(points[:2])


def test_judged_similarities_use_each_documents_best_chunk():
    q = np.array([[1.0, 0.0]])
    docs = {"rel": np.array([[0.0, 1.0], [0.6, 0.8]]), "non": np.array([[0.2, 0.98]]), "other": np.array([[-1.0, 0.0]])}
    out = judged_similarities(q, ["q"], docs, {"q": {"rel": 2, "non": 0}}, unjudged_per_query=3)
    assert out["relevant"] == [pytest.approx(0.6)]
    assert sorted(out["non-relevant"]) == pytest.approx([-1.0, 0.2])  # judged 0, plus the unjudged "other"


# -- every ranking against one baseline (issue 11, item 6) ----------------------------------------------

def test_every_ranking_is_compared_with_the_baseline():
    rankings = {"a": ["x", "y", "z"], "b": ["y", "x", "w"], "c": ["z", "q", "x"]}
    first = against_baseline(rankings, k=3)
    assert set(first) == {"b", "c"} and {g.baseline for g in first.values()} == {"a"}
    # an arrow says where the baseline puts the document: y is 1st in b and 2nd in a ("↓1"), w is not in a
    # the baseline was searched 3 deep: a document it does not hold is "not in top 3"
    assert [first["b"].movement(d, i + 1) for i, d in enumerate(rankings["b"])] == ["↓1", "↑1", "not in top 3"]
    assert [first["c"].movement(d, i + 1) for i, d in enumerate(rankings["c"])] == ["↓2", "not in top 3", "↑2"]
    assert (first["b"].overlap, first["c"].overlap) == (2, 2)
    assert first["b"].rbo == pytest.approx(rank_biased_overlap(rankings["b"], rankings["a"]))
    by_c = against_baseline(rankings, "c", k=1)
    assert set(by_c) == {"a", "b"} and by_c["a"].overlap == 0 and by_c["a"].k == 1
    assert [by_c["a"].movement(d, i + 1) for i, d in enumerate(rankings["a"])] == ["↓2", "not in top 3", "↑2"]
    assert against_baseline({"a": ["x"]}) == {} and against_baseline({}) == {}
    with pytest.raises(ValueError, match="unknown baseline 'd'"):
        against_baseline(rankings, "d")


def test_columns_default_and_limits():
    assert default_columns(["mean"]) == ("mean",)
    assert default_columns(["cls", "max", "mean+whiten"]) == ("cls", "max")
    assert columns_problem(["a", "b", "c", "d"]) is None and columns_problem(["a"]) is None
    assert "at most 4" in columns_problem(["a", "b", "c", "d", "e"]) and "at least one" in columns_problem([])


def test_cli_table_compares_every_column_with_the_first():
    def hits(*docs):
        return [Hit(rank=i + 1, doc_id=d, title="", chunk_id=i, text=d, score=1.0 - i / 10) for i, d in enumerate(docs)]

    result = SearchResult("q", 3, {"max": hits("a", "b", "c"), "cls": hits("c", "d", "e"), "mean+whiten": hits("b", "a", "f")})
    lines = format_result(result, width=120).splitlines()
    assert "in both top-3 (max, cls): 1 of 3 documents" in lines
    assert "in both top-3 (max, mean+whiten): 2 of 3 documents" in lines
    assert not any("(cls, mean+whiten)" in line for line in lines)
    assert not any("in both" in line for line in format_result(SearchResult("q", 3, {"mean": hits("a")})).splitlines())


def test_describe_representations_in_words():
    from dataclasses import replace

    from indexer.store import RepresentationRecord, TransformRecord
    from test_store import described

    manifest = replace(described(), representations={
        "mean": RepresentationRecord(384, "mean.faiss", "mean"),
        "pooled+whiten128": RepresentationRecord(128, "pooled+whiten128.faiss", "pooled", transform=TransformRecord(
            "whiten", 128, "pooled+whiten128.transform.safetensors", dim_in=384, fitted_on_chunks=5000, fitted_in="gen-000003",
            refitted=False)),
    })
    rows = describe_representations(manifest)
    assert [(r["representation"], r["pooling"], r["dimension"]) for r in rows] == [("mean", "mean", 384), ("pooled+whiten128", "pooled", 128)]
    assert rows[0]["transform"] == "none"
    assert rows[1]["transform"] == ("whiten128 of `pooled` (384 -> 128 dims), fitted on 5000 chunks in gen-000003, kept fixed "
                                    "since by add, delete and repair; `python -m indexer refit` fits it again")


# -- agreement at a fixed depth, ranks from deeper lists (issue 12, items 9-11) ----------------------------

def test_agreement_is_measured_at_a_fixed_depth_and_ranks_come_from_the_deeper_lists():
    base = [f"d{i}" for i in range(30)]
    other = ["d5", "d0", "x1"] + [f"d{i}" for i in range(29, 9, -1)]
    got = against_baseline({"base": base, "other": other}, k=10)["other"]
    # by hand: the first 10 of other are d5, d0, x1, d29..d23; of base d0..d9: d5 and d0 are shared
    assert (got.overlap, got.k) == (2, 10)
    assert got.rbo == pytest.approx(rank_biased_overlap(other[:10], base[:10]))
    assert got.movement("d29", 4, shown=10) == "rank 30" and got.movement("x1", 3, shown=10) == "not in top 30"
    assert got.movement("d5", 1, shown=10) == "↓5"
    # fewer documents than the depth: "x of n" with n the documents there are
    small = against_baseline({"a": ["p", "q", "r"], "b": ["q", "p", "r"]}, k=10)["b"]
    assert (small.overlap, small.k) == (3, 3)


def test_missed_relevant_documents_with_their_deeper_ranks():
    from indexer.compare import Missed, missed_relevant, relevant

    grades = {"a": 2, "b": 1, "c": 0, "d": 2, "e": 1}
    ranking = ["x", "a", "y", "b", "z", "d"]  # e is judged but not in the ranking at all
    assert relevant(grades, 2) == {"a": 2, "d": 2}
    assert missed_relevant(ranking, grades, k=3) == [Missed("b", 1, 4), Missed("d", 2, 6), Missed("e", 1, None)]
    assert missed_relevant(ranking, grades, k=3, threshold=2) == [Missed("d", 2, 6)]
    assert missed_relevant(ranking, grades, k=6, threshold=2) == []
