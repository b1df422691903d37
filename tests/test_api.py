"""The library's face (issue 13, item 2): the README's example runs as written, records from memory are a source like
any file, a list resumes a killed build, and a wrong choice names the valid ones."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest

from conftest import ROOT, SAMPLE
from indexer import Document, Index, cli, pipeline
from indexer.pipeline import build_index
from indexer.store import IndexReader

RECORDS = [
    {"_id": "bread", "title": "Bread", "text": "Homemade bread comes out flat when the dough is not kneaded enough.",
     "tags": ["baking", "dough"]},
    {"_id": "tides", "text": "Tides rise and fall twice a day because of the moon's gravity."},
    {"_id": "empty", "text": "   "},                                     # skipped: blank text
    {"_id": 7, "title": None, "text": "Volcanoes erupt when pressure pushes magma up to the surface."},
    {"_id": "bad", "text": "a lone surrogate \ud800 in the text"},       # skipped: not valid Unicode
    {"text": "no id at all"},                                            # skipped: no id
    {"_id": "tides", "text": "the same id again"},                       # skipped: duplicate id
    {"_id": "nested", "text": "deep", "meta": {"a": {"b": [1, 2, {"c": "d"}]}}},
]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- library-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md has no library example"
    return match.group(1)


def test_the_readme_example_runs_and_evaluates_as_the_cli_does(tmp_path, monkeypatch):
    # no capsys here: a logging handler made while the model loads would keep its stream after the test closes it
    shutil.copytree(SAMPLE, tmp_path / "data" / "sample")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(readme_example(), "README.md example", "exec"), scope)
    assert "1 added" in printed.getvalue()
    # the facade's numbers are the CLI's, on the same index and labels
    done = subprocess.run([sys.executable, "-m", "indexer", "evaluate", "--index", "indexes/demo", "--queries",
                           "data/sample/queries.jsonl", "--qrels", "data/sample/qrels/test.tsv", "--json", "--no-progress"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert scope["report"].to_dict()["metrics"] == json.loads(done.stdout)["metrics"]
    with Index.open("indexes/demo") as index:  # the added record is searchable
        assert all(ranking[0].doc_id == "n1" for ranking in index.search("a starter of flour and water", k=1).values())


def test_records_from_memory_are_checked_and_indexed_as_the_same_jsonl_file_is(tmp_path, tiny_bert):
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    from_file = Index.build(jsonl, tmp_path / "file", model=str(tiny_bert))
    from_memory = Index.build(RECORDS, tmp_path / "memory", model=str(tiny_bert))
    # the same records skipped for the same reasons, named by position instead of line
    assert ([(i.line, i.reason) for i in from_memory.summary.issues]
            == [(i.line, i.reason.replace(str(jsonl), "records")) for i in from_file.summary.issues])
    assert {i.line for i in from_memory.summary.issues} == {3, 5, 6, 7} and {i.path for i in from_memory.summary.issues} == {"records"}
    assert from_memory.summary.documents == from_file.summary.documents == 4
    # the same chunks, metadata and vectors
    with closing(IndexReader(tmp_path / "file")) as a, closing(IndexReader(tmp_path / "memory")) as b:
        assert a.doc_ids() == b.doc_ids() == {"bread", "tides", "7", "nested"}
        ids = range(a.n_chunks)
        assert a.n_chunks == b.n_chunks and a.chunks(ids) == b.chunks(ids)
        for r in a.representations:
            assert np.array_equal(a.vectors(r, ids), b.vectors(r, ids))
    hits = from_memory.search("why is my bread flat", k=2)
    assert set(hits) == {"pooled", "mean"} and all(len(ranking) == 2 for ranking in hits.values())
    from_file.close(), from_memory.close()


def test_documents_and_iterators_are_sources_and_add_updates_by_content(tmp_path, tiny_bert):
    docs = (Document(f"d{i}", f"document number {i} about topic {i % 3}", title=f"T{i}") for i in range(6))
    with Index.build(docs, tmp_path / "ix", model=str(tiny_bert), representations="mean,cls") as index:
        assert index.representations == ("mean", "cls") and index.summary.documents == 6
        summary = index.add([Document("d0", "document number 0 about topic 0", title="T0"),   # unchanged
                             {"_id": "d1", "text": "a changed text"}, {"_id": "new", "text": "a new one"}])
        assert (summary.unchanged, summary.updated, summary.added) == (1, 1, 1)
        assert index.manifest.counts.documents == 7
        assert "new" in {h.doc_id for h in index.search("a new one", k=7)["mean"]}  # served at once
        assert index.delete(["new"]).removed == ["new"]
        assert "new" not in {h.doc_id for h in index.search("a new one", k=7)["mean"]}


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("replayable", [True, False])
def test_a_killed_build_from_a_list_resumes_and_from_an_iterator_starts_over(tmp_path, tiny_encoder, monkeypatch, replayable):
    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 4)
    records = [{"_id": f"r{i}", "text": f"record {i} says something about {i * 7 % 11}"} for i in range(20)]

    def source():
        return list(records) if replayable else iter(records)

    def stop_after_two_batches(done, total):
        if done >= 8:
            raise Interrupted

    with pytest.raises(Interrupted):
        build_index(source(), tmp_path / "ix", tiny_encoder, progress=False, on_progress=stop_after_two_batches)
    summary = build_index(source(), tmp_path / "ix", tiny_encoder, progress=False)
    assert summary.resumed_at == (8 if replayable else 0)
    assert summary.processed == (12 if replayable else 20) and summary.documents == 20
    reference = build_index(list(records), tmp_path / "whole", tiny_encoder, progress=False)
    with closing(IndexReader(tmp_path / "ix")) as a, closing(IndexReader(tmp_path / "whole")) as b:  # the same either way
        assert reference.documents == 20 and a.n_chunks == b.n_chunks == 20
        for r in a.representations:
            assert np.array_equal(a.vectors(r, range(20)), b.vectors(r, range(20)))


def test_evaluate_takes_labels_from_memory_with_the_checks_of_the_files(tmp_path, tiny_bert):
    with Index.build(RECORDS, tmp_path / "ix", model=str(tiny_bert)) as index:
        report = index.evaluate({"q1": "bread", "q2": "  ", "q3": "volcano"},
                                {"q1": {"bread": 1, "nowhere": 1}, "q3": {"7": 2, "tides": "high"}, "q9": {"tides": 1}})
        reasons = [str(issue) for issue in report.issues]
        assert "records:2: text field 'text' is empty" in reasons  # the blank query
        assert any("unknown document id 'nowhere'" in r for r in reasons)
        assert any("score must be an integer" in r and "'high'" in r for r in reasons)
        assert any("unknown query id 'q9'" in r for r in reasons)
        assert report.to_dict()["queries_evaluated"] == 2


@pytest.mark.parametrize("call, named", [
    (lambda d, m: Index.build(RECORDS, d, model=m, index_type="annoy"), ["'annoy'", "flat", "hnsw", "ivf"]),
    (lambda d, m: Index.build(SAMPLE, d, model=m, format="pdf"), ["'pdf'", "folder", "jsonl"]),
    (lambda d, m: Index.build(RECORDS, d, model=m, format="jsonl"), ["'jsonl'", "'auto'", "'records'"]),
    (lambda d, m: Index.build(RECORDS, d, model=m, representations="meen"), ["'meen'", "pooled", "mean"]),
    (lambda d, m: Index.build({"_id": "one", "text": "a single dict"}, d, model=m), ["list", "dict"]),
])
def test_a_wrong_choice_raises_value_error_naming_the_valid_ones(tmp_path, tiny_bert, call, named):
    with pytest.raises(ValueError) as caught:
        call(tmp_path / "ix", str(tiny_bert))
    assert all(word in str(caught.value) for word in named), str(caught.value)
    assert not (tmp_path / "ix").exists()  # refused before anything was written


def test_importing_the_package_stays_light():
    """`import indexer` (every CLI start) loads no model stack; Index loads it on first use."""
    code = "import sys, indexer; assert 'torch' not in sys.modules; indexer.Index; assert 'torch' in sys.modules"
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_cli_names_a_missing_source_in_one_line(capsys):
    """The `records` format is the library's: the CLI still refuses a source it does not know, in one line."""
    assert cli.main(["build", "no/such/folder", "--index", "x"]) == 2
    assert capsys.readouterr().err == "error: no/such/folder: does not exist\n"


def test_what_a_review_found_is_refused_or_skipped_with_a_reason(tmp_path, tiny_bert):
    """NaN in metadata (SQLite's JSON functions then failed every search reaching it), a Document whose metadata is
    not a dict, a DataFrame (it iterates over column names), a string of ids to delete ("12" deleted "1" and "2"),
    a k that is not a whole number, and an Index used after close."""
    import pandas as pd

    records = [{"_id": "1", "text": "one"}, {"_id": "2", "text": "two"}, {"_id": "12", "text": "twelve"},
               {"_id": "nan", "text": "not a number", "rating": float("nan")},
               Document("none", "metadata of None", metadata=None)]
    index = Index.build(records, tmp_path / "ix", model=str(tiny_bert))
    assert [(i.line, i.reason) for i in index.summary.issues] == [
        (4, "field 'rating' is nan, which JSON cannot hold"), (5, "a Document's metadata must be a dict, got NoneType")]
    with pytest.raises(ValueError, match="list of strings"):
        index.delete("12")
    assert index.manifest.counts.documents == 3
    assert {h.doc_id for h in index.search("twelve", k=3)["mean"]} == {"1", "2", "12"}
    for k in (2.5, "3", True, None):
        with pytest.raises(ValueError, match="whole number"):
            index.search("twelve", k=k)
    index.close()
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.search("twelve")
    with pytest.raises(ValueError, match="to_dict"):
        Index.build(pd.DataFrame(records[:3]), tmp_path / "df", model=str(tiny_bert))


def test_judgements_from_memory_take_whole_number_ids_as_a_file_would(tmp_path, tiny_bert):
    with Index.build([{"_id": 1, "text": "one"}, {"_id": 2, "text": "two"}], tmp_path / "ix", model=str(tiny_bert)) as index:
        report = index.evaluate({1: "one", 2: "two"}, {1: {1: 1}, 2: ["2"]})
    assert report.to_dict()["queries_evaluated"] == 1
    assert [str(i) for i in report.issues] == ["records:2: the judgements of query '2' must be a mapping {document id: grade}, got list"]


def test_an_open_index_follows_a_rebuild_with_another_length(tmp_path, tiny_bert):
    records = [{"_id": f"d{i}", "text": f"document {i} " + "word " * 30} for i in range(4)]
    Index.build(records, tmp_path / "ix", model=str(tiny_bert)).close()
    with Index.open(tmp_path / "ix") as index:
        assert index._searcher.encoder.max_tokens == 64
        Index.build(records, tmp_path / "ix", model=str(tiny_bert), max_tokens=16, overwrite=True).close()
        assert set(index.search("document", k=4)["mean"][i].doc_id for i in range(4)) == {"d0", "d1", "d2", "d3"}
        assert index._searcher.encoder.max_tokens == 16 and index.manifest.chunking.max_tokens == 16
        assert index.add([{"_id": "new", "text": "one more"}]).added == 1


def test_delete_takes_any_iterable_of_ids_once_and_refuses_what_is_not_one(tmp_path, tiny_bert):
    with Index.build([{"_id": i, "text": f"text {i}"} for i in ("a", "b", "c")], tmp_path / "ix", model=str(tiny_bert)) as index:
        assert index.delete(i for i in ("a", "zz")).removed == ["a"]  # a generator: checked and used, read once
        for wrong in (None, 12, ["b", 3]):
            with pytest.raises(ValueError, match="list of strings"):
                index.delete(wrong)
        assert index.manifest.counts.documents == 2
