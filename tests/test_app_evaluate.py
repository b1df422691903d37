"""The Evaluate and Explore pages through AppTest (issue 12): state in the URL, uploaded labels, explanations and
verdicts, downloads, cached runs, density histograms, hard negatives, the query on the map, tiny indexes."""

import csv
import io
import json

import numpy as np
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from conftest import MORE_DOCS
from indexer import evaluation
from indexer.app import explain, ui
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.search import Searcher
from indexer.store import IndexReader
from indexer.transforms import represent
from test_app import APP, texts

QUERIES = {"qa": "bees and honey", "qb": "rain on the lake", "qc": "ride a bike on the road"}
QRELS = "query-id\tcorpus-id\tscore\nqa\tbee-1\t2\nqa\tbee-3\t1\nqa\tbread-1\t0\nqb\triver-1\t1\nqc\tbike-2\t1\n"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_bert):
    """Thirteen documents in `mean` and `cls`, with three labelled queries (graded, one judged-0 pair)."""
    root = tmp_path_factory.mktemp("beir")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": d.upper(), "text": t}) + "\n"
                                               for d, t in MORE_DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()), encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(QRELS, encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert), representations=("mean", "cls"))
    return build_index(root, tmp_path_factory.mktemp("ix") / "labelled", encoder, overlap=4, progress=False).index_dir, encoder


@pytest.fixture
def fresh_cache():
    """Evaluations are cached for every session of the process: start each test without any."""
    clear = getattr(getattr(ui, "evaluations", None), "clear", lambda: None)
    clear()
    yield
    clear()


@pytest.fixture
def counted(monkeypatch):
    """How often the expensive parts of an evaluation ran: each representation's ranking and BM25."""
    calls = {"rank_many": 0, "bm25_run": 0}
    rank_many, bm25_run = Searcher.rank_many, evaluation.bm25_run

    def counting_rank_many(self, *args, **kwargs):
        calls["rank_many"] += 1
        return rank_many(self, *args, **kwargs)

    def counting_bm25(*args, **kwargs):
        calls["bm25_run"] += 1
        return bm25_run(*args, **kwargs)

    monkeypatch.setattr(Searcher, "rank_many", counting_rank_many)
    monkeypatch.setattr(evaluation, "bm25_run", counting_bm25)
    return calls


@pytest.fixture
def downloads(monkeypatch):
    """What the browser would receive from each download button: file name -> bytes."""
    files: dict[str, bytes] = {}
    load = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if filename is not None:
            files[filename] = path_or_data if isinstance(path_or_data, bytes) else path_or_data.encode()
        return load(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return files


def page(index_dir, view: str, params: dict | None = None, **state) -> AppTest:
    """A fresh session opened on one page, as a link with these URL parameters would open it."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["index_dir"] = str(index_dir)
    for key, value in state.items():
        at.session_state[key] = value
    at.query_params.update(params or {})
    at.run()
    at.query_params.update(params or {})  # the router's first run may not have seen them on this page
    return at.switch_page(f"views/{view}.py").run()


def unescape(text: str) -> str:
    import re

    return re.sub(r"\\(.)", r"\1", text).replace(ui.WORD_JOINER, "")


# -- Evaluate ------------------------------------------------------------------------------------------------

def test_evaluate_state_is_in_the_url_and_a_link_shows_the_cached_evaluation(labelled, fresh_cache, counted):
    directory, _ = labelled
    at = page(directory, "evaluate")
    at.selectbox(key="eval_baseline").set_value("cls").run()
    at.multiselect(key="eval_fuse").set_value(["mean", "bm25"]).run()
    assert not at.subheader  # nothing evaluated yet: the button runs it
    at.button[0].click().run()
    assert not at.exception and not at.error
    params = at.query_params.to_dict() if hasattr(at.query_params, "to_dict") else dict(at.query_params)
    params = {k: v[0] if isinstance(v, list) else v for k, v in params.items()}
    assert params == {"index": directory.name, "set": set_name(directory), "baseline": "cls", "fuse": "mean,bm25"}
    shown = at.dataframe[0].value
    # a teammate opens the link: the same view, at once, from the cache (nothing ranked again)
    other = page(directory, "evaluate", params)
    assert not other.exception and not other.error and not other.warning
    assert other.selectbox(key="eval_baseline").value == "cls"
    assert other.multiselect(key="eval_fuse").value == ["mean", "bm25"]
    assert texts(other.subheader)[:2] == ["3 queries evaluated", "mean vs cls, paired over queries"]
    assert other.dataframe[0].value.equals(shown)
    assert counted == {"rank_many": 1, "bm25_run": 1}


def test_a_second_evaluation_of_the_set_reuses_bm25_and_each_representations_run(labelled, fresh_cache, counted):
    directory, encoder = labelled
    at = page(directory, "evaluate")
    at.button[0].click().run()
    assert counted == {"rank_many": 1, "bm25_run": 1}
    at.selectbox(key="eval_baseline").set_value("mean").run()  # another comparison of the same set: from the cached runs
    at.multiselect(key="eval_fuse").set_value(["cls", "bm25"]).run()
    at.button[0].click().run()  # as a user would press it again
    assert not at.exception and not at.error
    assert counted == {"rank_many": 1, "bm25_run": 1}
    # the same numbers as an evaluation computed from scratch
    queries, qrels = _labels(directory)
    fresh = evaluation.evaluate(Searcher(directory, encoder), queries, qrels, dataset=set_name(directory), progress=False, baseline="mean",
                                fuse=["cls", "bm25"]).to_dict()
    shown = at.dataframe[0].value
    for system, values in fresh["metrics"].items():
        assert shown.loc[system, "ndcg@10"] == pytest.approx(values["ndcg@10"])
    assert counted == {"rank_many": 2, "bm25_run": 2}  # the fresh one above ran them; the page had not


def set_name(directory) -> str:
    """The name the index gives its labelled set (it names the source folder)."""
    from indexer.evaluation import labelled_sets

    return labelled_sets(IndexReader(directory).manifest)[0].name


def _labels(directory):
    """The fixture's labelled set, read independently of the app."""
    from indexer.evaluation import labelled_sets, load_labels

    reader = IndexReader(directory)
    chosen = labelled_sets(reader.manifest)[0]
    queries, qrels, _ = load_labels(chosen.queries, chosen.qrels, reader.doc_ids())
    return queries, qrels


def test_bad_evaluate_link_values_are_ignored_with_an_escaped_message(labelled, fresh_cache):
    directory, _ = labelled
    at = page(directory, "evaluate", {"set": "**nope**", "baseline": "<b>x</b>", "fuse": "mean,[a](http://x)", "kind": "sts2"})
    assert not at.exception and not at.error
    warnings = [unescape(w.value) for w in at.warning]
    assert len(warnings) == 4
    assert any(f"set='**nope**' was ignored: no labelled query set of that name; valid: {set_name(directory)}" in w for w in warnings)
    assert any("baseline='<b>x</b>' was ignored" in w for w in warnings)
    assert any("fuse='mean,[a](http://x)' was ignored: cannot fuse" in w for w in warnings)
    assert any("kind='sts2' was ignored" in w for w in warnings)
    assert all("**" not in w.value.replace("\\*", "") and "<b>" not in w.value for w in at.warning)  # escaped
    assert at.selectbox(key="eval_set").value == set_name(directory) and at.multiselect(key="eval_fuse").value == []


def test_uploaded_queries_and_qrels_are_evaluated_in_this_session_only(tiny_index, fresh_cache, tiny_bert):
    before = {p: p.stat().st_mtime_ns for p in tiny_index.rglob("*")}
    at = page(tiny_index, "evaluate")
    assert "no labelled queries" in at.info[0].value and "Upload" in at.info[0].value
    queries = b'{"_id": "q1", "text": "bees and honey"}\n{"_id": "q2", "text": "bread and flour"}\nnot json\n'
    qrels = b"query-id\tcorpus-id\tscore\nq1\tevil\t1\nq2\tok\t1\nq2\tnosuch\t1\n"
    at.file_uploader(key="eval_queries_file").upload("my-queries.jsonl", queries, "application/json")
    at.file_uploader(key="eval_qrels_file").upload("my-qrels.tsv", qrels, "text/tab-separated-values").run()
    assert not at.exception and not at.error, texts(at.error)
    skipped = at.expander[0].label, "\n".join(texts(at.text))
    assert skipped[0] == "2 lines of the labels were skipped"
    assert "my-queries.jsonl:3:" in skipped[1] and "my-qrels.tsv:4:" in skipped[1] and "pooling-lab" not in skipped[1]
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert texts(at.subheader)[0] == "2 queries evaluated"
    # nDCG@10 by hand: one relevant document per query, gain 1 at its rank in an independent search
    searcher = Searcher(tiny_index, Encoder.load(str(tiny_bert)))
    for r in ("pooled", "mean"):
        ranks = {q: [h.doc_id for h in searcher.search(text, 10).results[r]].index(doc) + 1
                 for q, text, doc in [("q1", "bees and honey", "evil"), ("q2", "bread and flour", "ok")]}
        expected = np.mean([1 / np.log2(rank + 1) for rank in ranks.values()])
        assert at.dataframe[0].value.loc[r, "ndcg@10"] == pytest.approx(expected)
    # nothing was written into the index, and another session does not see the upload's evaluation
    assert {p: p.stat().st_mtime_ns for p in tiny_index.rglob("*")} == before
    assert ui.evaluations().same_set((str(tiny_index.resolve()),)) is None and ui.evaluations().same_set((str(tiny_index),)) is None


def test_evaluate_page_says_what_the_result_means(labelled, fresh_cache):
    directory, _ = labelled
    at = page(directory, "evaluate")
    at.button[0].click().run()
    sig = at.dataframe[1].value  # mean vs cls, one pair: raw p
    mean, cls = float(sig.loc["ndcg@10", "mean"]), float(sig.loc["ndcg@10", "cls"])
    p = sig.loc["ndcg@10", "randomisation p"]
    sentences = [m.value for m in at.markdown if m.value.startswith("On these")]
    assert len(sentences) == 1
    winner, loser = ("mean", "cls") if mean > cls else ("cls", "mean")
    assert f"On these 3 queries `{winner}`" in sentences[0] and f"`{loser}` on nDCG@10" in sentences[0]
    assert f"{abs(mean - cls):.2f}" in sentences[0]
    significant = p.startswith("<") or float(p) < 0.05
    assert ("unlikely to be chance" in sentences[0]) == significant and ("not significant" in sentences[0]) != significant
    helps = {w.help for w in [at.selectbox(key="eval_baseline"), at.multiselect(key="eval_fuse")]}
    assert any(explain.GLOSSARY["holm"] in h for h in helps) and any(explain.GLOSSARY["rrf"] in h for h in helps)
    assert any(explain.GLOSSARY["metrics"] in c for c in texts(at.caption))


def _report(delta: float, p: float, corrected: bool) -> dict:
    tests = {"mean": 0.5 + delta, "pooled": 0.5, "delta": delta, "randomization_p": p, "randomization_p_holm": min(1.0, 3 * p)}
    return {"queries_evaluated": 50, "pairs": [["mean", "pooled"]], "correction": {"applied": corrected},
            "significance": {"mean vs pooled": {"ndcg@10": tests}}}


def test_verdicts_are_built_from_the_report():
    assert explain.verdicts(_report(0.21, 0.0002, True)) == [
        "On these 50 queries `mean` beats `pooled` on nDCG@10 by 0.21 (p < 0.001 after Holm, paired randomisation test): "
        "the difference is unlikely to be chance."]
    assert explain.verdicts(_report(-0.03, 0.02, True)) == [  # Holm: 3 × 0.02 = 0.06, not below 0.05
        "On these 50 queries `pooled` scores 0.03 higher than `mean` on nDCG@10 (p = 0.060 after Holm, paired "
        "randomisation test): not significant — on this query set the difference could be chance."]
    assert "unlikely to be chance" in explain.verdicts(_report(-0.03, 0.02, False))[0]  # one pair: the raw p
    assert explain.verdicts(_report(0.0, 1.0, False)) == ["On these 50 queries `mean` and `pooled` score the same on nDCG@10 (0.50)."]
    assert explain.most_anisotropic({"a": {"anisotropy": 0.2}, "b": {"anisotropy": 0.9}, "bm25": None}).startswith(
        "Most anisotropic here: `b` (two random documents have cosine 0.90")


def test_evaluate_page_downloads_the_table_the_report_and_the_run_files(labelled, fresh_cache, downloads, capsys):
    directory, _ = labelled
    at = page(directory, "evaluate")
    at.multiselect(key="eval_fuse").set_value(["mean", "bm25"]).run()
    at.button[0].click().run()
    assert not at.exception
    assert [b.label for b in at.get("download_button")] == ["per-query.csv", "report.json", "mean.run", "cls.run", "bm25.run", "rrf.run"]
    assert set(downloads) == {"per-query.csv", "report.json", "mean.run", "cls.run", "bm25.run", "rrf.run"}
    report = json.loads(downloads["report.json"])
    # the JSON report is the CLI's --json dict for the same evaluation (the index path aside: shown as visitors may see it)
    from indexer.cli import main

    queries_file, qrels_file = (IndexReader(directory).manifest.source.path + p for p in ("/queries.jsonl", "/qrels/test.tsv"))
    capsys.readouterr()
    main(["evaluate", "--index", str(directory), "--queries", queries_file, "--qrels", qrels_file, "--fuse", "mean,bm25",
          "--json", "--no-progress", "--out", str(directory.parent / "out")])
    cli = json.loads(capsys.readouterr().out)
    for key in ("metrics", "significance", "per_query", "pairs", "fusion", "representations", "queries_evaluated"):
        assert report[key] == cli[key], key
    # the CSV holds the per-query rows of that report
    rows = list(csv.DictReader(io.StringIO(downloads["per-query.csv"].decode())))
    assert [r["query_id"] for r in rows] == [r["query_id"] for r in report["per_query"]]
    assert [float(r["cls ndcg@10"]) for r in rows] == pytest.approx([r["cls"]["ndcg@10"] for r in report["per_query"]])
    # each run file, scored by trec_eval (pytrec_eval) on its own, gives the report's numbers
    import pytrec_eval

    _, qrels = _labels(directory)
    positive = {q: j for q, j in qrels.items() if any(g > 0 for g in j.values())}
    for system in ("mean", "bm25", "rrf"):
        run: dict = {}
        for line in downloads[f"{system}.run"].decode().splitlines():
            q, _, doc, _, score, tag = line.split()
            assert tag == system
            run.setdefault(q, {})[doc] = float(score)
        scores = pytrec_eval.RelevanceEvaluator(positive, {"ndcg_cut.10"}).evaluate(run)
        mean = np.mean([scores.get(q, {}).get("ndcg_cut_10", 0.0) for q in positive])
        assert mean == pytest.approx(report["metrics"][system]["ndcg@10"], abs=1e-9)


# -- Explore -------------------------------------------------------------------------------------------------

def charts(at: AppTest) -> list[tuple[dict, "object"]]:
    """(Vega-Lite spec, its data as a DataFrame) of every chart on the page, in order."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    out = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        data = convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data) if chart.proto.datasets else None
        out.append((spec, data))
    return out


def test_explore_state_is_in_the_url_and_bad_values_are_ignored(labelled):
    directory, _ = labelled
    at = page(directory, "explore")
    at.radio(key="explore_negatives").set_value("hard").run()
    at.selectbox(key="explore_doc").set_value("river-1").run()
    params = {k: v[0] if isinstance(v, list) else v for k, v in dict(at.query_params).items()}
    assert params == {"index": directory.name, "reps": "mean,cls", "set": set_name(directory), "doc": "river-1", "negatives": "hard"}
    other = page(directory, "explore", dict(params, reps="cls"))
    assert not other.exception and not other.warning
    assert other.multiselect(key="columns").value == ["cls"]
    assert other.radio(key="explore_negatives").value == "hard" and other.selectbox(key="explore_doc").value == "river-1"
    bad = page(directory, "explore", {"reps": "mean,**x**", "doc": "<i>nope</i>", "negatives": "easy", "q": "   "})
    assert not bad.exception and not bad.error
    warnings = [unescape(w.value) for w in bad.warning]
    assert len(warnings) == 4 and any("reps='mean,**x**' was ignored: **x** is not in this index" in w for w in warnings)
    assert bad.radio(key="explore_negatives").value == "random"


def test_histograms_are_densities_of_a_readable_height(labelled):
    directory, _ = labelled
    at = page(directory, "explore")
    assert not at.exception
    histograms = [(spec, data) for spec, data in charts(at) if spec["mark"]["type"] == "bar"]
    assert len(histograms) == 2
    for spec, data in histograms:
        # ≥ 240 px of plot: Streamlit's theme spends ~80 px on the axes, and a title or legend would take more
        assert spec["height"] >= 240 + 80 and "title" not in spec and spec["encoding"]["color"]["legend"] is None
        assert spec["encoding"]["y"]["field"] == "density" and spec["encoding"]["y2"] == {"datum": 0}
        for kind in ("relevant", "non-relevant"):  # each kind's area is 1: the 4 relevant pairs stay visible
            bars = data[data["kind"] == kind]
            assert ((bars["end"] - bars["start"]) * bars["density"]).sum() == pytest.approx(1.0)
    assert any(explain.GLOSSARY["densities"] in c for c in texts(at.caption))


def test_hard_negatives_are_each_representations_top_ranked_non_relevant_documents(labelled):
    from indexer.explore import relevance_similarities

    directory, encoder = labelled
    searcher = Searcher(directory, encoder)
    queries, qrels = _labels(directory)
    got = relevance_similarities(searcher, queries, qrels, ["mean", "cls"], negatives="hard", hard_per_query=3)
    reader = IndexReader(directory)
    chunks = reader.chunk_ids_by_doc()
    qids = [q for q in qrels if q in queries]
    vectors = represent(encoder.encode_texts([queries[q] for q in qids]), ["mean", "cls"], reader.transforms)
    for r in ("mean", "cls"):
        relevant, non = [], []
        for q, v in zip(qids, vectors[r]):  # brute force: every document's best chunk
            cosine = {d: float(np.max(reader.vectors(r, ids) @ v)) for d, ids in chunks.items()}
            ranked = sorted(cosine, key=lambda d: -cosine[d])
            hard = [d for d in ranked if qrels[q].get(d, 0) < 1][:3]
            relevant += [cosine[d] for d, g in qrels[q].items() if g > 0]
            non += [cosine[d] for d, g in qrels[q].items() if g <= 0] + [cosine[d] for d in hard if d not in qrels[q]]
        assert sorted(got[r]["relevant"]) == pytest.approx(sorted(relevant), abs=1e-5)
        assert sorted(got[r]["non-relevant"]) == pytest.approx(sorted(non), abs=1e-5)
    with pytest.raises(ValueError, match="unknown kind of negatives 'easy'; valid: random, hard"):
        relevance_similarities(searcher, queries, qrels, ["mean"], negatives="easy")


@pytest.mark.parametrize("how", ["session", "link"])
def test_the_map_shows_the_search_query_and_its_hits_coloured_by_relevance(labelled, how):
    from sklearn.decomposition import PCA

    directory, encoder = labelled
    if how == "session":  # the Search page's query (qa, judged), in this session
        at = page(directory, "explore", query="bees and honey")
    else:  # or a link's
        at = page(directory, "explore", {"q": "bees and honey"})
    assert not at.exception and not at.error
    assert at.query_params["q"] in ("bees and honey", ["bees and honey"])
    maps = [(spec, data) for spec, data in charts(at) if spec["mark"]["type"] == "point"]
    assert len(maps) == 2
    reader = IndexReader(directory)
    chunks = reader.chunk_ids_by_doc()
    docs = sorted(chunks)
    searcher = Searcher(directory, encoder)
    hits = searcher.search("bees and honey", 10).results
    grades = {"bee-1": 2, "bee-3": 1, "bread-1": 0}
    for (spec, data), r in zip(maps, ["mean", "cls"]):
        assert spec["height"] >= 240 + 80 + 100 and {"field": "title", "type": "nominal"} in spec["encoding"]["tooltip"]
        pca = PCA(n_components=2).fit(reader.vectors(r, [chunks[d][0] for d in docs]))
        query = pca.transform(represent(encoder.encode_texts(["bees and honey"]), [r], reader.transforms)[r])[0]
        point = data[data["kind"] == "query"].iloc[0]
        assert [point["x"], point["y"]] == pytest.approx(list(query), abs=1e-4)
        shown = {row["document"]: row["kind"] for _, row in data.iterrows() if row["kind"] != "query"}
        assert len(shown) == len(docs)  # every document once
        for h in hits[r]:
            expected = "hit: unjudged" if h.doc_id not in grades else "hit: relevant" if grades[h.doc_id] else "hit: judged not relevant"
            assert shown[h.doc_id] == expected
        for d in {"bee-1", "bee-3"} - {h.doc_id for h in hits[r]}:
            assert shown[d] == "relevant, not in the top 10"
        assert set(data[data["kind"] == "document"]["title"]) <= {d.upper() for d in docs}  # hover: the title


def test_explore_names_the_most_anisotropic_representation(labelled):
    directory, _ = labelled
    at = page(directory, "explore")
    values = {m.label: float(m.value) for m in at.metric if m.label.endswith("anisotropy")}
    top = max(values, key=values.get).split("`")[1]
    assert any(m.value.startswith(f"Most anisotropic here: `{top}`") for m in at.markdown)
    assert all(m.help == explain.GLOSSARY["anisotropy"] for m in at.metric if m.label.endswith("anisotropy"))


def test_explore_on_a_one_document_index_says_what_is_needed(tmp_path, tiny_bert):
    root = tmp_path / "beir"
    root.mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "bees and honey"}) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "qa", "text": "bees"}) + "\n", encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqa\td1\t1\n", encoding="utf-8")
    directory = build_index(root, tmp_path / "one", Encoder.load(str(tiny_bert)), overlap=4, progress=False).index_dir
    at = page(directory, "explore", query="bees")
    assert not at.exception and not at.error
    info = texts(at.info)
    assert any("This index holds 1 document" in i and "at least 2 documents" in i and "the map at least 3" in i for i in info)
    assert any("A map needs at least 3 documents; this index holds 1." == i for i in info)
    assert not at.metric and not [s for s, _ in charts(at) if s["mark"]["type"] == "point"]


def test_a_new_index_generation_gets_fresh_runs(labelled, fresh_cache, counted, tmp_path):
    import shutil

    from indexer.pipeline import delete_documents

    directory = shutil.copytree(labelled[0], tmp_path / "copy")
    at = page(directory, "evaluate")
    at.button[0].click().run()
    assert texts(at.subheader)[0] == "3 queries evaluated" and counted == {"rank_many": 1, "bm25_run": 1}
    delete_documents(directory, ["fish-1"])  # an unjudged document: a new generation, the same labelled set
    at.run()
    assert not at.exception and not at.subheader  # the old generation's evaluation is not shown for the new one
    at.button[0].click().run()
    assert texts(at.subheader)[0] == "3 queries evaluated" and counted == {"rank_many": 2, "bm25_run": 2}
