"""Writing an index safely: one writer at a time, a crash-safe working copy, atomic publication.

A write (build, add, delete, repair) runs under `WriterLock`. Its work goes into `Staging`, a
SQLite database under DIR/staging/ that commits one batch of documents, their chunks and vectors,
and the count of source records consumed, in a single transaction. A process killed at any
moment (SIGKILL included) therefore leaves either the previous batch or the next one committed,
never half of one; running the same command again continues from there. `publish` then turns
the working copy into a new generation: FAISS files rebuilt from the stored vectors, a compact
copy of the database, a manifest with every file's checksum, a directory rename, and finally an
atomic replacement of CURRENT. Readers never see anything before that last step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import faiss
import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import transforms, vector_index
from .config import parse_representation
from .files import atomic_write_bytes, copy_file, fsync_dir, sha256_file
from .store import (
    CURRENT,
    FORMAT_VERSION,
    GENERATION,
    MANIFEST,
    METADATA,
    SCHEMA,
    Counts,
    FileRecord,
    LabelFiles,
    Manifest,
    RepresentationRecord,
    StoreError,
    TransformRecord,
    chunk_ids,
    chunk_texts,
    content_hashes,
    content_sha256,
    faiss_file,
    faiss_ids,
    in_batches,
    is_index,
    load_faiss,
    open_generation,
    read_pointer,
    read_vectors,
    transform_file,
)
from .text import pseudo_query
from .transforms import Transform

log = logging.getLogger("indexer.staging")

LOCK = "writer.lock"
STAGING = "staging"
WORK = "work.sqlite"
#: The named steps of a commit; POOLING_LAB_CRASH_AT=<step> kills the process there (fault-injection tests).
COMMIT_STEPS = (
    "faiss-written", "metadata-written", "manifest-written", "generation-renamed", "current-switched",
    "staging-removed", "pruned",
)
KEEP_GENERATIONS = 2  # the published one and its predecessor, for readers that opened it just before


class LockedError(StoreError):
    """Another writer holds the index."""


def crash_point(step: str) -> None:
    """Die here, as a power cut would, when a fault-injection test asks for it."""
    if os.environ.get("POOLING_LAB_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """An exclusive flock on DIR/writer.lock; the file names the holder for whoever is refused.

    The kernel releases a flock when its process dies, so a lock left by a killed writer is
    stale by construction: the next writer takes it, says it cleared it, and removes what the
    killed writer left outside the published state (`recover`) before doing anything else.

    Only a build may create the directory (`create=True`); every other writer needs an existing
    index directory and creates nothing when pointed at a mistyped path. Whatever fails inside
    `__enter__` after the lock was taken releases it, so a failed writer never blocks the next.
    """

    def __init__(self, directory: str | Path, command: str, *, create: bool = False) -> None:
        self.directory = Path(directory)
        self.command = command
        self.create = create
        self.cleared: dict | None = None
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        if not self.create and not has_index_files(self.directory):
            read_pointer(self.directory)  # raises the reader's message: missing directory, or not an index
            raise StoreError(f"{self.directory} is not an index directory")
        try:
            if self.create:
                self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create {self.directory / LOCK}: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                raise LockedError(
                    f"{self.directory} is being written by another process (pid {holder.get('pid', '?')}, "
                    f"since {holder.get('since', '?')}, `{holder.get('command', '?')}`); wait for it to finish"
                ) from None
            self._fd = fd
            previous = self._holder(fd)
            if previous.get("pid") and not _pid_alive(int(previous["pid"])) and previous.get("pid") != os.getpid():
                self.cleared = previous
                log.warning("cleared a stale lock left by pid %s (%s)", previous.get("pid"), previous.get("command"))
            info = {"pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": self.command}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError as exc:
                raise write_failed(self.directory, f"write {LOCK}", exc) from exc
            recover(self.directory)
        except BaseException:
            if self._fd is None:  # refused: the holder's note is not ours to clear
                os.close(fd)
            else:
                self._release(fd)
            raise
        return self

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}

    def __exit__(self, *exc) -> None:
        self._release(self._fd)

    def _release(self, fd: int | None) -> None:
        """Clear the holder's note (best effort: a full disk must not keep the lock) and release the flock."""
        self._fd = None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock in any case


def generations(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and GENERATION.fullmatch(p.name))


def has_index_files(directory: Path) -> bool:
    """Whether `directory` holds an index, even one whose CURRENT is damaged or lost (`repair` fixes those)."""
    return Path(directory).is_dir() and (is_index(directory) or bool(generations(Path(directory))))


def published(directory: Path) -> str | None:
    """The published generation; None when there is none or CURRENT cannot be read."""
    try:
        return read_pointer(directory)["generation"] if is_index(directory) else None
    except StoreError:
        return None


def write_failed(directory: Path, what: str, exc: OSError | sqlite3.Error) -> StoreError:
    """The one message for a write that failed (full disk, I/O error, permissions): what, why, and what is still served."""
    if isinstance(exc, OSError):
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    else:
        reason = "the disk is full" if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL else f"SQLite: {exc}"
    previous = published(directory)
    kept = (f"the previous generation ({previous}) is still published and intact" if previous
            else "the index directory was left as it was" if is_index(directory) else "nothing was published")
    return StoreError(f"could not {what} in {directory}: {reason}; {kept}")


def recover(directory: Path) -> list[str]:
    """Remove what a killed writer left outside the published state; returns what was removed.

    When CURRENT is missing or cannot be read, the published generation is unknown: only temporary
    directories are removed, and every generation is kept (`repair` chooses from them; a first
    build killed before writing CURRENT publishes the next number).
    """
    removed = []
    current = published(directory)
    for path in directory.iterdir():
        orphan_tmp = path.name.startswith(".gen-") and path.name.endswith(".tmp")
        orphan_gen = GENERATION.fullmatch(path.name) and current is not None and path.name > current
        if path.is_dir() and (orphan_tmp or orphan_gen):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if current is not None and _staged_value(directory, "publishing") == current:
        # killed after publishing but before cleaning up: that work is done
        shutil.rmtree(directory / STAGING, ignore_errors=True)
        removed.append(STAGING)
    return removed


def _staged_value(directory: Path, key: str) -> str | None:
    path = Path(directory) / STAGING / WORK
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


class Staging:
    """The writer's working copy of an index (DIR/staging/work.sqlite), resumable after a crash.

    `signature` describes the operation (its source, model and settings); a staging area left by
    a different operation is discarded rather than resumed.
    """

    def __init__(self, directory: str | Path, signature: Mapping, *, base: Path | None = None, next_chunk_id: int = 0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STAGING / WORK
        self.signature = json.dumps(signature, sort_keys=True)
        self.resumed = False
        if self.path.is_file():
            try:
                db = sqlite3.connect(self.path)
                found = dict(db.execute("SELECT key, value FROM meta").fetchall())
                if found.get("signature") == self.signature:
                    self.db, self.resumed = db, True
                else:
                    db.close()
            except sqlite3.DatabaseError:
                pass
        if not self.resumed:
            self._create(base, next_chunk_id)

    @staticmethod
    def pending(directory: str | Path, signature: Mapping) -> bool:
        """Whether an interrupted run of exactly this operation left work to resume."""
        return _staged_value(directory, "signature") == json.dumps(signature, sort_keys=True)

    def _create(self, base: Path | None, next_chunk_id: int) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)
        tmp = self.path.with_name(WORK + ".tmp")
        try:
            self.path.parent.mkdir(parents=True)
            if base is not None:  # start from a published generation's data (add, delete, repair)
                shutil.copyfile(base / METADATA, tmp)
            db = sqlite3.connect(tmp)
            try:
                if base is None:
                    db.executescript(SCHEMA)
                with db:
                    db.execute("DELETE FROM meta")
                    db.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("signature", self.signature), ("consumed", "0"), ("next_chunk_id", str(next_chunk_id)), ("publishing", "")],
                    )
            finally:
                db.close()
            os.replace(tmp, self.path)  # the staging area exists only once it is complete
            fsync_dir(self.path.parent)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(self.path.parent, ignore_errors=True)
            raise write_failed(self.directory, "create the staging area", exc) from exc
        except BaseException:
            shutil.rmtree(self.path.parent, ignore_errors=True)
            raise
        self.db = sqlite3.connect(self.path)

    def _meta(self, key: str) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def consumed(self) -> int:
        """Source records already processed (skipped on resume)."""
        return int(self._meta("consumed"))

    @property
    def next_chunk_id(self) -> int:
        return int(self._meta("next_chunk_id"))

    @property
    def publishing(self) -> str:
        return self._meta("publishing")

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return content_hashes(self.db, doc_ids)

    def counts(self) -> tuple[int, int]:
        docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def apply(
        self,
        *,
        remove: Iterable[str] = (),
        documents: Sequence = (),
        chunks: Sequence = (),
        vectors: Mapping[str, np.ndarray] | None = None,
        consumed: int | None = None,
    ) -> None:
        """One atomic step: remove documents, add documents with their chunks and vectors, advance progress.

        Rows are generated as SQLite inserts them, so a huge document's chunks are not copied again."""
        for r, matrix in (vectors or {}).items():
            if len(matrix) != len(chunks):
                raise ValueError(f"{len(matrix)} `{r}` vectors for {len(chunks)} chunks")
        start = self.next_chunk_id
        ids = range(start, start + len(chunks))
        per_doc: dict[str, int] = {}
        for c in chunks:
            per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
        with self.db:
            self._delete(list(remove))
            self.db.executemany(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(d.doc_id, d.title, d.text, json.dumps(dict(d.metadata), ensure_ascii=False), d.source,
                  content_sha256(d.content), per_doc.get(d.doc_id, 0)) for d in documents],
            )
            self.db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((i, c.doc_id, c.position, c.char_start, c.char_end, c.n_tokens, c.text) for i, c in zip(ids, chunks)),
            )
            for r, matrix in (vectors or {}).items():
                rows = np.ascontiguousarray(matrix, dtype=np.float32)
                self.db.executemany("INSERT INTO vectors VALUES (?, ?, ?)", ((i, r, rows[j].tobytes()) for j, i in enumerate(ids)))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_chunk_id'", (str(start + len(chunks)),))
            if consumed is not None:
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'consumed'", (str(consumed),))

    def _delete(self, doc_ids: list[str]) -> int:
        removed = 0
        for part, marks in in_batches(doc_ids):
            self.db.execute(f"DELETE FROM vectors WHERE chunk_id IN (SELECT chunk_id FROM chunks WHERE doc_id IN ({marks}))", part)
            self.db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            removed += self.db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part).rowcount
        return removed

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents (and their chunks and vectors) in one transaction; returns how many existed."""
        try:
            with self.db:
                return self._delete(list(doc_ids))
        except sqlite3.Error as exc:
            raise write_failed(self.directory, f"write {self.path}", exc) from exc

    def load_vectors(self, representation: str, dim: int, *, since: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, vectors) of one representation, in chunk-id order, of the chunks whose id is at least `since`;
        every chunk must have one."""
        return read_vectors(self.db, representation, dim, self.path, since=since)

    def mark_publishing(self, generation: str) -> None:
        with self.db:
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'publishing'", (generation,))

    def export(self, path: Path) -> None:
        """A compact copy of the database (what readers get), flushed to disk."""
        self.db.execute("VACUUM INTO ?", (str(path),))
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.db.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def close(self) -> None:
        self.db.close()


class TextProbes:
    """Probes that tune an approximate index (vector_index.build_tuned): pseudo-queries (text.pseudo_query) of the
    held-out chunks' texts, encoded by `encode` once per sample for every pooling, and mapped by a representation's
    transform as its queries are."""

    def __init__(self, db: sqlite3.Connection, encode: Callable[[list[str]], Mapping[str, np.ndarray] | None]) -> None:
        self.db, self.encode = db, encode
        self._sample: bytes | None = None
        self._vectors: Mapping[str, np.ndarray] = {}

    def of(self, pooling: str, transform: Transform | None) -> Callable[[np.ndarray], np.ndarray | None]:
        """`build_tuned`'s `probes` for a representation of `pooling` (None where the encoder has no such pooling)."""
        def make(held_out: np.ndarray) -> np.ndarray | None:
            sample = np.asarray(held_out, dtype=np.int64).tobytes()
            if sample != self._sample:  # every representation of an index holds out the same chunks: encoded once
                self._vectors = self.encode([pseudo_query(t) for t in chunk_texts(self.db, held_out)]) or {}
                self._sample = sample
            if pooling not in self._vectors:
                return None
            vectors = np.asarray(self._vectors[pooling], dtype=np.float32)
            return vectors if transform is None else transform.apply(vectors)
        return make


def publish(
    directory: Path,
    staging: Staging,
    manifest: Manifest,
    dims: Mapping[str, int],
    *,
    representations: Sequence[str] | None = None,
    fixed: Mapping[str, Transform] | None = None,
    labels: LabelFiles | None = None,
    incremental: bool = False,
    encode: Callable[[list[str]], Mapping[str, np.ndarray] | None] | None = None,
    progress: bool = False,
) -> str:
    """Turn the staging area into a new generation and make it the published one; returns its name.

    `manifest` describes the index (what a build records, or the previous generation's manifest with its
    `updates` extended); what it says of the generation itself (counts, representations, files…) is written here.

    `dims` are the stored poolings' dimensions ({pooling: 384}); `representations` the FAISS indexes
    to build from them (default: the poolings themselves). A representation with a transform uses
    its transform from `fixed` (kept from the previous generation: add, delete, repair) or has it
    fitted now on every stored vector of its pooling (build, refit).
    `labels` is the labelled set the generation keeps (copied in and checksummed like every file): a BEIR
    folder's at build time, the previous generation's (store.kept_labels) afterwards; None keeps none.
    `incremental` (add, delete): `manifest` is the previous generation's, and each FAISS index is that generation's
    copied and extended where `extend_previous` allows it (else built from scratch, as always otherwise).
    An approximate index built from scratch with no fixed efSearch / nprobe has it tuned
    (vector_index.build_tuned), on pseudo-queries of held-out chunks' texts encoded by `encode` (the index's
    encoder: texts to vectors per pooling, `Encoder.encode_texts`, or search.tuning_encode, which loads it when first
    asked); without it (or when it gives None), on probes made from the vectors.
    `progress`: a progress bar over the representations' FAISS indexes while approximate ones are built (a graph
    over a million vectors takes half an hour on 2 cores); exact ones are a copy of the vectors and show none.
    A write error (full disk, permissions) before CURRENT is replaced leaves the previous
    generation published and untouched.
    """
    representations = list(dims) if representations is None else list(representations)
    fixed = fixed or {}
    directory = Path(directory)
    existing = generations(directory)
    number = int(existing[-1][4:]) + 1 if existing else 1
    generation = f"gen-{number:06d}"
    tmp = directory / f".{generation}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    switched = False
    spec = manifest.vector_index
    shown = contextlib.ExitStack()  # the bar, and log messages written above it rather than into it
    bar = shown.enter_context(tqdm(total=len(representations), unit="index", desc=f"{spec.type} indexes",
                                   disable=not progress or spec.type == "flat", dynamic_ncols=True))
    if not bar.disable:
        shown.enter_context(logging_redirect_tqdm())
    try:
        tmp.mkdir()
        files = {}
        built = {}
        written = []
        by_pooling: dict[str, list[str]] = {}
        for r in representations:
            by_pooling.setdefault(parse_representation(r).pooling, []).append(r)
        previous = (directory / manifest.generation, manifest) if incremental and manifest.generation else None
        live = chunk_ids(staging.db) if previous else None
        probes = TextProbes(staging.db, encode) if encode is not None else None

        def write(r: str, index: faiss.Index, record: RepresentationRecord, transform: Transform | None) -> None:
            if transform is not None:
                atomic_write_bytes(tmp / transform_file(r), transform.to_bytes())
                written.append(transform_file(r))
            data = faiss.serialize_index(index)  # a numpy buffer, written without a further copy
            atomic_write_bytes(tmp / faiss_file(r), data)
            written.append(faiss_file(r))
            built[r] = record
            bar.update()

        for pooling, names in by_pooling.items():  # each pooling's vectors are read once
            pending = list(names)
            if previous is not None:
                new_ids, new_vectors = staging.load_vectors(pooling, dims[pooling], since=previous[1].next_chunk_id)
                for r in names:
                    bar.set_postfix_str(f"{r}: extending")
                    extended = extend_previous(*previous, r, live, new_ids, new_vectors, fixed.get(r), generation)
                    if extended is not None:
                        write(r, *extended, fixed.get(r))
                        pending.remove(r)
                del new_ids, new_vectors
            if not pending:
                continue
            ids, stored = staging.load_vectors(pooling, dims[pooling])
            for r in pending:
                bar.set_postfix_str(f"{r}: {len(ids):,} vectors")
                transform = None
                if parse_representation(r).transform is None:
                    matrix = stored
                else:
                    transform = fixed.get(r)
                    if transform is None:
                        try:
                            transform = transforms.fit(r, stored)
                        except transforms.TransformError as exc:
                            raise StoreError(f"cannot publish {directory}: {exc}") from exc
                        transform = dataclasses.replace(transform, fitted_in=generation)
                    matrix = transform.apply(stored)
                tuning = None
                if spec.tuned:
                    index, tuning, seconds = vector_index.build_tuned(spec, ids, matrix,
                                                                      probes=probes and probes.of(pooling, transform))
                else:
                    index, seconds = vector_index.build_timed(spec, ids, matrix)
                record = RepresentationRecord(int(matrix.shape[1]), faiss_file(r), pooling, index_type=f"{spec.type}-ip",
                                              build_seconds=round(seconds, 3), transform=transform_record(r, transform, generation))
                if tuning is not None:
                    record = dataclasses.replace(record, **{vector_index.EFFORT[spec.type]: tuning.effort}, recall_at_10=tuning.recall,
                                                 tuning_queries=tuning.queries, tuning_seconds=round(tuning.seconds, 3),
                                                 tuning_probes=tuning.probes)
                if spec.type == "ivf":
                    record = dataclasses.replace(record, nlist=vector_index.nlist_of(index))
                del matrix  # the index holds its own copy
                write(r, index, record, transform)
                del index
            del ids, stored
        crash_point("faiss-written")
        for name, source in (labels.kept_files() if labels else {}).items():
            copy_file(source, tmp / name)
            written.append(name)
        staging.export(tmp / METADATA)
        crash_point("metadata-written")
        for name in written + [METADATA]:
            files[name] = FileRecord((tmp / name).stat().st_size, sha256_file(tmp / name))
        full = dataclasses.replace(
            manifest,
            labels=labels.record() if labels is not None else None,
            format_version=FORMAT_VERSION,
            generation=generation,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            counts=Counts(*staging.counts()),
            next_chunk_id=staging.next_chunk_id,
            poolings={p: dims[p] for p in by_pooling},
            representations={r: built[r] for r in representations},
            files=files,
        )
        data = (json.dumps(full.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()
        atomic_write_bytes(tmp / MANIFEST, data)
        fsync_dir(tmp)
        crash_point("manifest-written")
        staging.mark_publishing(generation)
        os.replace(tmp, directory / generation)
        fsync_dir(directory)
        crash_point("generation-renamed")
        pointer = {"generation": generation, "manifest_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(directory / CURRENT, json.dumps(pointer).encode())
        switched = True
    except (OSError, sqlite3.Error) as exc:  # full disk, I/O error, permissions; SQLite's come from VACUUM INTO
        raise write_failed(directory, "write a new generation", exc) from exc
    finally:
        shown.close()
        if not switched:  # whatever stopped it (an interrupt too), leave no half-written generation behind
            shutil.rmtree(tmp, ignore_errors=True)
            if published(directory) != generation:
                shutil.rmtree(directory / generation, ignore_errors=True)
    crash_point("current-switched")
    staging.remove()
    crash_point("staging-removed")
    prune(directory, generation)
    crash_point("pruned")
    return generation


#: An add or delete extends the previous generation's FAISS index unless its tombstones (chunks deleted or replaced
#: since the last full build, left in an HNSW graph or IVF index and filtered at search time) would exceed this
#: fraction of it: then, as when the previous file cannot be used, the index is built again from the stored vectors
#: (its efSearch / nprobe tuned again, an IVF index's lists trained again).
MAX_TOMBSTONE_FRACTION = 0.10


def transform_record(r: str, transform: Transform | None, generation: str) -> TransformRecord | None:
    """The manifest's record of a representation's transform in `generation` (None without one)."""
    if transform is None:
        return None
    return TransformRecord(transform.kind, transform.param, transform_file(r), dim_in=transform.dim_in,
                           fitted_on_chunks=transform.fitted_on, fitted_in=transform.fitted_in,
                           refitted=transform.fitted_in == generation)


def extend_previous(
    gen_dir: Path, manifest: Manifest, r: str, live: np.ndarray, new_ids: np.ndarray, new_vectors: np.ndarray,
    transform: Transform | None, generation: str,
) -> tuple[faiss.Index, RepresentationRecord] | None:
    """The previous generation's FAISS index of `r` (checksum verified) with the chunks added since (`new_ids`, their
    stored vectors, through `r`'s unchanged `transform`) for the new `generation`, and without the chunks no longer `live`: removed from a flat
    index, left as tombstones in an HNSW graph or IVF index. None when the index must be built from scratch: the previous one is
    unusable, its transform differs, or the tombstones would exceed MAX_TOMBSTONE_FRACTION (logged).
    An IVF index's new vectors go to its trained lists as they are (`add_with_ids`, no retraining): the lists stay
    those of the last full build until a rebuild (`convert`, `repair`, or this tombstone rule) trains them again."""
    record = manifest.representations.get(r)
    spec = manifest.vector_index
    if record is None or (transform is None) != (record.transform is None):
        return None
    if transform is not None and transform.fitted_in != (record.transform.fitted_in or ""):
        return None
    started = time.perf_counter()
    try:
        index = load_faiss(gen_dir, manifest, r)
    except StoreError as exc:
        log.warning("`%s`: the previous FAISS file cannot be extended (%s); building it from the stored vectors", r, exc)
        return None
    held = faiss_ids(index)
    old_live = live[live < manifest.next_chunk_id]
    if not np.isin(old_live, held, assume_unique=True).all() or (len(new_ids) and new_ids.min() < manifest.next_chunk_id):
        log.warning("`%s`: the previous FAISS file does not hold every chunk; building it from the stored vectors", r)
        return None
    gone = np.setdiff1d(held, old_live, assume_unique=True)
    tombstones = 0
    if spec.type == "flat":
        if len(gone):
            index.remove_ids(faiss.IDSelectorBatch(gone))
    else:
        tombstones = len(gone)
        total = len(held) + len(new_ids)
        if tombstones > MAX_TOMBSTONE_FRACTION * total:
            log.info("`%s`: %d tombstones would be %.0f%% of the graph (over %.0f%%): rebuilding it", r, tombstones,
                     100 * tombstones / total, 100 * MAX_TOMBSTONE_FRACTION)
            return None
    if len(new_ids):
        matrix = new_vectors if transform is None else transform.apply(new_vectors)
        index.add_with_ids(np.ascontiguousarray(matrix, dtype=np.float32), np.ascontiguousarray(new_ids, dtype=np.int64))
    seconds = time.perf_counter() - started
    return index, dataclasses.replace(
        record, build_seconds=round(seconds, 3), built_from=manifest.generation, tombstones=tombstones or None,
        transform=transform_record(r, transform, generation),
    )


def prune(directory: Path, current: str, keep: int = KEEP_GENERATIONS) -> list[str]:
    """Remove generations older than the last `keep`.

    A reader that opened an older generation keeps working: its FAISS indexes are in memory and
    its SQLite file stays readable through the open descriptor after the directory is removed.
    """
    older = [g for g in generations(directory) if g < current]
    removed = older[: max(len(older) - (keep - 1), 0)]
    for g in removed:
        shutil.rmtree(directory / g, ignore_errors=True)
    return removed


def base_state(directory: Path) -> tuple[Path | None, Manifest | None]:
    """(generation directory, manifest) of the published generation, or (None, None) for a new index."""
    if not is_index(directory):
        found = generations(directory) if directory.is_dir() else []
        if found and _staged_value(directory, "publishing") not in found:
            read_pointer(directory)  # CURRENT was lost (not a first build killed before writing it): raises
        return None, None
    return open_generation(directory)

