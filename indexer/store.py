"""The index directory and its reader.

Layout of an index directory DIR:

    DIR/CURRENT              {"generation": "gen-000003", "manifest_sha256": ...}: the published generation
    DIR/gen-000003/          one complete, immutable generation:
        manifest.json        settings, counts, and the size + sha256 of every file below
        pooled.faiss         one FAISS file per representation, ids = chunk ids
        mean.faiss
        mean+whiten.faiss
        mean+whiten.transform.safetensors   a fitted transform (mean vector, matrix), no pickle
        metadata.sqlite      documents, chunks and their vectors, one per chunk and pooling
        labels.queries.jsonl     an index built from a BEIR folder keeps its labelled set: the queries
        labels.qrels.test.tsv    and each split's judgements, copied at build time and carried by every
                                 later generation, so evaluation needs no source folder (see LabelFiles)
    DIR/writer.lock          held (flock) by the one writer at a time
    DIR/staging/             the writer's crash-safe working copy (see staging.py)

A writer prepares a new generation and publishes it by replacing CURRENT atomically, so a
reader always opens a complete generation. CURRENT binds the manifest's sha256 and the manifest
binds every file's size and sha256; all are checked before FAISS or SQLite opens a file, since
FAISS loads many corrupted files without complaint. This module never imports torch.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import re
import sqlite3
import threading
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, Union

import faiss
import numpy as np

from . import __version__, vector_index
from .config import (
    ENCODED_PRECISIONS,
    POOLINGS,
    REPRESENTATION_NAME,
    UNRECORDED_PRECISION,
    ChunkingConfig,
    ModelInfo,
    parse_representation,
    require_one_of,
)
from .files import sha256_file
from .text import PAGE_STARTS, content_head, page_at
from .transforms import Transform
from .vector_index import IndexSpec

#: The manifest format this indexer writes, and those it reads (an index of any other is refused, see Manifest).
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS: tuple[int, ...] = (2,)
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
METADATA = "metadata.sqlite"
GENERATION = re.compile(r"gen-(\d{6})")

#: The metadata store's SQLite page size, set when a build creates it (add and delete copy it, and VACUUM INTO
#: keeps it). A 384-dimension float32 vector row is 1.55 kB: a 4,096-byte page holds two, with 1 kB unused, so each
#: vector took 2,073 bytes; 8,192-byte pages hold five, 1,679 bytes each (-10% of an msmarco index per chunk).
PAGE_SIZE = 8192

SCHEMA = f"""
PRAGMA page_size = {PAGE_SIZE};
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,        -- JSON object
    source TEXT NOT NULL,          -- file[:line] the record came from
    content_sha256 TEXT NOT NULL,  -- of the embedded content (title + text)
    n_chunks INTEGER NOT NULL
);
CREATE TABLE chunks (
    chunk_id INTEGER PRIMARY KEY,  -- the id of the chunk's vector in every FAISS file; never reused
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    position INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX chunks_by_doc ON chunks(doc_id, position);
CREATE TABLE vectors (             -- float32 bytes; the FAISS files are rebuilt from these
    chunk_id INTEGER NOT NULL,
    representation TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (chunk_id, representation)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


#: The files of a labelled set kept in a generation (the manifest's "labels" record names them).
LABELS_QUERIES = "labels.queries.jsonl"
#: A split's name, as it appears in a kept qrels file's name: one plain component.
SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def labels_qrels_file(split: str) -> str:
    """File of a kept split's judgements (`test` -> `labels.qrels.test.tsv`)."""
    return f"labels.qrels.{split}.tsv"


@dataclass(frozen=True)
class LabelFiles:
    """A labelled set: the dataset's name, its queries file and each split's qrels file (in a BEIR folder at
    build time, in a generation afterwards)."""

    name: str
    queries: Path
    qrels: dict[str, Path]

    def record(self) -> "LabelsRecord":
        """The manifest's "labels" record of this set once kept in a generation."""
        return LabelsRecord(self.name, LABELS_QUERIES, {s: labels_qrels_file(s) for s in self.qrels})

    def kept_files(self) -> dict[str, Path]:
        """{file name in a generation: where it is copied from}."""
        return {LABELS_QUERIES: self.queries} | {labels_qrels_file(s): p for s, p in self.qrels.items()}


class StoreError(Exception):
    """An index directory that cannot be written or served; the message says what and where."""


def faiss_file(representation: str) -> str:
    return f"{representation}.faiss"


def transform_file(representation: str) -> str:
    """File of a representation's fitted transform (`mean+whiten` -> `mean+whiten.transform.safetensors`)."""
    return f"{representation}.transform.safetensors"


#: Bytes a transform file may hold beyond its tensors (safetensors' JSON header names two small tensors).
_SAFETENSORS_HEADER = 4096
#: A file name inside a generation: one plain component, never hidden, `..` or a path.
_PLAIN_FILE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]{0,127}")


# -- the manifest: one typed record, read and written only here ------------------------------------------

@dataclass(frozen=True)
class FileRecord:
    """Size and sha256 of a file of a generation: checked before the file is read."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class TransformRecord:
    """A representation's fitted transform: its kind and parameter (as in the name), its file, and where it was
    fitted. The last four are None in records written before they were kept."""

    kind: str
    param: int | None
    file: str
    dim_in: int | None = None
    fitted_on_chunks: int | None = None
    fitted_in: str | None = None
    refitted: bool | None = None  # fitted at the generation that holds it (else kept fixed by add, delete, repair)

    def to_dict(self) -> dict:
        return _without_none(dataclasses.asdict(self), keep=("param",))


@dataclass(frozen=True)
class RepresentationRecord:
    """One representation of an index: its FAISS file and vector dimension, the pooling it is computed from and its
    transform, if any. `build_seconds` is None in records written before it was kept.

    An HNSW graph records the efSearch it is searched with when it was tuned (`ef_search`, with the recall@10 it
    reached on `tuning_queries` probes made from the collection's own chunks, what they were (`tuning_probes`:
    vector_index.PROBES_TEXT or PROBES_VECTORS; None in records written before it was kept), and the seconds the
    tuning took); None: the
    index's fixed `vector_index.ef_search` applies. A graph extended from the previous generation's (add, delete)
    names that generation in `built_from` (`build_seconds` then times the extension) and keeps the chunks deleted
    or replaced since its last full build as `tombstones`: ids in the FAISS file that are in no chunk of the
    metadata store, never returned by a search. An IVF index records its tuned `nprobe` likewise, and the number of
    lists it was trained with (`nlist`: kept by adds, which use the trained lists as they are). All are omitted
    (None) when unset, as older manifests were written."""

    dim: int
    file: str
    pooling: str
    index_type: str = "flat-ip"
    build_seconds: float | None = None
    transform: TransformRecord | None = None
    ef_search: int | None = None
    recall_at_10: float | None = None
    tuning_queries: int | None = None
    tuning_seconds: float | None = None
    tuning_probes: str | None = None
    built_from: str | None = None
    tombstones: int | None = None
    nprobe: int | None = None
    nlist: int | None = None

    @property
    def effort(self) -> int | None:
        """The tuned search effort (efSearch or nprobe), None when the spec's fixed one applies."""
        return self.ef_search if self.ef_search is not None else self.nprobe

    def to_dict(self) -> dict:
        record = {"dim": self.dim, "file": self.file, "index_type": self.index_type, "build_seconds": self.build_seconds,
                  "pooling": self.pooling, "transform": self.transform and self.transform.to_dict(),
                  "ef_search": self.ef_search, "recall_at_10": self.recall_at_10, "tuning_queries": self.tuning_queries,
                  "tuning_seconds": self.tuning_seconds, "tuning_probes": self.tuning_probes, "built_from": self.built_from, "tombstones": self.tombstones,
                  "nprobe": self.nprobe, "nlist": self.nlist}
        return _without_none(record)


@dataclass(frozen=True)
class Counts:
    documents: int
    chunks: int


@dataclass(frozen=True)
class SourceRecord:
    """What an index was built from: a path, its format, and its fingerprint then (pipeline.source_fingerprint)."""

    path: str
    format: str
    sha256: str


@dataclass(frozen=True)
class BuildRecord:
    """How the build went; `command_sha256` (None before it was kept) lets the same build run twice do nothing.
    `ray`: where a build on a Ray cluster embedded (`address`, `nodes`, `actors`, `threads_per_actor`) and the seconds
    that took (`wall_s`, the actors' start-up included); omitted for a local build, as manifests were written before."""

    seconds: float
    skipped_records: int
    ignored_files: int
    command_sha256: str | None = None
    ray: Mapping[str, str | float] | None = None

    def to_dict(self) -> dict:
        return _without_none(dataclasses.asdict(self))


@dataclass(frozen=True)
class LabelsRecord:
    """The labelled set a generation keeps (LabelFiles.record): the dataset's name, its queries file and each
    split's qrels file, all inside the generation."""

    name: str
    queries: str
    qrels: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A generation's manifest.json: what the index was built with, what it holds and every file's checksum.

    The one reader and writer of that JSON (`from_dict`, `to_dict`); the rest of the code reads these fields.
    A writer describes the index (the first block of fields); `staging.publish` fills in the rest. Mappings are
    read-only by convention, as the whole record is.
    """

    indexer_version: str
    model: ModelInfo  # the manifest's "pooler_check" and "tokenizer" records repeat three of its fields
    chunking: ChunkingConfig
    content_tokens_per_chunk: int  # the window between the model's special tokens (recorded inside "chunking")
    normalized: bool = True
    metric: str = "inner_product"
    precision: str | None = None  # what the vectors were computed in (config.ENCODED_PRECISIONS); None: not recorded, fp32
    vector_index: IndexSpec = IndexSpec()  # absent from manifests written before it was a choice: flat
    source: SourceRecord
    build: BuildRecord
    updates: tuple[Mapping[str, Any], ...] = ()  # one record per add, delete, repair, convert or refit since the build
    labels: LabelsRecord | None = None
    # written by staging.publish
    format_version: int = FORMAT_VERSION
    generation: str = ""
    created_at: str = ""
    counts: Counts = Counts(0, 0)
    next_chunk_id: int = 0
    poolings: Mapping[str, int] = field(default_factory=dict)  # {pooling: dimension} of the vectors the metadata store keeps
    representations: Mapping[str, RepresentationRecord] = field(default_factory=dict)
    files: Mapping[str, FileRecord] = field(default_factory=dict)

    @property
    def encoded_precision(self) -> str:
        """What the stored vectors were computed in: the recorded precision, or fp32 for an index from before it was."""
        return self.precision or UNRECORDED_PRECISION

    def to_dict(self) -> dict:
        """The JSON object of manifest.json, keys in the order the writer has always used."""
        chunking = self.chunking.to_dict() | {"content_tokens_per_chunk": self.content_tokens_per_chunk}
        out = {
            "indexer_version": self.indexer_version, "model": self.model.to_dict(),
            "pooler_check": {"status": self.model.pooler, "note": self.model.pooler_note},
            "tokenizer": self.model.tokenizer, "chunking": chunking, "normalized": self.normalized, "metric": self.metric,
        }
        if self.precision is not None:  # a manifest from before precision was recorded is written back as it was
            out["precision"] = self.precision
        out |= {
            "vector_index": self.vector_index.to_dict(), "source": dataclasses.asdict(self.source),
            "build": self.build.to_dict(), "updates": [dict(u) for u in self.updates],
        }
        if self.labels is not None:
            out["labels"] = dataclasses.asdict(self.labels)
        return out | {
            "format_version": self.format_version, "generation": self.generation, "created_at": self.created_at,
            "counts": dataclasses.asdict(self.counts), "next_chunk_id": self.next_chunk_id,
            "poolings": {p: {"dim": d} for p, d in self.poolings.items()},
            "representations": {r: spec.to_dict() for r, spec in self.representations.items()},
            "files": {name: dataclasses.asdict(f) for name, f in self.files.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str | Path = MANIFEST) -> "Manifest":
        """The manifest of a JSON object read from `where` (named in messages): StoreError if it is of a format
        version this indexer does not read, or not a valid manifest. Names and file names in it are checked, so
        they are safe to join into paths."""
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise StoreError(f"{where} is corrupted: no 'files' table")
        version = data.get("format_version")
        if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
            readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
            newer = type(version) is int and version > max(READABLE_FORMAT_VERSIONS)
            raise StoreError(
                f"{where} has format version {version!r}; this indexer ({__version__}) reads format version {readable}. "
                + ("The index was written by a newer indexer: upgrade pooling-lab to read it, or rebuild it with this one."
                   if newer else "Rebuild the index (`python -m indexer build SOURCE --index DIR --overwrite`).")
            )
        _check_names(where, data)
        chunking = data.get("chunking")
        chunks = _settings(where, "chunking", lambda: _record(ChunkingConfig, chunking, f"{where}: 'chunking'"))
        spec = _settings(where, "vector_index", lambda: IndexSpec.from_dict(data.get("vector_index")))
        updates = data.get("updates")
        if not isinstance(updates, list) or not all(isinstance(u, dict) for u in updates):
            raise StoreError(f"{where} is corrupted: 'updates' must be a list of objects")
        reps = data["representations"]  # _check_names checked the names, files, dims, poolings and transforms
        return cls(
            indexer_version=_field(data, "indexer_version", str, where),
            model=_record(ModelInfo, data.get("model"), f"{where}: 'model'"),
            chunking=chunks,
            content_tokens_per_chunk=_field(chunking, "content_tokens_per_chunk", int, f"{where}: 'chunking'"),
            normalized=_field(data, "normalized", bool, where),
            metric=_field(data, "metric", str, where),
            precision=None if data.get("precision") is None else _settings(
                where, "precision", lambda: require_one_of(data["precision"], ENCODED_PRECISIONS, "precision")),
            vector_index=spec,
            source=_record(SourceRecord, data.get("source"), f"{where}: 'source'"),
            build=_record(BuildRecord, data.get("build"), f"{where}: 'build'"),
            updates=tuple(updates),
            labels=None if data.get("labels") is None else _record(LabelsRecord, data["labels"], f"{where}: 'labels'"),
            format_version=version,
            generation=_field(data, "generation", str, where),
            created_at=_field(data, "created_at", str, where),
            counts=_record(Counts, data.get("counts"), f"{where}: 'counts'"),
            next_chunk_id=_field(data, "next_chunk_id", int, where),
            # manifests written before transforms list only plain representations, which are their poolings
            poolings={p: v["dim"] for p, v in data.get("poolings", reps).items()},
            representations={r: _record(
                RepresentationRecord, spec, f"{where}: representation `{r}`", pooling=parse_representation(r).pooling,
                transform=None if spec.get("transform") is None
                else _record(TransformRecord, spec["transform"], f"{where}: the transform of `{r}`"),
            ) for r, spec in reps.items()},
            files={name: _record(FileRecord, f, f"{where}: the checksum of {name}") for name, f in data["files"].items()},
        )


def _settings(where: str | Path, name: str, make: Callable[[], Any]) -> Any:
    """Settings that their own class checks (ValueError naming the value), or a StoreError naming them."""
    try:
        return make()
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where} has invalid {name} settings: {exc}") from exc


def _without_none(record: dict, keep: Sequence[str] = ()) -> dict:
    """A record without its unset (None) optional entries, as older manifests were written."""
    return {k: v for k, v in record.items() if v is not None or k in keep}


def _field(data: Mapping, key: str, kind: type, where: str | Path) -> Any:
    """`data[key]`, which must be of type `kind` (JSON's true is not an int here)."""
    if key not in data:
        raise StoreError(f"{where} is corrupted: it has no {key!r}")
    value = data[key]
    if not _is(value, kind):
        raise StoreError(f"{where} is corrupted: {key!r} is {value!r}, not of type {_type_name(kind)}")
    return value


def _record(cls: type, data: Any, where: str, **given: Any):
    """An instance of the record dataclass `cls` from a JSON object: each field not `given` is read from it (present
    unless it has a default, and of its declared type); other keys are ignored."""
    if not isinstance(data, dict):
        raise StoreError(f"{where} is corrupted: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in given:
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise StoreError(f"{where} is corrupted: it has no {f.name!r}")
            continue
        if not _is(data[f.name], hints[f.name]):
            raise StoreError(f"{where} is corrupted: {f.name!r} is {data[f.name]!r}, not of type {_type_name(hints[f.name])}")
        values[f.name] = data[f.name]
    return cls(**values)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _is(value: Any, hint: Any) -> bool:
    """Whether a JSON value is of a record's declared type (str, int, float, bool, None, Literal, unions, mappings)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and all(_is(k, args[0]) and _is(v, args[1]) for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is float:
        return type(value) in (int, float)
    return type(value) is hint  # str, int, bool: JSON's true is not an int


def bytes_per_chunk(manifest: Manifest) -> dict[str, float]:
    """Disk use of a generation per chunk: each file's size from the manifest's records (what `verify` checks on disk)
    divided by the chunk count (their sum is the whole generation's). The vectors are there twice: in each
    representation's FAISS file and, per pooling, in the metadata store (the durable copy that repair, transforms
    and resumes read)."""
    chunks = max(manifest.counts.chunks, 1)
    return {name: record.bytes / chunks for name, record in manifest.files.items()}


def content_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChunkHit:
    """A chunk returned by the store for a search: enough to show it and rank its document."""

    chunk_id: int
    doc_id: str
    position: int
    text: str
    title: str
    page: int | None = None  # the page of a paged document (PDF) the chunk starts on


@dataclass(frozen=True)
class ChunkPlace:
    """Where a chunk lies in its document: 0-based position among the document's `n_chunks` chunks, and its
    [char_start, char_end) in the document's embedded content (title, a space, text)."""

    position: int
    n_chunks: int
    char_start: int
    char_end: int


def is_index(directory: str | Path) -> bool:
    """Whether `directory` has a published generation."""
    return (Path(directory) / CURRENT).is_file()


def read_pointer(directory: str | Path) -> dict:
    """The CURRENT pointer: which generation is published, and its manifest's sha256."""
    directory = Path(directory)
    path = directory / CURRENT
    if not directory.is_dir():
        raise StoreError(f"index directory {directory} does not exist; build it with `python -m indexer build SOURCE --index {directory}`")
    if not path.is_file():
        if any(GENERATION.fullmatch(p.name) for p in directory.iterdir()):
            raise StoreError(f"{path} is missing although {directory} holds generations; {repair_hint(directory)}")
        raise StoreError(f"{directory} is not an index directory: {CURRENT} is missing (an unfinished first build resumes when run again)")
    hint = f"; {repair_hint(directory)}"
    try:
        pointer = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is corrupted: {exc}{hint}") from exc
    except OSError as exc:
        raise StoreError(f"{path} cannot be read: {exc.strerror}") from exc
    if (
        not isinstance(pointer, dict)
        or not GENERATION.fullmatch(str(pointer.get("generation")))
        or not re.fullmatch(r"[0-9a-f]{64}", str(pointer.get("manifest_sha256")))
    ):
        raise StoreError(f"{path} is corrupted: it does not name a generation and its manifest checksum{hint}")
    return pointer


def repair_hint(directory: Path) -> str:
    """What to do about an index whose published generation cannot be opened."""
    return f"`python -m indexer repair {directory}` publishes the newest intact generation again"


def generation_id(directory: str | Path) -> str:
    """Name of the published generation: cheap, for caches and for noticing a new one."""
    return read_pointer(directory)["generation"]


def load_manifest(gen_dir: Path, expected_sha: str | None) -> tuple[Manifest, str]:
    """(manifest, its sha256) of a generation, checked against `expected_sha` (CURRENT's) unless None,
    and validated: names and file names from it are safe to join into paths."""
    path = gen_dir / MANIFEST
    if not path.is_file():
        raise StoreError(f"{path} is missing; the index is incomplete — {repair_hint(gen_dir.parent)}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha is not None and digest != expected_sha:
        raise StoreError(f"{path} is corrupted: its sha256 does not match the one recorded in {CURRENT}; refusing to serve it; {repair_hint(gen_dir.parent)}")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is corrupted: {exc}") from exc
    return Manifest.from_dict(manifest, path), digest


def _check_names(path: str | Path, manifest: dict) -> None:
    """Refuse a manifest whose representation or file names could point outside its generation."""
    reps = manifest.get("representations")
    if not isinstance(reps, dict) or not reps:
        raise StoreError(f"{path} lists no representations")
    for name, spec in reps.items():
        if not REPRESENTATION_NAME.fullmatch(name):
            raise StoreError(f"{path}: representation name {name!r} is not valid (expected e.g. `mean` or `pooled+whiten128`)")
        if not isinstance(spec, dict) or spec.get("file") != faiss_file(name):
            file = spec.get("file") if isinstance(spec, dict) else None
            raise StoreError(f"{path}: representation `{name}` has file {file!r}; expected {faiss_file(name)!r}")
        if not isinstance(spec.get("dim"), int) or isinstance(spec.get("dim"), bool) or spec["dim"] < 1:
            raise StoreError(f"{path}: representation `{name}` has dimension {spec.get('dim')!r}; expected a positive integer")
    poolings = manifest.get("poolings")
    if poolings is not None:
        if not isinstance(poolings, dict) or not all(p in POOLINGS and isinstance(v, dict) for p, v in poolings.items()):
            raise StoreError(f"{path}: 'poolings' must map pooling names ({', '.join(POOLINGS)}) to their dimension")
        for p, v in poolings.items():
            if not isinstance(v.get("dim"), int) or isinstance(v.get("dim"), bool) or v["dim"] < 1:
                raise StoreError(f"{path}: pooling `{p}` has dimension {v.get('dim')!r}; expected a positive integer")
    for name, spec in reps.items():
        try:
            parsed = parse_representation(name)
        except ValueError as exc:
            raise StoreError(f"{path}: {exc}") from None
        if poolings is not None and parsed.pooling not in poolings:
            raise StoreError(f"{path}: representation `{name}` needs `{parsed.pooling}` vectors, which the index does not store")
        if spec.get("pooling", parsed.pooling) != parsed.pooling:  # info and reports show this record: it must be the name's
            raise StoreError(f"{path}: representation `{name}` records pooling {spec.get('pooling')!r}; its name says {parsed.pooling!r}")
        record = spec.get("transform")
        if parsed.transform is None and record is not None:
            raise StoreError(f"{path}: representation `{name}` has a transform but its name names none")
        if parsed.transform is not None:
            if poolings is None:
                raise StoreError(f"{path}: representation `{name}` has a transform, but the manifest has no 'poolings' "
                                 "table naming the stored vectors it is fitted on")
            if (not isinstance(record, dict) or record.get("file") != transform_file(name)
                    or record.get("kind") != parsed.transform or record.get("param") != parsed.param
                    or type(record.get("param")) is not type(parsed.param)):  # True == 1 and 8.0 == 8, but are not K or D
                raise StoreError(f"{path}: representation `{name}` has transform record {record!r}; expected kind "
                                 f"{parsed.transform!r}, param {parsed.param!r} and file {transform_file(name)!r}")
            if record.get("dim_in", poolings[parsed.pooling]["dim"]) != poolings[parsed.pooling]["dim"]:
                raise StoreError(f"{path}: representation `{name}` records dim_in {record.get('dim_in')!r}; "
                                 f"`{parsed.pooling}` has {poolings[parsed.pooling]['dim']}")
    for name in manifest["files"]:
        if not _PLAIN_FILE.fullmatch(name):
            raise StoreError(f"{path}: file name {name!r} is not a plain file name inside the generation")
    _check_labels(path, manifest)


def _check_labels(path: str | Path, manifest: dict) -> None:
    """Refuse a "labels" record that names files other than the kept labelled set's, or files without a checksum."""
    record = manifest.get("labels")
    if record is None:
        return
    qrels = record.get("qrels") if isinstance(record, dict) else None
    if (not isinstance(record.get("name") if isinstance(record, dict) else None, str) or not isinstance(qrels, dict)
            or not all(isinstance(s, str) and SPLIT_NAME.fullmatch(s) for s in qrels)
            or record != dataclasses.asdict(LabelFiles(record["name"], Path(), dict.fromkeys(qrels, Path())).record())):
        raise StoreError(f"{path}: 'labels' must name the dataset, {LABELS_QUERIES} and one labels.qrels.SPLIT.tsv per split")
    for name in [LABELS_QUERIES, *qrels.values()]:
        if name not in manifest["files"]:
            raise StoreError(f"{path} has no checksum for {name}, a file of its labelled set")


def open_generation(directory: str | Path) -> tuple[Path, Manifest]:
    """(generation directory, verified manifest) of the published generation."""
    return _published(directory)[:2]


def _published(directory: str | Path) -> tuple[Path, Manifest, str]:
    """(generation directory, verified manifest, its sha256) of the published generation."""
    directory = Path(directory)
    for _ in range(5):  # a generation can be pruned between reading CURRENT and opening it
        pointer = read_pointer(directory)
        gen_dir = directory / pointer["generation"]
        if gen_dir.is_dir():
            return gen_dir, *load_manifest(gen_dir, pointer["manifest_sha256"])
    raise StoreError(f"{directory / CURRENT} names {pointer['generation']}, which does not exist; {repair_hint(directory)}")


def read_manifest(directory: str | Path) -> Manifest:
    """The published generation's manifest, checked against CURRENT."""
    return open_generation(directory)[1]


def kept_labels(gen_dir: Path, manifest: Manifest) -> LabelFiles | None:
    """The labelled set a generation keeps, each file checked against the manifest (StoreError if one is damaged);
    None when it keeps none (built from another kind of source, or before labelled sets were kept)."""
    record = manifest.labels
    if record is None:
        return None
    for name in [record.queries, *record.qrels.values()]:
        verified_file(gen_dir, name, manifest.files)
    return LabelFiles(record.name, gen_dir / record.queries, {s: gen_dir / f for s, f in record.qrels.items()})


def verified_bytes(gen_dir: Path, name: str, files: Mapping[str, FileRecord]) -> bytes:
    """A file's bytes after checking its size and sha256 against the manifest."""
    path, expected = _listed(gen_dir, name, files)
    data = path.read_bytes()
    _check(path, len(data), hashlib.sha256(data).hexdigest(), expected)
    return data


def verified_file(gen_dir: Path, name: str, files: Mapping[str, FileRecord]) -> None:
    """Check a file's size and sha256 against the manifest without reading it into memory."""
    path, expected = _listed(gen_dir, name, files)
    _check(path, path.stat().st_size, sha256_file(path), expected)


def _listed(gen_dir: Path, name: str, files: Mapping[str, FileRecord]) -> tuple[Path, FileRecord]:
    if not _PLAIN_FILE.fullmatch(name):
        raise StoreError(f"{gen_dir / MANIFEST}: file name {name!r} is not a plain file name inside the generation")
    expected = files.get(name)
    if expected is None:
        raise StoreError(f"{gen_dir / MANIFEST} has no checksum for {name}")
    if not (gen_dir / name).is_file():
        raise StoreError(f"{gen_dir / name} is missing (listed in {MANIFEST}); the index is incomplete")
    return gen_dir / name, expected


def _check(path: Path, size: int, digest: str, expected: FileRecord) -> None:
    if size != expected.bytes or digest != expected.sha256:
        raise StoreError(
            f"{path} is corrupted: size {size} / sha256 {digest[:16]}… do not match the manifest "
            f"({expected.bytes} / {expected.sha256[:16]}…); refusing to serve it — "
            f"`python -m indexer repair {path.parent.parent}` rebuilds FAISS files from the metadata store"
        )


def deserialize_faiss(gen_dir: Path, name: str, data: bytes, dim: int, spec: IndexSpec, *, effort: int | None = None):
    """A FAISS index from verified bytes, checked against the manifest's dimension and index type, and set to search
    with the representation's tuned `effort` (efSearch, nprobe; None: the spec's fixed one)."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise StoreError(f"{gen_dir / name} cannot be read by FAISS: {exc}") from exc
    if not isinstance(index, faiss.IndexIDMap2):
        raise StoreError(f"{gen_dir / name} is a bare {type(index).__name__} without the id map that maps its vectors to chunk ids")
    if index.d != dim:
        raise StoreError(f"{gen_dir / name} has dimension {index.d}, the manifest says {dim}")
    kind = vector_index.kind_of(index)
    if kind != spec.type:
        raise StoreError(f"{gen_dir / name} is a {kind} index, the manifest says {spec.type}")
    vector_index.configure(index, spec, effort=effort)
    return index


def load_faiss(gen_dir: Path, manifest: Manifest, representation: str) -> faiss.Index:
    """One representation's FAISS index, after its checksum, dimension and type are checked."""
    spec = manifest.representations[representation]
    data = verified_bytes(gen_dir, spec.file, manifest.files)
    return deserialize_faiss(gen_dir, spec.file, data, spec.dim, manifest.vector_index, effort=spec.effort)


def load_transforms(gen_dir: Path, manifest: Manifest) -> dict[str, Transform]:
    """The fitted transform of each representation that has one, after its checksum and shape are checked."""
    out = {}
    dims = manifest.poolings
    for name, spec in manifest.representations.items():
        record = spec.transform
        if record is None:
            continue
        pooling = spec.pooling
        path = gen_dir / record.file
        # a transform is two float32 tensors and a short header: refuse a larger file before reading it
        limit = 4 * dims.get(pooling, 0) * (spec.dim + 1) + _SAFETENSORS_HEADER
        if path.is_file() and path.stat().st_size > limit:
            raise StoreError(f"{path} is {path.stat().st_size} bytes; a transform from `{pooling}` ({dims.get(pooling)} dims) "
                             f"to `{name}` ({spec.dim} dims) takes at most {limit}")
        data = verified_bytes(gen_dir, record.file, manifest.files)
        try:
            transform = Transform.from_bytes(data, record.kind, record.param, record.fitted_on_chunks or 0, record.fitted_in or "")
        except ValueError as exc:
            raise StoreError(f"{gen_dir / record.file} cannot be read: {exc}") from exc
        if (transform.dim_in, transform.dim) != (dims.get(pooling), spec.dim):
            raise StoreError(f"{gen_dir / record.file} maps {transform.dim_in} to {transform.dim} dimensions; the manifest "
                             f"says `{pooling}` has {dims.get(pooling)} and `{name}` {spec.dim}")
        out[name] = transform
    return out


#: Ids bound in one SQLite statement at most: under SQLite's limit on bound parameters (999 before
#: SQLite 3.32, and a build of SQLite may set it that low), whatever the number of ids asked for.
SQL_VARIABLES = 900


def in_batches(ids: Iterable) -> Iterator[tuple[list, str]]:
    """`ids` in parts of at most SQL_VARIABLES, each with its placeholders for `IN (…)`: `(part, "?,?,?")`.

    The one home of this rule: every query on a list of ids goes through it."""
    ids = list(ids)
    for i in range(0, len(ids), SQL_VARIABLES):
        part = ids[i : i + SQL_VARIABLES]
        yield part, ",".join("?" * len(part))


def content_hashes(db: sqlite3.Connection, doc_ids: Sequence[str]) -> dict[str, str]:
    """{doc_id: content sha256} of the documents of a metadata store among `doc_ids` (absent ones left out)."""
    out: dict[str, str] = {}
    for part, marks in in_batches(doc_ids):
        out.update(db.execute(f"SELECT doc_id, content_sha256 FROM documents WHERE doc_id IN ({marks})", part).fetchall())
    return out


def chunk_texts(db: sqlite3.Connection, chunk_ids: Iterable[int]) -> list[str]:
    """The texts of chunks of a metadata store, in the order of `chunk_ids` ("" for an id it does not hold)."""
    out: dict[int, str] = {}
    for part, marks in in_batches([int(i) for i in chunk_ids]):
        out.update(db.execute(f"SELECT chunk_id, text FROM chunks WHERE chunk_id IN ({marks})", part).fetchall())
    return [out.get(int(i), "") for i in chunk_ids]


def faiss_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The chunk ids an index holds, sorted."""
    return np.sort(faiss.vector_to_array(index.id_map))


def tombstones_of(held: np.ndarray, stored: np.ndarray, record: RepresentationRecord) -> np.ndarray | None:
    """The tombstones of a FAISS index: its ids (`held`, sorted) that are no chunk of the metadata store (`stored`,
    sorted). None unless the index holds every chunk once, plus exactly the `record.tombstones` other ids the
    manifest records (none for an index without tombstones): the one rule readers and `verify` apply."""
    expected = record.tombstones or 0
    if len(held) != len(stored) + expected:
        return None
    if not expected:
        return held[:0] if np.array_equal(held, stored) else None
    if np.any(np.diff(held) <= 0):  # an id held twice
        return None
    live = np.isin(held, stored, assume_unique=True)
    return held[~live] if int(live.sum()) == len(stored) else None


def chunk_ids(db: sqlite3.Connection) -> np.ndarray:
    """Every chunk id of a metadata store, sorted (one query; the ids are the table's rowids)."""
    count = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    return np.fromiter((r[0] for r in db.execute("SELECT chunk_id FROM chunks ORDER BY chunk_id")), dtype=np.int64, count=count)


def read_vectors(db: sqlite3.Connection, representation: str, dim: int, where: Path, *, since: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, vectors) of one representation from a metadata store, in chunk-id order; only chunks whose id is
    at least `since` (an incremental update reads only the chunks added since the previous generation).

    Every chunk must have a vector of `dim` floats (else StoreError). Rows are copied one by one
    into arrays of the final size, so the peak is the vectors once.
    """
    count = db.execute("SELECT COUNT(*) FROM chunks WHERE chunk_id >= ?", (since,)).fetchone()[0]
    ids = np.empty(count, dtype=np.int64)
    matrix = np.empty((count, dim), dtype=np.float32)
    rows = db.execute(
        "SELECT c.chunk_id, v.vector FROM chunks c LEFT JOIN vectors v "
        "ON v.chunk_id = c.chunk_id AND v.representation = ? WHERE c.chunk_id >= ? ORDER BY c.chunk_id",
        (representation, since),
    )
    for i, (cid, blob) in enumerate(rows):
        if blob is None:
            missing = db.execute(
                "SELECT COUNT(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM vectors v "
                "WHERE v.chunk_id = c.chunk_id AND v.representation = ?)", (representation,)).fetchone()[0]
            raise StoreError(f"{missing} chunks (e.g. {cid}) have no `{representation}` vector in {where}")
        if len(blob) != 4 * dim:
            raise StoreError(f"chunk {cid} has a `{representation}` vector of {len(blob) // 4} dimensions, expected {dim}")
        ids[i] = cid
        matrix[i] = np.frombuffer(blob, dtype=np.float32)
    return ids, matrix


#: queries whose candidates are re-scored together (a compressed index's exact re-rank): bounds the memory of a large
#: batch (an evaluation's queries) to RERANK_BATCH x candidates x dimension floats
RERANK_BATCH = 64


class IndexReader:
    """A complete, verified index opened read-only; safe to share between threads."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).resolve()
        gen_dir, self.manifest, self.manifest_sha256 = _published(self.directory)
        self.generation = gen_dir.name
        files = self.manifest.files
        self.indexes = {r: load_faiss(gen_dir, self.manifest, r) for r in self.manifest.representations}
        #: fitted transforms of the representations that have one, applied to queries as to documents
        self.transforms = load_transforms(gen_dir, self.manifest)
        verified_file(gen_dir, METADATA, files)
        # immutable=1: a published generation never changes, so SQLite needs no locks or journal
        uri = f"{(gen_dir / METADATA).as_uri()}?mode=ro&immutable=1"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        records = self.manifest.representations
        counts = {i.ntotal - (records[r].tombstones or 0) for r, i in self.indexes.items()}
        expected = self.manifest.counts.chunks
        if counts != {expected}:
            self.db.close()
            raise StoreError(f"{gen_dir}: FAISS files hold {sorted(counts)} live vectors, the manifest says {expected} chunks")
        # every hit must resolve to a chunk: the ids, not only their number, must be the metadata's (plus the
        # tombstones the manifest records, which searches filter out)
        try:
            stored = chunk_ids(self.db)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{gen_dir / METADATA} cannot be read by SQLite: {exc}") from exc
        #: tombstones of each representation that has some: never returned by `search`
        self.excluded: dict[str, vector_index.Excluded] = {}
        for r, index in self.indexes.items():
            stale = tombstones_of(faiss_ids(index), stored, records[r])
            if stale is None:
                self.db.close()
                raise StoreError(f"{gen_dir / faiss_file(r)} holds chunk ids that differ from those of {METADATA}"
                                 + (f" and its {records[r].tombstones} recorded tombstones" if records[r].tombstones else "")
                                 + f"; `python -m indexer repair {self.directory}` rebuilds it from the metadata store")
            if len(stale):
                self.excluded[r] = vector_index.Excluded(stale)

    @property
    def representations(self) -> tuple[str, ...]:
        return tuple(self.indexes)

    @property
    def n_chunks(self) -> int:
        return self.manifest.counts.chunks

    @property
    def n_documents(self) -> int:
        return self.manifest.counts.documents

    def search(self, representation: str, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product search (exact scores; exact neighbours for `flat`): (scores, chunk ids), each of shape
        (len(queries), n). Tombstones are never returned.

        Every search path (Searcher, evaluation, the app, the bench) comes here. A compressed (`ivf`) index's scores
        are approximate: it fetches `rerank` x n candidates, which are re-scored with their stored float32 vectors
        (`vectors`: read from the metadata store, through the representation's transform), and the n best by that
        exact score are returned, so users see exact cosine similarities whatever the type."""
        if representation not in self.indexes:
            raise KeyError(f"index has no {representation!r}; it keeps {', '.join(self.indexes)}")
        index = self.indexes[representation]
        spec = self.manifest.vector_index
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if spec.type != "ivf":
            return vector_index.search(index, queries, n, self.excluded.get(representation))
        live = index.ntotal - (self.manifest.representations[representation].tombstones or 0)
        fetch = max(n, min(live, n * spec.rerank))
        scores, found = vector_index.search(index, queries, fetch, self.excluded.get(representation))
        wanted = np.unique(found[found >= 0])
        stored = self.vectors(representation, wanted)
        out_scores = np.empty((len(queries), n), dtype=np.float32)
        out_ids = np.empty((len(queries), n), dtype=np.int64)
        for lo in range(0, len(queries), RERANK_BATCH):  # bounded memory: a batch's candidates' vectors at a time
            part = found[lo : lo + RERANK_BATCH]
            rows = np.searchsorted(wanted, np.maximum(part, 0))
            out_scores[lo : lo + RERANK_BATCH], out_ids[lo : lo + RERANK_BATCH] = vector_index.rerank_exact(
                scores[lo : lo + RERANK_BATCH], part, queries[lo : lo + RERANK_BATCH], stored[np.minimum(rows, len(wanted) - 1)]
                if len(wanted) else np.zeros((*part.shape, index.d), np.float32), n)
        return out_scores, out_ids

    def chunk_docs(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        """Document id of each chunk id."""
        ids = [int(i) for i in chunk_ids if i >= 0]
        return {cid: doc for cid, doc in self._query("SELECT chunk_id, doc_id FROM chunks WHERE chunk_id IN ({})", ids)}

    def chunks(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """Chunk rows with their document's title, and page where the document has pages, keyed by chunk id."""
        pages = f"'$.{PAGE_STARTS}'"
        rows = self._query(
            "SELECT c.chunk_id, c.doc_id, c.position, c.text, d.title, c.char_start, "
            # metadata stored before NaN was refused at load may not be JSON to SQLite: no page, not an error
            f"CASE WHEN json_valid(d.metadata) THEN CASE WHEN json_type(d.metadata, {pages}) = 'array' "
            f"THEN json_extract(d.metadata, {pages}) END END "
            "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({})",
            [int(i) for i in chunk_ids],
        )
        # char_start counts in the embedded content (title, a space, text); the page starts count in the text
        return {r[0]: ChunkHit(*r[:5], page=None if r[6] is None else page_at(json.loads(r[6]), r[5] - len(content_head(r[4]))))
                for r in rows}

    def chunk_places(self, chunk_ids: Iterable[int]) -> dict[int, ChunkPlace]:
        """Where each chunk lies in its document: "chunk 2 of 5" beside a hit, and the span to mark in the whole text."""
        rows = self._query(
            "SELECT c.chunk_id, c.position, d.n_chunks, c.char_start, c.char_end FROM chunks c "
            "JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({})",
            [int(i) for i in chunk_ids],
        )
        return {r[0]: ChunkPlace(*r[1:]) for r in rows}

    def content_span(self, doc_id: str, start: int, end: int) -> tuple[str, int] | None:
        """Characters [start, end) of a document's embedded content (title, a space, text: what the chunks'
        char offsets count in) and the content's whole length; None for an unknown document. Only the span is
        read from the text, so a huge document costs no more than the span."""
        with self._lock:
            row = self.db.execute("SELECT title, length(text) FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        title, n_text = row
        head = content_head(title)
        total = len(head) + n_text
        start, end = max(0, start), min(end, total)
        if start >= end:
            return "", total
        lo, hi = max(0, start - len(head)), max(0, end - len(head))
        with self._lock:
            (tail,) = self.db.execute("SELECT substr(text, ?, ?) FROM documents WHERE doc_id = ?",
                                      (lo + 1, hi - lo, doc_id)).fetchone() if hi > lo else ("",)
        return head[start:end] + tail, total

    def vectors(self, representation: str, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given chunks, in that order, exactly as documents were mapped at build time. From the
        FAISS index where it holds them uncompressed (`flat`, `hnsw`); else from the metadata store (float32 vectors
        of the representation's pooling), through the representation's transform, as `publish` mapped them."""
        index = self.indexes[representation]
        if not len(chunk_ids):
            return np.empty((0, index.d), np.float32)
        if self.manifest.vector_index.type != "ivf":
            return np.vstack([index.reconstruct(int(i)) for i in chunk_ids])
        pooling = parse_representation(representation).pooling
        dim = self.manifest.poolings[pooling]
        wanted = [int(i) for i in chunk_ids]
        rows = dict(self._query("SELECT chunk_id, vector FROM vectors WHERE representation = ? AND chunk_id IN ({})", wanted,
                                head=(pooling,)))
        if len(rows) != len(set(wanted)) or any(len(b) != 4 * dim for b in rows.values()):
            missing = sorted(set(wanted) - set(rows))[:5]
            raise StoreError(f"{self.directory}: no stored `{pooling}` vector of {dim} floats for chunks {missing or 'some'}")
        matrix = np.frombuffer(b"".join(rows[i] for i in wanted), dtype=np.float32).reshape(len(wanted), dim)
        transform = self.transforms.get(representation)
        return np.ascontiguousarray(matrix if transform is None else transform.apply(matrix), dtype=np.float32)

    def sample_chunk_ids(self, n: int, *, seed: int = 0) -> np.ndarray:
        """Up to `n` chunk ids drawn without replacement (seeded, so reports repeat), sorted; all of them when fewer.

        With `vectors`, a cheap sample of a representation's stored space (e.g. for its geometry).
        """
        with self._lock:
            ids = chunk_ids(self.db)
        if len(ids) <= n:
            return ids
        return np.sort(np.random.default_rng(seed).choice(ids, size=n, replace=False))

    def chunk_ids_by_doc(self, doc_ids: Iterable[str] | None = None) -> dict[str, list[int]]:
        """Chunk ids of each document (all documents when `doc_ids` is None), in position order."""
        if doc_ids is None:
            with self._lock:
                rows = self.db.execute("SELECT doc_id, chunk_id FROM chunks ORDER BY doc_id, position").fetchall()
        else:
            rows = self._query("SELECT doc_id, chunk_id FROM chunks WHERE doc_id IN ({}) ORDER BY doc_id, position", list(doc_ids))
        out: dict[str, list[int]] = {}
        for doc, cid in rows:
            out.setdefault(doc, []).append(cid)
        return out

    def titles(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return dict(self._query("SELECT doc_id, title FROM documents WHERE doc_id IN ({})", list(doc_ids)))

    def doc_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self.db.execute("SELECT doc_id FROM documents")}

    def documents(self) -> Iterator[tuple[str, str, str]]:
        """(doc_id, title, text) of every document, in id order."""
        with self._lock:
            rows = self.db.execute("SELECT doc_id, title, text FROM documents ORDER BY doc_id").fetchall()
        yield from rows

    def _query(self, sql: str, ids: list, head: Sequence = ()) -> list[tuple]:
        """Rows of `sql` whose `IN ({})` takes `ids` (in parts, see in_batches), after the parameters `head`."""
        out: list[tuple] = []
        with self._lock:
            for part, marks in in_batches(ids):
                out.extend(self.db.execute(sql.format(marks), [*head, *part]).fetchall())
        return out

    def close(self) -> None:
        self.db.close()
