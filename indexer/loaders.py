"""Folder, JSONL, CSV/TSV and BEIR readers that stream ``Document`` records.

A bad record is reported through a ``LoadReport`` and skipped, so one broken
line never costs the rest of the collection; only a source that is unusable as
a whole (missing path, unknown format, missing column) raises ``SourceError``.

A folder holds text, Markdown, HTML, PDF and Word (.docx) files. A PDF's text is
extracted page by page (pypdf), and where each page starts is kept in the
document's metadata (``text.PAGE_STARTS``) so that a hit can name its page; a
.docx gives its paragraphs and table rows in document order (python-docx). An
encrypted, damaged or image-only file is a reported skip like any bad record.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import os
import re
import stat
from collections import deque
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from lxml import etree

from .config import require_one_of
from .text import PAGE_STARTS, content_head, describe_surrogate, is_blank, lone_surrogate, replace_surrogates

__all__ = [
    "BeirDataset", "Document", "FolderEntry", "Format", "LoadIssue", "LoadReport", "MAX_DOCUMENT_BYTES", "RECORDS",
    "SourceError", "detect_format", "folder_entries", "iter_documents", "iter_records", "load_qrels", "load_queries",
    "open_beir",
]

logger = logging.getLogger("indexer.loaders")

Format = Literal["auto", "folder", "jsonl", "csv", "beir"]
SourceFormat = Literal["folder", "jsonl", "csv", "beir"]
#: Records handed over from memory (Index.build, Index.add) have no path: this names them in messages
#: ("records:3: text field 'text' is empty", counting from 1) and is their format in the manifest.
RECORDS = "records"
#: The largest document text kept, in UTF-8 bytes; larger ones are skipped with a message.
MAX_DOCUMENT_BYTES = 50_000_000
FORMATS: tuple[str, ...] = get_args(Format)

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
WORD_SUFFIXES = frozenset({".docx"})
#: Every extension a folder source reads; files with any other are counted as ignored.
FOLDER_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | WORD_SUFFIXES
_INVISIBLE = ["script", "style", "noscript", "template", "head", "title"]
_BLOCKS = [
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "td", "th", "tr", "ul",
]
#: Deepest nesting of arrays/objects accepted in a JSON record. Deeper records are skipped when
#: read, so that json.dumps (staging stores metadata as JSON) can never hit the recursion limit later.
MAX_JSON_DEPTH = 100
#: Relevance grades a qrels file may hold: ASCII integers in this range (TREC uses -2..4).
GRADE_RANGE = range(-1000, 1001)
_GRADE = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Document:
    """One record of a collection, before chunking."""

    doc_id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable
    source: str = ""  # "path" or "path:line"

    @property
    def content(self) -> str:
        """Text that gets embedded: title and text joined by a space (BEIR/MTEB convention)."""
        return content_head(self.title) + self.text


@dataclass(frozen=True)
class LoadIssue:
    """A record or file that was skipped, and why."""

    path: str
    line: int | None  # 1-based; None when the issue concerns a whole file
    reason: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class LoadReport:
    """Counts and issues gathered while loading; filled in as documents stream."""

    issues: list[LoadIssue] = field(default_factory=list)
    documents: int = 0
    ignored_files: int = 0  # unsupported extensions in a folder: not errors

    def skip(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        """Record a skipped record or file and log it as a warning."""
        issue = LoadIssue(str(path), line, reason)
        self.issues.append(issue)
        logger.warning("%s", issue)

    @property
    def skipped(self) -> int:
        return len(self.issues)


class SourceError(Exception):
    """Unusable source as a whole: missing path, unknown format, missing required column/file."""


class _Skip(Exception):
    """Internal: the current record is bad; the message is the reason."""


@dataclass(frozen=True)
class _Columns:
    id: str | None
    title: str | None
    text: str


def detect_format(path: Path) -> SourceFormat:
    """Guess the format of ``path`` from its type and extension."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: does not exist")
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in FOLDER_SUFFIXES:
        raise SourceError(f"{path}: a {suffix} file is read as part of a folder source; pass the folder that holds it")
    raise SourceError(
        f"{path}: unsupported format {suffix or '(no extension)'!r}; supported: a folder of "
        ".txt/.md/.markdown/.html/.htm/.pdf/.docx files, a BEIR folder with corpus.jsonl, .jsonl/.ndjson, .csv/.tsv"
    )


def iter_documents(
    path: str | Path,
    report: LoadReport,
    *,
    format: Format = "auto",
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[Document]:
    """Stream the documents of a collection; bad records go to ``report`` and are skipped.

    Arguments and the source as a whole are checked at call time (``ValueError`` /
    ``SourceError``); records are read lazily as the returned generator is consumed.
    The column names apply to CSV headers and to JSONL/BEIR fields alike.
    """
    require_one_of(format, Format, "format")
    if max_document_bytes <= 0:
        raise ValueError(f"max_document_bytes must be positive, got {max_document_bytes!r}")
    path = Path(path)
    kind = detect_format(path) if format == "auto" else format
    columns = _Columns(id_column, title_column, text_column)
    if kind == "folder":
        records = _read_folder(require_path(path, folder=True), report, max_document_bytes)
    elif kind == "beir":
        records = _read_jsonl(open_beir(path).corpus, report, columns)
    elif kind == "jsonl":
        records = _read_jsonl(require_path(path), report, columns)
    else:
        records = _read_csv(require_path(path), report, columns, max_document_bytes)
    return _checked(records, report, max_document_bytes)


def iter_records(
    records: Iterable[Mapping[str, Any] | Document],
    report: LoadReport,
    *,
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[Document]:
    """Records from memory, dicts shaped like a JSONL line or Documents, with the checks a JSONL line gets
    and those shared by every format; a bad record is reported as ``records:N`` (N counting from 1)."""
    if isinstance(records, (str, bytes, Mapping, Document)) or not isinstance(records, Iterable):
        raise ValueError(f"records must be a list or an iterator of dicts or Documents, not a {type(records).__name__}")
    if hasattr(records, "columns") and hasattr(records, "to_dict"):  # a DataFrame iterates over its column names
        raise ValueError("records must be a list or an iterator of dicts or Documents; for a DataFrame, pass "
                         "df.to_dict('records')")
    if max_document_bytes <= 0:
        raise ValueError(f"max_document_bytes must be positive, got {max_document_bytes!r}")
    columns = _Columns(id_column, title_column, text_column)
    return _checked(_read_records(records, report, columns), report, max_document_bytes)


def _read_records(records: Iterable[Any], report: LoadReport, columns: _Columns) -> Iterator[tuple[Document, str, int]]:
    for n, record in enumerate(records, 1):
        if isinstance(record, Document):  # its fields, checked like any record's
            if not isinstance(record.metadata, Mapping):
                report.skip(RECORDS, n, f"a Document's metadata must be a dict, got {type(record.metadata).__name__}")
                continue
            obj: Any = {"_id": record.doc_id, "title": record.title, "text": record.text, "metadata": dict(record.metadata)}
            shape = _Columns(None, "title", "text")
        else:
            obj, shape = record, columns
        if not isinstance(obj, Mapping):
            report.skip(RECORDS, n, f"expected a dict or a Document, got {type(obj).__name__}")
            continue
        try:  # the round trip a JSONL line makes: tuples become lists, anything else that JSON cannot hold is named
            obj = json.loads(json.dumps(obj))
        except RecursionError:
            report.skip(RECORDS, n, f"nested more than {MAX_JSON_DEPTH} levels deep")
            continue
        except (TypeError, ValueError) as exc:
            report.skip(RECORDS, n, f"not JSON data: {exc}")
            continue
        if problem := _json_problem(obj):
            report.skip(RECORDS, n, problem)
            continue
        try:
            yield _record(obj, f"{RECORDS}:{n}", shape), RECORDS, n
        except _Skip as exc:
            report.skip(RECORDS, n, str(exc))


def _checked(
    records: Iterator[tuple[Document, Path | str, int | None]], report: LoadReport, max_bytes: int
) -> Iterator[Document]:
    """Apply the checks shared by all formats: size limit and duplicate ids."""
    seen: dict[str, str] = {}
    for doc, path, line in records:
        # len * 4 bounds the UTF-8 size, so most texts are never encoded just to measure them.
        if len(doc.text) * 4 > max_bytes and (size := len(doc.text.encode())) > max_bytes:
            report.skip(path, line, f"text is {format_bytes(size)}, larger than the {format_bytes(max_bytes)} limit")
        elif doc.doc_id in seen:
            report.skip(path, line, f"duplicate id {doc.doc_id!r} (first seen at {seen[doc.doc_id]})")
        else:
            seen[doc.doc_id] = doc.source
            report.documents += 1
            yield doc


def require_path(path: str | Path, *, folder: bool = False) -> Path:
    """Return ``path`` as a Path, or raise SourceError unless it is an existing file (or folder)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: does not exist")
    if path.is_dir() != folder:
        raise SourceError(f"{path}: is not a {'folder' if folder else 'file'}")
    return path


def format_bytes(n: int) -> str:
    """Human-readable decimal size: "812 bytes", "12.3 kB", "50 MB"."""
    if n < 1000:
        return f"{n} bytes"
    value, unit = float(n), "bytes"
    for unit in ("kB", "MB", "GB"):  # noqa: B007  (the unit reached is used after the loop)
        value /= 1000
        if value < 1000:
            break
    return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


# -- folder ------------------------------------------------------------------------

_FILE_KINDS = {
    stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
}
# O_NONBLOCK: opening a FIFO that slipped past the listing returns at once instead of waiting for a writer.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class FolderEntry:
    """One file of a folder source: a regular file the reader opens (`stat` set), or why it is skipped."""

    path: Path
    doc_id: str  # path relative to the folder, '/'-separated
    stat: os.stat_result | None = None  # of the file a symlink leads to; None when skipped
    skip: str | None = None  # the reason, for a file that is listed as skipped

    @property
    def shown(self) -> str:
        """The path for messages, on one line: bytes that are not UTF-8 are shown as \\xNN escapes."""
        return printable_path(self.path)


def printable_path(path: str | os.PathLike[str]) -> str:
    """`path` for a one-line message: undecodable bytes as \\xNN, control characters (a newline in
    a file name) as Python escapes."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _not_regular(mode: int) -> str:
    return f"not a regular file: it is {_FILE_KINDS.get(stat.S_IFMT(mode), 'a special file')}"


def _bad_name(name: str, what: str) -> str | None:
    """Why a name from the file system cannot be an id (its bytes are not UTF-8), or None."""
    if lone_surrogate(name) is None:
        return None
    return f"{what} is not valid UTF-8 (shown with \\x escapes); rename it to index it"


def folder_entries(root: Path) -> Iterator[FolderEntry | int]:
    """Every file a folder source consists of, sorted within each folder: the one home of that listing.

    Yields a `FolderEntry` per file with a supported extension (a regular file, or a skip with its
    reason: broken symlink, FIFO, device, name that is not UTF-8, unreadable subfolder) and an `int`
    count of files ignored for their extension. Hidden files and folders are left out, symlinked
    folders are not followed. The reader, `pipeline.source_fingerprint` and the progress estimate
    all use it, so the fingerprint covers exactly the files that are read.
    """
    errors: list[OSError] = []
    # followlinks=False: a directory symlink pointing upwards cannot loop forever.
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
        for error in errors:
            yield FolderEntry(Path(error.filename or dirpath), "", skip=f"cannot read folder: {error.strerror}")
        errors.clear()
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            if reason := _bad_name(name, "folder name"):
                yield FolderEntry(Path(dirpath, name), "", skip=reason)
            else:
                kept.append(name)
        dirnames[:] = kept
        ignored = 0
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = Path(dirpath, name)
            if path.suffix.lower() not in FOLDER_SUFFIXES:
                ignored += 1
            elif reason := _bad_name(name, "file name"):
                yield FolderEntry(path, "", skip=reason)
            else:
                yield _entry(path, path.relative_to(root).as_posix())
        if ignored:
            yield ignored
    for error in errors:  # the root itself could not be listed
        yield FolderEntry(Path(error.filename or root), "", skip=f"cannot read folder: {error.strerror}")


def _entry(path: Path, doc_id: str) -> FolderEntry:
    try:
        info = os.stat(path)
    except OSError as error:
        if isinstance(error, FileNotFoundError) and path.is_symlink():
            return FolderEntry(path, doc_id, skip="broken symbolic link: its target does not exist")
        return FolderEntry(path, doc_id, skip=f"cannot read file: {error.strerror or error}")
    if not stat.S_ISREG(info.st_mode):
        return FolderEntry(path, doc_id, skip=_not_regular(info.st_mode))
    return FolderEntry(path, doc_id, stat=info)


def _read_folder(root: Path, report: LoadReport, max_bytes: int) -> Iterator[tuple[Document, Path, None]]:
    for entry in folder_entries(root):
        if isinstance(entry, int):
            report.ignored_files += entry
        elif entry.skip is not None:
            report.skip(entry.shown, None, entry.skip)
        elif doc := _read_file(entry, report, max_bytes):
            yield doc, entry.path, None


def _read_regular(path: Path, max_bytes: int) -> bytes | str:
    """The bytes of `path` if it is a regular file of at most `max_bytes`, else why not.

    The file is opened without blocking and checked on the open descriptor (it may have been
    replaced since it was listed), and never more than max_bytes + 1 bytes are read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        return f"cannot read file: {error.strerror or error}"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _not_regular(info.st_mode)
        if info.st_size > max_bytes:
            return f"file is {format_bytes(info.st_size)}, larger than the {format_bytes(max_bytes)} limit"
        try:
            data = f.read(max_bytes + 1)
        except OSError as error:
            return f"cannot read file: {error.strerror or error}"
    if len(data) > max_bytes:  # it grew after fstat
        return f"file is larger than the {format_bytes(max_bytes)} limit"
    return data


def _read_file(entry: FolderEntry, report: LoadReport, max_bytes: int) -> Document | None:
    path = entry.path
    data = _read_regular(path, max_bytes)
    if isinstance(data, str):
        report.skip(entry.shown, None, data)
        return None
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES | WORD_SUFFIXES:
        try:
            text, metadata = _pdf_text(data, max_bytes) if suffix in PDF_SUFFIXES else (_docx_text(data, max_bytes), {})
        except _Skip as exc:
            report.skip(entry.shown, None, str(exc))
            return None
        return Document(doc_id=entry.doc_id, text=text, metadata=metadata, source=str(path))
    if b"\x00" in data[:8192]:
        report.skip(entry.shown, None, "binary file, skipped")
        return None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom + error.start
        line = data.count(b"\n", 0, offset) + 1
        report.skip(entry.shown, line, f"not valid UTF-8 at byte {offset} (line {line})")
        return None
    title = ""
    if path.suffix.lower() in HTML_SUFFIXES:
        try:
            title, text = _html_text(text)
        except etree.LxmlError as error:
            report.skip(entry.shown, None, f"cannot parse HTML: {error}")
            return None
    if is_blank(text):
        report.skip(entry.shown, None, "empty document")
        return None
    return Document(doc_id=entry.doc_id, text=text, title=title, source=str(path))


class _HtmlText:
    """lxml parser target that keeps the title and the visible text, one line per block element.

    It sees start/end/data events as the parser streams, and no tree is built, so the work is
    linear in the page's size and the Python stack stays flat however deep the tags nest.
    """

    def __init__(self) -> None:
        self.title: list[str] | None = None  # text of the first <title>, once it has started
        self.in_title = False
        self.hidden = 0  # open invisible elements
        self.lines: list[str] = []
        self.parts: list[str] = []

    def start(self, tag: str, attrib: Any) -> None:
        if tag in _BLOCKS:
            self._line_break()
        if tag in _INVISIBLE:
            self.hidden += 1
            if tag == "title" and self.title is None:
                self.title, self.in_title = [], True

    def end(self, tag: str) -> None:
        if tag in _INVISIBLE:
            self.hidden = max(self.hidden - 1, 0)
            self.in_title = self.in_title and tag != "title"
        if tag in _BLOCKS:
            self._line_break()

    def data(self, text: str) -> None:
        if self.in_title:
            self.title.append(text)  # type: ignore[union-attr]
        elif not self.hidden:
            self.parts.append(text)

    def _line_break(self) -> None:
        # Source newlines are plain whitespace in HTML; only block boundaries become lines.
        if self.parts:
            if line := " ".join("".join(self.parts).split()):
                self.lines.append(line)
            self.parts = []

    def close(self) -> tuple[str, str]:
        self._line_break()
        return " ".join("".join(self.title or ()).split()), "\n".join(self.lines)


def _html_text(markup: str) -> tuple[str, str]:
    """Return (title, visible text) with one line per block element; comments, scripts, styles dropped."""
    # huge_tree: no libxml2 limit on a text node's size (a 50 MB page may be one paragraph).
    parser = etree.HTMLParser(target=_HtmlText(), huge_tree=True, no_network=True, remove_comments=True)
    parser.feed(markup)
    return parser.close()


# -- PDF and Word ------------------------------------------------------------------------

#: First bytes of an OLE compound file: what Word writes for a password-protected document (and an old .doc).
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: Between two pages of a PDF's text, and between two blocks (paragraph, table) of a Word document's.
_BLOCK_BREAK = "\n\n"
#: The most drawing instructions (page content streams, unpacked) one PDF may hold over all its pages; past it the file
#: is skipped before any page is read. Extracting text works through them at about 1 MB a second, and a 28 kB file
#: whose 100 pages all draw one 5 MB stream kept a build busy for 14 minutes. A text page needs 2-20 kB: this passes
#: thousands of pages, and caps a hostile file at about a minute and a half.
MAX_PDF_CONTENT_BYTES = 50_000_000


def _problem(exc: BaseException) -> str:
    """A parser's exception as a short line (its message, else its kind): never a traceback."""
    # a KeyError's str() is its key's repr ("'/Root'"): the key itself reads better; any other message is kept whole
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return (" ".join(text.split()) or type(exc).__name__)[:200]


def _xml_limit(exc: BaseException) -> str | None:
    """Why python-docx's XML parser stopped, if it stopped at one of libxml2's limits against hostile XML (whose message
    suggests a parser option, XML_PARSE_HUGE, that a user has no way to set); None for any other error."""
    if not isinstance(exc, etree.XMLSyntaxError) or exc.code != etree.ErrorTypes.ERR_RESOURCE_LIMIT:
        return None
    if depth := re.search(r"depth in document: (\d+)", str(exc)):
        return f"the document nests too deeply to read: more than {depth[1]} levels (tables inside tables, most likely)"
    return f"the document goes past a safety limit of the XML parser: {_problem(exc).split(',')[0]}"


def _pdf_text(data: bytes, max_bytes: int) -> tuple[str, dict[str, Any]]:
    """A PDF's text, page by page, and its metadata: where each page starts in that text (`PAGE_STARTS`).

    Extraction stops as soon as the text passes `max_bytes` (the bound of every document), so a huge PDF
    never has all its text in memory. Raises _Skip for an encrypted, damaged or image-only file.
    """
    if b"%PDF-" not in data[:1024]:  # the header may follow up to 1 kB of other bytes
        raise _Skip("not a PDF file: it has no %PDF- header")
    import pypdf

    # pypdf logs every repair of a damaged file ("EOF marker not found") as a warning that names no file;
    # what matters reaches the user as this file's skip reason instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    parts: list[str] = []
    starts: list[int] = []
    length = size = 0
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:  # an empty user password opens PDFs that only restrict printing or copying
                opened = reader.decrypt("")
            except pypdf.errors.DependencyError:  # AES, which pypdf decrypts only with the `cryptography` package
                opened = pypdf.PasswordType.NOT_DECRYPTED
            if opened == pypdf.PasswordType.NOT_DECRYPTED:
                raise _Skip("encrypted PDF: it needs a password to open; save an unencrypted copy to index it")
        pages = len(reader.pages)
        work = 0
        for page in reader.pages:  # all counted before any is read: a skip costs no extraction
            work += _content_bytes(page)
            if work > MAX_PDF_CONTENT_BYTES:
                raise _Skip(f"{_its_pages(pages)} more than {format_bytes(MAX_PDF_CONTENT_BYTES)} of drawing "
                            "instructions, more than one PDF may take to read; skipped")
        for number, page in enumerate(reader.pages, 1):
            text = replace_surrogates(page.extract_text() or "").strip()
            # an empty page starts where the next page's text will (text.page_at relies on it)
            starts.append(length + (len(_BLOCK_BREAK) if parts else 0))
            if is_blank(text):
                continue
            size += len(text.encode()) + (len(_BLOCK_BREAK) if parts else 0)
            if size > max_bytes:
                raise _Skip(f"text is larger than the {format_bytes(max_bytes)} limit: extraction stopped at page "
                            f"{number} of {pages}")
            length = starts[-1] + len(text)
            parts.append(text)
    except _Skip:
        raise
    except pypdf.errors.LimitReachedError as exc:  # a bound pypdf sets against hostile files: not damage
        limit = pypdf.get_configuration().array_maximum_element_count
        what = (f"an array in the file (its list of pages, most likely) holds more than {limit:,} items"
                if "array element count" in str(exc) else _problem(exc))
        raise _Skip(f"the PDF reader (pypdf) stops at one of its safety limits: {what}") from None
    except Exception as exc:  # pypdf raises many kinds on a damaged file (PdfReadError, KeyError, ValueError, ...)
        raise _Skip(f"damaged PDF, cannot be read: {_problem(exc)}") from None
    if not pages:
        raise _Skip("the PDF has no pages")
    if not parts:
        raise _Skip(f"no text layer: {_its_pages(pages)} no extractable text "
                    "(a scanned or image-only PDF; run OCR on it to index it)")
    return _BLOCK_BREAK.join(parts), {PAGE_STARTS: starts}


def _its_pages(pages: int) -> str:
    """"its 1 page holds", "its 12 pages hold": the subject of a sentence about a PDF's pages."""
    return "its 1 page holds" if pages == 1 else f"its {pages} pages hold"


def _content_bytes(page: Any) -> int:
    """The bytes of drawing instructions text extraction works through on a PDF page: its content streams, unpacked
    (pypdf keeps them unpacked, so extraction does not unpack them again). A stream drawn twice counts twice."""
    from pypdf.generic import StreamObject

    contents = page.get("/Contents")
    contents = None if contents is None else contents.get_object()
    streams = contents if isinstance(contents, list) else [contents]  # one stream, or an array of them
    return sum(len(s.get_data()) for s in (x.get_object() if x is not None else None for x in streams)
               if isinstance(s, StreamObject))


def _docx_text(data: bytes, max_bytes: int) -> str:
    """A Word document's paragraphs and table rows, in document order (blocks apart by a blank line).

    python-docx only ever sees the package as `_docx_package` rebuilt it, within `max_bytes` (a small .docx can
    unpack to gigabytes). Raises _Skip for an encrypted, damaged or empty file.
    """
    if data.startswith(_OLE_MAGIC):
        raise _Skip("not a .docx package: an encrypted (password-protected) Word document, or an old .doc file; "
                    "save an unencrypted .docx copy to index it")
    package = _docx_package(data, max_bytes)
    import docx

    try:
        text = _BLOCK_BREAK.join(_docx_blocks(docx.Document(io.BytesIO(package))))
    except Exception as exc:  # python-docx and lxml raise many kinds on a damaged package
        raise _Skip(_xml_limit(exc) or f"damaged .docx, cannot be read: {_problem(exc)}") from None
    if is_blank(text):
        raise _Skip("empty document")
    return text


#: Bytes read from a zip member at a time: what one decompression step may produce.
_ZIP_CHUNK = 1 << 20
#: The most XML elements (paragraphs, runs, table cells, ...) a Word package may hold, counted before python-docx
#: parses it: its tree takes about 170 bytes an element and reading a paragraph about 20 us, so 1.3 million empty
#: paragraphs in a 167 kB file took 62 s and 800 MB. A page of Word text is a few hundred elements: this passes
#: thousands of pages, and caps a hostile file at about 250 MB and 20 s.
MAX_DOCX_ELEMENTS = 1_000_000


class _XmlElements:
    """lxml parser target that counts the elements of the XML fed to it, builds nothing, and skips the file at
    MAX_DOCX_ELEMENTS (one count over all the members of a package)."""

    def __init__(self) -> None:
        self.left = MAX_DOCX_ELEMENTS

    def start(self, tag: str, attrib: Any) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Skip(f"the .docx holds more than {MAX_DOCX_ELEMENTS:,} XML elements (paragraphs, runs, table "
                        "cells, ...), more than one Word document may take to read; skipped")

    def close(self) -> None:
        return None


def _docx_package(data: bytes, max_bytes: int) -> bytes:
    """The .docx package copied member by member into a new (stored) zip, never unpacking more than `max_bytes`.

    A zip's declared sizes may lie, and zipfile unpacks a member read whole in one step: a 1.6 MB file declaring
    800 kB can make that step 2 GB. So each member is read in bounded chunks and the bytes really unpacked are
    counted, and python-docx gets the copy, never the original. The XML elements of every member are counted on the
    way (MAX_DOCX_ELEMENTS). Raises _Skip past either limit or for a damaged zip.
    """
    import zipfile

    limit = format_bytes(max_bytes)
    out = io.BytesIO()
    elements = _XmlElements()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
            infos = package.infolist()
            declared = sum(info.file_size for info in infos)
            if declared > max_bytes:  # the sizes it declares: no need to unpack to know
                raise _Skip(f"the .docx unpacks to {format_bytes(declared)}, more than the {limit} limit")
            unpacked = 0
            # a name listed twice: zipfile (python-docx) reads the last entry, so that is the one copied
            for info in {info.filename: info for info in infos if not info.is_dir()}.values():
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise _Skip(f"not a .docx package: {info.filename!r} is compressed with method "
                                f"{info.compress_type}, and Word only stores or deflates")
                # counted by a streaming parser, which reads the bytes as python-docx's would (in any encoding)
                xml = etree.XMLParser(target=elements, resolve_entities=False, load_dtd=False, no_network=True)
                with package.open(info) as member, copy.open(info.filename, "w", force_zip64=True) as target:
                    while chunk := member.read(min(_ZIP_CHUNK, max_bytes - unpacked + 1)):
                        unpacked += len(chunk)
                        if unpacked > max_bytes:
                            raise _Skip(f"the .docx unpacks to more than the {limit} limit")
                        target.write(chunk)
                        xml = _feed(xml, chunk)
                    _feed(xml, None)
    except _Skip:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, EOFError, zlib.error, NotImplementedError, ... on a damaged zip
        raise _Skip(f"damaged .docx, cannot be read: {_problem(exc)}") from None
    return out.getvalue()


def _feed(parser: etree.XMLParser | None, chunk: bytes | None) -> etree.XMLParser | None:
    """Feed `chunk` to a streaming `parser` (None: the end), and return it, or None once the bytes are not XML (an
    image) or not well-formed: python-docx reports that if it reads the member."""
    if parser is not None:
        try:
            if chunk is None:
                parser.close()
            else:
                parser.feed(chunk)
        except etree.LxmlError:
            return None
    return parser


def _docx_blocks(container: Any) -> Iterator[str]:
    """The text of each non-empty paragraph and table of a Word document body (or table cell), in order: a table
    is one line per row, its cells apart by " | " (a merged cell's text once)."""
    from docx.table import Table, _Cell

    for block in container.iter_inner_content():
        if isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells = []
                # Each <w:tc> once: one spanning columns is one element, and one continuing a vertical merge is left
                # out (its text is the cell's above). Not row.cells: it finds a continued cell's text by walking up
                # the rows, recursively, so a 37 kB file with a 1000-row merge took 35 s and then hit the recursion limit.
                for tc in row._tr.tc_lst:
                    if tc.vMerge == "continue":
                        continue
                    if text := " ".join(" ".join(_docx_blocks(_Cell(tc, block))).split()):
                        cells.append(text)
                if cells:
                    rows.append(" | ".join(cells))
            if rows:
                yield "\n".join(rows)
        elif not is_blank(text := block.text):
            yield text


# -- line-based formats ------------------------------------------------------------------


def numbered_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """Yield (line number, text, error) per physical line, decoding each line as UTF-8.

    An undecodable line comes with an error message and replacement characters, so
    callers can skip it while a CSV parser still sees the line structure.
    """
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            start = len(codecs.BOM_UTF8) if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                text, error = raw[start:].decode("utf-8"), None
            except UnicodeDecodeError as exc:
                text = raw[start:].decode("utf-8", "replace")
                error = f"not valid UTF-8 at byte {offset + start + exc.start}"
            offset += len(raw)
            yield lineno, text, error


def json_objects(path: Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line that is a JSON object fit to store.

    A line that is not JSON, nests deeper than MAX_JSON_DEPTH, or holds a lone surrogate escape
    ("\\ud800") anywhere (keys included) is reported with the field it concerns.
    """
    for lineno, text, error in numbered_lines(path):
        if error:
            report.skip(path, lineno, error)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text.rstrip())  # so an error at the end is "column N" of this line
        except json.JSONDecodeError as exc:
            report.skip(path, lineno, f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        except RecursionError:
            report.skip(path, lineno, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
            continue
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            report.skip(path, lineno, f"malformed JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            report.skip(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        elif problem := _json_problem(obj):
            report.skip(path, lineno, problem)
        else:
            yield lineno, obj


def _json_problem(obj: dict[str, Any], *, stored: bool = False) -> str | None:
    """Why a parsed record cannot be kept (too deep, a lone surrogate in a key or string), or None. `stored`: it
    becomes a document's metadata, which SQLite's JSON functions read, so NaN and Infinity are refused too.

    Walks the record without recursion, so depth is only limited by MAX_JSON_DEPTH.
    """
    stack: list[tuple[Any, str, int]] = [(obj, "", 1)]  # (value, field path, depth)
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if reason := describe_surrogate(value, f"field {where!r}"):
                return reason
        elif stored and isinstance(value, float) and not math.isfinite(value):  # Python's json reads them; JSON has none
            return f"field {where!r} is {value}, which JSON cannot hold"
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"field {where!r} is nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(value, list):
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
                continue
            for key, item in value.items():
                if lone_surrogate(key) is not None:
                    inside = f"in field {where!r}" if where else "at the top level"
                    return f"a key {inside} holds a lone surrogate: it is not valid Unicode text"
                stack.append((item, f"{where}.{key}" if where else key, depth + 1))
    return None


def _as_id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Skip(f"field {name!r} must be a string or integer, got {type(value).__name__}")
    if isinstance(value, str) and is_blank(value):
        raise _Skip(f"field {name!r} is empty")
    return str(value)


def _record(obj: dict[str, Any], source: str, columns: _Columns) -> Document:
    id_key = columns.id or next((k for k in ("_id", "id") if k in obj), "_id")
    if id_key not in obj:
        raise _Skip(f"missing id field {id_key!r}" + ("" if columns.id else " (or 'id')"))
    doc_id = _as_id(obj[id_key], id_key)
    text = obj.get(columns.text)
    if text is None:
        raise _Skip(f"text field {columns.text!r} is missing")
    if not isinstance(text, str):
        raise _Skip(f"text field {columns.text!r} must be a string, got {type(text).__name__}")
    if is_blank(text):
        raise _Skip(f"text field {columns.text!r} is empty")
    title = obj.get(columns.title) if columns.title else None
    title = "" if title is None else title  # a null title means no title
    if not isinstance(title, str):
        raise _Skip(f"title field {columns.title!r} must be a string, got {type(title).__name__}")
    metadata = {k: v for k, v in obj.items() if k not in (id_key, columns.text, columns.title)}
    if isinstance(metadata.get("metadata"), dict):  # nested metadata: merged, top-level keys win
        metadata = {**metadata.pop("metadata"), **metadata}
    if problem := _json_problem(metadata, stored=True):
        raise _Skip(problem)
    return Document(doc_id=doc_id, text=text, title=title, metadata=metadata, source=source)


def _read_jsonl(path: Path, report: LoadReport, columns: _Columns) -> Iterator[tuple[Document, Path, int]]:
    for lineno, obj in json_objects(path, report):
        try:
            yield _record(obj, f"{path}:{lineno}", columns), path, lineno
        except _Skip as exc:
            report.skip(path, lineno, str(exc))


def _read_csv(
    path: Path, report: LoadReport, columns: _Columns, max_bytes: int
) -> Iterator[tuple[Document, Path, int]]:
    """Check the header now, return a generator over the rows."""
    # Raised, never lowered: the default limit (128 KiB) would reject ordinary long documents.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    rows = iter(CsvRows(path))
    try:
        lineno, header, problem = next(rows, (1, [], None))
    except csv.Error as exc:
        raise SourceError(f"{path}: unreadable header row: {exc}") from exc
    if problem:
        raise SourceError(f"{path}:{lineno}: header row is {problem}")
    header = [name.strip() for name in header or []]
    if not header:
        raise SourceError(f"{path}: empty file; a header row with column names is required")
    missing = [c for c in (columns.text, columns.id) if c is not None and c not in header]
    if missing:
        raise SourceError(f"{path}: no column {missing[0]!r}; columns found: {', '.join(map(printable_path, header))}")
    id_col = columns.id or next((c for c in ("_id", "id", "doc_id") if c in header), None)
    title_col = columns.title if columns.title in header else None
    return _csv_rows(path, report, rows, header, (id_col, title_col, columns.text))


class CsvRows:
    """Rows of a CSV or TSV file as (first line number, fields or None, problem or None).

    A row that fails to parse (a stray quote that opens a field and never closes, say) is
    reported at its first line, and parsing resumes on the line after it: a malformed row never
    hides the rows behind it. `.tsv` is read with quoting off, as BEIR and MS MARCO write it, so
    a field that starts with '"' is ordinary text. Lines are decoded one by one so a bad byte
    costs one row, not the rest of the file.
    """

    def __init__(self, path: Path) -> None:
        self._feed = _LineFeed(numbered_lines(path))
        tsv = path.suffix.lower() == ".tsv"
        self._reader = csv.reader(
            self._feed,  # bad quoting is reported, not guessed (strict)
            delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=True,
        )

    def __iter__(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        feed = self._feed
        while True:
            feed.taken = []
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if not feed.taken:
                    raise
                first, *rest = feed.taken
                feed.pending.extendleft(reversed(rest))
                yield first[0], None, f"malformed CSV: {exc}"
                continue
            problem = next(((n, error) for n, _, error in feed.taken if error), None)
            yield (problem[0], row, problem[1]) if problem else (feed.taken[0][0], row, None)


class _LineFeed:
    """The csv reader's input: physical lines, first those given back to parse again."""

    def __init__(self, lines: Iterator[tuple[int, str, str | None]]) -> None:
        self.lines = lines
        self.pending: deque[tuple[int, str, str | None]] = deque()  # lines to parse again
        self.taken: list[tuple[int, str, str | None]] = []  # lines of the row being parsed

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        # The csv reader asks again after an end of data, so pending lines are still seen.
        line = self.pending.popleft() if self.pending else next(self.lines)
        self.taken.append(line)
        return line[1]


def _csv_rows(
    path: Path, report: LoadReport, rows: Iterator[tuple[int, list[str] | None, str | None]],
    header: list[str], used: tuple[str | None, str | None, str],
) -> Iterator[tuple[Document, Path, int]]:
    id_col, title_col, text_col = used
    for start, row, problem in rows:
        if problem:
            report.skip(path, start, problem)
        elif not row:
            continue  # a blank line
        elif len(row) != len(header):
            report.skip(path, start, f"expected {len(header)} fields, got {len(row)}")
        elif is_blank((values := dict(zip(header, row)))[text_col]):
            report.skip(path, start, f"empty text in column {text_col!r}")
        elif id_col and is_blank(values[id_col]):
            report.skip(path, start, f"empty id in column {id_col!r}")
        else:
            metadata = {k: v for k, v in values.items() if k not in used}
            doc_id = values[id_col] if id_col else f"row-{start}"
            title = values[title_col] if title_col else ""
            yield Document(doc_id, values[text_col], title, metadata, f"{path}:{start}"), path, start


# -- BEIR ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BeirDataset:
    """Files of a BEIR folder: corpus, optional queries and qrels per split."""

    root: Path
    corpus: Path
    queries: Path | None
    qrels: dict[str, Path]  # split name ("test", "dev", ...) -> TSV file


def open_beir(path: str | Path) -> BeirDataset:
    """Locate the files of a BEIR folder; only corpus.jsonl is required."""
    root = require_path(path, folder=True)
    corpus = root / "corpus.jsonl"
    if not corpus.is_file():
        raise SourceError(f"{root}: not a BEIR folder, corpus.jsonl is missing")
    queries = root / "queries.jsonl"
    qrels_dir = root / "qrels"
    qrels = {p.stem: p for p in sorted(qrels_dir.glob("*.tsv"))} if qrels_dir.is_dir() else {}
    return BeirDataset(root, corpus, queries if queries.is_file() else None, qrels)


def load_queries(source: str | Path | Mapping[str, str], report: LoadReport) -> dict[str, str]:
    """Read BEIR queries.jsonl ({"_id", "text"}), or take {query id: text} from memory (checked the same way,
    bad ones reported as ``records:N``), into {query id: text}."""
    if isinstance(source, Mapping):
        rows: Iterator[tuple[Document, Any, int]] = _read_records(
            [{"_id": qid, "text": text} for qid, text in source.items()], report, _Columns(None, None, "text"))
    else:
        path = require_path(source)
        rows = _read_jsonl(path, report, _Columns(None, None, "text"))
    queries: dict[str, str] = {}
    for query, where, line in rows:
        if query.doc_id in queries:
            report.skip(where, line, f"duplicate query id {query.doc_id!r}")
        else:
            queries[query.doc_id] = query.text
    return queries


def load_qrels(
    source: str | Path | Mapping[str, Mapping[str, int]],
    report: LoadReport,
    *,
    known_queries: Container[str] | None = None,
    known_documents: Container[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV ("query-id corpus-id score"), or take {query id: {doc id: grade}} from memory
    (checked the same way, the n-th judgement reported as ``records:N``), into {query id: {doc id: grade}}.

    Grades are integers from -1000 to 1000 (GRADE_RANGE); any other score is reported.
    With `known_queries` / `known_documents`, a judgement naming an id outside them is
    reported with its line and skipped.
    """
    qrels: dict[str, dict[str, int]] = {}
    if isinstance(source, Mapping):
        n = 0  # the n-th judgement (a query whose judgements are not a mapping counts as one)
        for qid, judged in source.items():
            try:  # ids as a JSONL record's: text or whole numbers
                qid, bad_query = _as_id(qid, "query id"), None
            except _Skip as exc:
                bad_query = str(exc)
            if not isinstance(judged, Mapping):
                n += 1
                report.skip(RECORDS, n, bad_query or f"the judgements of query {qid!r} must be a mapping "
                                                     f"{{document id: grade}}, got {type(judged).__name__}")
                continue
            for did, grade in judged.items():
                n += 1
                try:
                    if bad_query:
                        raise _Skip(bad_query)
                    did = _as_id(did, "document id")
                except _Skip as exc:
                    report.skip(RECORDS, n, str(exc))
                    continue
                # a grade from memory must read as one written in a file would
                score = str(grade) if isinstance(grade, int) and not isinstance(grade, bool) else repr(grade)
                _judge(qrels, report, RECORDS, n, qid, did, score, known_queries, known_documents)
        return qrels
    path = require_path(source)
    for lineno, text, error in numbered_lines(path):
        fields = [f.strip() for f in text.rstrip("\r\n").split("\t")]
        if error:
            report.skip(path, lineno, error)
        elif not text.strip() or (lineno == 1 and fields == ["query-id", "corpus-id", "score"]):
            continue
        elif len(fields) != 3:
            reason = f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
            report.skip(path, lineno, reason)
        else:
            _judge(qrels, report, path, lineno, *fields, known_queries, known_documents)
    return qrels


def _judge(
    qrels: dict[str, dict[str, int]], report: LoadReport, where: str | Path, line: int, qid: str, did: str, score: str,
    known_queries: Container[str] | None, known_documents: Container[str] | None,
) -> None:
    """One judgement into `qrels`, or its reason to `report`: the checks of every qrels line."""
    if is_blank(qid) or is_blank(did):
        report.skip(where, line, "empty query-id or corpus-id")
        return
    grade = _grade(score)
    if grade is None:
        report.skip(where, line, f"score must be an integer from {GRADE_RANGE.start} to {GRADE_RANGE.stop - 1}, got {score!r}")
    elif known_queries is not None and qid not in known_queries:
        report.skip(where, line, f"unknown query id {qid!r} (not in the queries file)")
    elif known_documents is not None and did not in known_documents:
        report.skip(where, line, f"unknown document id {did!r} (not in the index)")
    elif did in qrels.setdefault(qid, {}):
        report.skip(where, line, f"duplicate judgement for ({qid!r}, {did!r})")
    else:
        qrels[qid][did] = grade


def _grade(text: str) -> int | None:
    """A relevance grade: ASCII digits with an optional '-', within GRADE_RANGE; else None.

    int() alone would take "1_0", "٣" or a 20-digit number that later breaks evaluation.
    """
    if len(text) > 6 or not _GRADE.fullmatch(text):
        return None
    grade = int(text)
    return grade if grade in GRADE_RANGE else None
