"""PDF and Word documents in a folder source (issue 13, item 5): text per page with page numbers kept, paragraphs
and tables in order, every bad file a reported skip, and "page N" beside a hit in the CLI, its JSON and the app.

Every fixture is generated here: PDFs are written byte by byte (objects, a Helvetica content stream per page, an
xref table), Word files with python-docx; pypdf only encrypts."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import docx
import pypdf
import pytest

from indexer.cli import main
from indexer.encoder import Encoder
from indexer.loaders import Document, LoadReport, iter_documents
from indexer.pipeline import build_index
from indexer.search import Searcher
from indexer.store import IndexReader
from indexer.text import PAGE_STARTS, page_at
from test_app import app, hit_captions, search, texts, unescape

HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
#: A font whose map gives the letter A a lone surrogate, as broken ToUnicode maps in real files do.
BROKEN_MAP = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Broken def\n"
              b"1 begincodespacerange <00> <FF> endcodespacerange\n1 beginbfchar <41> <D800> endbfchar\n"
              b"endcmap CMapName currentdict /CMap defineresource pop end end")


def _stream(data: bytes, extra: bytes = b"", *, compress: bool = False) -> bytes:
    if compress:
        data, extra = zlib.compress(data, 9), extra + b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(data), extra, data)


def _escape(line: str) -> bytes:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def write_pdf(pages: list[list[str] | None], *, compress: bool = False, font: bytes | None = None) -> bytes:
    """A PDF whose page i shows the lines pages[i] in Helvetica; None draws an image instead (a scanned page).

    `font` is an object the font's /ToUnicode map points to (BROKEN_MAP), for a font whose glyphs map badly.
    """
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", HELVETICA if font is None else
               HELVETICA[:-2] + b" /ToUnicode 5 0 R >>",
               # a 1x1 grey image, drawn by the pages that have no text
               _stream(b"\x80", b" /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray"
                                b" /BitsPerComponent 8"),
               _stream(font or b"")]
    kids = []
    for lines in pages:
        if lines is None:
            content = b"q 400 0 0 500 100 150 cm /Im1 Do Q"
        else:
            content = b"BT /F1 11 Tf 13 TL 60 760 Td " + b" ".join(b"(%s) Tj T*" % _escape(x) for x in lines) + b" ET"
        objects.append(_stream(content, compress=compress))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>" % len(objects))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted(pdf: bytes, password: str = "secret") -> bytes:
    """`pdf` encrypted with RC4-128, which pypdf writes (and reads) without the `cryptography` package."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write_docx(path: Path) -> Path:
    """A Word file: a paragraph, a table (its last row one merged cell), a paragraph, in that order."""
    document = docx.Document()
    document.add_paragraph("Before the table: the bees make honey.")
    table = document.add_table(rows=3, cols=2)
    for row, (a, b) in zip(table.rows, [("hive", "count"), ("north", "12")]):
        row.cells[0].text, row.cells[1].text = a, b
    merged = table.cell(2, 0).merge(table.cell(2, 1))
    merged.text = "total across the apiary"
    document.add_paragraph("")  # an empty paragraph: no block of its own
    document.add_paragraph("After the table: bake bread.")
    document.save(path)
    return path


def load(path: Path, **kwargs) -> tuple[list[Document], LoadReport]:
    report = LoadReport()
    return list(iter_documents(path, report, **kwargs)), report


def reasons(report: LoadReport) -> dict[str, str]:
    """{file name: skip reason}."""
    return {Path(issue.path).name: issue.reason for issue in report.issues}


# -- reading ------------------------------------------------------------------------------------------------


def test_a_pdf_gives_its_text_page_by_page_and_where_each_page_starts(tmp_path):
    pages = [["Page one about bees.", "A second line."], None, ["Page three about bread."], ["Page four: the sky."]]
    (tmp_path / "report.pdf").write_bytes(write_pdf(pages))
    (docs,), report = load(tmp_path)
    assert report.issues == [] and docs.doc_id == "report.pdf" and docs.title == ""
    starts = docs.metadata[PAGE_STARTS]
    assert len(starts) == 4
    for number, lines in enumerate(pages, 1):
        if lines is not None:  # each page's text starts where its page start says, and lies on that page
            assert docs.text[starts[number - 1]:].startswith(lines[0])
            assert page_at(starts, docs.text.index(lines[-1])) == number
    assert docs.text == "Page one about bees.\nA second line.\n\nPage three about bread.\n\nPage four: the sky."
    assert page_at(starts, docs.text.index("three")) == 3  # the image-only page 2 holds nothing


@pytest.mark.parametrize("page_starts", [None, [], [3, 10], [0, 10, 5], [0, "4"], [0, True], "0,4", {"0": 1}])
def test_page_at_takes_only_offsets_from_0_in_order(page_starts):
    assert page_at(page_starts, 4) is None
    assert page_at([0, 4, 4, 9], 4) == 3 and page_at([0, 4, 4, 9], 3) == 1 and page_at([0, 4, 4, 9], 100) == 4


def test_a_word_file_gives_paragraphs_and_table_rows_in_document_order(tmp_path):
    write_docx(tmp_path / "notes.docx")
    (doc,), report = load(tmp_path)
    assert report.issues == [] and doc.doc_id == "notes.docx" and doc.metadata == {}
    assert doc.text == ("Before the table: the bees make honey.\n\nhive | count\nnorth | 12\ntotal across the apiary\n\n"
                        "After the table: bake bread.")


def test_a_lone_surrogate_from_a_broken_font_map_becomes_a_replacement_character(tmp_path):
    (tmp_path / "odd.pdf").write_bytes(write_pdf([["A glyph"]], font=BROKEN_MAP))
    (doc,), report = load(tmp_path)
    assert report.issues == [] and "\ufffd" in doc.text
    doc.text.encode("utf-8")  # storable, and tokenizable


# -- bad files: each a skip naming the file, the rest of the folder read -------------------------------------


def test_encrypted_damaged_image_only_and_fake_files_are_skipped_with_their_reason(tmp_path):
    good = write_pdf([["A readable page about bees."]])
    (tmp_path / "good.pdf").write_bytes(good)
    (tmp_path / "locked.pdf").write_bytes(encrypted(good))
    (tmp_path / "cut.pdf").write_bytes(good[: len(good) // 2])
    (tmp_path / "scan.pdf").write_bytes(write_pdf([None, None]))
    (tmp_path / "fake.pdf").write_bytes(b"just some text named .pdf")
    (tmp_path / "empty.pdf").write_bytes(b"")
    write_docx(tmp_path / "good.docx")
    (tmp_path / "cut.docx").write_bytes((tmp_path / "good.docx").read_bytes()[:400])
    (tmp_path / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)  # what Word writes when encrypting
    (tmp_path / "blank.docx").write_bytes(b"")
    (tmp_path / "notes.md").write_text("# Notes\n\nthe rest of the folder is read", "utf-8")
    docs, report = load(tmp_path)
    assert [d.doc_id for d in docs] == ["good.docx", "good.pdf", "notes.md"]
    why = reasons(report)
    assert set(why) == {"locked.pdf", "cut.pdf", "scan.pdf", "fake.pdf", "empty.pdf", "cut.docx", "locked.docx", "blank.docx"}
    assert why["locked.pdf"].startswith("encrypted PDF: it needs a password")
    assert why["cut.pdf"].startswith("damaged PDF, cannot be read")
    assert why["scan.pdf"].startswith("no text layer: its 2 pages hold no extractable text")
    assert why["fake.pdf"] == why["empty.pdf"] == "not a PDF file: it has no %PDF- header"
    assert why["cut.docx"].startswith("damaged .docx, cannot be read")
    assert why["locked.docx"].startswith("not a .docx package: an encrypted (password-protected) Word document")
    assert why["blank.docx"].startswith("damaged .docx")
    assert all(issue.path == str(tmp_path / f"{name}") for name, issue in zip(why, report.issues))
    assert all("Traceback" not in r and "\n" not in r for r in why.values())


def test_a_pdf_that_opens_with_an_empty_password_is_read(tmp_path):
    (tmp_path / "restricted.pdf").write_bytes(encrypted(write_pdf([["Printing is restricted, reading is not."]]), ""))
    (doc,), report = load(tmp_path)
    assert report.issues == [] and doc.text == "Printing is restricted, reading is not."


def test_a_long_pdf_is_read_page_by_page_and_stops_at_the_size_bound(tmp_path, monkeypatch):
    line = "the committee reviewed the budget and approved the schedule"
    pages = [[f"page {n}: {line}"] * 40 for n in range(1, 301)]  # 2.9 kB of text a page, compressed to little
    (tmp_path / "book.pdf").write_bytes(write_pdf(pages, compress=True))
    bound = 200_000
    assert (tmp_path / "book.pdf").stat().st_size < bound
    extracted = []
    extract = pypdf.PageObject.extract_text
    monkeypatch.setattr(pypdf.PageObject, "extract_text", lambda self, *a, **k: extracted.append(1) or extract(self, *a, **k))
    (doc,), report = load(tmp_path)  # the default bound: all 300 pages
    starts = doc.metadata[PAGE_STARTS]
    assert report.issues == [] and len(starts) == 300 and len(extracted) == 300
    assert page_at(starts, doc.text.index("page 300:")) == 300
    # the first page whose end lies past the bound (the text is ASCII: one byte a character)
    ends = [s - 2 for s in starts[1:]] + [len(doc.text)]
    stop = next(n for n, end in enumerate(ends, 1) if end > bound)
    extracted.clear()
    docs, report = load(tmp_path, max_document_bytes=bound)  # the bound of every document (a text file's too)
    assert docs == [] and stop < 100
    assert reasons(report) == {"book.pdf": f"text is larger than the 200 kB limit: extraction stopped at page {stop} of 300"}
    assert len(extracted) == stop  # page by page: never the whole book's text in memory


def test_a_word_file_that_unpacks_past_the_bound_is_skipped_before_it_is_parsed(tmp_path, monkeypatch):
    path = tmp_path / "big.docx"
    document = docx.Document()
    document.add_paragraph("honey " * 40_000)  # 240 kB of text, a few kB zipped
    document.save(path)
    assert path.stat().st_size < 50_000
    monkeypatch.setattr(docx, "Document", lambda *a: pytest.fail("parsed although it unpacks past the bound"))
    docs, report = load(tmp_path, max_document_bytes=100_000)
    assert docs == [] and reasons(report)["big.docx"].startswith("the .docx unpacks to ")
    assert reasons(report)["big.docx"].endswith("more than the 100 kB limit")


# -- page numbers through the store, the CLI and the app ---------------------------------------------------------

TOPICS = ["bees honey hive", "bread flour oven", "comet planet orbit", "river rain lake"]


def test_each_chunk_of_a_pdf_names_the_page_it_starts_on(tmp_path, tiny_bert):
    """With chunks of 12 tokens, each PDF page (one topic's words) gives several chunks; the page every stored chunk
    names is checked against the topic of its first word."""
    pages = [[" ".join([topic] * 4)] * 3 for topic in TOPICS]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "topics.pdf").write_bytes(write_pdf(pages))
    (tmp_path / "src" / "plain.txt").write_text("the bees and the bread", "utf-8")
    encoder = Encoder.load(str(tiny_bert), max_tokens=12)
    summary = build_index(tmp_path / "src", tmp_path / "ix", encoder, overlap=2, progress=False)
    reader = IndexReader(summary.index_dir)
    rows = reader.chunks(range(reader.n_chunks)).values()
    page_of_word = {word: n for n, topic in enumerate(TOPICS, 1) for word in topic.split()}
    pdf = [c for c in rows if c.doc_id == "topics.pdf"]
    assert len(pdf) > 8 and {c.page for c in pdf} == {1, 2, 3, 4}
    assert all(c.page == page_of_word[c.text.split()[0]] for c in pdf)
    assert [c.page for c in rows if c.doc_id == "plain.txt"] == [None]  # no pages: no page shown
    reader.close()


def test_a_record_with_page_starts_and_a_title_counts_pages_in_its_text(tmp_path, tiny_bert):
    """JSONL records may carry page starts themselves (an export of PDF pages): chunk offsets count the title and a
    space before the text, page starts count in the text. Malformed page starts show no page."""
    page_1, page_2 = "bread flour oven bread flour oven", "comet planet orbit comet planet orbit"
    title = " ".join(["telescope"] * 6)  # longer than page 1: an offset counted from the title would say page 2
    rows = [{"_id": "paged", "title": title, "text": f"{page_1}\n\n{page_2}", "page_starts": [0, len(page_1) + 2]},
            {"_id": "odd", "text": "river rain lake river rain", "page_starts": "1-2"}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    encoder = Encoder.load(str(tiny_bert), max_tokens=8)  # six words a chunk
    summary = build_index(tmp_path / "docs.jsonl", tmp_path / "ix", encoder, overlap=0, progress=False)
    reader = IndexReader(summary.index_dir)
    pages = {c.text: c.page for c in reader.chunks(range(reader.n_chunks)).values()}
    reader.close()
    assert pages == {title: 1, page_1: 1, page_2: 2, "river rain lake river rain": None}


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    """A folder of a five-page PDF (one phrase only on page 3), a Word file and a Markdown file, built with
    `python -m indexer build FOLDER --index DIR` and the bundled model (the issue's done-when check)."""
    root = tmp_path_factory.mktemp("three")
    folder = root / "docs"
    folder.mkdir()
    filler = [
        "The committee reviewed the annual budget and approved the maintenance schedule for the depot.",
        "Invoices from the second quarter were reconciled against the purchase orders on file.",
        "Staff training sessions on spreadsheet software will resume after the summer break.",
        "The parking permits for the east lot are renewed each January by the facilities office.",
    ]
    pages = [[f"Page {n}."] + filler * 6 for n in range(1, 6)]
    pages[2][13] = "At dawn the lighthouse keeper counted puffins nesting on the cliffs of the island."
    (folder / "report.pdf").write_bytes(write_pdf(pages))
    write_docx(folder / "notes.docx")
    (folder / "bread.md").write_text("# Bread\n\nKnead the dough, let it rise, and bake it in a hot oven.", "utf-8")
    code = main(["build", str(folder), "--index", str(root / "ix"), "--no-progress"])
    assert code == 0
    return root / "ix"


QUERY = "lighthouse keeper counting puffins on the island cliffs"


def test_a_phrase_on_page_3_finds_the_pdf_first_with_page_3_in_the_cli_and_json(three_formats, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # wide enough that no label is cut
    capsys.readouterr()
    assert main(["search", str(three_formats), QUERY, "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    first = result["results"]["mean"][0]
    assert first["doc_id"] == "report.pdf" and first["page"] == 3 and "lighthouse keeper" in first["text"]
    pages = {h["doc_id"]: h["page"] for hits in result["results"].values() for h in hits}
    assert pages["notes.docx"] is None and pages["bread.md"] is None
    assert main(["search", str(three_formats), QUERY, "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "report.pdf · page 3" in table[4].split("│")[1]  # the mean column's first row (pooled is the first column)


def test_the_app_shows_page_3_on_the_hit_line_of_the_pdf(three_formats):
    at = search(app(three_formats), QUERY)
    assert not at.exception
    captions = [unescape(c) for c in hit_captions(at)]
    mean = [c for c in captions if c.startswith("`mean`")]
    assert mean[0].startswith("`mean` · report.pdf · score ") and mean[0].endswith(" · page 3")
    assert not any("page" in c for c in captions if "report.pdf" not in c)


def test_the_app_builds_an_index_from_uploaded_pdf_and_word_files(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--allow-build"])
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "a.txt").write_text("the bees", "utf-8")
    existing = build_index(folder, tmp_path / "indexes" / "first", Encoder.load(str(tiny_bert)), progress=False)
    at = app(existing.index_dir, index_root=str(tmp_path / "indexes"), model=None)
    at.switch_page("views/index.py").run()
    assert {"pdf", "docx"} <= {t.lstrip(".") for t in at.file_uploader[0].proto.type}  # the browser offers them
    good = write_pdf([["the bees make honey"] * 20, ["bake bread in the oven"] * 20])
    at.file_uploader[0].upload("report.pdf", good, "application/pdf")
    at.file_uploader[0].upload("locked.pdf", encrypted(good), "application/pdf")
    at.file_uploader[0].upload("notes.docx", write_docx(tmp_path / "notes.docx").read_bytes(),
                               "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    at.text_input[0].input("uploaded")
    at.session_state["model"] = str(tiny_bert)
    at.run()
    next(b for b in at.button if b.label == "Build").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Indexed 2 documents" in at.success[0].value
    skipped = at.dataframe[0].value
    assert list(skipped["file"]) == ["locked.pdf"] and skipped["reason"][0].startswith("encrypted PDF")
    searcher = Searcher(tmp_path / "indexes" / "uploaded")
    hits = searcher.search("bake bread in the oven", k=2).results["mean"]
    pages = {h.doc_id: h.page for h in hits}
    assert pages.keys() == {"report.pdf", "notes.docx"} and pages["report.pdf"] in (1, 2) and pages["notes.docx"] is None
    searcher.close()
