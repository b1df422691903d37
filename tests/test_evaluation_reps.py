"""Retrieval evaluation for any set of representations (issue 11, items 3 and 5): a `mean`-only index end to end,
Holm-corrected pairs, --baseline, --fuse (RRF, with or without BM25) and each representation's stored geometry."""

import json
import sqlite3
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from indexer.cli import main
from indexer.evaluation import METRIC_NAMES, evaluate
from indexer.explore import geometry
from indexer.search import Searcher
from indexer.store import METADATA, open_generation

DOCS = [
    ("bee-1", "the bees make honey from nectar and pollen in the hive"),
    ("bee-2", "a queen and her colony swarm from the hive in spring"),
    ("bread-1", "bake bread with flour water salt and yeast in a hot oven"),
    ("bread-2", "the dough and the crust of the bread"),
    ("star-1", "a comet and a planet orbit the sun in the sky"),
    ("star-2", "the moon and the stars shine in the night sky"),
    ("river-1", "rain and snow fill the river and the lake with water"),
    ("river-2", "a boat on the river and fish in the water"),
    ("bike-1", "repair the chain brake and tire of the bike"),
    ("bike-2", "ride the bike up the hill and down the road"),
]
QUERIES = {
    "qa": "bees and honey", "qb": "bread in the oven", "qc": "a bike with a brake", "qd": "rain on the lake",
    "qe": "stars at night", "qf": "the hive in spring", "qg": "fish in the river", "qh": "a comet and the sun",
    "qi": "flour and yeast", "qj": "ride up the hill",
}
QRELS = {
    "qa": {"bee-1": 2, "bee-2": 1}, "qb": {"bread-1": 1, "bread-2": 1}, "qc": {"bike-1": 1}, "qd": {"river-1": 1},
    "qe": {"star-2": 1}, "qf": {"bee-2": 1}, "qg": {"river-2": 1}, "qh": {"star-1": 1}, "qi": {"bread-1": 2},
    "qj": {"bike-2": 1},
}
THREE = ("mean", "cls", "max")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in DOCS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()), encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, j in QRELS.items() for d, g in j.items()),
        encoding="utf-8")
    return root


def build(tiny_bert, labelled, directory, representations):
    from indexer.encoder import Encoder
    from indexer.pipeline import build_index

    build_index(labelled, directory, Encoder.load(str(tiny_bert), representations=representations), overlap=4, progress=False)
    return directory


@pytest.fixture(scope="module")
def mean_only(tmp_path_factory, tiny_bert, labelled):
    return build(tiny_bert, labelled, tmp_path_factory.mktemp("mean") / "ix", ("mean",))


@pytest.fixture(scope="module")
def three(tmp_path_factory, tiny_bert, labelled):
    return build(tiny_bert, labelled, tmp_path_factory.mktemp("three") / "ix", THREE)


def eval_args(index, labelled, out):
    return ["evaluate", "--index", index, "--queries", labelled / "queries.jsonl", "--qrels", labelled / "qrels" / "test.tsv",
            "--no-progress", "--out", out]


def read_run(path: Path) -> dict[str, dict[str, float]]:
    """A TREC run file read independently: query -> {doc: score}."""
    out: dict[str, dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        q, _, doc, _, score, _ = line.split()
        out.setdefault(q, {})[doc] = float(score)
    return out


def independent_rrf(runs: list[dict[str, dict[str, float]]], k: int = 60) -> dict[str, dict[str, float]]:
    """RRF by its definition: rank within each run by score, then by descending doc id (trec_eval's order)."""
    fused: dict[str, dict[str, float]] = {}
    for run_ in runs:
        for q, docs in run_.items():
            ranked = sorted(docs, key=lambda d: (-docs[d], tuple(-ord(c) for c in d)))
            for rank, doc in enumerate(ranked, start=1):
                fused.setdefault(q, {})[doc] = fused.get(q, {}).get(doc, 0.0) + 1 / (k + rank)
    return fused


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm step-down written out: sort, multiply the i-th smallest by (m - i), keep monotone, cap at 1."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    out, running = [0.0] * m, 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def stored_vectors(index: Path, pooling: str) -> np.ndarray:
    """A pooling's vectors straight from the metadata store, in chunk-id order (not through IndexReader)."""
    gen_dir, _ = open_generation(index)
    db = sqlite3.connect(f"{(gen_dir / METADATA).as_uri()}?mode=ro", uri=True)
    rows = db.execute("SELECT vector FROM vectors WHERE representation = ? ORDER BY chunk_id", (pooling,)).fetchall()
    db.close()
    return np.vstack([np.frombuffer(b, dtype=np.float32) for (b,) in rows])


# -- a mean-only index: search and evaluate, library and CLI ----------------------------------------------

def test_a_mean_only_index_is_searched_and_evaluated(mean_only, labelled, tmp_path, capsys):
    searcher = Searcher(mean_only)
    assert searcher.representations == ("mean",)
    assert list(searcher.search("bees and honey", k=3).results) == ["mean"]
    code, out, err = run(capsys, "search", mean_only, "bees and honey", "-k", "3", "--json")
    assert code == 0 and list(json.loads(out)["results"]) == ["mean"]
    code, out, err = run(capsys, "search", mean_only, "bees and honey", "-k", "3")
    assert code == 0 and "mean" in out and "Traceback" not in err

    report = evaluate(searcher, QUERIES, QRELS, dataset="tiny", progress=False).to_dict()
    assert list(report["metrics"]) == ["mean", "bm25"]  # no fusion unless asked
    assert report["pairs"] == [] and report["significance"] == {} and report["fusion"] is None
    assert report["baseline"] is None and report["delta"] is None
    assert set(report["geometry"]) == {"mean"}

    code, out, err = run(capsys, *eval_args(mean_only, labelled, tmp_path / "out"))
    assert code == 0 and "one representation (mean): no paired comparison" in out and "No fusion" in out
    code, out, err = run(capsys, *eval_args(mean_only, labelled, tmp_path / "out"), "--json")
    cli = json.loads(out)
    assert code == 0 and cli["pairs"] == [] and cli["fusion"] is None and list(cli["metrics"]) == ["mean", "bm25"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bm25.run", "mean.run", "report.json", "report.md"]


# -- pairs and Holm ---------------------------------------------------------------------------------------

def test_every_pair_is_tested_with_holm_corrected_p_values(three, labelled, tmp_path, capsys):
    code, out, _ = run(capsys, *eval_args(three, labelled, tmp_path / "out"), "--json")
    assert code == 0
    report = json.loads(out)
    pairs = list(combinations(THREE, 2))
    assert report["pairs"] == [list(p) for p in pairs] and report["correction"]["applied"] is True
    names = [f"{a} vs {b}" for a, b in pairs]
    assert list(report["significance"]) == names
    qids = sorted(QRELS)
    for metric in METRIC_NAMES:
        for a, b in pairs:  # the raw t-test p, independently from scipy over the per-query table
            rows = {r["query_id"]: r for r in report["per_query"]}
            x, y = [rows[q][a][metric] for q in qids], [rows[q][b][metric] for q in qids]
            expected = stats.ttest_rel(x, y).pvalue if not np.allclose(np.subtract(x, y), x[0] - y[0]) else None
            if expected is not None:
                assert report["significance"][f"{a} vs {b}"][metric]["t_test_p"] == pytest.approx(expected)
        for test in ("t_test_p", "randomization_p"):
            raw = [report["significance"][n][metric][test] for n in names]
            corrected = [report["significance"][n][metric][f"{test}_holm"] for n in names]
            assert corrected == pytest.approx(holm_by_hand(raw))
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Holm-corrected over the 3 pairs" in markdown and "t-test p (Holm)" in markdown
    code, out, _ = run(capsys, *eval_args(three, labelled, tmp_path / "out"))
    assert "Holm-corrected over the 3 pairs" in out and "t (Holm)" in out


def test_a_baseline_gives_only_its_pairs(three, labelled, tmp_path, capsys):
    code, out, _ = run(capsys, *eval_args(three, labelled, tmp_path / "out"), "--json", "--baseline", "cls")
    assert code == 0
    report = json.loads(out)
    assert report["baseline"] == "cls" and report["pairs"] == [["mean", "cls"], ["max", "cls"]]
    assert list(report["significance"]) == ["mean vs cls", "max vs cls"]
    for metric in METRIC_NAMES:
        raw = [report["significance"][n][metric]["randomization_p"] for n in report["significance"]]
        assert [report["significance"][n][metric]["randomization_p_holm"] for n in report["significance"]] == pytest.approx(holm_by_hand(raw))
    # the per-query delta is against the baseline
    assert report["delta"] == "mean - cls"
    assert all(r["delta"]["ndcg@10"] == pytest.approx(r["mean"]["ndcg@10"] - r["cls"]["ndcg@10"]) for r in report["per_query"])


# -- fusion -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fuse", [("mean", "max"), ("cls", "bm25")], ids=",".join)
def test_fuse_is_rrf_of_the_named_rankings(three, labelled, tmp_path, capsys, fuse):
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, *eval_args(three, labelled, out_dir), "--json", "--fuse", ",".join(fuse))
    assert code == 0
    report = json.loads(out)
    assert report["fusion"] == {"system": "rrf", "of": list(fuse), "k": 60}
    assert list(report["metrics"]) == list(THREE) + ["bm25", "rrf"]
    expected = independent_rrf([read_run(out_dir / f"{s}.run") for s in fuse])
    got = read_run(out_dir / "rrf.run")
    assert set(got) == set(expected)
    for q in got:
        assert set(got[q]) == set(expected[q]) and all(got[q][d] == pytest.approx(expected[q][d], abs=1e-8) for d in got[q])
    without = evaluate(Searcher(three), QUERIES, QRELS, dataset="tiny", progress=False)
    assert "rrf" not in without.per_query and without.to_dict()["fusion"] is None


@pytest.mark.parametrize("option, value, expected", [
    ("--baseline", "pooled", "baseline 'pooled' is not among the representations evaluated; they are: mean, cls, max"),
    ("--fuse", "mean,bogus", "cannot fuse 'bogus': not among the rankings evaluated; valid: mean, cls, max, bm25"),
    ("--fuse", "mean", "fusion needs at least two rankings, got mean; valid: mean, cls, max, bm25"),
])
def test_bad_baseline_or_fuse_is_one_line(three, labelled, tmp_path, capsys, option, value, expected):
    code, out, err = run(capsys, *eval_args(three, labelled, tmp_path / "out"), option, value)
    assert code == 2 and out == "" and err == f"error: {expected}\n"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=expected.split(";")[0].replace("(", r"\(")):
        evaluate(Searcher(three), QUERIES, QRELS, dataset="tiny", progress=False, **{option[2:]: value})


# -- geometry (item 5) ------------------------------------------------------------------------------------

def test_geometry_is_that_of_the_stored_vectors(three, labelled, tmp_path, capsys):
    code, out, _ = run(capsys, *eval_args(three, labelled, tmp_path / "out"), "--json")
    report = json.loads(out)
    assert set(report["geometry"]) == set(THREE)
    for r in THREE:
        expected = geometry(stored_vectors(three, r))
        assert report["geometry"][r] == pytest.approx(expected)
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| map@100 | anisotropy | eff. rank | top-3 var. |" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| max |"))
    g = report["geometry"]["max"]
    assert row.endswith(f"| {g['anisotropy']:.3f} | {g['effective_rank']:.1f} | {g['top3_variance']:.3f} |")
    assert next(line for line in markdown.splitlines() if line.startswith("| bm25 |")).endswith("| — | — | — |")
    code, out, _ = run(capsys, *eval_args(three, labelled, tmp_path / "out"))
    line = next(line for line in out.splitlines() if line.startswith("max "))
    assert line.split()[-3:] == [f"{g['anisotropy']:.3f}", f"{g['effective_rank']:.1f}", f"{g['top3_variance']:.3f}"]


def test_geometry_of_a_sample_uses_a_seeded_subset(three):
    """Past `geometry_sample` chunks, the numbers are those of a seeded sample (the same on every run)."""
    a = evaluate(Searcher(three), QUERIES, QRELS, dataset="tiny", progress=False, geometry_sample=6).geometry
    b = evaluate(Searcher(three), QUERIES, QRELS, dataset="tiny", progress=False, geometry_sample=6).geometry
    full = geometry(stored_vectors(three, "mean"))
    assert a == b and a["mean"] != full
    assert a["mean"]["effective_rank"] <= 5 + 1e-6  # 6 centred rows span at most 5 directions


def faiss_vectors(index: Path, representation: str) -> np.ndarray:
    """A representation's vectors straight from its FAISS file, in chunk-id order (transformed ones live only there)."""
    import faiss

    from indexer.store import faiss_file

    gen_dir, _ = open_generation(index)
    stored = faiss.read_index(str(gen_dir / faiss_file(representation)))
    ids = faiss.vector_to_array(stored.id_map)
    return faiss.downcast_index(stored.index).reconstruct_n(0, stored.ntotal)[np.argsort(ids)]


def test_beir_builds_then_reuses_an_index_with_a_transform(labelled, tiny_bert, tmp_path, capsys):
    index = tmp_path / "ix"
    args = ["evaluate", "--beir", labelled, "--index", index, "--model", tiny_bert, "--representations", "mean,pooled+whiten",
            "--baseline", "pooled+whiten", "--fuse", "pooled+whiten,bm25", "--no-progress", "--json", "--out", tmp_path / "out"]
    code, out, err = run(capsys, *args)
    assert code == 0 and "building the index" in err
    report = json.loads(out)
    assert report["representations"] == ["pooled+whiten", "mean"] and report["pairs"] == [["mean", "pooled+whiten"]]
    assert report["fusion"]["of"] == ["pooled+whiten", "bm25"] and report["correction"]["applied"] is False
    for r in ("mean", "pooled+whiten"):
        assert report["geometry"][r] == pytest.approx(geometry(faiss_vectors(index, r)))
    code, out, err = run(capsys, *args)
    assert code == 0 and "reusing the index" in err and json.loads(out)["metrics"] == report["metrics"]
    # a typo is refused before any build
    code, out, err = run(capsys, *[tmp_path / "other" if a == index else "cls" if a == "pooled+whiten" else a for a in args])
    assert code == 2 and err.startswith("error: baseline 'cls' is not among") and not (tmp_path / "other").exists()
