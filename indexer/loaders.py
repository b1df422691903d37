"""Folder, JSONL, CSV/TSV and BEIR readers that stream ``Document`` records.

A bad record is reported through a ``LoadReport`` and skipped, so one broken
line never costs the rest of the collection; only a source that is unusable as
a whole (missing path, unknown format, missing column) raises ``SourceError``.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bs4 import BeautifulSoup

__all__ = [
    "BeirDataset", "Document", "Format", "LoadIssue", "LoadReport", "SourceError",
    "detect_format", "iter_documents", "load_qrels", "load_queries", "open_beir",
]

logger = logging.getLogger("indexer.loaders")

Format = Literal["auto", "folder", "jsonl", "csv", "beir"]
SourceFormat = Literal["folder", "jsonl", "csv", "beir"]

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
_INVISIBLE = ["script", "style", "noscript", "template", "head", "title"]
_BLOCKS = [
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "td", "th", "tr", "ul",
]
_BLOCK_MARK = "\x00"  # text is split on it; a stray NUL in a page only adds a line break


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
        return f"{self.title} {self.text}" if self.title else self.text


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
    raise SourceError(
        f"{path}: unsupported format {suffix or '(no extension)'!r}; supported: a folder of "
        ".txt/.md/.markdown/.html/.htm files, a BEIR folder with corpus.jsonl, .jsonl/.ndjson, .csv/.tsv"
    )


def iter_documents(
    path: str | Path,
    report: LoadReport,
    *,
    format: Format = "auto",
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    max_document_bytes: int = 50_000_000,
) -> Iterator[Document]:
    """Stream the documents of a collection; bad records go to ``report`` and are skipped.

    Arguments and the source as a whole are checked at call time (``ValueError`` /
    ``SourceError``); records are read lazily as the returned generator is consumed.
    The column names apply to CSV headers and to JSONL/BEIR fields alike.
    """
    if format not in get_args(Format):
        raise ValueError(f"format {format!r} is not supported; choose one of {list(get_args(Format))}")
    if max_document_bytes <= 0:
        raise ValueError(f"max_document_bytes must be positive, got {max_document_bytes!r}")
    path = Path(path)
    kind = detect_format(path) if format == "auto" else format
    columns = _Columns(id_column, title_column, text_column)
    if kind == "folder":
        records = _read_folder(_require(path, folder=True), report, max_document_bytes)
    elif kind == "beir":
        records = _read_jsonl(open_beir(path).corpus, report, columns)
    elif kind == "jsonl":
        records = _read_jsonl(_require(path), report, columns)
    else:
        records = _read_csv(_require(path), report, columns, max_document_bytes)
    return _checked(records, report, max_document_bytes)


def _checked(
    records: Iterator[tuple[Document, Path, int | None]], report: LoadReport, max_bytes: int
) -> Iterator[Document]:
    """Apply the checks shared by all formats: size limit and duplicate ids."""
    seen: dict[str, str] = {}
    for doc, path, line in records:
        # len * 4 bounds the UTF-8 size, so most texts are never encoded just to measure them.
        if len(doc.text) * 4 > max_bytes and (size := len(doc.text.encode())) > max_bytes:
            report.skip(path, line, f"text is {_size(size)}, larger than the {_size(max_bytes)} limit")
        elif doc.doc_id in seen:
            report.skip(path, line, f"duplicate id {doc.doc_id!r} (first seen at {seen[doc.doc_id]})")
        else:
            seen[doc.doc_id] = doc.source
            report.documents += 1
            yield doc


def _require(path: str | Path, *, folder: bool = False) -> Path:
    """Return ``path`` as a Path, or raise SourceError unless it is an existing file (or folder)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: does not exist")
    if path.is_dir() != folder:
        raise SourceError(f"{path}: is not a {'folder' if folder else 'file'}")
    return path


def _size(n: int) -> str:
    """Human-readable decimal size: "812 bytes", "12.3 kB", "50 MB"."""
    if n < 1000:
        return f"{n} bytes"
    value, unit = float(n), "bytes"
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            break
    return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


# -- folder ------------------------------------------------------------------------


def _read_folder(root: Path, report: LoadReport, max_bytes: int) -> Iterator[tuple[Document, Path, None]]:
    def unreadable(error: OSError) -> None:
        report.skip(error.filename, None, f"cannot read folder: {error.strerror}")

    # followlinks=False: a directory symlink pointing upwards cannot loop forever.
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = Path(dirpath, name)
            if path.suffix.lower() not in TEXT_SUFFIXES | HTML_SUFFIXES:
                report.ignored_files += 1
            elif doc := _read_file(path, root, report, max_bytes):
                yield doc, path, None


def _read_file(path: Path, root: Path, report: LoadReport, max_bytes: int) -> Document | None:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            report.skip(path, None, f"file is {_size(size)}, larger than the {_size(max_bytes)} limit")
            return None
        data = path.read_bytes()
    except OSError as error:
        report.skip(path, None, f"cannot read file: {error.strerror or error}")
        return None
    if b"\x00" in data[:8192]:
        report.skip(path, None, "binary file, skipped")
        return None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom + error.start
        line = data.count(b"\n", 0, offset) + 1
        report.skip(path, line, f"not valid UTF-8 at byte {offset} (line {line})")
        return None
    title = ""
    if path.suffix.lower() in HTML_SUFFIXES:
        title, text = _html_text(text)
    if not text.strip():
        report.skip(path, None, "empty document")
        return None
    return Document(doc_id=path.relative_to(root).as_posix(), text=text, title=title, source=str(path))


def _html_text(markup: str) -> tuple[str, str]:
    """Return (title, visible body text) with one line per block element."""
    soup = BeautifulSoup(markup, "html.parser")
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup.find_all(_INVISIBLE):
        tag.decompose()
    root = soup.body or soup
    for tag in root.find_all(_BLOCKS):
        tag.insert_before(_BLOCK_MARK)
        tag.insert_after(_BLOCK_MARK)
    # Source newlines are plain whitespace in HTML; only block boundaries become lines.
    blocks = (" ".join(block.split()) for block in root.get_text().split(_BLOCK_MARK))
    return title, "\n".join(block for block in blocks if block)


# -- line-based formats ------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
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


def _json_objects(path: Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line that is a JSON object."""
    for lineno, text, error in _lines(path):
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
        if not isinstance(obj, dict):
            report.skip(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def _as_id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Skip(f"field {name!r} must be a string or integer, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
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
    if not text.strip():
        raise _Skip(f"text field {columns.text!r} is empty")
    title = obj.get(columns.title) if columns.title else None
    title = "" if title is None else title  # a null title means no title
    if not isinstance(title, str):
        raise _Skip(f"title field {columns.title!r} must be a string, got {type(title).__name__}")
    metadata = {k: v for k, v in obj.items() if k not in (id_key, columns.text, columns.title)}
    if isinstance(metadata.get("metadata"), dict):  # nested metadata: merged, top-level keys win
        metadata = {**metadata.pop("metadata"), **metadata}
    return Document(doc_id=doc_id, text=text, title=title, metadata=metadata, source=source)


def _read_jsonl(path: Path, report: LoadReport, columns: _Columns) -> Iterator[tuple[Document, Path, int]]:
    for lineno, obj in _json_objects(path, report):
        try:
            yield _record(obj, f"{path}:{lineno}", columns), path, lineno
        except _Skip as exc:
            report.skip(path, lineno, str(exc))


def _read_csv(
    path: Path, report: LoadReport, columns: _Columns, max_bytes: int
) -> Iterator[tuple[Document, Path, int]]:
    """Check the header now, return a generator over the rows."""
    bad_lines: dict[int, str] = {}

    def feed() -> Iterator[str]:
        # Lines are decoded one by one so a bad byte costs one row, not the rest of the file.
        for lineno, text, error in _lines(path):
            if error:
                bad_lines[lineno] = error
            yield text

    # Raised, never lowered: the default limit (128 KiB) would reject ordinary long documents.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = csv.reader(feed(), delimiter=delimiter, strict=True)  # bad quoting is reported, not guessed
    try:
        header = [name.strip() for name in next(rows, [])]
    except csv.Error as exc:
        raise SourceError(f"{path}: unreadable header row: {exc}") from exc
    if bad_lines:
        first = min(bad_lines)
        raise SourceError(f"{path}:{first}: header row is {bad_lines[first]}")
    if not header:
        raise SourceError(f"{path}: empty file; a header row with column names is required")
    missing = [c for c in (columns.text, columns.id) if c is not None and c not in header]
    if missing:
        raise SourceError(f"{path}: no column {missing[0]!r}; columns found: {', '.join(header)}")
    id_col = columns.id or next((c for c in ("_id", "id", "doc_id") if c in header), None)
    title_col = columns.title if columns.title in header else None
    return _csv_rows(path, report, rows, bad_lines, header, (id_col, title_col, columns.text))


def _csv_rows(
    path: Path, report: LoadReport, rows: Any, bad_lines: dict[int, str],  # rows: a csv.reader
    header: list[str], used: tuple[str | None, str | None, str],
) -> Iterator[tuple[Document, Path, int]]:
    id_col, title_col, text_col = used
    end = rows.line_num
    while True:
        start = end + 1  # a quoted field may span several physical lines
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            row = None
            report.skip(path, start, f"malformed CSV: {exc}")
        end = rows.line_num
        errors = [(n, bad_lines.pop(n)) for n in range(start, end + 1) if n in bad_lines]
        if not row:
            continue  # reported above, or a blank line
        if errors:
            report.skip(path, *errors[0])
        elif len(row) != len(header):
            report.skip(path, start, f"expected {len(header)} fields, got {len(row)}")
        elif not (values := dict(zip(header, row)))[text_col].strip():
            report.skip(path, start, f"empty text in column {text_col!r}")
        elif id_col and not values[id_col].strip():
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
    root = _require(path, folder=True)
    corpus = root / "corpus.jsonl"
    if not corpus.is_file():
        raise SourceError(f"{root}: not a BEIR folder, corpus.jsonl is missing")
    queries = root / "queries.jsonl"
    qrels_dir = root / "qrels"
    qrels = {p.stem: p for p in sorted(qrels_dir.glob("*.tsv"))} if qrels_dir.is_dir() else {}
    return BeirDataset(root, corpus, queries if queries.is_file() else None, qrels)


def load_queries(path: str | Path, report: LoadReport) -> dict[str, str]:
    """Read BEIR queries.jsonl ({"_id", "text"}) into {query id: text}."""
    path = _require(path)
    queries: dict[str, str] = {}
    for lineno, obj in _json_objects(path, report):
        try:
            query = _record(obj, f"{path}:{lineno}", _Columns(None, None, "text"))
        except _Skip as exc:
            report.skip(path, lineno, str(exc))
            continue
        if query.doc_id in queries:
            report.skip(path, lineno, f"duplicate query id {query.doc_id!r}")
        else:
            queries[query.doc_id] = query.text
    return queries


def load_qrels(
    path: str | Path,
    report: LoadReport,
    *,
    known_queries: Container[str] | None = None,
    known_documents: Container[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV ("query-id corpus-id score") into {query id: {doc id: grade}}.

    With `known_queries` / `known_documents`, a judgement naming an id outside them is
    reported with its line and skipped.
    """
    path = _require(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, text, error in _lines(path):
        fields = [f.strip() for f in text.rstrip("\r\n").split("\t")]
        if error:
            report.skip(path, lineno, error)
        elif not text.strip() or (lineno == 1 and fields == ["query-id", "corpus-id", "score"]):
            continue
        elif len(fields) != 3:
            reason = f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
            report.skip(path, lineno, reason)
        elif not fields[0] or not fields[1]:
            report.skip(path, lineno, "empty query-id or corpus-id")
        else:
            try:
                grade = int(fields[2])
            except ValueError:
                report.skip(path, lineno, f"score must be an integer, got {fields[2]!r}")
                continue
            if known_queries is not None and fields[0] not in known_queries:
                report.skip(path, lineno, f"unknown query id {fields[0]!r} (not in the queries file)")
                continue
            if known_documents is not None and fields[1] not in known_documents:
                report.skip(path, lineno, f"unknown document id {fields[1]!r} (not in the index)")
                continue
            judged = qrels.setdefault(fields[0], {})
            if fields[1] in judged:
                report.skip(path, lineno, f"duplicate judgement for ({fields[0]!r}, {fields[1]!r})")
            else:
                judged[fields[1]] = grade
    return qrels
