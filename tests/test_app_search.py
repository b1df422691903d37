"""The Search page for a team (issue 12): permalinks, k applied at once, agreement at a fixed depth, real ranks in
the baseline, grades and a relevance threshold, the matched chunk and the whole document, a cut query, pairs of hits."""

import csv
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import SAMPLE, WORDS
from indexer.app import explain
from indexer.compare import MISSED_LISTED, rank_biased_overlap
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.search import Searcher
from indexer.store import IndexReader
from test_app import (
    HIT_CAPTION,
    JUDGED_QUERY,
    app,
    document_option,
    expected_arrow,
    hit_captions,
    hit_heads,
    search,
    shown_columns,
    texts,
    unescape,
)

QUERY = "bees and honey"


def link(index_dir, **params) -> AppTest:
    """A fresh session opening a link `?name=value&…` (no typing, no button)."""
    return app(index_dir, query_params=params)


def metrics(at: AppTest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in at.metric:
        out.setdefault(m.label, []).append(m.value)
    return out


def deep_rankings(directory, encoder, query) -> dict[str, list[str]]:
    return {r: [h.doc_id for h in hits] for r, hits in Searcher(directory, encoder).search(query, k=100).results.items()}


# -- item 7: the page's state lives in the URL -----------------------------------------------------------

def test_a_link_with_a_query_shows_the_rankings_without_typing(tiny_index):
    at = link(tiny_index, q=QUERY)
    assert not at.exception and not at.error
    assert at.text_input(key="query").value == QUERY
    assert texts(at.subheader) == ["`pooled`", "`mean`"]
    assert {r: len(hits) for r, hits in shown_columns(at).items()} == {"pooled": 3, "mean": 3}


def test_searching_writes_the_query_into_the_url(tiny_index):
    at = search(app(tiny_index), "bread and flour")
    assert at.query_params == {"index": "tiny", "q": "bread and flour", "k": "10", "reps": "pooled,mean", "baseline": "pooled"}
    at.text_input(key="query").input("the comet").run()  # Enter in the box: no button
    assert at.query_params["q"] == "the comet" and shown_columns(at)["mean"]


def test_k_columns_and_baseline_round_trip_through_a_link(five_index):
    directory, encoder = five_index
    params = {"q": QUERY, "k": "3", "reps": "max,mean+whiten", "baseline": "mean+whiten", "rel": "1"}  # a judged query
    at = link(directory, **params)
    assert not at.exception and not at.error and not at.warning
    assert at.number_input(key="k").value == 3
    assert at.multiselect(key="columns").value == ["max", "mean+whiten"]
    assert at.selectbox(key="baseline").value == "mean+whiten"
    deep = deep_rankings(directory, encoder, QUERY)
    columns = shown_columns(at)
    assert {r: [d for d, _, _ in hits] for r, hits in columns.items()} == {r: deep[r][:3] for r in ("max", "mean+whiten")}
    assert {named for _, named, _ in columns["max"]} == {"mean+whiten"}
    assert at.query_params == {"index": directory.name, **params}  # the page writes back what it shows


def test_bad_values_in_a_link_are_short_escaped_messages(five_index):
    at = link(five_index[0], q=QUERY, k="abc", reps="max,<b>nope</b>", baseline="[x](http://e)")
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3
    assert "k='abc' was ignored: not a whole number" in unescape(warnings[0])
    assert "<b>nope</b> is not in this index, which keeps pooled, mean, mean+whiten, max, first_last" in unescape(warnings[1])
    assert all("<b>" not in w and "](http" not in w for w in warnings)  # escaped: never HTML or a link
    # the rest of the link still applies, and the defaults stand in for what was ignored
    assert at.number_input(key="k").value == 10 and list(shown_columns(at)) == ["pooled", "mean"]
    assert at.query_params["k"] == "10" and at.query_params["reps"] == "pooled,mean"


# -- item 8: k is clamped with a note and applies at once -----------------------------------------------------

def test_changing_k_applies_at_once_and_out_of_range_is_clamped_with_a_note(five_index):
    at = search(app(five_index[0]), QUERY)
    at.number_input(key="k").set_value(3).run()  # no Search press
    assert not at.exception and {len(h) for h in shown_columns(at).values()} == {3}
    at.number_input(key="k").set_value(500).run()
    assert not at.exception and not at.error
    assert "Showing 100 documents per list: k is between 1 and 100." in texts(at.warning)
    assert {len(h) for h in shown_columns(at).values()} == {13}  # all the index holds, said so
    assert any("The index holds 13 documents" in c for c in texts(at.caption))
    at.number_input(key="k").set_value(0).run()
    assert "Showing 1 document per list: k is between 1 and 100." in texts(at.warning)
    assert {len(h) for h in shown_columns(at).values()} == {1} and at.query_params["k"] == "1"


# -- items 9 and 10: real ranks in the baseline; agreement at a fixed depth ------------------------------------

def test_agreement_does_not_change_with_k_and_equals_the_depth_10_figures(five_index):
    directory, encoder = five_index
    deep = deep_rankings(directory, encoder, QUERY)
    top = {r: ranking[:10] for r, ranking in deep.items()}
    at = search(app(directory), QUERY)
    seen = []
    for k in (3, 10, 50):
        at.number_input(key="k").set_value(k).run()
        assert not at.exception
        seen.append(metrics(at))
    assert seen[0]["Overlap@10"] == seen[1]["Overlap@10"] == seen[2]["Overlap@10"]
    assert seen[0]["RBO@10"] == seen[1]["RBO@10"] == seen[2]["RBO@10"]
    assert seen[0]["Overlap@10"] == [f"{len(set(top['mean']) & set(top['pooled']))} of 10"]
    assert seen[0]["RBO@10"] == [f"{rank_biased_overlap(top['mean'], top['pooled']):.2f}"]


def test_overlap_on_an_index_smaller_than_the_depth_counts_its_documents(tiny_index):
    at = link(tiny_index, q=QUERY)
    assert metrics(at)["Overlap@10"] == ["3 of 3"]  # three documents: both lists hold all of them


def test_arrows_give_the_real_rank_in_the_baseline_beyond_the_hits_shown(five_index):
    directory, encoder = five_index
    deep = deep_rankings(directory, encoder, QUERY)
    at = link(directory, q=QUERY, k="3", reps="pooled,max,first_last", baseline="pooled")
    columns = shown_columns(at)
    arrows = [arrow for r in ("max", "first_last") for _, _, arrow in columns[r]]
    assert arrows == [expected_arrow(i + 1, deep["pooled"], d, shown=3) for r in ("max", "first_last")
                      for i, (d, _, _) in enumerate(columns[r])]
    assert not any(a.startswith("not in top") for a in arrows)  # 13 documents: the baseline was searched through all
    assert any(explain.GLOSSARY["arrows"] in c for c in texts(at.caption))  # the arrows explained in place


# -- item 11: grades, unjudged hits, a threshold, the relevant documents a list missed -------------------------

def sample_grades(qid: str) -> dict[str, int]:
    with open(SAMPLE / "qrels" / "test.tsv", encoding="utf-8") as f:
        return {row["corpus-id"]: int(row["score"]) for row in csv.DictReader(f, delimiter="\t") if row["query-id"] == qid}


def badges(at: AppTest) -> list[str]:
    return [m.group(1) for t in hit_heads(at) if (m := re.fullmatch(r"\*\*\d+\.\*\* .* (:\w+-badge\[.*\])", t))]


def expected_badge(grade: int | None, threshold: int) -> str:
    if grade is None:
        return ":gray-badge[unjudged]"
    name = {0: "not relevant", 1: "related", 2: "highly relevant"}[grade]
    return f":green-badge[:material/check: grade {grade} · {name}]" if grade >= threshold else f":orange-badge[grade {grade} · {name}]"


def missed_shown(at: AppTest) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for column in at.columns:
        head = [t for t in texts(column.markdown) if t.startswith("**Relevant, not in ")]
        if len(head) == 1:
            r = re.match(r"\*\*Relevant, not in `(.+?)`", head[0]).group(1)
            out[r] = [(unescape(m.group(1)), m.group(2)) for c in texts(column.caption) for line in c.split("  \n")
                      if (m := re.fullmatch(r"(.+?) · .* · (rank \d+|not in top \d+)", line))]
    return out


def test_judged_hits_show_their_grade_unjudged_ones_say_so_and_the_threshold_applies(sample_index, bundled_encoder):
    directory = sample_index[0]
    grades = sample_grades("q08")
    deep = deep_rankings(directory, bundled_encoder, JUDGED_QUERY)
    at = link(directory, q=JUDGED_QUERY, k="5")
    assert not at.exception and not at.error
    for threshold in (1, 2):
        if threshold == 2:
            at.number_input(key="threshold").set_value(2).run()
            assert at.query_params["rel"] == "2"
        shown = [d for r in ("pooled", "mean") for d in deep[r][:5]]
        rows = [d for i in range(5) for d in (deep["pooled"][i], deep["mean"][i])]  # drawn rank by rank
        assert sorted(rows) == sorted(shown)
        assert badges(at) == [expected_badge(grades.get(d), threshold) for d in rows]
        relevant = {d: g for d, g in grades.items() if g >= threshold}
        expected = {r: sorted(((d, f"rank {deep[r].index(d) + 1}" if d in deep[r] else "not in top 100")
                               for d in relevant if d not in deep[r][:5])) for r in ("pooled", "mean")}
        assert {r: sorted(m) for r, m in missed_shown(at).items()} == expected
    assert any(c.startswith(":orange-badge[grade 1") for c in badges(at)) or 1 not in grades.values()
    # remembered: a link with rel=2 opens with that threshold
    again = link(directory, q=JUDGED_QUERY, rel="2")
    assert again.number_input(key="threshold").value == 2 and again.query_params["rel"] == "2"


def test_a_query_judging_many_documents_lists_the_nearest_ten_and_counts_the_rest(tiny_encoder, tmp_path):
    """msmarco-5k judges up to ~650 documents for one query: the list below each column names the nearest
    MISSED_LISTED (in one element, not one per document) and counts the others, ranked or not."""
    rng = np.random.default_rng(5)
    words = [w for w in WORDS if not w.startswith("#")]
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i:02d}": " ".join(rng.choice(words, size=12)) for i in range(16)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": QUERY}) + "\n", encoding="utf-8")
    grades = {d: 1 + i % 3 for i, d in enumerate(docs)}
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q1\t{d}\t{g}\n" for d, g in grades.items()), encoding="utf-8")
    directory = build_index(root, tmp_path / "ix", tiny_encoder, progress=False).index_dir
    deep = deep_rankings(directory, tiny_encoder, QUERY)
    at = link(directory, q=QUERY, k="3")
    assert not at.exception and not at.error
    for column in at.columns:
        if [t for t in texts(column.markdown) if t.startswith("**Relevant, not in ")]:
            assert len(column.caption) == 1  # the whole list is one element
    missed = missed_shown(at)
    for r in ("pooled", "mean"):
        nearest = deep[r][3:3 + MISSED_LISTED]  # every document is judged relevant: the nearest are the next ranks
        assert missed[r] == [(d, f"rank {deep[r].index(d) + 1}") for d in nearest]
        heads = [t for t in texts(at.markdown) if t.startswith(f"**Relevant, not in `{r}`'s top 3: ")]
        assert heads == [f"**Relevant, not in `{r}`'s top 3: 13**"]
    summaries = [line for c in texts(at.caption) for line in c.split("  \n") if line.startswith("and ")]
    assert summaries == ["and 3 more: 3 ranked within the first 16, 0 not"] * 2


def test_coming_back_from_another_page_keeps_the_query_and_k(tiny_index):
    """Streamlit drops a widget's value when another page runs; the page keeps its own copy of query and k."""
    at = search(app(tiny_index), QUERY)
    at.number_input(key="k").set_value(2).run()
    before = shown_columns(at)
    at.switch_page("views/evaluate.py").run()
    at.switch_page("views/search.py").run()
    assert not at.exception and not at.error
    assert at.text_input(key="query").value == QUERY and at.number_input(key="k").value == 2
    assert shown_columns(at) == before and {r: len(h) for r, h in before.items()} == {"pooled": 2, "mean": 2}
    assert at.query_params["q"] == QUERY and at.query_params["k"] == "2"
    # a query handed over by another page still wins over the kept one
    at.session_state["query"] = "bread and flour"
    at.switch_page("views/evaluate.py").run()
    at.session_state["query"] = "bread and flour"
    at.switch_page("views/search.py").run()
    assert at.text_input(key="query").value == "bread and flour" and at.query_params["q"] == "bread and flour"


# -- item 14: which chunk matched, and the whole document ---------------------------------------------------------

@pytest.fixture(scope="module")
def chunked_index(tmp_path_factory, tiny_bert):
    """Short documents and one of 150 words, several overlapping chunks of the tiny model's 62-token window."""
    rng = np.random.default_rng(3)
    words = [w for w in WORDS if not w.startswith("#")]
    rows = [{"_id": "long", "title": "a long one", "text": " ".join(rng.choice(words, size=150))},
            {"_id": "bee", "text": "the bees make honey in the hive"},
            {"_id": "bread", "text": "bake bread with flour and water"}]
    src = tmp_path_factory.mktemp("chunked") / "docs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert))
    return build_index(src, tmp_path_factory.mktemp("ix") / "chunked", encoder, overlap=8, progress=False).index_dir, encoder, rows[0]


def test_each_hit_names_its_chunk_and_opens_the_whole_document_once(chunked_index):
    directory, encoder, long_doc = chunked_index
    query = "comet planet orbit"
    hits = Searcher(directory, encoder).search(query, k=10).results
    reader = IndexReader(directory)
    chunks_of = reader.chunk_ids_by_doc()
    assert len(chunks_of["long"]) >= 3
    at = link(directory, q=query)
    captions = [c for c in hit_captions(at) if HIT_CAPTION.fullmatch(c)]
    for r in ("pooled", "mean"):
        for hit in hits[r]:
            position = chunks_of[hit.doc_id].index(hit.chunk_id) + 1
            assert any(c.startswith(f"`{r}` · {hit.doc_id} ·") and c.endswith(f" · chunk {position} of {len(chunks_of[hit.doc_id])}")
                       for c in captions)
    row = next(i for i, h in enumerate(hits["mean"]) if h.doc_id == "long")
    matched = hits["mean"][row]
    at.selectbox(key="document").select_index(document_option(at, "mean", row + 1)).run()
    assert not at.exception and not at.error
    shown = texts(at.markdown)
    start = next(i for i, t in enumerate(shown) if t.startswith("**Whole document** · a long one · long"))
    position = chunks_of["long"].index(matched.chunk_id) + 1
    assert f"Matched: chunk {position} of {len(chunks_of['long'])}" in texts(at.caption)
    assert any("chunks overlap" in c for c in texts(at.caption))
    # the document's text, once (the chunks overlap; their overlap is not repeated): the text before the matched
    # chunk (none for the first), the chunk on its own, the text after it (none for the last)
    content = f"{long_doc['title']} {long_doc['text']}"
    n = 1 + (position > 1) + (position < len(chunks_of["long"]))
    squeeze = lambda s: "".join(unescape(s).split())  # noqa: E731
    assert squeeze("".join(shown[start + 1 : start + 1 + n])) == squeeze(content)
    chunk_text = reader.chunks([matched.chunk_id])[matched.chunk_id].text
    assert squeeze(shown[start + 1 + (position > 1)]) == squeeze(chunk_text)
    at.button(key="close-document").click().run()
    assert not any(t.startswith("**Whole document**") for t in texts(at.markdown))
    assert at.selectbox(key="document").value == "" and at.selectbox(key="document").options[0] == "—"


# -- item 18: a query cut to the model's window; pairs of hits on a narrow screen ------------------------------

def test_a_query_longer_than_the_window_is_said_to_be_cut(tiny_index, tiny_bert):
    from transformers import AutoTokenizer

    query = "the bees make honey in the hive " * 15
    tokens = len(AutoTokenizer.from_pretrained(tiny_bert)(query, add_special_tokens=False)["input_ids"])
    window = 64 - 2  # the tiny model's 64 positions, less [CLS] and [SEP]
    assert tokens > window
    at = link(tiny_index, q=query)
    assert not at.exception and not at.error
    assert any(f"the query has {tokens} tokens; the model reads at most {window}" in w for w in texts(at.warning))
    assert not link(tiny_index, q="the bees make honey").warning


def test_hits_are_drawn_rank_by_rank_so_a_narrow_screen_stacks_them_in_pairs(five_index):
    at = link(five_index[0], q=QUERY, k="4", reps="pooled,max,mean", baseline="max")
    order = [HIT_CAPTION.fullmatch(c).group(1) for c in hit_captions(at) if HIT_CAPTION.fullmatch(c)]
    assert order == ["pooled", "max", "mean"] * 4


# -- item 13 on this page: each figure explained in place -------------------------------------------------------

def test_columns_agreement_and_scores_are_explained_in_place(tiny_index):
    at = link(tiny_index, q=QUERY)
    assert [s.proto.help for s in at.subheader] == [explain.representation("pooled"), explain.representation("mean")]
    helps = {m.label: m.help for m in at.metric}
    assert explain.GLOSSARY["overlap"] in helps["Overlap@10"] and explain.GLOSSARY["rbo"] in helps["RBO@10"]
    assert explain.GLOSSARY["cosine"] in at.caption[0].value
    assert explain.GLOSSARY["chunk"] in texts(at.caption)  # once, above the hits that say "chunk i of n"
    assert len(hit_captions(at)) == 6 and all(HIT_CAPTION.fullmatch(c) for c in hit_captions(at))


def test_content_span_reads_any_span_of_title_and_text(chunked_index):
    directory, _, long_doc = chunked_index
    reader = IndexReader(directory)
    content = f"{long_doc['title']} {long_doc['text']}"
    for start, end in ((0, 5), (3, 40), (len(long_doc["title"]), len(long_doc["title"]) + 7), (100, 10**9), (-5, 3), (50, 40)):
        assert reader.content_span("long", start, end) == (content[max(0, start):end], len(content))
    assert reader.content_span("bee", 0, 10) == ("the bees m", len("the bees make honey in the hive"))  # no title
    assert reader.content_span("nope", 0, 10) is None
