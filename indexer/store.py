"""The index directory: manifest.json, one FAISS file per representation, metadata.sqlite.

A writer builds everything in a temporary sibling directory and publishes it with a rename,
so a reader never sees a half-written index. Every file's size and sha256 is recorded in the
manifest and checked before FAISS or SQLite opens it: FAISS loads many corrupted files without
complaint. This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import faiss
import numpy as np

from .files import atomic_write_bytes, fsync_dir, sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "metadata.sqlite"

_SCHEMA = """
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
    chunk_id INTEGER PRIMARY KEY,  -- the id of the chunk's vector in every FAISS file
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    position INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX chunks_by_doc ON chunks(doc_id, position);
"""


class StoreError(Exception):
    """An index directory that cannot be written or served; the message says what and where."""


def faiss_file(representation: str) -> str:
    return f"{representation}.faiss"


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


def read_manifest(directory: str | Path) -> dict:
    """Parse and sanity-check `manifest.json`, naming the directory in every error."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise StoreError(f"index directory {directory} does not exist; build it with `python -m indexer build SOURCE --index {directory}`")
    if not path.is_file():
        raise StoreError(f"{directory} is not an index directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is corrupted: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise StoreError(f"{path} is corrupted: no 'files' table")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise StoreError(f"{path} has format version {version!r}; this indexer reads version {FORMAT_VERSION}. Rebuild the index.")
    return manifest


def _verified_bytes(directory: Path, name: str, expected: Mapping) -> bytes:
    path = directory / name
    if not path.is_file():
        raise StoreError(f"{path} is missing (listed in {MANIFEST}); the index is incomplete — rebuild it")
    data = path.read_bytes()
    if len(data) != expected.get("bytes") or hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise StoreError(
            f"{path} is corrupted: size {len(data)} / sha256 {hashlib.sha256(data).hexdigest()[:16]}… do not match "
            f"the manifest ({expected.get('bytes')} / {str(expected.get('sha256'))[:16]}…); refusing to serve it — rebuild the index"
        )
    return data


class IndexWriter:
    """Builds a new index directory beside `directory` and publishes it on `commit`."""

    def __init__(self, directory: str | Path, dims: Mapping[str, int], *, overwrite: bool = False) -> None:
        self.directory = Path(directory).resolve()
        if self.directory.exists():
            if not self.directory.is_dir():
                raise StoreError(f"{self.directory} exists and is not a directory")
            if any(self.directory.iterdir()):
                if not (self.directory / MANIFEST).is_file():
                    raise StoreError(f"{self.directory} is not empty and is not an index directory; refusing to write there")
                if not overwrite:
                    raise StoreError(
                        f"index {self.directory} already exists; pass --overwrite to replace it "
                        "(the existing index is kept until the new one is complete)"
                    )
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.directory.with_name(f".{self.directory.name}.building-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.dims = dict(dims)
        self.indexes = {r: faiss.IndexIDMap2(faiss.IndexFlatIP(d)) for r, d in self.dims.items()}
        self.db = sqlite3.connect(self.tmp / METADATA)
        self.db.executescript(_SCHEMA)
        self.documents = 0
        self.chunks = 0

    def add(self, documents: Iterable, chunks: Sequence, vectors: Mapping[str, np.ndarray]) -> None:
        """Add documents (loaders.Document), their chunks (chunking.Chunk) and one vector row per chunk."""
        if set(vectors) != set(self.indexes):
            raise ValueError(f"vectors for {sorted(vectors)} given; this index keeps {sorted(self.indexes)}")
        for r, v in vectors.items():
            if v.shape != (len(chunks), self.dims[r]):
                raise ValueError(f"{r} vectors have shape {v.shape}, expected ({len(chunks)}, {self.dims[r]})")
        ids = np.arange(self.chunks, self.chunks + len(chunks), dtype=np.int64)
        per_doc: dict[str, int] = {}
        for c in chunks:
            per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
        with self.db:
            self.db.executemany(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (d.doc_id, d.title, d.text, json.dumps(dict(d.metadata), ensure_ascii=False), d.source,
                     content_sha256(d.content), per_doc.get(d.doc_id, 0))
                    for d in documents
                ],
            )
            self.db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(int(i), c.doc_id, c.position, c.char_start, c.char_end, c.n_tokens, c.text) for i, c in zip(ids, chunks)],
            )
        for r, index in self.indexes.items():
            index.add_with_ids(np.ascontiguousarray(vectors[r], dtype=np.float32), ids)
        self.documents += len(per_doc)
        self.chunks += len(chunks)

    def commit(self, manifest: Mapping) -> Path:
        """Write the FAISS files and the manifest (with checksums), then rename the directory into place."""
        self.db.close()
        files = {}
        for r, index in self.indexes.items():
            atomic_write_bytes(self.tmp / faiss_file(r), faiss.serialize_index(index).tobytes())
        for name in [faiss_file(r) for r in self.indexes] + [METADATA]:
            path = self.tmp / name
            files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        full = dict(manifest)
        full.update(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            counts={"documents": self.documents, "chunks": self.chunks},
            files=files,
        )
        full.setdefault("representations", {})
        for r, d in self.dims.items():
            full["representations"][r] = {"dim": d, "file": faiss_file(r), "index_type": "flat-ip"}
        atomic_write_bytes(self.tmp / MANIFEST, (json.dumps(full, indent=2, ensure_ascii=False) + "\n").encode())
        fsync_dir(self.tmp)
        old = None
        if self.directory.exists():
            old = self.directory.with_name(f".{self.directory.name}.old-{os.getpid()}")
            os.replace(self.directory, old)
        os.replace(self.tmp, self.directory)
        fsync_dir(self.directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.directory

    def abort(self) -> None:
        """Drop the unfinished build; an existing index at `directory` is untouched."""
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class IndexReader:
    """A complete, verified index opened read-only; safe to share between threads."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).resolve()
        self.manifest = read_manifest(self.directory)
        files = self.manifest["files"]
        reps = self.manifest.get("representations") or {}
        if not reps:
            raise StoreError(f"{self.directory / MANIFEST} lists no representations")
        self.indexes = {}
        for r, spec in reps.items():
            name = spec.get("file", faiss_file(r))
            if name not in files:
                raise StoreError(f"{self.directory / MANIFEST} has no checksum for {name}")
            data = _verified_bytes(self.directory, name, files[name])
            try:
                index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
            except RuntimeError as exc:
                raise StoreError(f"{self.directory / name} cannot be read by FAISS: {exc}") from exc
            if index.d != spec.get("dim"):
                raise StoreError(f"{self.directory / name} has dimension {index.d}, the manifest says {spec.get('dim')}")
            self.indexes[r] = index
        if METADATA not in files:
            raise StoreError(f"{self.directory / MANIFEST} has no checksum for {METADATA}")
        _verified_bytes(self.directory, METADATA, files[METADATA])
        uri = f"{(self.directory / METADATA).as_uri()}?mode=ro&immutable=1"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        counts = {i.ntotal for i in self.indexes.values()}
        expected = self.manifest.get("counts", {}).get("chunks")
        if counts != {expected}:
            raise StoreError(f"{self.directory}: FAISS files hold {sorted(counts)} vectors, the manifest says {expected} chunks")

    @property
    def representations(self) -> tuple[str, ...]:
        return tuple(self.indexes)

    @property
    def n_chunks(self) -> int:
        return int(self.manifest["counts"]["chunks"])

    @property
    def n_documents(self) -> int:
        return int(self.manifest["counts"]["documents"])

    def search(self, representation: str, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product search: (scores, chunk ids), each of shape (len(queries), n)."""
        if representation not in self.indexes:
            raise KeyError(f"index has no {representation!r}; it keeps {', '.join(self.indexes)}")
        return self.indexes[representation].search(np.ascontiguousarray(queries, dtype=np.float32), n)

    def chunk_docs(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        """Document id of each chunk id."""
        ids = [int(i) for i in chunk_ids if i >= 0]
        return {cid: doc for cid, doc in self._query("SELECT chunk_id, doc_id FROM chunks WHERE chunk_id IN ({})", ids)}

    def chunks(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """Chunk rows with their document's title, keyed by chunk id."""
        rows = self._query(
            "SELECT c.chunk_id, c.doc_id, c.position, c.text, d.title FROM chunks c "
            "JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({})",
            [int(i) for i in chunk_ids],
        )
        return {r[0]: ChunkHit(*r) for r in rows}

    def vectors(self, representation: str, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given chunks, in that order."""
        index = self.indexes[representation]
        return np.vstack([index.reconstruct(int(i)) for i in chunk_ids]) if len(chunk_ids) else np.empty((0, index.d), np.float32)

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

    def _query(self, sql: str, ids: list) -> list[tuple]:
        out: list[tuple] = []
        with self._lock:
            for i in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
                part = ids[i : i + 900]
                out.extend(self.db.execute(sql.format(",".join("?" * len(part))), part).fetchall())
        return out

    def close(self) -> None:
        self.db.close()
