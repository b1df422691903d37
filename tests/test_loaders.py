"""Tests for indexer.loaders: every format's happy path and every bad input."""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from indexer.loaders import (
    Document,
    LoadIssue,
    LoadReport,
    SourceError,
    detect_format,
    format_bytes,
    iter_documents,
    load_qrels,
    load_queries,
    open_beir,
)


def load(path: Path, **kwargs) -> tuple[list[Document], LoadReport]:
    report = LoadReport()
    docs = list(iter_documents(path, report, **kwargs))
    assert report.documents == len(docs)
    return docs, report


def ids(docs: list[Document]) -> list[str]:
    return [d.doc_id for d in docs]


def write_jsonl(path: Path, *lines: object) -> Path:
    """Write one line per item: dicts as JSON, strings verbatim."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
    return path


def only_issue(report: LoadReport) -> LoadIssue:
    assert len(report.issues) == 1, report.issues
    assert report.skipped == 1
    return report.issues[0]


# -- Document / LoadIssue / LoadReport ------------------------------------------------


def test_content_joins_title_and_text_beir_style():
    assert Document("1", "body", title="Title").content == "Title body"
    assert Document("1", "body").content == "body"


def test_load_issue_str():
    assert str(LoadIssue("a.jsonl", 3, "bad")) == "a.jsonl:3: bad"
    assert str(LoadIssue("a.txt", None, "bad")) == "a.txt: bad"


def test_skip_records_and_logs(caplog):
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="indexer.loaders"):
        report.skip(Path("x.csv"), 2, "broken")
    assert report.issues == [LoadIssue("x.csv", 2, "broken")]
    assert "x.csv:2: broken" in caplog.text


# -- format detection ---------------------------------------------------------------


def test_detect_format(tmp_path):
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text("")
    (tmp_path / "plain").mkdir()
    for name in ("a.jsonl", "b.NDJSON", "c.csv", "d.tsv", "e.odt", "f.pdf"):
        (tmp_path / name).write_text("")
    assert detect_format(tmp_path / "beir") == "beir"
    assert detect_format(tmp_path / "plain") == "folder"
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    assert detect_format(tmp_path / "b.NDJSON") == "jsonl"
    assert detect_format(tmp_path / "c.csv") == "csv"
    assert detect_format(tmp_path / "d.tsv") == "csv"
    with pytest.raises(SourceError, match=r"e\.odt.*\.pdf/\.docx.*\.jsonl.*\.csv"):
        detect_format(tmp_path / "e.odt")
    with pytest.raises(SourceError, match=r"f\.pdf: a \.pdf file is read as part of a folder source"):
        detect_format(tmp_path / "f.pdf")


def test_missing_path_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        iter_documents(tmp_path / "nope", LoadReport())
    with pytest.raises(SourceError, match="does not exist"):
        iter_documents(tmp_path / "nope.jsonl", LoadReport(), format="jsonl")


def test_unknown_format_is_source_error(tmp_path):
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(SourceError, match="data.parquet"):
        iter_documents(tmp_path / "data.parquet", LoadReport())


def test_invalid_format_argument_lists_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown format 'xml'; valid: auto, folder, jsonl, csv, beir$"):
        iter_documents(tmp_path, LoadReport(), format="xml")  # type: ignore[arg-type]


def test_forced_format_must_match_path_type(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        iter_documents(write_jsonl(tmp_path / "a.jsonl"), LoadReport(), format="folder")
    with pytest.raises(SourceError, match="not a file"):
        iter_documents(tmp_path, LoadReport(), format="jsonl")


def test_iter_documents_is_lazy(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", *({"_id": str(i), "text": f"doc {i}"} for i in range(1000)))
    report = LoadReport()
    docs = iter_documents(path, report)
    assert inspect.isgenerator(docs)
    assert report.documents == 0
    assert next(docs).doc_id == "0"
    assert report.documents == 1
    docs.close()


# -- folder ---------------------------------------------------------------------------


def test_folder_happy_path(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "b.txt").write_text("plain text", "utf-8")
    (tmp_path / "a.md").write_text("# Heading\n\nSome *markdown*.", "utf-8")
    (tmp_path / "sub" / "c.markdown").write_text("more", "utf-8")
    (tmp_path / "sub" / "deeper" / "d.TXT").write_text("deep", "utf-8")
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "notes.odt").write_bytes(b"PK")
    (tmp_path / ".hidden.txt").write_text("secret", "utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("ref", "utf-8")
    docs, report = load(tmp_path)
    assert ids(docs) == ["a.md", "b.txt", "sub/c.markdown", "sub/deeper/d.TXT"]
    assert docs[0].text == "# Heading\n\nSome *markdown*." and docs[0].title == ""
    assert docs[1].source == str(tmp_path / "b.txt")
    assert report.ignored_files == 2
    assert report.issues == []


def test_folder_html_title_and_visible_text(tmp_path):
    (tmp_path / "page.html").write_text(
        """<!DOCTYPE html><html><head><title>  My
        Page </title><style>body { color: red }</style><script>var secret = 1 < 2;</script></head>
        <body><!-- a comment --><h1>Heading</h1><p>First   paragraph
        continues <b>bold</b> here.<br>After break</p>
        <noscript>enable js</noscript><template><p>hidden template</p></template>
        <ul><li>one</li><li>two</li></ul><script>alert("x")</script></body></html>""",
        "utf-8",
    )
    (tmp_path / "frag.htm").write_text("<div>Just a <i>fragment</i></div>", "utf-8")
    docs, report = load(tmp_path)
    assert report.issues == []
    frag, page = docs
    assert page.title == "My Page"
    assert page.text == "Heading\nFirst paragraph continues bold here.\nAfter break\none\ntwo"
    for leftover in ("<", ">", "secret", "alert", "color", "enable js", "hidden template", "a comment"):
        assert leftover not in page.text
    assert page.content == "My Page " + page.text
    assert (frag.title, frag.text) == ("", "Just a fragment")


def test_folder_utf8_bom_is_accepted(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    docs, report = load(tmp_path)
    assert [d.text for d in docs] == ["hello"] and report.issues == []


def test_folder_undecodable_file_reports_offset_and_line(tmp_path):
    (tmp_path / "a.txt").write_text("good", "utf-8")
    (tmp_path / "b.txt").write_bytes(b"line one\nline two\nbad \xff here\n")
    (tmp_path / "c.txt").write_text("also good", "utf-8")
    docs, report = load(tmp_path)
    assert ids(docs) == ["a.txt", "c.txt"]
    issue = only_issue(report)
    assert issue.path == str(tmp_path / "b.txt")
    assert issue.line == 3
    assert issue.reason == "not valid UTF-8 at byte 22 (line 3)"


def test_folder_binary_file(tmp_path):
    (tmp_path / "a.txt").write_text("good", "utf-8")
    (tmp_path / "blob.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    docs, report = load(tmp_path)
    assert ids(docs) == ["a.txt"]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(tmp_path / "blob.txt"), None)
    assert issue.reason == "binary file, skipped"


@pytest.mark.parametrize(
    "content", ["", "  \n\t\n", "<html><head><title>T</title></head><body> <script>x()</script></body>"]
)
def test_folder_empty_document(tmp_path, content):
    (tmp_path / "a.txt").write_text("good", "utf-8")
    (tmp_path / "empty.html").write_text(content, "utf-8")
    docs, report = load(tmp_path)
    assert ids(docs) == ["a.txt"]
    issue = only_issue(report)
    assert (issue.path, issue.line, issue.reason) == (str(tmp_path / "empty.html"), None, "empty document")


def test_folder_oversize_file(tmp_path):
    (tmp_path / "big.txt").write_text("x" * 2500, "utf-8")
    (tmp_path / "small.txt").write_text("fits", "utf-8")
    docs, report = load(tmp_path, max_document_bytes=1000)
    assert ids(docs) == ["small.txt"]
    issue = only_issue(report)
    assert issue.path == str(tmp_path / "big.txt") and issue.line is None
    assert issue.reason == "file is 2.5 kB, larger than the 1 kB limit"


def test_sizes_are_shown_in_decimal_units_by_one_function(monkeypatch):
    """One convention for every size a message shows, SI (1 kB = 1000 bytes), from one function (format_bytes): a
    binary mebibyte is 1.05 MB, in the app's upload limits as in the loaders' (issue 13, item 4)."""
    from types import SimpleNamespace

    from indexer.app import build, ui

    assert [format_bytes(n) for n in (999, 1000, 1024, 2**20, 1_044_381_696)] == [
        "999 bytes", "1 kB", "1.02 kB", "1.05 MB", "1.04 GB"]
    monkeypatch.setattr(ui, "UPLOAD_LIMIT_MB", 1)
    monkeypatch.setattr(ui, "BUILD_MAX_TOTAL_MB", 1)
    mebibyte = SimpleNamespace(name="a.txt", size=2**20)
    assert build.upload_problem([mebibyte]) == "“a.txt” holds 1.05 MB; a file may hold at most 1 MB."
    monkeypatch.setattr(ui, "UPLOAD_LIMIT_MB", 2)
    assert build.upload_problem([mebibyte]) == "The files hold 1.05 MB together; a build takes at most 1 MB."


def test_folder_symlink_loop_is_not_followed(tmp_path):
    (tmp_path / "a.txt").write_text("good", "utf-8")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    docs, report = load(tmp_path)
    assert ids(docs) == ["a.txt"] and report.issues == []


# -- JSONL ------------------------------------------------------------------------------


def test_jsonl_happy_path_keeps_metadata(tmp_path):
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        {"_id": "d1", "title": "T1", "text": "first", "year": 2020, "metadata": {"url": "u", "year": 1}},
        "",
        {"id": 7, "text": "second", "tags": ["a", "b"]},
        {"_id": "d3", "text": "third", "title": None, "metadata": "not a dict"},
    )
    docs, report = load(path)
    assert report.issues == []
    assert ids(docs) == ["d1", "7", "d3"]
    assert docs[0].title == "T1" and docs[0].content == "T1 first"
    assert docs[0].metadata == {"url": "u", "year": 2020}
    assert docs[1].metadata == {"tags": ["a", "b"]} and docs[1].title == ""
    assert docs[2].metadata == {"metadata": "not a dict"}
    assert docs[0].source == f"{path}:1" and docs[1].source == f"{path}:3"


def test_jsonl_custom_field_names(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", {"key": "k1", "body": "text here", "name": "N", "text": "other"})
    (doc,), _ = load(path, id_column="key", text_column="body", title_column="name")
    assert (doc.doc_id, doc.text, doc.title, doc.metadata) == ("k1", "text here", "N", {"text": "other"})


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"_id": "x", "text": ', "malformed JSON: Expecting value at column 21"),
        ('["_id", "text"]', "expected a JSON object, got list"),
        ('{"text": "no id"}', "missing id field '_id' (or 'id')"),
        ('{"_id": true, "text": "bool id"}', "field '_id' must be a string or integer, got bool"),
        ('{"_id": "", "text": "empty id"}', "field '_id' is empty"),
        ('{"_id": "x"}', "text field 'text' is missing"),
        ('{"_id": "x", "text": "   "}', "text field 'text' is empty"),
        ('{"_id": "x", "text": 5}', "text field 'text' must be a string, got int"),
        ('{"_id": "x", "text": "t", "title": 3}', "title field 'title' must be a string, got int"),
    ],
)
def test_jsonl_bad_record_is_reported_and_rest_kept(tmp_path, bad_line, reason):
    good_a, good_b = {"_id": "a", "text": "A"}, {"_id": "b", "text": "B"}
    path = write_jsonl(tmp_path / "docs.jsonl", good_a, bad_line, good_b)
    docs, report = load(path)
    assert ids(docs) == ["a", "b"]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(path), 2)
    assert issue.reason.startswith(reason)


def test_jsonl_undecodable_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    data = (  # a BOM, then an invalid sequence on line 2
        b'\xef\xbb\xbf{"_id": "a", "text": "A"}\n'
        b'{"_id": "b", "text": "\xc3\x28"}\n'
        b'{"_id": "c", "text": "C"}\n'
    )
    path.write_bytes(data)
    docs, report = load(path)
    assert ids(docs) == ["a", "c"]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(path), 2)
    offset = data.index(b"\xc3\x28")
    assert issue.reason == f"not valid UTF-8 at byte {offset}"


def test_jsonl_oversize_record(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", {"_id": "a", "text": "é" * 600}, {"_id": "b", "text": "ok"})
    docs, report = load(path, max_document_bytes=1000)
    assert ids(docs) == ["b"]
    issue = only_issue(report)
    assert (issue.line, issue.reason) == (1, "text is 1.2 kB, larger than the 1 kB limit")


def test_duplicate_ids_keep_first(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        {"_id": "a", "text": "first"},
        {"_id": "b", "text": "B"},
        {"_id": "a", "text": "again"},
    )
    docs, report = load(path)
    assert [(d.doc_id, d.text) for d in docs] == [("a", "first"), ("b", "B")]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(path), 3)
    assert issue.reason == f"duplicate id 'a' (first seen at {path}:1)"


# -- CSV / TSV ------------------------------------------------------------------------------


def test_csv_happy_path_keeps_metadata(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,title,text,lang\n1,One,"first, with comma",en\n\n2,,"multi\nline",de\n', "utf-8")
    docs, report = load(path)
    assert report.issues == []
    assert ids(docs) == ["1", "2"]
    assert (docs[0].title, docs[0].text, docs[0].metadata) == ("One", "first, with comma", {"lang": "en"})
    assert docs[1].text == "multi\nline" and docs[1].source == f"{path}:4"


def test_tsv_without_id_or_title_columns(tmp_path):
    path = tmp_path / "docs.tsv"
    path.write_bytes(b"\xef\xbb\xbftext\tsource\r\nalpha, beta\tweb\r\ngamma\tbook\r\n")
    docs, report = load(path)
    assert report.issues == []
    assert ids(docs) == ["row-2", "row-3"]
    assert [(d.text, d.title, d.metadata) for d in docs] == [
        ("alpha, beta", "", {"source": "web"}),
        ("gamma", "", {"source": "book"}),
    ]


def test_csv_custom_columns(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("key,heading,body,id\nk1,H1,B1,x\nk2,H2,B2,y\n", "utf-8")
    docs, report = load(path, id_column="key", title_column="heading", text_column="body")
    assert report.issues == []
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("k1", "H1", "B1", {"id": "x"}),
        ("k2", "H2", "B2", {"id": "y"}),
    ]
    docs, _ = load(path, id_column="key", title_column=None, text_column="body")
    assert docs[0].title == "" and docs[0].metadata == {"heading": "H1", "id": "x"}


def test_csv_missing_text_column_lists_columns(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,body\n1,x\n", "utf-8")
    with pytest.raises(SourceError, match=r"docs\.csv.*'text'.*columns found: id, body"):
        iter_documents(path, LoadReport())
    with pytest.raises(SourceError, match=r"'key'.*columns found: id, body"):
        iter_documents(path, LoadReport(), id_column="key", text_column="body")


def test_csv_empty_file_is_source_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="header row"):
        iter_documents(tmp_path / "empty.csv", LoadReport())


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ("9,too,many,fields", "expected 2 fields, got 4"),
        ("9", "expected 2 fields, got 1"),
        ("9,  ", "empty text in column 'text'"),
        (",nine", "empty id in column 'id'"),
    ],
)
def test_csv_bad_row_is_reported_and_rest_kept(tmp_path, bad_row, reason):
    path = tmp_path / "docs.csv"
    path.write_text(f'id,text\n1,"one\nspanning"\n{bad_row}\n3,three\n', "utf-8")
    docs, report = load(path)
    assert ids(docs) == ["1", "3"]
    issue = only_issue(report)
    assert (issue.path, issue.line, issue.reason) == (str(path), 4, reason)


def test_csv_undecodable_line(tmp_path):
    path = tmp_path / "docs.csv"
    data = b'id,text\n1,one\n2,"bad\n\xff inside"\n3,three\n'
    path.write_bytes(data)
    docs, report = load(path)
    assert ids(docs) == ["1", "3"]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(path), 4)
    offset = data.index(b"\xff")
    assert issue.reason == f"not valid UTF-8 at byte {offset}"


def test_csv_undecodable_header_is_source_error(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_bytes(b"id,t\xffext\n1,one\n")
    with pytest.raises(SourceError, match=r"docs\.csv:1: header row is not valid UTF-8 at byte 4"):
        iter_documents(path, LoadReport())


def test_csv_bad_quoting_is_reported_and_rest_kept(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,text\n1,one\n2,"a"b\n3,three\n4,"never closed\n', "utf-8")
    docs, report = load(path)
    assert ids(docs) == ["1", "3"]
    assert [(i.path, i.line) for i in report.issues] == [(str(path), 3), (str(path), 5)]
    assert all(i.reason.startswith("malformed CSV") for i in report.issues)


def test_csv_duplicate_id(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n1,one\n1,uno\n2,two\n", "utf-8")
    docs, report = load(path)
    assert ids(docs) == ["1", "2"]
    issue = only_issue(report)
    assert (issue.line, issue.reason) == (3, f"duplicate id '1' (first seen at {path}:2)")


def test_csv_long_field_is_accepted(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n1," + "x" * 200_000 + "\n", "utf-8")
    docs, report = load(path)
    assert len(docs[0].text) == 200_000 and report.issues == []


# -- BEIR -----------------------------------------------------------------------------------


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    corpus = [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}]
    write_jsonl(tmp_path / "corpus.jsonl", *corpus)
    write_jsonl(tmp_path / "queries.jsonl", {"_id": "q1", "text": "first query"}, {"_id": 2, "text": "2nd"})
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n2\td2\t2\n", "utf-8")
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n", "utf-8")
    return tmp_path


def test_beir_corpus(beir):
    docs, report = load(beir)
    assert report.issues == []
    assert [(d.doc_id, d.content) for d in docs] == [("d1", "T one"), ("d2", "two")]


def test_open_beir_lists_files(beir):
    ds = open_beir(beir)
    assert (ds.root, ds.corpus, ds.queries) == (beir, beir / "corpus.jsonl", beir / "queries.jsonl")
    assert ds.qrels == {"dev": beir / "qrels" / "dev.tsv", "test": beir / "qrels" / "test.tsv"}


def test_open_beir_needs_corpus(tmp_path):
    write_jsonl(tmp_path / "queries.jsonl", {"_id": "q", "text": "t"})
    with pytest.raises(SourceError, match="corpus.jsonl"):
        open_beir(tmp_path)
    with pytest.raises(SourceError, match="corpus.jsonl"):
        iter_documents(tmp_path, LoadReport(), format="beir")


def test_load_queries(beir):
    report = LoadReport()
    assert load_queries(beir / "queries.jsonl", report) == {"q1": "first query", "2": "2nd"}
    assert report.issues == []


def test_load_queries_malformed_line(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl", {"_id": "q1", "text": "a"}, "{oops", {"_id": "q3"}, {"_id": "q4", "text": "d"}
    )
    report = LoadReport()
    assert load_queries(path, report) == {"q1": "a", "q4": "d"}
    assert [(i.path, i.line) for i in report.issues] == [(str(path), 2), (str(path), 3)]
    assert report.issues[0].reason.startswith("malformed JSON")
    assert "text" in report.issues[1].reason


def test_load_qrels(beir):
    report = LoadReport()
    assert load_qrels(beir / "qrels" / "test.tsv", report) == {"q1": {"d1": 1}, "2": {"d2": 2}}
    assert report.issues == []


def test_load_qrels_bad_lines(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\nq2\td1\thigh\n\nq2\td3\t0\n", "utf-8")
    report = LoadReport()
    assert load_qrels(path, report) == {"q1": {"d1": 1}, "q2": {"d3": 0}}
    assert [(i.path, i.line) for i in report.issues] == [(str(path), 3), (str(path), 4)]
    assert "expected 3" in report.issues[0].reason and "got 2" in report.issues[0].reason
    assert report.issues[1].reason == "score must be an integer from -1000 to 1000, got 'high'"


def test_load_missing_beir_files_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_queries(tmp_path / "queries.jsonl", LoadReport())
    with pytest.raises(SourceError, match="does not exist"):
        load_qrels(tmp_path / "test.tsv", LoadReport())


def test_load_qrels_reports_unknown_ids_with_their_line(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t2\nq1\tdX\t2\nq1\td2\t0\n", encoding="utf-8")
    report = LoadReport()
    qrels = load_qrels(path, report, known_queries={"q1"}, known_documents={"d1", "d2"})
    assert qrels == {"q1": {"d1": 1, "d2": 0}}
    assert [str(i) for i in report.issues] == [
        f"{path}:3: unknown query id 'q9' (not in the queries file)",
        f"{path}:4: unknown document id 'dX' (not in the index)",
    ]


# -- issue 10: hardening ----------------------------------------------------------------

SURROGATE = "\\ud800"  # the JSON escape, as it appears in a file


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ('{"_id": "2", "text": "bad %s here"}', "'text'"),
        ('{"_id": "2", "title": "%s", "text": "t"}', "'title'"),
        ('{"_id": "x%s", "text": "t"}', "'_id'"),
        ('{"_id": "2", "text": "t", "lang": "%s"}', "'lang'"),
        ('{"_id": "2", "text": "t", "metadata": {"tags": ["ok", "%s"]}}', "'metadata.tags[1]'"),
        ('{"_id": "2", "text": "t", "k%s": 1}', "a key at the top level"),
        ('{"_id": "2", "text": "t", "metadata": {"k%s": 1}}', "a key in field 'metadata'"),
    ],
)
def test_jsonl_lone_surrogate_is_one_skipped_record_naming_the_field(tmp_path, record, field):
    path = write_jsonl(tmp_path / "docs.jsonl", {"_id": "1", "text": "one"}, record % SURROGATE, {"_id": "3", "text": "3"})
    docs, report = load(path)
    assert ids(docs) == ["1", "3"]
    issue = only_issue(report)
    assert (issue.path, issue.line) == (str(path), 2)
    assert field in issue.reason and "lone surrogate" in issue.reason
    str(issue).encode("utf-8")  # the message itself prints


def test_load_queries_lone_surrogate_and_deep_nesting_are_skipped_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl", {"_id": "q1", "text": "a"}, '{"_id": "q2", "text": "%s"}' % SURROGATE,
        "[" * 100_000, {"_id": "q4", "text": "d"},
    )
    report = LoadReport()
    assert load_queries(path, report) == {"q1": "a", "q4": "d"}
    assert [(i.line, "lone surrogate" in i.reason or "nested" in i.reason) for i in report.issues] == [
        (2, True), (3, True)
    ]


def test_jsonl_deep_nesting_is_a_skipped_line(tmp_path):
    def nested(depth: int) -> str:
        return "[" * depth + "]" * depth

    path = write_jsonl(
        tmp_path / "docs.jsonl",
        {"_id": "1", "text": "one"},
        "[" * 100_000,  # RecursionError inside json.loads before the fix
        '{"_id": "3", "text": "t", "m": %s}' % nested(150),  # parses, too deep to store
        '{"_id": "4", "text": "t", "m": %s}' % nested(98),  # the record itself is level 1: 99 in all
        {"_id": "5", "text": "five"},
    )
    docs, report = load(path)
    assert ids(docs) == ["1", "4", "5"]
    assert [i.line for i in report.issues] == [2, 3]
    assert all("nested more than 100 levels" in i.reason for i in report.issues)
    json.dumps(dict(docs[1].metadata))  # what staging does with it


@pytest.mark.parametrize("invisible", ["\u200b", " \u200b\u2060\ufeff\t", "\u200e"])
def test_invisible_only_text_is_empty_in_every_format(tmp_path, invisible):
    jsonl = write_jsonl(tmp_path / "d.jsonl", {"_id": "1", "text": invisible}, {"_id": "2", "text": "ok"})
    docs, report = load(jsonl)
    assert ids(docs) == ["2"] and only_issue(report).reason == "text field 'text' is empty"
    table = tmp_path / "d.csv"
    table.write_text(f"id,text\n1,{invisible}\n2,ok\n", "utf-8")
    docs, report = load(table)
    assert ids(docs) == ["2"] and only_issue(report).reason == "empty text in column 'text'"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text(invisible, "utf-8")
    (folder / "b.txt").write_text("ok", "utf-8")
    docs, report = load(folder)
    assert ids(docs) == ["b.txt"] and only_issue(report).reason == "empty document"


def test_folder_names_that_are_not_utf8_are_skipped_with_a_readable_path(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.txt").write_text("fine", "utf-8")
    bad_file = os.path.join(os.fsencode(root), b"caf\xe9.txt")
    with open(bad_file, "wb") as f:
        f.write(b"latin-1 name")
    bad_dir = os.path.join(os.fsencode(root), b"dir\xff")
    os.mkdir(bad_dir)
    with open(os.path.join(bad_dir, b"inside.txt"), "wb") as f:
        f.write(b"text")
    docs, report = load(root)
    assert ids(docs) == ["good.txt"]
    shown = sorted(i.path for i in report.issues)
    assert shown == [f"{root}/caf\\xe9.txt", f"{root}/dir\\xff"]
    assert all("not valid UTF-8" in i.reason for i in report.issues)
    for issue in report.issues:
        str(issue).encode("utf-8")


def test_tsv_reads_quotes_as_text_and_hides_no_row(tmp_path):
    path = tmp_path / "docs.tsv"
    good = [(str(n), f"row {n}") for n in range(200)]
    lines = ["id\ttext", 'q1\t"Quoted" is how it starts', 'q2\t"never closed', *("\t".join(g) for g in good)]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    docs, report = load(path)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("q1", '"Quoted" is how it starts'), ("q2", '"never closed'), *good
    ]
    assert report.issues == []


def test_csv_malformed_row_hides_no_row_after_it(tmp_path):
    path = tmp_path / "docs.csv"
    good = [(str(n), f"row {n}") for n in range(200)]
    path.write_text("id,text\n1,\"never closed\n" + "".join(f"{i},{t}\n" for i, t in good) + "\n", "utf-8")
    docs, report = load(path)
    assert [(d.doc_id, d.text) for d in docs] == good
    issue = only_issue(report)
    assert (issue.line, issue.reason.startswith("malformed CSV")) == (2, True)
    rows = len(path.read_text("utf-8").splitlines()) - 1  # without the header
    blank = 1
    assert report.documents + report.skipped + blank == rows


def test_csv_quoted_multiline_field_still_works_next_to_a_bad_row(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,text\n1,"one\ntwo"\n2,"a"b\n3,"x\n""y"""\n4,four\n', "utf-8")
    docs, report = load(path)
    assert [(d.doc_id, d.text) for d in docs] == [("1", "one\ntwo"), ("3", 'x\n"y"'), ("4", "four")]
    assert [(i.line, i.reason.startswith("malformed CSV")) for i in report.issues] == [(4, True)]


def nested_divs(n: int) -> tuple[str, str]:
    """n nested <div>s, each opening with a word, and the text expected from them: one word per line."""
    words = [f"w{i}" for i in range(n)]
    markup = "<html><head><title>Deep</title></head><body>" + "".join(f"<div><b>{w}</b>" for w in words)
    return markup + "</div>" * n + "</body></html>", "\n".join(words)


def test_folder_deeply_nested_html_extracts(tmp_path):
    markup, expected = nested_divs(100_000)  # 2.2 MB; quadratic before the fix
    (tmp_path / "deep.html").write_text(markup, "utf-8")
    docs, report = load(tmp_path)
    assert report.issues == []
    assert (docs[0].title, docs[0].text) == ("Deep", expected)


def load_in_thread(path: Path, timeout: float = 60) -> tuple[list[Document], LoadReport]:
    """`load`, failing instead of hanging when a reader blocks (a FIFO opened without O_NONBLOCK)."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(load(path)), daemon=True)
    worker.start()
    worker.join(timeout)
    assert result, "the folder reader hung"
    return result[0]


@pytest.fixture
def special_folder(tmp_path: Path) -> Path:
    """A folder holding one good file and the special files a folder source must skip."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "good.txt").write_text("good text", "utf-8")
    (root / "notes.txt").symlink_to(root / "missing.txt")  # dangling
    (root / ".#notes.txt").symlink_to("user@host.1234:1700000000")  # editor lock file: hidden
    os.mkfifo(root / "pipe.txt")
    (root / "zero.txt").symlink_to("/dev/zero")
    return root


def test_folder_reads_only_regular_files(special_folder):
    docs, report = load_in_thread(special_folder)
    assert ids(docs) == ["good.txt"]
    assert sorted((Path(i.path).name, i.line, i.reason) for i in report.issues) == [
        ("notes.txt", None, "broken symbolic link: its target does not exist"),
        ("pipe.txt", None, "not a regular file: it is a named pipe (FIFO)"),
        ("zero.txt", None, "not a regular file: it is a character device"),
    ]


def test_reader_checks_the_opened_file_and_bounds_the_read(tmp_path):
    from indexer.loaders import _read_regular

    os.mkfifo(tmp_path / "pipe")
    assert _read_regular(tmp_path / "pipe", 100) == "not a regular file: it is a named pipe (FIFO)"
    assert _read_regular(Path("/dev/zero"), 100) == "not a regular file: it is a character device"
    (tmp_path / "f.txt").write_bytes(b"x" * 101)
    assert _read_regular(tmp_path / "f.txt", 100) == "file is 101 bytes, larger than the 100 bytes limit"
    assert _read_regular(tmp_path / "f.txt", 101) == b"x" * 101


def test_fingerprint_and_estimate_cover_exactly_the_files_read(special_folder):
    from indexer.pipeline import estimate_documents, source_fingerprint

    before = source_fingerprint(special_folder, "folder")  # FileNotFoundError before the fix
    assert estimate_documents(special_folder, "folder") == 1
    (special_folder / "image.png").write_bytes(b"\x89PNG")  # ignored extension
    (special_folder / ".hidden.txt").write_text("hidden", "utf-8")
    (special_folder / ".git").mkdir()
    (special_folder / ".git" / "index.txt").write_text("x", "utf-8")
    (special_folder / "other.txt").symlink_to(special_folder / "nowhere")
    assert source_fingerprint(special_folder, "folder") == before
    (special_folder / "good.txt").write_text("changed text", "utf-8")
    assert source_fingerprint(special_folder, "folder") != before


def test_load_qrels_grades_are_ascii_integers_in_range(tmp_path):
    path = tmp_path / "qrels.tsv"
    scores = ["1", "99999999999999999999", "1_0", "\u0663", "+2", "2.0", "-1", "1000", "1001", "-1000", "-1001", " 3 "]
    path.write_text("".join(f"q\td{n}\t{s}\n" for n, s in enumerate(scores)), "utf-8")
    report = LoadReport()
    qrels = load_qrels(path, report)
    assert qrels == {"q": {"d0": 1, "d6": -1, "d7": 1000, "d9": -1000, "d11": 3}}
    assert [i.line for i in report.issues] == [2, 3, 4, 5, 6, 9, 11]
    assert all(i.reason.startswith("score must be an integer from -1000 to 1000") for i in report.issues)
