"""Tests for indexer.loaders: every format's happy path and every bad input."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import pytest

from indexer.loaders import (
    Document,
    LoadIssue,
    LoadReport,
    SourceError,
    detect_format,
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
    for name in ("a.jsonl", "b.NDJSON", "c.csv", "d.tsv", "e.pdf"):
        (tmp_path / name).write_text("")
    assert detect_format(tmp_path / "beir") == "beir"
    assert detect_format(tmp_path / "plain") == "folder"
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    assert detect_format(tmp_path / "b.NDJSON") == "jsonl"
    assert detect_format(tmp_path / "c.csv") == "csv"
    assert detect_format(tmp_path / "d.tsv") == "csv"
    with pytest.raises(SourceError, match=r"e\.pdf.*\.jsonl.*\.csv"):
        detect_format(tmp_path / "e.pdf")


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
    with pytest.raises(ValueError, match=r"'xml'.*'auto'.*'folder'.*'jsonl'.*'csv'.*'beir'"):
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
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
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
    assert report.issues[1].reason == "score must be an integer, got 'high'"


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
