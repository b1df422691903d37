"""Evaluation: metrics on hand-computed cases, significance, baselines, reports checked by independent scoring."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import MSMARCO, SAMPLE
from indexer.cli import main
from indexer.encoder import Encoder
from indexer.evaluation import METRIC_NAMES, bm25_run, evaluate, paired_comparison, per_query_metrics, rrf, write_trec_run
from indexer.loaders import LoadReport, load_qrels, load_queries
from indexer.pipeline import build_index
from indexer.ranking import decode_trec_id, encode_trec_id, trec_order
from indexer.search import Searcher

LOG2 = math.log2


# -- metrics on hand-computed cases ---------------------------------------------------------------

def test_graded_ndcg_and_binary_metrics_by_hand():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"c": 4.0, "a": 3.0, "x": 2.0, "b": 1.0}}  # x is unjudged
    m = per_query_metrics(run, qrels)["q"]
    dcg = 2 / LOG2(3) + 1 / LOG2(5)  # a at rank 2, b at rank 4; gains are the grades
    idcg = 2 / LOG2(2) + 1 / LOG2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["mrr@10"] == pytest.approx(1 / 2)  # first document with grade >= 1 at rank 2
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_mrr_with_no_relevant_hit_in_the_top_ten_is_zero():
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"d{i:02d}": 100.0 - i for i in range(10)} | {"rel": 1.0}}  # relevant at rank 11
    m = per_query_metrics(run, qrels)["q"]
    assert m["mrr@10"] == 0.0 and m["recall@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert m["recall@100"] == 1.0 and m["map@100"] == pytest.approx(1 / 11)


def test_recall_counts_only_judged_relevant_documents():
    qrels = {"q": {"a": 1, "b": 2, "n": 0}}
    run = {"q": {"x": 3.0, "a": 2.0, "n": 1.5, "y": 1.0}}  # x, y unjudged; n judged not relevant
    assert per_query_metrics(run, qrels)["q"]["recall@10"] == pytest.approx(1 / 2)


def test_a_query_missing_from_the_run_scores_zero():
    m = per_query_metrics({}, {"q": {"a": 1}})
    assert m == {"q": dict.fromkeys(METRIC_NAMES, 0.0)}


def test_ties_follow_trec_eval_descending_doc_id():
    assert [d for d, _ in trec_order({"a": 1.0, "c": 1.0, "b": 2.0})] == ["b", "c", "a"]
    qrels = {"q": {"a": 1}}
    assert per_query_metrics({"q": {"a": 1.0, "c": 1.0}}, qrels)["q"]["mrr@10"] == 0.5  # c ranks first


def test_equal_scores_rank_alike_in_the_searcher_and_in_the_evaluation(tmp_path, tiny_bert):
    """One tie rule (ranking.trec_order: descending document id as a run file writes it, trec_eval's) for the
    Searcher's rankings and the evaluation's runs (issue 13, item 4): the app shows documents of equal score in the
    order the metrics score them, also when the tie runs past the hits fetched for a short ranking."""
    import pytrec_eval

    # one text, so every document scores the same; "z x" is written "z%20x", after "z!" ('%' > '!'), though "z x" < "z!"
    ids = [f"d{i:02d}" for i in range(20)] + ["z x", "z!"]  # added last: highest chunk ids
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"_id": d, "text": "bees make honey"}) + "\n" for d in ids))
    build_index(tmp_path / "docs.jsonl", tmp_path / "ix", Encoder.load(str(tiny_bert)), progress=False)
    searcher = Searcher(tmp_path / "ix", representations=["mean"])
    shown = searcher.search("honey", k=2).results["mean"]  # fetches 18 of the 22 chunks first
    assert len({h.score for h in searcher.search("honey", k=len(ids)).results["mean"]}) == 1
    assert [h.doc_id for h in shown] == ["z x", "z!"]
    result = evaluate(searcher, {"q": "honey"}, {"q": {"z!": 1}}, dataset="ties", progress=False, out_dir=tmp_path / "out")
    lines = (tmp_path / "out" / "mean.run").read_text(encoding="utf-8").splitlines()
    assert [decode_trec_id(line.split()[2]) for line in lines[:2]] == [h.doc_id for h in shown]
    with open(tmp_path / "out" / "mean.run", encoding="utf-8") as f:
        reference = pytrec_eval.RelevanceEvaluator({"q": {"z!": 1}}, {"recip_rank", "ndcg_cut.10"}).evaluate(pytrec_eval.parse_run(f))
    metrics = result.per_query["mean"]["q"]
    assert metrics["mrr@10"] == reference["q"]["recip_rank"] == 1 / 2  # z! is second, as the app shows it
    assert metrics["ndcg@10"] == pytest.approx(reference["q"]["ndcg_cut_10"])


# -- significance ----------------------------------------------------------------------------------

def test_paired_tests_on_a_hand_computed_case():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]
    out = paired_comparison(a, b)
    # t = mean(d) / (sd(d) / sqrt(n)) = 2.5 / (1.2910 / 2) = 3.873 with 3 degrees of freedom
    assert out["t_test_p"] == pytest.approx(0.03047, abs=1e-4)
    # exact randomisation: of the 16 sign assignments only all-plus and all-minus reach |mean| = 2.5
    assert out["randomization_p"] == pytest.approx(2 / 16)
    assert (out["delta"], out["wins"], out["losses"], out["ties"], out["n"]) == (2.5, 4, 0, 0, 4)


def test_identical_systems_are_not_significant():
    out = paired_comparison([0.5, 0.2, 0.9], [0.5, 0.2, 0.9])
    assert out["t_test_p"] == 1.0 and out["randomization_p"] == 1.0 and out["ties"] == 3


# -- baselines and run files ------------------------------------------------------------------------

def test_rrf_by_hand():
    fused = rrf([{"q": {"a": 0.9, "b": 0.5}}, {"q": {"b": 10.0, "c": 1.0}}], k=60)
    assert fused["q"] == pytest.approx({"b": 1 / 62 + 1 / 61, "a": 1 / 61, "c": 1 / 62})
    assert list(fused["q"]) == ["b", "a", "c"]


def test_bm25_ranks_term_matches_and_skips_documents_without_query_terms():
    docs = [("d1", "bees make honey in the hive"), ("d2", "bread needs flour"), ("q1", "honey honey honey")]
    run = bm25_run(docs, {"q1": "honey bees", "q2": "zebra"})
    assert list(run["q1"]) == ["d1"]  # q1 itself is ignored (identical id), d2 has no query term
    assert run["q2"] == {}
    assert list(bm25_run(docs, {"q1": "honey"}, exclude_identical=False)["q1"])[0] == "q1"


def test_bm25_and_the_highlighting_share_one_list_of_stop_words():
    """A word the BM25 baseline ignores is not highlighted in the app, and a word it matches is: one list,
    text.STOP_WORDS (issue 13, item 4). Tried on every word of the two lists it replaced (scikit-learn's, once the
    highlighting's, and bm25s's), of more than two letters (the highlighting skips shorter words)."""
    from bm25s.stopwords import STOPWORDS_EN
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from indexer.app.ui import highlight

    words = sorted(w for w in {*ENGLISH_STOP_WORDS, *STOPWORDS_EN, "honey"} if len(w) > 2)
    run = bm25_run([(f"doc {w}", w) for w in words], {w: w for w in words})
    matched = {w for w in words if run[w]}
    assert {"honey", "what", "which"} <= matched and not matched & {"the", "and", "with"}
    assert {w for w in words if "**" in highlight(w, w)} == matched


def test_trec_run_file_format(tmp_path):
    write_trec_run({"q2": {"x": 0.5}, "q1": {"a": 1.0, "b": 2.0}}, tmp_path / "r.run", tag="mean")
    assert (tmp_path / "r.run").read_text().splitlines() == [
        "q1 Q0 b 1 2.00000000 mean", "q1 Q0 a 2 1.00000000 mean", "q2 Q0 x 1 0.50000000 mean",
    ]


# -- independent scoring of written run files --------------------------------------------------------

def read_trec(path: Path) -> dict[str, list[str]]:
    ranked: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        q, _, doc, _, score, _ = line.split()
        ranked.setdefault(decode_trec_id(q), []).append((doc, float(score)))
    # trec_eval's order: score descending, ties by descending document id as written in the file
    return {q: [decode_trec_id(d) for d, _ in sorted(sorted(v, reverse=True), key=lambda x: -x[1])] for q, v in ranked.items()}


def independent_scores(ranking: list[str], judged: dict[str, int]) -> dict[str, float]:
    """Plain-Python metrics, written from their definitions (not through ir-measures)."""
    relevant = {d for d, g in judged.items() if g > 0}
    gains = [judged.get(d, 0) for d in ranking]
    dcg = sum(g / LOG2(i + 2) for i, g in enumerate(gains[:10]))
    idcg = sum(g / LOG2(i + 2) for i, g in enumerate(sorted((g for g in judged.values() if g > 0), reverse=True)[:10]))
    first = next((i for i, d in enumerate(ranking[:10]) if d in relevant), None)
    hits, precisions = 0, []
    for i, d in enumerate(ranking[:100]):
        if d in relevant:
            hits += 1
            precisions.append(hits / (i + 1))
    return {
        "ndcg@10": dcg / idcg,
        "mrr@10": 0.0 if first is None else 1 / (first + 1),
        "recall@10": len(relevant & set(ranking[:10])) / len(relevant),
        "recall@100": len(relevant & set(ranking[:100])) / len(relevant),
        "map@100": sum(precisions) / len(relevant),
    }


def check_against_run_files(report: dict, qrels: dict[str, dict[str, int]]) -> None:
    for system in report["metrics"]:
        runs = read_trec(Path(report["artifacts"][f"run_{system}"]))
        judged = {q: j for q, j in qrels.items() if any(g > 0 for g in j.values())}
        for metric in METRIC_NAMES:
            expected = np.mean([independent_scores(runs.get(q, []), j)[metric] for q, j in judged.items()])
            assert report["metrics"][system][metric] == pytest.approx(expected, abs=1e-6), (system, metric)


def test_sample_evaluation_end_to_end(sample_index, bundled_encoder, tmp_path):
    searcher = Searcher(sample_index[0], bundled_encoder)
    report_ = LoadReport()
    queries = load_queries(SAMPLE / "queries.jsonl", report_)
    qrels = load_qrels(SAMPLE / "qrels" / "test.tsv", report_, known_queries=queries, known_documents=searcher.index.doc_ids())
    result = evaluate(searcher, queries, qrels, dataset="sample", out_dir=tmp_path / "out", progress=False,
                      fuse="pooled,mean,cls")
    report = result.to_dict()
    assert report["queries_evaluated"] == 70 and report["queries_excluded_no_positive"] == 0
    assert set(report["metrics"]) == {"pooled", "mean", "cls", "bm25", "rrf"}  # the fixture index keeps cls too
    assert all(set(v) == set(METRIC_NAMES) for v in report["metrics"].values())
    assert all(0.0 < v["ndcg@10"] <= 1.0 for v in report["metrics"].values())
    assert report["metrics"]["mean"]["ndcg@10"] > 0.5  # all-MiniLM-L6-v2 was trained for mean pooling
    check_against_run_files(report, qrels)
    deltas = [row["delta"]["ndcg@10"] for row in report["per_query"]]
    assert deltas == sorted(deltas, reverse=True)
    row = report["per_query"][0]
    assert row["delta"]["ndcg@10"] == pytest.approx(row["pooled"]["ndcg@10"] - row["mean"]["ndcg@10"])
    assert report["pairs"] == [["pooled", "mean"], ["pooled", "cls"], ["mean", "cls"]]
    assert set(report["significance"]) == {"pooled vs mean", "pooled vs cls", "mean vs cls"}
    sig = report["significance"]["pooled vs mean"]["ndcg@10"]
    assert sig["n"] == 70 and sig["pooled_wins"] + sig["mean_wins"] + sig["ties"] == 70
    assert 0.0 <= sig["t_test_p"] <= 1.0 and 0.0 < sig["randomization_p"] <= 1.0
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["metrics"] == report["metrics"]
    assert "| pooled |" in (tmp_path / "out" / "report.md").read_text()


def test_identical_ids_are_ignored_unless_kept(sample_index, bundled_encoder):
    searcher = Searcher(sample_index[0], bundled_encoder)
    doc = "astro-001"
    queries, qrels = {doc: "why the moon shows phases"}, {doc: {"astro-002": 1}}
    ignored = evaluate(searcher, queries, qrels, dataset="t", progress=False)
    kept = evaluate(searcher, queries, qrels, dataset="t", ignore_identical_ids=False, progress=False)
    assert ignored.per_query["mean"][doc]["recall@100"] == 1.0
    rankings = searcher.rank_many([queries[doc]], 5, exclude=[doc])["mean"][0]
    assert doc not in [d for d, _, _ in rankings]
    assert doc in [d for d, _, _ in searcher.rank_many([queries[doc]], 5)["mean"][0]]
    assert kept.per_query["mean"][doc]["mrr@10"] <= ignored.per_query["mean"][doc]["mrr@10"]


def test_queries_without_positive_judgements_are_excluded_and_counted(sample_index, bundled_encoder):
    searcher = Searcher(sample_index[0], bundled_encoder)
    queries = {"a": "what causes a solar eclipse", "b": "how to bake bread"}
    result = evaluate(searcher, queries, {"a": {"astro-002": 2}, "b": {"astro-002": 0}}, dataset="t", progress=False)
    assert result.to_dict()["queries_evaluated"] == 1 and result.excluded_no_positive == ["b"]


# -- CLI -------------------------------------------------------------------------------------------------

def test_cli_reports_malformed_and_unknown_lines_and_still_evaluates(sample_index, tmp_path, capsys):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text(
        "query-id\tcorpus-id\tscore\nq01\tastro-002\t2\nq01\tastro-003\n q02\tastro-001\ttwo\n"
        "q99\tastro-001\t1\nq02\tnope-1\t1\nq02\tastro-001\t2\n",
        encoding="utf-8",
    )
    out_dir = tmp_path / "out"
    code = main(["evaluate", "--index", str(sample_index[0]), "--queries", str(SAMPLE / "queries.jsonl"),
                 "--qrels", str(qrels), "--json", "--no-progress", "--out", str(out_dir)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["queries_evaluated"] == 2
    issues = report["issues"]
    assert f"{qrels}:3: expected 3 tab-separated fields" in issues[0]
    assert f"{qrels}:4: score must be an integer from -1000 to 1000, got 'two'" in issues[1]
    assert f"{qrels}:5: unknown query id 'q99'" in issues[2] and f"{qrels}:6: unknown document id 'nope-1'" in issues[3]
    # no fusion unless asked (--fuse)
    assert sorted(p.name for p in out_dir.iterdir()) == ["bm25.run", "cls.run", "mean.run", "pooled.run", "report.json", "report.md"]


def test_cli_needs_a_dataset_or_an_index_with_labels(tmp_path, capsys):
    assert main(["evaluate", "--index", str(tmp_path)]) == 2
    assert "--queries FILE and --qrels FILE" in capsys.readouterr().err
    assert main(["evaluate", "--beir", str(SAMPLE), "--split", "dev", "--index", str(tmp_path / "ix")]) == 2
    assert "no qrels/dev.tsv; splits found: test" in capsys.readouterr().err


@pytest.mark.skipif(not MSMARCO.is_dir(), reason=f"{MSMARCO} is absent (shared datasets not mounted)")
def test_msmarco_5k_evaluation_is_complete(tmp_path, capsys):
    index = tmp_path / "ms"
    args = ["evaluate", "--beir", str(MSMARCO), "--index", str(index), "--json", "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries_evaluated"] == 43 and report["queries_excluded_no_positive"] == 0
    assert report["issues"] == []
    assert all(Path(p).is_file() for p in report["artifacts"].values()) and len(report["artifacts"]) == 5  # 3 runs, 2 reports
    qrels = load_qrels(MSMARCO / "qrels" / "test.tsv", LoadReport())
    check_against_run_files(report, qrels)
    # a second run reuses the index instead of rebuilding it
    assert main(args) == 0
    assert "reusing the index" in capsys.readouterr().err


# -- any set of representations (issue 10, item 13) ---------------------------------------------------

TINY_DOCS = [
    ("bee-1", "the bees make honey from nectar and pollen in the hive"),
    ("bee-2", "a queen and her colony swarm from the hive in spring"),
    ("bread-1", "bake bread with flour water salt and yeast in a hot oven"),
    ("bread-2", "the dough and the crust of the bread"),
    ("star-1", "a comet and a planet orbit the sun in the sky"),
    ("river-1", "rain and snow fill the river and the lake with water"),
    ("bike-1", "repair the chain brake and tire of the bike"),
]
TINY_QUERIES = {"qa": "bees and honey", "qb": "bread in the oven", "qc": "a bike with a brake", "qd": "rain on the lake"}
TINY_QRELS = {"qa": {"bee-1": 2, "bee-2": 1}, "qb": {"bread-1": 1, "bread-2": 1}, "qc": {"bike-1": 1}, "qd": {"river-1": 1}}


@pytest.fixture(scope="module")
def tiny_labelled(tmp_path_factory):
    """A BEIR-like folder (corpus, queries, qrels) for the tiny model."""
    root = tmp_path_factory.mktemp("tiny-beir")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in TINY_DOCS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in TINY_QUERIES.items()), encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, j in TINY_QRELS.items() for d, g in j.items()),
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="module", params=[("mean",), ("mean", "cls"), ("pooled", "cls")], ids=lambda r: ",".join(r))
def tiny_reps_index(request, tmp_path_factory, tiny_bert, tiny_labelled):
    """The tiny collection indexed with only some representations: (directory, representations)."""
    from indexer.encoder import Encoder
    from indexer.pipeline import build_index

    encoder = Encoder.load(str(tiny_bert), representations=request.param)
    directory = tmp_path_factory.mktemp("reps") / "ix"
    build_index(tiny_labelled, directory, encoder, overlap=4, progress=False)
    return directory, request.param


def test_evaluation_works_with_any_set_of_representations(tiny_reps_index, tiny_labelled, tmp_path):
    directory, reps = tiny_reps_index
    searcher = Searcher(directory)
    assert searcher.representations == reps
    fuse = reps if len(reps) > 1 else None  # fusing one ranking would give that ranking again
    result = evaluate(searcher, TINY_QUERIES, TINY_QRELS, dataset="tiny", out_dir=tmp_path / "out", progress=False, fuse=fuse)
    report = result.to_dict()
    fused = {"rrf"} if fuse else set()
    assert set(report["metrics"]) == set(reps) | {"bm25"} | fused
    assert report["representations"] == list(reps)
    check_against_run_files(report, TINY_QRELS)
    expected_pairs = [[reps[0], reps[1]]] if len(reps) == 2 else []
    assert report["pairs"] == expected_pairs
    assert list(report["significance"]) == [f"{a} vs {b}" for a, b in expected_pairs]
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    for row in report["per_query"]:
        assert set(reps) <= set(row)
    if expected_pairs:
        a, b = reps
        sig = report["significance"][f"{a} vs {b}"]["ndcg@10"]
        assert sig[a] == pytest.approx(report["metrics"][a]["ndcg@10"]) and sig[b] == pytest.approx(report["metrics"][b]["ndcg@10"])
        assert sig[f"{a}_wins"] + sig[f"{b}_wins"] + sig["ties"] == 4
        assert report["delta"] == f"{a} - {b}"
        assert all(r["delta"]["ndcg@10"] == pytest.approx(r[a]["ndcg@10"] - r[b]["ndcg@10"]) for r in report["per_query"])
        assert f"## {a} vs {b} (paired, per query)" in markdown
        # RRF fuses exactly the representations present: recompute it from their run files
        runs = {r: read_trec(Path(report["artifacts"][f"run_{r}"])) for r in reps}
        for q in TINY_QRELS:
            scores: dict[str, float] = {}
            for r in reps:
                for rank, doc in enumerate(runs[r][q], start=1):
                    scores[doc] = scores.get(doc, 0.0) + 1 / (60 + rank)
            assert set(read_trec(Path(report["artifacts"]["run_rrf"]))[q]) == set(scores)
    else:
        assert report["delta"] is None and "no paired comparison" in markdown
        ndcg = [r[reps[0]]["ndcg@10"] for r in report["per_query"]]
        assert ndcg == sorted(ndcg, reverse=True)


def test_cli_evaluate_prints_a_table_for_any_set_of_representations(tiny_reps_index, tiny_labelled, tmp_path, capsys):
    directory, reps = tiny_reps_index
    args = ["evaluate", "--index", str(directory), "--queries", str(tiny_labelled / "queries.jsonl"),
            "--qrels", str(tiny_labelled / "qrels" / "test.tsv"), "--no-progress", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("system"))
    table = lines[header + 1 : lines.index("", header)]
    rows = [line.split()[0] for line in table]
    assert rows == list(reps) + ["bm25"]  # no fusion unless asked
    assert all(len(line.split()) == 1 + len(METRIC_NAMES) + 3 for line in table)  # + the geometry
    if len(reps) == 1:
        assert "one representation (mean): no paired comparison" in out and "rrf" not in rows
    else:
        assert f"{reps[0]} - {reps[1]}, paired over queries:" in out and f"wins {reps[0]}/{reps[1]}/ties" in out
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["metrics"]) - {"bm25", "rrf"} == set(reps)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{s}.run" for s in report["metrics"]] + ["report.json", "report.md"])


def test_queries_that_cannot_be_searched_are_skipped_and_listed(tiny_reps_index):
    directory, _ = tiny_reps_index
    queries = dict(TINY_QUERIES, qa="\u200b\u200d\ufeff", qb="bread \ud800 oven")
    result = evaluate(Searcher(directory), queries, TINY_QRELS, dataset="tiny", progress=False)
    assert sorted(result.queries) == ["qc", "qd"]
    issues = [str(i) for i in result.issues]
    assert issues == ["query 'qa': skipped: the query is empty",
                      "query 'qb': skipped: the query holds a lone surrogate (U+D800) at character 6: it is not valid Unicode text"]


# -- run files with ids that hold whitespace (item 15) ------------------------------------------------

ODD_IDS = ["notes/bee keeping.md", "tab\there", "100%", "%20", "line\nbreak", "nbsp\u00a0x", "ideo\u3000x", "fs\x1cx", "plain", "ü ñ"]


def test_trec_ids_round_trip_and_are_one_token():
    for doc in ODD_IDS:
        token = encode_trec_id(doc)
        assert token.split() == [token] and decode_trec_id(token) == doc
    assert encode_trec_id("notes/bee keeping.md") == "notes/bee%20keeping.md"
    assert encode_trec_id("plain-id_1.txt") == "plain-id_1.txt"  # ordinary ids are written unchanged


def test_a_run_file_with_whitespace_ids_scores_right_in_pytrec_eval(tmp_path):
    import pytrec_eval

    run = {"q 1": {doc: float(len(ODD_IDS) - i) for i, doc in enumerate(ODD_IDS)}, "q2": {"100%": 1.0, "%20": 1.0}}
    qrels = {"q 1": {"notes/bee keeping.md": 1, "line\nbreak": 2, "ü ñ": 1}, "q2": {"%20": 1}}
    write_trec_run(run, tmp_path / "r.run", tag="mean")
    with open(tmp_path / "r.run", encoding="utf-8") as f:
        parsed = pytrec_eval.parse_run(f)  # trec_eval's reader: whitespace-separated fields
    assert {decode_trec_id(q): {decode_trec_id(d) for d in docs} for q, docs in parsed.items()} == {q: set(d) for q, d in run.items()}
    # scored from the file, with the judgements' ids encoded the same way, by hand
    from_file = {decode_trec_id(q): {decode_trec_id(d): s for d, s in docs.items()} for q, docs in parsed.items()}
    assert per_query_metrics(from_file, qrels) == per_query_metrics(run, qrels)
    # q 1: relevant at ranks 1 (grade 1), 5 (grade 2) and 10 (grade 1); q2: a tie, broken by descending encoded id
    m = per_query_metrics(run, qrels)
    assert m["q 1"]["mrr@10"] == 1.0 and m["q 1"]["recall@10"] == 1.0
    assert m["q 1"]["ndcg@10"] == pytest.approx((1 + 2 / LOG2(6) + 1 / LOG2(11)) / (2 + 1 / LOG2(3) + 1 / LOG2(4)))
    assert encode_trec_id("%20") < encode_trec_id("100%")  # "%2520" < "100%25": 100% ranks first, %20 second
    assert m["q2"]["mrr@10"] == 0.5


# -- an output folder that cannot be written (item 14) --------------------------------------------------

def beir_args(tiny_labelled, tiny_bert, index, out) -> list[str]:
    return ["evaluate", "--beir", str(tiny_labelled), "--model", str(tiny_bert), "--index", str(index),
            "--representations", "mean", "--no-progress", "--out", str(out)]


def test_unwritable_output_folder_is_refused_before_any_work(tiny_labelled, tiny_bert, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    out = tmp_path / "file" / "reports"
    assert main(beir_args(tiny_labelled, tiny_bert, tmp_path / "ix", out)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err == f"error: cannot write the evaluation reports to {out}: {tmp_path / 'file'} is not a folder\n"
    assert not (tmp_path / "ix").exists()  # nothing was built: the check came first


def test_unwritable_output_folder_with_json_still_prints_the_results(tiny_labelled, tiny_bert, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    out = tmp_path / "file" / "reports"
    assert main(beir_args(tiny_labelled, tiny_bert, tmp_path / "ix", out) + ["--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["queries_evaluated"] == 4 and set(report["metrics"]) == {"mean", "bm25"} and report["artifacts"] == {}
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: cannot write the evaluation reports to {out}: {tmp_path / 'file'} is not a folder; "
                        "the results are printed only"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_output_folder_is_refused(tiny_labelled, tiny_bert, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(beir_args(tiny_labelled, tiny_bert, tmp_path / "ix", locked / "out")) == 2
        assert "not writable" in capsys.readouterr().err and not (tmp_path / "ix").exists()
    finally:
        locked.chmod(0o755)


def test_a_late_write_failure_still_shows_the_results(tiny_labelled, tiny_bert, tmp_path, capsys, monkeypatch):
    import indexer.cli as cli

    def full(result, out_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_artifacts", full)
    assert main(beir_args(tiny_labelled, tiny_bert, tmp_path / "ix", tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("tiny-beir")  # the table was printed
    assert captured.err.endswith(f"error: the reports were not written ({tmp_path / 'out'}: No space left on device)\n")
