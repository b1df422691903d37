"""Every page of the Streamlit app through streamlit.testing.v1.AppTest: renders, answers, explains bad input."""

import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import FIVE, TINY_DOCS
from indexer.app.serve import APP as APP_SCRIPT
from indexer.app.ui import WORD_JOINER
from indexer.compare import rank_biased_overlap
from indexer.config import DEFAULT_REPRESENTATIONS, POOLINGS, REPRESENTATION_FORMS, parse_representations
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.search import Searcher
from indexer.store import IndexReader, generation_id

APP = str(APP_SCRIPT)
JUDGED_QUERY = "why does my homemade bread come out flat and heavy"  # q08 of data/sample


def app(index_dir, *, query_params: dict | None = None, **state) -> AppTest:
    """A fresh session of the app on `index_dir` with these session-state values, opened at a URL with these
    query parameters (a link: no typing, no button)."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["index_dir"] = str(index_dir)
    for key, value in state.items():
        at.session_state[key] = value
    for name, value in (query_params or {}).items():
        at.query_params[name] = value
    return at.run()


def search(at: AppTest, query: str) -> AppTest:
    at.text_input(key="query").input(query)
    return at.button[0].click().run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_search_page_asks_for_a_query_first(tiny_index):
    at = app(tiny_index)
    assert not at.exception
    assert "Type a query" in at.info[0].value


def test_a_query_shows_both_rankings_with_their_overlap(tiny_index):
    at = search(app(tiny_index), "bees and honey")
    assert not at.exception and not at.error
    assert texts(at.subheader) == ["`pooled`", "`mean`"]
    labels = [m.label for m in at.metric]
    assert "Overlap@10" in labels and "RBO@10" in labels
    assert sum(t.startswith("**1.**") for t in texts(at.markdown)) == 2


def test_document_text_is_never_rendered_as_markup(tiny_index):
    at = search(app(tiny_index), "bees")
    shown = "\n".join(texts(at.markdown))
    # a URL also gets a word joiner after its scheme's colon, so that no autolink forms (see below)
    assert r"\<script\>alert\(1\)\<\/script\>" in shown and "\\[link\\]\\(http\\:\u2060\\/\\/x\\)" in shown
    assert r"\<b\>bold\<\/b\>" in shown and r"\$x\$" in shown
    assert "<script>" not in shown and "](http" not in shown


def test_judged_query_shows_ndcg_and_relevant_hits(sample_index):
    at = search(app(sample_index[0]), JUDGED_QUERY)
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert {"nDCG@10 pooled", "nDCG@10 mean"} <= set(labels)
    assert any(t.endswith(":green-badge[:material/check: grade 2 · highly relevant]") for t in hit_heads(at))
    assert any("Judged query q08" in c for c in texts(at.caption))


def test_missing_index_is_a_message_not_a_traceback(tmp_path):
    at = app(tmp_path / "nowhere")
    assert not at.exception
    assert "No index at" in at.error[0].value and "python -m indexer build" in at.error[0].value


def test_index_built_with_another_model_is_a_message(tiny_index, tiny_bert_other):
    at = app(tiny_index, model=str(tiny_bert_other))
    assert not at.exception
    assert "Cannot open the index" in at.error[0].value and "built with model" in at.error[0].value


def test_evaluate_page_shows_metrics_and_significance(sample_index):
    at = app(sample_index[0])
    at.switch_page("views/evaluate.py").run()
    assert not at.exception and not at.error
    next(m for m in at.multiselect if m.label.startswith("Fuse")).set_value(["pooled", "mean"]).run()
    at.button[0].click().run()
    assert not at.exception
    # the fixture index keeps cls too: one paired comparison per pair of representations
    assert texts(at.subheader) == ["70 queries evaluated", "pooled vs mean, paired over queries",
                                   "pooled vs cls, paired over queries", "mean vs cls, paired over queries", "Per query"]
    metrics = at.dataframe[0].value
    assert list(metrics.index) == ["pooled", "mean", "cls", "bm25", "rrf"]  # rrf: the fusion asked for
    assert list(metrics.columns)[-3:] == ["anisotropy", "eff. rank", "top-3 var."]
    assert "Fused (rrf): pooled, mean" in [c.value for c in at.caption]
    # three pairs: Holm-corrected p-values beside the raw ones, equal to a hand computation over the pairs
    first = at.dataframe[1].value
    assert list(first.columns)[:3] == ["pooled", "mean", "delta (pooled − mean)"]
    assert "t-test p (Holm)" in first.columns and "randomisation p (Holm)" in first.columns
    raw = sorted(float(at.dataframe[i].value.loc["ndcg@10", "t-test p"].lstrip("<")) for i in (1, 2, 3))
    holm_by_hand = [min(1.0, max((3 - j) * raw[j] for j in range(i + 1))) for i in range(3)]
    shown = sorted(float(at.dataframe[i].value.loc["ndcg@10", "t-test p (Holm)"].lstrip("<")) for i in (1, 2, 3))
    assert all(abs(a - b) < 1e-3 or a < 1e-3 for a, b in zip(shown, holm_by_hand))
    table = at.dataframe[-1].value
    assert list(table.columns) == ["query", "text", "pooled nDCG@10", "mean nDCG@10", "cls nDCG@10", "delta"]
    assert list(table["delta"]) == sorted(table["delta"], reverse=True)
    # choosing a query opens it in Search, with both rankings
    query_box = next(s for s in at.selectbox if s.label == "Query to open")
    query_box.set_value(3).run()
    next(b for b in at.button if b.label == "Open in Search").click().run()
    assert not at.exception
    assert at.session_state["query"] == table.iloc[3]["text"]
    assert texts(at.subheader)[:2] == ["`pooled`", "`mean`"]


def test_evaluate_page_compares_against_a_chosen_baseline(sample_index):
    at = app(sample_index[0])
    at.switch_page("views/evaluate.py").run()
    next(b for b in at.selectbox if b.label == "Compare against").set_value("cls").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert texts(at.subheader)[1:3] == ["pooled vs cls, paired over queries", "mean vs cls, paired over queries"]
    assert list(at.dataframe[0].value.index) == ["pooled", "mean", "cls", "bm25"]  # no fusion unless asked
    assert "No fusion (choose rankings to fuse above)." in [c.value for c in at.caption]


def test_evaluate_page_without_labels_explains_why(tiny_index):
    at = app(tiny_index)
    at.switch_page("views/evaluate.py").run()
    assert not at.exception and "no labelled queries" in at.info[0].value


def test_explore_page_shows_geometry_and_maps(sample_index):
    at = app(sample_index[0])
    at.switch_page("views/explore.py").run()
    assert not at.exception and not at.error
    shown = ["pooled", "mean"]  # the first two of the index's three representations, until the user picks
    values = {m.label: m.value for m in at.metric}
    assert list(values) == [f"`{r}` {name}" for r in shown for name in ("anisotropy", "effective rank", "top-3 variance share")]
    assert all(-1 <= float(values[f"`{r}` anisotropy"]) <= 1 for r in shown)
    assert all(1 <= float(values[f"`{r}` effective rank"]) <= 384 for r in shown)
    assert len(at.get("vega_lite_chart")) == 2 * len(shown)  # a histogram and a map per representation


def test_index_page_lists_indexes_and_builds_from_uploads(tiny_index, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--allow-build"])  # building is off without it
    at = app(tiny_index, index_root=str(tmp_path), model=None)
    at.switch_page("views/index.py").run()
    assert not at.exception
    assert any("tiny" in e.label for e in at.expander)
    assert unescape(at.table[0].value.loc["vector index", "value"]) == "flat (exact)"  # escaped: st.table reads Markdown
    at.file_uploader[0].upload("a.txt", b"the bees make honey", "text/plain")
    at.file_uploader[0].upload("b.txt", b"\x00\x01 binary", "text/plain")
    at.text_input[0].input("uploaded")
    at.session_state["model"] = str(tiny_bert)
    at.run()
    build = next(b for b in at.button if b.label == "Build")
    build.click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Indexed 1 documents" in at.success[0].value
    skipped = at.dataframe[0].value
    assert list(skipped["file"]) == ["b.txt"] and "binary" in skipped["reason"][0]
    assert at.session_state["index_dir"] == str(tmp_path / "uploaded")


# -- indexes with other sets of representations (issue 10, item 13) -------------------------------------

@pytest.fixture(scope="module", params=[("mean",), ("mean", "cls")], ids=lambda r: ",".join(r))
def reps_index(request, tmp_path_factory, tiny_bert):
    """A small BEIR folder (so Evaluate and Explore have labels) indexed with only some representations."""
    root = tmp_path_factory.mktemp("beir")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in TINY_DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "qa", "text": "bees and honey"}) + "\n" + json.dumps({"_id": "qb", "text": "bread in the oven"}) + "\n",
        encoding="utf-8",
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqa\tbee-1\t1\nqa\tbee-2\t1\nqb\tbread-1\t1\n", encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert), representations=request.param)
    directory = build_index(root, tmp_path_factory.mktemp("ix") / "reps", encoder, overlap=4, progress=False).index_dir
    return directory, request.param


def test_search_page_shows_the_representations_the_index_has(reps_index):
    directory, reps = reps_index
    at = search(app(directory), "bees and honey")  # a judged query: nDCG@10 per representation
    assert not at.exception and not at.error
    assert texts(at.subheader) == [f"`{r}`" for r in reps]
    labels = [m.label for m in at.metric]
    assert [label for label in labels if label.startswith("nDCG@10")] == [f"nDCG@10 {r}" for r in reps]
    captions = "\n".join(texts(at.caption) + hit_captions(at))
    assert hit_captions(at)
    if len(reps) == 1:
        assert "Overlap@10" not in labels and "one representation (`mean`)" in captions
        assert " · in " not in captions
    else:  # the first column is the baseline: the other column's arrows say where it puts each document
        assert "Overlap@10" in labels and "in mean:" in captions and "in cls:" not in captions
        assert "Baseline" in captions


def test_evaluate_page_shows_the_pairs_the_index_has(reps_index):
    directory, reps = reps_index
    at = app(directory)
    at.switch_page("views/evaluate.py").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    metrics = at.dataframe[0].value
    assert list(metrics.index) == list(reps) + ["bm25"]  # no fusion unless asked
    table = at.dataframe[-1].value
    assert list(table.columns) == ["query", "text"] + [f"{r} nDCG@10" for r in reps] + (["delta"] if len(reps) > 1 else [])
    if len(reps) == 1:
        assert texts(at.subheader) == ["2 queries evaluated", "Per query"]
        assert "one representation (`mean`)" in at.info[0].value
    else:
        assert texts(at.subheader) == ["2 queries evaluated", "mean vs cls, paired over queries", "Per query"]
        assert list(at.dataframe[1].value.columns)[:3] == ["mean", "cls", "delta (mean − cls)"]


def test_explore_page_shows_the_representations_the_index_has(reps_index):
    directory, reps = reps_index
    at = app(directory)
    at.switch_page("views/explore.py").run()
    assert not at.exception and not at.error
    assert [m.label for m in at.metric] == [f"`{r}` {name}" for r in reps for name in ("anisotropy", "effective rank", "top-3 variance share")]
    assert len(at.get("vega_lite_chart")) == 2 * len(reps)
    assert not at.multiselect if len(reps) == 1 else at.multiselect(key="columns").value == list(reps)


def test_index_page_describes_the_representations_the_index_has(reps_index):
    directory, reps = reps_index
    at = app(directory)
    at.switch_page("views/index.py").run()
    assert not at.exception and not at.error
    described = at.table[1].value
    assert list(described.index) == list(reps) and list(described["pooling"]) == list(reps)
    assert list(described["dimension"]) == ["32"] * len(reps) and list(described["transform"]) == ["none"] * len(reps)


# -- any set of representations, shown as picked, against a chosen baseline (issue 11, item 6) -----------

def unescape(text: str) -> str:
    """The text a reader sees: escapes resolved, the invisible word joiners that stop autolinks, icons and
    typographic symbols dropped."""
    return re.sub(r"\\(.)", r"\1", text).replace(WORD_JOINER, "")


HIT_CAPTION = re.compile(r"`([^`]+)` · (.+?) · score \S+(?: · in (\S+): (↑\d+|↓\d+|=|rank \d+|not in top \d+))?(?: · chunk \d+ of \d+)?"
                         r"(?: · page (\d+))?")
#: A hit is one Markdown block: rank and title, then this line in small grey type (column, document, score, place in
#: the baseline, chunk, page of a PDF), then the matched text.
HIT_LINE = re.compile(r"^:small\[:gray\[(.*)\]\]$", re.MULTILINE)


def hit_captions(at: AppTest) -> list[str]:
    """The small grey line of every hit on the Search page, in page order."""
    return [m.group(1).rstrip() for text in texts(at.markdown) for m in HIT_LINE.finditer(text.replace("  \n", "\n"))]


def hit_heads(at: AppTest) -> list[str]:
    """The first line of every hit on the Search page (rank, title, grade badge), in page order."""
    return [t.split("  \n")[0] for t in texts(at.markdown) if HIT_LINE.search(t.replace("  \n", "\n"))]


def document_option(at: AppTest, representation: str, rank: int) -> int:
    """Index of the whole-document picker's option for the hit at `rank` of `representation`'s column (options
    read "pooled · 2. title (doc id)")."""
    labels = list(at.selectbox(key="document").options)
    return next(i for i, label in enumerate(labels) if label.startswith(f"{representation} · {rank}. "))


def shown_columns(at: AppTest) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """Per result column of the Search page (headed by its subheader): (doc id, baseline named in the caption,
    arrow) of each hit, from the hits' captions, which name their column (the page draws hits rank by rank)."""
    out = {column.subheader[0].value.strip("`"): [] for column in at.columns if len(column.subheader) == 1}
    for caption in hit_captions(at):
        if (m := HIT_CAPTION.fullmatch(caption)) is not None:
            out[unescape(m.group(1))].append((unescape(m.group(2)), m.group(3), m.group(4)))
    return out


def expected_arrow(rank: int, baseline_ranking: list[str], doc: str, shown: int = 10) -> str:
    """Where the baseline puts the document, computed here by hand from the two rankings (the baseline's searched
    deeper than the `shown` hits)."""
    if doc not in baseline_ranking:
        return f"not in top {len(baseline_ranking)}"
    there = baseline_ranking.index(doc) + 1
    if there > shown:
        return f"rank {there}"
    return "=" if there == rank else (f"↓{there - rank}" if there > rank else f"↑{rank - there}")


def test_search_page_shows_four_picked_columns_against_a_chosen_baseline(five_index):
    directory, encoder = five_index
    query = "bees and honey"
    deep = {r: [h.doc_id for h in hits] for r, hits in Searcher(directory, encoder).search(query, k=100).results.items()}
    rankings = {r: ranking[:10] for r, ranking in deep.items()}
    at = search(app(directory), query)
    assert not at.exception and not at.error
    assert list(shown_columns(at)) == ["pooled", "mean"]  # the index's first two until the user picks
    picked = ["mean+whiten", "pooled", "max", "first_last"]
    at.multiselect(key="columns").set_value(picked).run()
    arrows = {}
    for baseline in ("pooled", "mean+whiten", "max"):  # the baseline of the first pick stays while it is picked
        if baseline != "pooled":
            at.selectbox(key="baseline").set_value(baseline).run()
        assert not at.exception and not at.error and at.selectbox(key="baseline").value == baseline
        columns = shown_columns(at)
        assert list(columns) == picked
        for r, hits in columns.items():
            assert [d for d, _, _ in hits] == rankings[r]
            if r == baseline:
                assert all(arrow is None for _, _, arrow in hits)
                continue
            assert {named for _, named, _ in hits} == {baseline}
            arrows[baseline, r] = [arrow for _, _, arrow in hits]
            assert arrows[baseline, r] == [expected_arrow(i + 1, deep[baseline], d) for i, (d, _, _) in enumerate(hits)]
        result_columns = [c for c in at.columns if len(c.subheader) == 1]
        for column, r in zip(result_columns, picked):
            if r == baseline:
                assert any(c.startswith("Baseline") for c in texts(column.caption))
                assert [m.label for m in column.metric] == [f"nDCG@10 {r}"]  # a judged query; no agreement with itself
                continue
            metrics = {m.label: m.value for m in column.metric}
            shared = len(set(rankings[r]) & set(rankings[baseline]))
            assert metrics["Overlap@10"] == f"{shared} of 10"
            assert metrics["RBO@10"] == f"{rank_biased_overlap(rankings[r], rankings[baseline]):.2f}"
    # the switch changed what the arrows are relative to, not only the label
    assert any(arrows["mean+whiten", r] != arrows["max", r] for r in ("pooled", "first_last"))
    # a fresh pick (here remembered from another page) starts with its first representation as the baseline
    fresh = app(directory, shown=["max", "mean"])
    assert fresh.selectbox(key="baseline").value == "max" and fresh.selectbox(key="baseline").options == ["max", "mean"]


def test_more_than_four_columns_are_refused(five_index):
    at = search(app(five_index[0]), "bees and honey")
    at.multiselect(key="columns").set_value(list(FIVE)).run()
    assert not at.exception
    assert [unescape(e.value) for e in at.error] == ["At most 4 representations can be shown side by side (5 picked)."]
    assert not shown_columns(at)
    at.multiselect(key="columns").set_value(["max"]).run()  # one picked: one column, nothing to compare
    assert not at.exception and not at.error and list(shown_columns(at)) == ["max"]
    assert all(named is None for _, named, _ in shown_columns(at)["max"])
    assert any(c.startswith("You picked one representation (`max`)") for c in texts(at.caption))


def test_explore_page_shows_the_geometry_of_each_picked_representation(five_index):
    directory, _ = five_index
    at = app(directory, shown=["max", "mean+whiten", "pooled"])  # a pick remembered from another page
    at.switch_page("views/explore.py").run()
    assert not at.exception and not at.error
    assert at.multiselect(key="columns").value == ["max", "mean+whiten", "pooled"]
    values = {m.label: m.value for m in at.metric}
    reader = IndexReader(directory)
    first_chunks = [ids[0] for _, ids in sorted(reader.chunk_ids_by_doc().items())]  # 13 documents: all sampled
    for r in ("max", "mean+whiten", "pooled"):
        vectors = reader.vectors(r, first_chunks).astype(np.float64)
        eig = np.sort(np.linalg.eigvalsh(np.cov(vectors, rowvar=False)))[::-1].clip(0)
        share = eig / eig.sum()
        nonzero = share[share > 0]
        cosines = vectors @ vectors.T
        assert float(values[f"`{r}` anisotropy"]) == pytest.approx(cosines[~np.eye(len(vectors), dtype=bool)].mean(), abs=0.02)
        assert float(values[f"`{r}` effective rank"]) == pytest.approx(np.exp(-np.sum(nonzero * np.log(nonzero))), abs=0.051)
        assert float(values[f"`{r}` top-3 variance share"].rstrip("%")) == pytest.approx(100 * share[:3].sum(), abs=0.051)
    assert len(at.get("vega_lite_chart")) == 2 * 3  # similarity histograms (queries whitened too) and maps


def test_index_page_describes_each_representation_and_its_transform(five_index):
    directory, _ = five_index
    at = app(directory)
    at.switch_page("views/index.py").run()
    assert not at.exception and not at.error
    described = at.table[1].value.map(unescape)
    described.index = [unescape(r) for r in described.index]
    reader = IndexReader(directory)
    assert list(described.index) == list(FIVE)
    assert list(described["pooling"]) == ["pooled", "mean", "mean", "max", "first_last"]
    assert list(described["dimension"]) == [str(reader.indexes[r].d) for r in FIVE]
    assert list(described["transform"].drop("mean+whiten")) == ["none"] * 4
    assert described.loc["mean+whiten", "transform"] == (
        f"whiten of `mean` (32 -> {reader.indexes['mean+whiten'].d} dims), fitted on {reader.n_chunks} chunks in "
        f"{generation_id(directory)}, at this generation; `python -m indexer refit` fits it again"
    )


def test_build_form_offers_every_pooling_and_explains_a_bad_transformed_name(tiny_index, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--allow-build"])  # building is off without it
    at = app(tiny_index, index_root=str(tmp_path))
    at.switch_page("views/index.py").run()
    assert at.multiselect[0].options == list(POOLINGS) and at.multiselect[0].value == list(DEFAULT_REPRESENTATIONS)
    at.file_uploader[0].upload("a.txt", b"the bees make honey", "text/plain")
    at.text_input(key="transformed").input("mean+abtt3, pooled+whitening").run()
    assert not at.exception
    with pytest.raises(ValueError) as expected:
        parse_representations("pooled+whitening")
    assert [unescape(e.value) for e in at.error] == [" ".join(str(expected.value).split())]
    assert "unknown transform 'whitening'" in at.error[0].value.replace("\\", "") and REPRESENTATION_FORMS in unescape(at.error[0].value)
    assert next(b for b in at.button if b.label == "Build").disabled
    at.text_input(key="transformed").input("mean+abtt3, pooled+whiten").run()
    assert not at.error and not next(b for b in at.button if b.label == "Build").disabled


# -- queries that cannot be searched (items 2 and 16) ---------------------------------------------------

def test_a_query_of_zero_width_characters_is_empty(tiny_index):
    at = search(app(tiny_index), "\u200b\u200c\u200d\ufeff\u2060")
    assert not at.exception and not at.error
    assert "Type a query" in at.info[0].value and not at.subheader


def test_a_query_with_a_lone_surrogate_is_a_message(tiny_index):
    at = app(tiny_index, query="bees \udcff honey")  # e.g. handed over by another page; a browser cannot send one
    assert not at.exception
    assert "lone surrogate (U+DCFF)" in at.error[0].value and not at.subheader
    assert at.session_state["query"] == ""


def test_escaped_text_keeps_no_autolink_literal_but_reads_the_same():
    from indexer.app.ui import WORD_JOINER, escape_markdown, highlight

    text = "see http://a.example/x, HTTPS://b.example, www.c.example and d@e.example"
    for shown in (escape_markdown(text), highlight(text, "see example")):
        # GFM's autolink literals (independently: a scheme's "://", "www." and an e-mail's "@" followed by a name)
        assert not re.search(r"https?://|www\.|@[\w-]", re.sub(r"\\(.)", r"\1", shown), re.IGNORECASE)
        unescaped = re.sub(r"\\(.)", r"\1", shown).replace("**", "").replace(WORD_JOINER, "")
        assert unescaped == text
