"""Building an index: load -> chunk -> encode -> store, streaming documents in batches.

Shared by the CLI and the app so that neither holds indexing logic of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import __version__
from .chunking import Chunk, chunk_document, first_slice
from .compat import compatibility_problems
from .config import UNRECORDED_PRECISION, ChunkingConfig, default_overlap
from .encoder import Encoder
from .files import sha256_file
from .loaders import (
    RECORDS,
    Document,
    FolderEntry,
    LoadIssue,
    LoadReport,
    SourceError,
    detect_format,
    folder_entries,
    iter_documents,
    iter_records,
    open_beir,
)
from .staging import LOCK, STAGING, Staging, WriterLock, base_state, publish
from .store import (
    CURRENT,
    GENERATION,
    METADATA,
    SPLIT_NAME,
    BuildRecord,
    LabelFiles,
    Manifest,
    SourceRecord,
    StoreError,
    content_hashes,
    content_sha256,
    in_batches,
    is_index,
    kept_labels,
    load_transforms,
    read_manifest,
    verified_file,
)
from .text import lone_surrogate
from .vector_index import IndexSpec

if TYPE_CHECKING:  # imported only with --ray: a plain build never loads Ray
    from .distributed import RayCluster

log = logging.getLogger("indexer.pipeline")

#: Documents read, tokenised, chunked and encoded together, then committed to the staging store
#: as one step: enough for length-sorted batches with little padding (64 made builds 1.5x slower),
#: few enough that a crash loses seconds of work. A batch also ends once its documents hold
#: CHARS_PER_BATCH characters, so that a run of huge documents does not hold many chunks in memory.
DOCS_PER_BATCH = 512
CHARS_PER_BATCH = 2_000_000
#: Chunks embedded in one call (length-sorted together). A huge document is embedded this many
#: chunks at a time while it is still being cut, so its token ids are never all in memory; its
#: chunks and vectors are committed together, with the rest of its batch.
CHUNKS_PER_ENCODE = 2048


class BuildError(Exception):
    """A build that produced nothing to publish (every record was skipped)."""


#: `on_stage(stage, documents_done, estimated_total)`: which step a build or update is at, for a progress display.
#: Stages: "reading" (once, at the start), "embedding" (before each batch, after each forward pass of the model and
#: after each committed batch) and "publishing" (once, before the new generation is written). An exception raised
#: by the callback stops the work there, as any failure would: nothing is published.
StageCallback = Callable[[str, int, "int | None"], None]


@dataclass
class BuildSummary:
    """What a build or an update did; `documents` and `chunks` count the whole published index."""

    index_dir: Path
    documents: int
    chunks: int
    tokens: int
    seconds: float
    ignored_files: int = 0
    issues: list[LoadIssue] = field(default_factory=list)
    generation: str = ""
    resumed_at: int = 0  # source records already done by an interrupted run of the same command
    processed: int = 0  # source records read and processed by this run
    already_complete: bool = False  # the same build had already been published: nothing was done
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def skipped(self) -> int:
        return len(self.issues)


@dataclass
class DeleteSummary:
    index_dir: Path
    removed: list[str]
    missing: list[str]
    documents: int
    generation: str  # the published generation afterwards: unchanged when nothing was removed


def estimate_documents(source: Path, fmt: str) -> int | None:
    """A cheap upper estimate of the record count, for the progress bar's total."""
    try:
        if fmt in ("jsonl", "beir", "csv"):
            path = source / "corpus.jsonl" if fmt == "beir" else source
            with open(path, "rb") as f:
                lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
            return max(lines - (1 if fmt == "csv" else 0), 0)
        if fmt == "folder":
            return sum(1 for entry in folder_entries(source) if isinstance(entry, FolderEntry) and entry.stat)
    except OSError:
        return None
    return None


def source_fingerprint(source: Path, fmt: str) -> str:
    """sha256 of a file-based source (the corpus file of a BEIR folder); for a folder, of the names,
    sizes and times of exactly the files the folder reader reads (loaders.folder_entries)."""
    if fmt != "folder":
        return sha256_file(source / "corpus.jsonl" if fmt == "beir" else source)
    digest = hashlib.sha256()
    for entry in folder_entries(source):
        if isinstance(entry, FolderEntry) and entry.stat:
            digest.update(f"{entry.doc_id}\0{entry.stat.st_size}\0{entry.stat.st_mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()


def index_matches(index_dir: Path, encoder: Encoder, source: Path, *, overlap: int | None = None) -> str | None:
    """Why the index at `index_dir` cannot be reused for `source` with `encoder` (None: it can)."""
    overlap = default_overlap(encoder.max_tokens) if overlap is None else overlap
    if not is_index(index_dir):
        return "no index there yet"
    try:
        manifest = read_manifest(index_dir)
    except StoreError as exc:
        return str(exc)
    fmt = detect_format(source)
    built = manifest.source
    problems = compatibility_problems(manifest, encoder, "reuse")
    if manifest.chunking.overlap != overlap:
        problems.append(f"it was built with an overlap of {manifest.chunking.overlap} tokens, not {overlap}")
    if manifest.updates:
        problems.append("it was updated with `add` or `delete` after it was built")
    if built.path != str(source.resolve()) or built.sha256 != source_fingerprint(source, fmt):
        problems.append(f"it was built from {built.path} as it was then, not from {source.resolve()} as it is now")
    return "; ".join(problems) or None


def _batched(documents: Iterable[Document], n: int, max_chars: int) -> Iterator[list[Document]]:
    """Lists of at most n documents, cut early once they hold max_chars characters (content only,
    so a resumed run cuts at the same records)."""
    batch: list[Document] = []
    chars = 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc.content)
        if len(batch) >= n or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _Ticker:
    """Moves the progress bar while chunks are embedded, so that one huge document shows progress."""

    def __init__(self, bar, report: LoadReport) -> None:
        self.bar, self.report = bar, report
        self.chunks = self.tokens = 0
        self._shown = time.monotonic()
        self.on_begin: Callable[[], None] = lambda: None  # when a batch's embedding begins
        self.on_forward: Callable[[], None] = lambda: None  # after each forward pass of the model

    def show(self, *, refresh: bool) -> None:
        self.bar.set_postfix(chunks=self.chunks, tokens=self.tokens, skipped=self.report.skipped, refresh=refresh)

    def begin(self) -> None:
        self.on_begin()

    def embedded(self, chunks: int, tokens: int) -> None:
        self.chunks += chunks
        self.tokens += tokens
        due = time.monotonic() - self._shown >= 0.5  # at most two redraws a second
        self.show(refresh=due)
        if due:
            self._shown = time.monotonic()
        self.on_forward()


def _check_target(index_dir: Path) -> None:
    """Refuse to write into a file or into a folder that holds anything but an index."""
    if index_dir.exists() and not index_dir.is_dir():
        raise StoreError(f"{index_dir} exists and is not a directory")
    if index_dir.is_dir():
        foreign = [p.name for p in index_dir.iterdir() if not _ours(p.name)]
        if foreign:
            raise StoreError(f"{index_dir} is not empty and is not an index directory ({foreign[0]}, …); refusing to write there")


def _ours(name: str) -> bool:
    return name in (CURRENT, LOCK, STAGING) or bool(GENERATION.fullmatch(name)) or (name.startswith(".gen-") and name.endswith(".tmp"))


@dataclass
class Plan:
    """One batch of source records (`records` of them, cut by _batched) and what of it is embedded: `todo`, of which
    `remove` names the documents an update replaces (their content changed). A build embeds the whole batch."""

    records: int
    todo: list[Document]
    remove: list[str] = field(default_factory=list)


@dataclass
class Embedded:
    """A batch embedded, ready to commit: the documents of its `todo` that have chunks (`kept`), their chunks in order
    (without token ids) and the chunks' vectors by pooling (None when the batch has no chunk)."""

    plan: Plan
    kept: list[Document]
    chunks: list[Chunk]
    vectors: dict[str, np.ndarray] | None


#: `embed(plans, ticker)`: the batches of `plans` embedded, one Embedded per Plan and in their order, with the vectors
#: of the poolings the index stores; it calls `ticker.begin()` when a batch's embedding begins and
#: `ticker.embedded(chunks, tokens)` as chunks are embedded.
#: This process's encoder by default (_embed_here); a pool of Ray actors with `--ray` (distributed.RayCluster).
Embed = Callable[[Iterator[Plan], _Ticker], Iterator[Embedded]]


def _plans(batches: Iterable[list[Document]], base: Path | None) -> Iterator[Plan]:
    """Each batch's Plan. With `base` (an update), a document whose content that generation holds unchanged is not
    embedded again. The hashes are read from the published base, not from the staging copy that the committing thread
    is writing: ids are unique within a source (loaders drop duplicates), so the batches already committed never touch
    the ids of a later batch, and both hold the same hashes for them."""
    db = None
    if base is not None:  # opened in the thread that reads the plans, where it is used: the base generation never changes
        db = sqlite3.connect(f"{(base / METADATA).as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        for batch in batches:
            if db is None:
                yield Plan(len(batch), batch)
                continue
            known = content_hashes(db, [d.doc_id for d in batch])
            todo = [d for d in batch if known.get(d.doc_id) != content_sha256(d.content)]
            yield Plan(len(batch), todo, [d.doc_id for d in todo if d.doc_id in known])
    finally:
        if db is not None:
            db.close()


def encoder_calls(todo: Sequence[Document], encoder: Encoder, overlap: int,
                  empty: Callable[[Document], None]) -> Iterator[list[Chunk]]:
    """The chunks of `todo` in the encoder calls a build makes of them: in document order, at most CHUNKS_PER_ENCODE
    chunks a call, each call's list given as soon as it is full (a huge document is embedded as it is cut, so its
    token ids are never all in memory). A document with no tokens is given to `empty`. Local and Ray builds both cut
    their batches here, so that their vectors come from the same encoder calls."""
    chunks: list[Chunk] = []
    # the first slice of every document in one tokenizer call: most documents are one slice
    firsts = encoder.tokenize([first_slice(d.content) for d in todo])
    for doc, first in zip(todo, firsts):
        found = False
        for chunk in chunk_document(doc.doc_id, doc.content, encoder.tokenize, window=encoder.window, overlap=overlap,
                                    first=first, exact_at_word_boundaries=encoder.exact_at_word_boundaries):
            found = True
            chunks.append(chunk)
            if len(chunks) >= CHUNKS_PER_ENCODE:
                yield chunks
                chunks = []
        if not found:
            empty(doc)
    if chunks:
        yield chunks


def no_tokens(report: LoadReport, doc: Document) -> None:
    """Report a document that has no tokens (it is skipped: nothing of it is stored)."""
    report.skip(doc.source, None, f"document {doc.doc_id!r} has no tokens")


def joined(parts: Sequence[Mapping[str, np.ndarray]], poolings: Sequence[str] | None) -> dict[str, np.ndarray] | None:
    """The vectors of a batch's encoder calls, one matrix per pooling of `poolings` (default: all computed)."""
    return {r: np.concatenate([p[r] for p in parts]) for r in poolings or parts[0]} if parts else None


def embed_batch(todo: Sequence[Document], encoder: Encoder, overlap: int, poolings: Sequence[str] | None = None,
                ) -> tuple[list[Chunk], dict[str, np.ndarray] | None, list[Document]]:
    """One batch chunked and embedded in one go, as a Ray actor does it: (its chunks without token ids, their vectors
    by pooling, the documents with no tokens)."""
    empty: list[Document] = []
    chunks: list[Chunk] = []
    parts = []
    for call in encoder_calls(todo, encoder, overlap, empty.append):
        parts.append(encoder.encode_ids([c.token_ids for c in call]))
        chunks.extend(c.embedded() for c in call)
    return chunks, joined(parts, poolings), empty


@dataclass
class _Step:
    """What the reading thread hands over: a batch's `plan` (on its first step), chunks to embed together (one encoder
    call), or, on its last step, `kept`, the documents that have chunks: the batch is then complete."""

    chunks: list[Chunk]
    plan: Plan | None = None
    kept: list[Document] | None = None


def _steps(plans: Iterator[Plan], encoder: Encoder, overlap: int, report: LoadReport) -> Iterator[_Step]:
    """Tokenise and chunk batch after batch, in the order and the encoder calls a sequential build makes."""
    with closing(plans):  # closed in this thread, which opened what the plans read
        for plan in plans:
            empty: list[Document] = []
            yield _Step([], plan=plan)
            for call in encoder_calls(plan.todo, encoder, overlap, empty.append):
                yield _Step(call)
            for doc in empty:  # reported in this thread, with the loader's reports of the same records
                no_tokens(report, doc)
            skipped = {d.doc_id for d in empty}
            yield _Step([], kept=[d for d in plan.todo if d.doc_id not in skipped])


_DONE = object()


def _ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """The items of `items`, produced by a thread of their own at most `depth` items ahead of the caller.

    The tokenizer and the model release the GIL, so reading, tokenising and chunking the next batch overlap with
    encoding this one. An exception in the thread is raised here, in the caller, as it would have been in a
    sequential loop; when the caller stops (an exception, Ctrl-C, closing this generator), the thread stops after
    the item at hand and is joined before this generator returns: no thread outlives it.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                queue.put(item)  # space is always made by the caller once it has set `stop`
                if stop.is_set():
                    return
            queue.put(_DONE)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller, which raises it)
            queue.put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own cleanup runs in the thread that ran it

    thread = threading.Thread(target=produce, name="indexer-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # free the slot the thread may be waiting for, until it sees `stop`
            try:
                queue.get(timeout=0.05)
            except Empty:
                pass
        thread.join()


def _embed_here(encoder: Encoder, overlap: int, report: LoadReport, poolings: Sequence[str] | None) -> Embed:
    """Embed with this process's encoder. Reading, tokenising and chunking run one step ahead in a thread, since the
    tokenizer and the model release the GIL; encoding stays in the caller's thread, in the order of a sequential build."""

    def embed(plans: Iterator[Plan], ticker: _Ticker) -> Iterator[Embedded]:
        plan, chunks, parts = None, [], []
        with closing(_ahead(_steps(plans, encoder, overlap, report), depth=1)) as steps:  # closed: its thread ends here
            for step in steps:
                if step.plan is not None:  # a batch begins
                    plan = step.plan
                    ticker.begin()
                if step.chunks:
                    parts.append(encoder.encode_ids([c.token_ids for c in step.chunks], on_batch=ticker.embedded))
                    chunks.extend(c.embedded() for c in step.chunks)
                if step.kept is not None:
                    done, chunks, parts = Embedded(plan, step.kept, chunks, joined(parts, poolings)), [], []
                    yield done  # committed before the next batch is embedded: nothing of it is kept here meanwhile
                    del done

    return embed


def _ingest(
    staging: Staging,
    documents: Iterable[Document],
    encoder: Encoder,
    overlap: int,
    report: LoadReport,
    bar,
    *,
    base: Path | None,
    on_progress: Callable[[int, int | None], None] | None,
    on_stage: StageCallback | None = None,
    poolings: Sequence[str] | None = None,
    embed: Embed | None = None,
) -> dict[str, int]:
    """Chunk, embed and stage documents batch by batch; each batch commits with the count of records consumed.

    The vectors of `poolings` (default: all the encoder computes) are stored: adding to an index stores only
    those the index keeps, whatever else the encoder computes.

    `base`: the published generation an update (`add`) starts from; documents it holds with the same content are not
    embedded again. None for a build: every document is embedded.

    `embed` (default: this process's encoder) embeds the batches; whatever embeds them, they are committed here, in
    order, by this thread (the store's SQLite connection belongs to it), with the same progress and callbacks.

    Batches are cut at the same record positions on a resumed run as on an uninterrupted one, and embedded in
    the same encoder calls, so a resumed build ends with exactly the same chunks and vectors.
    """
    stats = {"tokens": 0, "added": 0, "updated": 0, "unchanged": 0, "processed": 0}
    consumed = staging.consumed
    bar.update(consumed)
    ticker = _Ticker(bar, report)
    ticker.chunks = staging.next_chunk_id
    stage = on_stage or (lambda *_: None)
    total = bar.total  # counted here, not by the bar, which counts nothing when it is disabled
    stage("reading", consumed, total)
    ticker.on_begin = ticker.on_forward = lambda: stage("embedding", consumed, total)
    batches = _batched(itertools.islice(documents, consumed, None), DOCS_PER_BATCH, CHARS_PER_BATCH)
    embed = embed or _embed_here(encoder, overlap, report, poolings)
    with closing(embed(_plans(batches, base), ticker)) as embedded:  # closed: whatever it started ends here
        for done in embedded:
            plan = done.plan
            if base is not None:
                stats["unchanged"] += plan.records - len(plan.todo)
                stats["updated"] += len(plan.remove)
                stats["added"] += len(plan.todo) - len(plan.remove)
            consumed += plan.records
            try:
                staging.apply(remove=plan.remove, documents=done.kept, chunks=done.chunks, vectors=done.vectors, consumed=consumed)
            except sqlite3.OperationalError as exc:  # e.g. "database or disk is full"
                raise StoreError(
                    f"could not write to {staging.path}: {exc}; the published index is untouched and the work done so far "
                    "resumes when the same command is run again"
                ) from exc
            stats["tokens"] += sum(c.n_tokens for c in done.chunks)
            stats["processed"] += plan.records
            del done  # its chunks and vectors are in the store now
            bar.update(plan.records)
            ticker.chunks = staging.next_chunk_id
            ticker.show(refresh=False)
            if on_progress is not None:
                on_progress(consumed, total)
            stage("embedding", consumed, total)
    bar.total = bar.n  # the total was an estimate from line or file counts
    bar.refresh()
    return stats


def _text_paths(**paths: Path) -> None:
    """Refuse a path that is not valid UTF-8 (a file name's byte decoded by surrogateescape): the manifest,
    the metadata store and every message record paths as text."""
    for what, path in paths.items():
        text = str(path)
        at = lone_surrogate(text)
        if at is not None:
            code = ord(text[at])  # surrogateescape maps an undecodable byte b to U+DC00 + b
            shown = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            raise SourceError(f"the {what} path {text!r} is not valid UTF-8 ({shown} at character {at}); rename it")


def beir_labels(source: Path) -> LabelFiles | None:
    """The labelled set of a BEIR folder (queries.jsonl and each qrels/SPLIT.tsv), kept with the index it builds;
    None when it has no queries or no judgements."""
    dataset = open_beir(source)
    splits = {}
    for split, path in dataset.qrels.items():
        if not SPLIT_NAME.fullmatch(split) or not path.is_file():
            log.warning("%s is not kept with the index: split names use letters, digits, '_' and '-', and it must be a file", path)
            continue
        splits[split] = path
    if dataset.queries is None or not splits:
        return None
    return LabelFiles(dataset.root.resolve().name, dataset.queries, splits)


#: What build_index and add_documents read: a path (folder, JSONL, CSV/TSV, BEIR folder), or records from memory
#: (dicts shaped like a JSONL line, or Documents; a list, or an iterator read once).
Source = Union[str, Path, Iterable[Union[Mapping[str, Any], Document]]]


@dataclass
class _Opened:
    """A source opened for one build or add."""

    name: str  # its absolute path, or RECORDS
    format: str
    report: LoadReport
    documents: Iterator[Document]
    fingerprint: str  # equal fingerprints, equal content: what lets a killed run resume
    estimate: int | None  # records, for the progress bar's total
    path: Path | None = None


def records_fingerprint(records: Sequence[Any]) -> str | None:
    """sha256 of a list of records as JSON (repr for what JSON cannot hold): the same list resumes a killed build.
    None when a record has no stable text form (its build then cannot resume)."""
    digest = hashlib.sha256()
    for record in records:
        value = asdict(record) if isinstance(record, Document) else record
        try:
            line = json.dumps(value, sort_keys=True, default=repr)
        except (TypeError, ValueError, RecursionError):
            try:
                line = repr(value)
            except (ValueError, RecursionError):  # e.g. an integer of more digits than Python prints
                return None
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return "records:" + digest.hexdigest()


def _open_source(source: Source, format: str, **columns) -> _Opened:
    report = LoadReport()
    if isinstance(source, (str, Path)):
        path = Path(source)
        _text_paths(source=path)
        fmt = detect_format(path) if format == "auto" else format
        documents = iter_documents(path, report, format=fmt, **columns)
        return _Opened(str(path.resolve()), fmt, report, documents, source_fingerprint(path, fmt),
                       estimate_documents(path, fmt), path)
    if format not in ("auto", RECORDS):
        raise ValueError(f"format {format!r} names a kind of file; records from memory take format 'auto' or {RECORDS!r}")
    documents = iter_records(source, report, **columns)  # checks that it is a collection of records
    # a list can be read again: a killed build resumes when given the same list; an iterator is read once,
    # so nothing can resume from it and no later run matches this one
    fingerprint = records_fingerprint(source) if isinstance(source, Sequence) else None
    return _Opened(RECORDS, RECORDS, report, documents, fingerprint or f"once:{uuid.uuid4().hex}",
                   len(source) if isinstance(source, Sequence) else None)


def build_index(
    source: Source,
    index_dir: str | Path,
    encoder: Encoder,
    *,
    overlap: int | None = None,
    overwrite: bool = False,
    format: str = "auto",
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    progress: bool = True,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_stage: StageCallback | None = None,
    vector_index: IndexSpec | None = None,
    ray: RayCluster | None = None,
) -> BuildSummary:
    """Index every readable document of `source` into `index_dir`; bad records are reported and skipped.

    Nothing is published unless the whole build succeeds; an existing index stays until then.
    A build that was killed resumes where it stopped when called again with the same arguments (records from
    memory: the same list; an iterator cannot be read again, so its build starts over).
    `on_progress(documents_done, estimated_total)` is called after every batch; `on_stage` names the step too
    (see StageCallback: the app's bar).
    `vector_index` chooses exact (`flat`, the default), approximate (`hnsw`) or compressed (`ivf`) FAISS indexes.
    `ray` (distributed.connect): the batches are embedded by a pool of actors on that Ray cluster, into the same index;
    reading, the lock, the commits and the publication stay in this process.
    """
    index_dir = Path(index_dir).resolve()
    _text_paths(index=index_dir)
    spec = vector_index or IndexSpec()
    chunking = ChunkingConfig(max_tokens=encoder.max_tokens, overlap=overlap)
    columns = {"id_column": id_column, "title_column": title_column, "text_column": text_column}
    opened = _open_source(source, format, **columns)
    fmt, report = opened.format, opened.report
    _check_target(index_dir)
    started = time.perf_counter()
    info = encoder.info
    dims = {p: info.dim for p in encoder.poolings}
    with WriterLock(index_dir, f"build {opened.name}", create=True):
        try:
            _, old = base_state(index_dir)
        except StoreError:
            if not overwrite:
                raise
            old = None  # a damaged index is what --overwrite replaces
        fingerprint = opened.fingerprint
        command = {
            "op": "build", "source": opened.name, "fingerprint": fingerprint, "format": fmt,
            "columns": columns, "model": info.fingerprint, "chunking": chunking.to_dict(), "dims": dims,
            "representations": list(encoder.representations),
        }
        if encoder.precision != UNRECORDED_PRECISION:  # an fp32 build keeps the signature it had before precision was a choice
            command["precision"] = encoder.precision
        command_sha = hashlib.sha256(json.dumps(command, sort_keys=True).encode()).hexdigest()
        signature = command | {"base": old.generation if old else None}
        resumable = Staging.pending(index_dir, signature)
        same = old is not None and old.build.command_sha256 == command_sha and not old.updates
        if same and not resumable and old.vector_index == spec:
            # killed after publishing, or simply run twice: the index is already what this command builds
            return _summary_of_published(index_dir, started, report)
        if old is not None and not overwrite and not resumable:
            hint = (f"; to change only its vector index type, run `python -m indexer convert {index_dir} --index-type {spec.type}`"
                    if same else "")
            raise StoreError(
                f"index {index_dir} already exists; pass --overwrite to replace it "
                f"(the existing index is kept until the new one is complete), or `add` to update it{hint}"
            )
        staging = Staging(index_dir, signature, next_chunk_id=old.next_chunk_id if old else 0)
        resumed_at = staging.consumed
        if resumed_at:
            log.warning("resuming an interrupted build of %s after %d records", opened.name, resumed_at)
        with logging_redirect_tqdm(), tqdm(
            total=opened.estimate, unit="doc", desc="indexing", disable=not progress, dynamic_ncols=True
        ) as bar:
            stats = _ingest(staging, opened.documents, encoder, chunking.overlap, report, bar, base=None,
                            on_progress=on_progress, on_stage=on_stage,
                            embed=ray and ray.embedder(encoder, chunking.overlap, report))
        docs, chunks = staging.counts()
        if docs == 0:
            staging.remove()
            raise BuildError(f"no document could be indexed from {opened.name} ({report.skipped} records skipped); nothing was written")
        if on_stage is not None:
            on_stage("publishing", docs, docs)
        seconds = time.perf_counter() - started
        manifest = Manifest(
            indexer_version=__version__,
            model=info,
            chunking=chunking,
            content_tokens_per_chunk=encoder.window,
            precision=encoder.precision,
            vector_index=spec,
            source=SourceRecord(opened.name, fmt, fingerprint),
            build=BuildRecord(round(seconds, 3), report.skipped, report.ignored_files, command_sha, ray=ray and ray.record()),
        )
        generation = publish(index_dir, staging, manifest, dims, representations=encoder.representations,
                             labels=beir_labels(opened.path) if fmt == "beir" else None, encode=encoder.encode_texts,
                             progress=progress)
    return BuildSummary(index_dir, docs, chunks, stats["tokens"], seconds, report.ignored_files, report.issues,
                        generation=generation, resumed_at=resumed_at, processed=stats["processed"], added=docs)


def _summary_of_published(index_dir: Path, started: float, report: LoadReport) -> BuildSummary:
    manifest = read_manifest(index_dir)
    return BuildSummary(index_dir, manifest.counts.documents, manifest.counts.chunks, 0, time.perf_counter() - started,
                        report.ignored_files, report.issues, generation=manifest.generation, already_complete=True)


def add_documents(
    index_dir: str | Path,
    source: Source,
    encoder: Encoder,
    *,
    format: str = "auto",
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    progress: bool = True,
    on_progress: Callable[[int, int | None], None] | None = None,
    ray: RayCluster | None = None,
) -> BuildSummary:
    """Index new documents of `source` and re-embed those whose content changed; unchanged ones are skipped.

    All representations and the metadata change together, in one new generation. Resumes like build_index; embeds on
    a Ray cluster like it, with `ray`.
    """
    index_dir = Path(index_dir).resolve()
    _text_paths(index=index_dir)
    columns = {"id_column": id_column, "title_column": title_column, "text_column": text_column}
    opened = _open_source(source, format, **columns)
    fmt, report = opened.format, opened.report
    started = time.perf_counter()
    with WriterLock(index_dir, f"add {opened.name}"):
        gen_dir, manifest = base_state(index_dir)
        if manifest is None:
            raise StoreError(f"{index_dir} has no index to add to; create it with `python -m indexer build {opened.name} --index {index_dir}`")
        problems = compatibility_problems(manifest, encoder, "add")
        if problems:
            raise StoreError(f"cannot add to {index_dir} with this model: " + "; ".join(problems))
        overlap = manifest.chunking.overlap
        fixed = load_transforms(gen_dir, manifest)  # checked before any work
        labels = kept_labels(gen_dir, manifest)
        signature = {
            "op": "add", "source": opened.name, "fingerprint": opened.fingerprint, "format": fmt,
            "columns": columns, "base": manifest.generation,
        }
        staging = Staging(index_dir, signature, base=gen_dir, next_chunk_id=manifest.next_chunk_id)
        resumed_at = staging.consumed
        with logging_redirect_tqdm(), tqdm(
            total=opened.estimate, unit="doc", desc="updating", disable=not progress, dynamic_ncols=True
        ) as bar:
            stats = _ingest(staging, opened.documents, encoder, overlap, report, bar, base=gen_dir, on_progress=on_progress,
                            poolings=tuple(manifest.poolings),
                            embed=ray and ray.embedder(encoder, overlap, report, tuple(manifest.poolings)))
        docs, chunks = staging.counts()
        seconds = time.perf_counter() - started
        update = {
            "op": "add", "source": opened.name, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "added": stats["added"], "updated": stats["updated"], "unchanged": stats["unchanged"], "skipped_records": report.skipped,
        }
        on_ray = ray.record() if ray is not None else None
        if on_ray is not None:
            update["ray"] = on_ray
        # transforms stay as fitted: new documents are mapped like the old ones (`refit` fits them again); the index's
        # precision is recorded now if it was not (compatibility_problems made sure the new vectors are of it)
        generation = publish(index_dir, staging, replace(manifest, precision=encoder.precision, updates=(*manifest.updates, update)),
                             manifest.poolings, representations=list(manifest.representations), fixed=fixed, labels=labels,
                             incremental=True, encode=encoder.encode_texts, progress=progress)
    return BuildSummary(index_dir, docs, chunks, stats["tokens"], seconds, report.ignored_files, report.issues,
                        generation=generation, resumed_at=resumed_at, processed=stats["processed"], added=stats["added"],
                        updated=stats["updated"], unchanged=stats["unchanged"])


def _any_present(gen_dir: Path, manifest: Manifest, doc_ids: list[str]) -> bool:
    """Whether a published generation holds any of the documents (its metadata store verified first, then read-only)."""
    verified_file(gen_dir, METADATA, manifest.files)
    db = sqlite3.connect(f"{(gen_dir / METADATA).as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        for part, marks in in_batches(doc_ids):
            if db.execute(f"SELECT 1 FROM documents WHERE doc_id IN ({marks}) LIMIT 1", part).fetchone():
                return True
        return False
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{gen_dir / METADATA} cannot be read by SQLite: {exc}") from exc
    finally:
        db.close()


def delete_documents(index_dir: str | Path, doc_ids: Sequence[str]) -> DeleteSummary:
    """Remove documents from every representation and the metadata, as one new generation.

    When none of the ids is in the index, nothing is published (no new generation).
    """
    index_dir = Path(index_dir).resolve()
    # read once (an iterator is read here only); a string is one id's characters: "12" is not ["1", "2"]
    ids = list(doc_ids) if isinstance(doc_ids, Iterable) and not isinstance(doc_ids, (str, bytes)) else None
    if ids is None or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"document ids must be a list of strings, got {doc_ids!r:.80}")
    wanted = sorted(set(ids))
    if not wanted:
        raise ValueError("no document id given")
    with WriterLock(index_dir, "delete"):
        gen_dir, manifest = base_state(index_dir)
        if manifest is None:
            raise StoreError(f"{index_dir} has no index to delete from")
        if not _any_present(gen_dir, manifest, wanted):
            return DeleteSummary(index_dir, [], wanted, manifest.counts.documents, manifest.generation)
        fixed = load_transforms(gen_dir, manifest)  # checked before any work
        labels = kept_labels(gen_dir, manifest)
        signature = {"op": "delete", "ids": wanted, "base": manifest.generation}
        staging = Staging(index_dir, signature, base=gen_dir, next_chunk_id=manifest.next_chunk_id)
        present = set(staging.content_hashes(wanted))
        staging.delete(wanted)
        update = {"op": "delete", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "removed": len(present)}
        docs, _ = staging.counts()
        from .search import tuning_encode  # a graph rebuilt for its tombstones is tuned as a build's is

        generation = publish(index_dir, staging, replace(manifest, updates=(*manifest.updates, update)), manifest.poolings,
                             representations=list(manifest.representations), fixed=fixed, labels=labels, incremental=True,
                             encode=tuning_encode(manifest))
    return DeleteSummary(index_dir, sorted(present), [i for i in wanted if i not in present], docs, generation)
