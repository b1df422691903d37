"""`verify` checks everything an index directory promises; `repair` rebuilds FAISS files from the metadata store,
or publishes the newest intact generation again when CURRENT cannot be trusted."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from . import vector_index
from .config import parse_representation, parse_representations, poolings_of
from .files import atomic_write_bytes
from .staging import STAGING, Staging, WriterLock, generations, publish, recover, write_failed
from .store import (
    CURRENT,
    METADATA,
    Manifest,
    StoreError,
    chunk_ids,
    faiss_ids,
    kept_labels,
    load_faiss,
    load_manifest,
    load_transforms,
    open_generation,
    read_pointer,
    read_vectors,
    repair_hint,
    tombstones_of,
    verified_file,
)
from .transforms import TransformError, check_dimensions
from .vector_index import IndexSpec

log = logging.getLogger("indexer.integrity")


def verify(directory: str | Path) -> tuple[list[str], list[str]]:
    """(problems, notes): problems make the index unfit to serve; notes are for information.

    Checks the CURRENT pointer, the manifest's checksum, every file's size and sha256, that FAISS
    and SQLite can read their files, SQLite's own integrity check, the counts, and that every
    representation holds exactly the chunk ids of the metadata store with the stored vectors.
    """
    directory = Path(directory)
    notes: list[str] = []
    if (directory / STAGING).is_dir():
        notes.append(f"an interrupted write left {directory / STAGING}; running the same command again resumes it")
    try:
        gen_dir, manifest = open_generation(directory)
    except StoreError as exc:
        return [str(exc)], notes
    notes.append(f"generation {gen_dir.name}, created {manifest.created_at}")
    return verify_generation(gen_dir, manifest), notes


def verify_generation(gen_dir: Path, manifest: Manifest) -> list[str]:
    """Problems of one generation, checked against its own (already validated) manifest."""
    problems: list[str] = []
    files = manifest.files
    indexes = {}
    for r in manifest.representations:
        try:
            indexes[r] = load_faiss(gen_dir, manifest, r)
        except (StoreError, KeyError) as exc:
            problems.append(str(exc))
    try:
        fitted = load_transforms(gen_dir, manifest)
    except StoreError as exc:
        problems.append(str(exc))
        fitted = None
    try:
        kept_labels(gen_dir, manifest)
    except StoreError as exc:
        problems.append(str(exc))
    try:
        verified_file(gen_dir, METADATA, files)
    except StoreError as exc:
        problems.append(str(exc))
        return problems
    db = sqlite3.connect(f"{(gen_dir / METADATA).as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        problems += _check_metadata(db, gen_dir, manifest, indexes, fitted)
    except sqlite3.DatabaseError as exc:
        problems.append(f"{gen_dir / METADATA} cannot be read by SQLite: {exc}")
    finally:
        db.close()
    return problems


def _check_metadata(db: sqlite3.Connection, gen_dir: Path, manifest: Manifest, indexes: dict, fitted: dict | None) -> list[str]:
    problems = []
    result = db.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        problems.append(f"{gen_dir / METADATA} fails SQLite's integrity check: {result}")
    docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    stored_ids = chunk_ids(db)
    counts = manifest.counts
    if (docs, len(stored_ids)) != (counts.documents, counts.chunks):
        problems.append(f"the metadata store holds {docs} documents and {len(stored_ids)} chunks; the manifest says "
                        f"{counts.documents} and {counts.chunks}")
    orphans = db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)").fetchone()[0]
    if orphans:
        problems.append(f"{orphans} chunks belong to no document")
    wrong = db.execute(
        "SELECT COUNT(*) FROM documents d WHERE n_chunks != (SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id)"
    ).fetchone()[0]
    if wrong:
        problems.append(f"{wrong} documents record a chunk count that differs from their chunks")
    next_id = manifest.next_chunk_id
    if len(stored_ids) and stored_ids.max() >= next_id:
        problems.append(f"chunk id {stored_ids.max() if len(stored_ids) else None} is not below the manifest's next_chunk_id {next_id!r}")
    vectors = {}  # the stored vectors of each pooling (the vectors table keys them by pooling)
    for pooling, dim in manifest.poolings.items():
        try:
            _, vectors[pooling] = read_vectors(db, pooling, dim, gen_dir / METADATA)
        except StoreError as exc:
            problems.append(str(exc))
            continue
        extra = db.execute("SELECT COUNT(*) FROM vectors WHERE representation = ?", (pooling,)).fetchone()[0] - len(stored_ids)
        if extra:
            problems.append(f"the metadata store holds {extra} `{pooling}` vectors of no chunk")
    for r, index in indexes.items():
        ids = faiss_ids(index)
        record = manifest.representations[r]
        stale = tombstones_of(ids, stored_ids, record)
        if stale is None:
            problems.append(f"`{r}` holds {len(ids)} vectors whose ids differ from the {len(stored_ids)} chunk ids of the metadata store"
                            + (f" and its {record.tombstones} recorded tombstones" if record.tombstones else ""))
            continue
        if len(stale) and stale.max() >= next_id:
            problems.append(f"`{r}` holds tombstone id {stale.max()}, not below the manifest's next_chunk_id {next_id!r}")
        stored = vectors.get(parse_representation(r).pooling)
        if stored is None:
            continue
        in_faiss_order = faiss.vector_to_array(index.id_map)
        live = ~np.isin(in_faiss_order, stale)  # tombstones: vectors of chunks gone from the store, never served
        served = (index.index.reconstruct_n(0, index.ntotal)[live][np.argsort(in_faiss_order[live])] if len(stored_ids)
                  else np.empty((0, index.d), np.float32))  # an emptied index: no rows, of the representation's width
        compressed = vector_index.kind_of(index) == "ivf"
        if parse_representation(r).transform is None:
            if not (_codes_match(index, stored, served) if compressed else np.array_equal(stored, served)):
                problems.append(f"`{r}` vectors in the FAISS file differ from those in the metadata store")
        elif fitted is not None and r in fitted:
            expected = fitted[r].apply(stored)
            if expected.shape != served.shape or not (_codes_match(index, expected, served) if compressed
                                                      else np.allclose(expected, served, atol=1e-5)):
                problems.append(f"`{r}` vectors in the FAISS file differ from its transform applied to the stored `{parse_representation(r).pooling}` vectors")
    return problems


def _codes_match(index: faiss.Index, expected: np.ndarray, served: np.ndarray) -> bool:
    """Whether a compressed (IVF) index holds `expected`: what it decodes (`served`) is what encoding `expected` with
    its trained lists and quantiser and decoding again gives (compressed codes cannot equal the vectors themselves)."""
    if expected.shape != served.shape:
        return False
    if not len(expected):
        return True
    inner = faiss.downcast_index(index.index)
    roundtrip = inner.sa_decode(inner.sa_encode(np.ascontiguousarray(expected, dtype=np.float32)))
    return bool(np.allclose(roundtrip, served, atol=1e-4))


@dataclass(frozen=True)
class Repaired:
    """What `repair` published, and how."""

    generation: str
    rebuilt: bool  # True: FAISS files rebuilt from the metadata store; False: an intact generation published again
    note: str


def repair(directory: str | Path, *, progress: bool = False) -> Repaired:
    """Make the index servable again, as a new CURRENT.

    When CURRENT names a generation that opens, its FAISS files are rebuilt from the metadata
    store's vectors (a corrupted, missing or inconsistent FAISS file); that store must be intact.
    When it does not (CURRENT unreadable, naming a missing generation, or not matching its
    manifest), the newest intact generation is published again: generations are numbered in the
    order they were written and a generation directory only appears once complete, so the
    highest-numbered one that passes every check of `verify` against its own manifest's
    checksums is the latest complete state.
    """
    directory = Path(directory).resolve()
    with WriterLock(directory, "repair"):
        try:
            open_generation(directory)
        except StoreError as exc:
            return _publish_newest_intact(directory, exc)
        return _rebuild_faiss(directory, "repair", None, progress=progress)


def convert(directory: str | Path, spec: IndexSpec, *, progress: bool = False) -> str:
    """Publish a new generation whose FAISS files are of another type (`flat`, `hnsw`, `ivf`), from the stored vectors.

    Nothing is re-embedded: switching an index to approximate search, or back, costs only the FAISS build.
    `progress` (here and in `repair`, `refit`): a bar over the approximate indexes being built (staging.publish).
    """
    directory = Path(directory).resolve()
    with WriterLock(directory, "convert"):
        return _rebuild_faiss(directory, "convert", spec, progress=progress).generation


def refit(directory: str | Path, representations: Sequence[str] | None = None, *, progress: bool = False) -> Repaired:
    """Fit every transform again on the index's current vectors, as a new generation; nothing is re-embedded.

    `representations` (default: the index's own) may also change the set served, e.g. add `mean+whiten`
    to an index that keeps `mean` vectors: any representation whose pooling the index stores.
    """
    directory = Path(directory).resolve()
    wanted = parse_representations(representations) if representations else None
    with WriterLock(directory, "refit"):
        return _rebuild_faiss(directory, "refit", None, representations=wanted, progress=progress)


def _publish_newest_intact(directory: Path, why: StoreError) -> Repaired:
    try:
        named = read_pointer(directory)["generation"]
    except StoreError:
        named = None
    rejected = []
    for name in reversed(generations(directory)):
        gen_dir = directory / name
        try:
            manifest, digest = load_manifest(gen_dir, None)
            problems = verify_generation(gen_dir, manifest)
        except StoreError as exc:
            problems = [str(exc)]
        if problems:
            rejected.append(f"{name}: {problems[0]}")
            continue
        try:
            atomic_write_bytes(directory / CURRENT, json.dumps({"generation": name, "manifest_sha256": digest}).encode())
        except OSError as exc:
            raise write_failed(directory, f"write {CURRENT}", exc) from exc
        recover(directory)  # generations after it were damaged or never published: removed
        reason = str(why).replace(f"; {repair_hint(directory)}", "")
        note = f"the newest intact generation, published again ({CURRENT} could not be used: {reason})"
        if named is not None and named > name:
            note += f". {named}, which {CURRENT} named, was damaged: the changes made by its write are not in {name}"
        return Repaired(name, False, note)
    raise StoreError(
        f"cannot repair {directory}: {why}; and no generation is intact ({'; '.join(rejected) or 'none found'}). "
        f"Rebuild it with `python -m indexer build SOURCE --index {directory} --overwrite`"
    )


def _rebuild_faiss(directory: Path, op: str, spec: IndexSpec | None, *, representations: Sequence[str] | None = None,
                   progress: bool = False) -> Repaired:
    """Publish the published generation again with FAISS files built from its stored vectors (the caller holds the lock).

    Transforms are kept as fitted (`repair`, `convert`), or fitted again (`refit`; `repair` too when a
    transform file itself is damaged, and says so)."""
    try:
        pointer = read_pointer(directory)
        gen_dir, manifest = open_generation(directory)
    except StoreError as exc:
        raise StoreError(f"cannot {op} {directory}: {exc}") from exc
    try:
        verified_file(gen_dir, METADATA, manifest.files)
    except StoreError as exc:
        raise StoreError(
            f"cannot {op} {directory}: its metadata store, the source of the vectors, is damaged ({exc}). "
            f"Rebuild it with `python -m indexer build SOURCE --index {directory} --overwrite`"
        ) from exc
    dims = manifest.poolings
    wanted = list(representations or manifest.representations)
    missing = [p for p in poolings_of(wanted) if p not in dims]
    if missing:
        raise StoreError(
            f"cannot {op} {directory}: it stores no {', '.join(f'`{p}`' for p in missing)} vectors (it keeps "
            f"{', '.join(f'`{p}`' for p in dims)}); build it again with those representations"
        )
    for r in wanted:  # before the staging copy: a whitenK or abttD wider than its pooling can never be fitted
        try:
            check_dimensions(r, dims[parse_representation(r).pooling])
        except TransformError as exc:
            raise StoreError(f"cannot {op} {directory}: {exc}") from None
    chunks = manifest.counts.chunks
    fitted_now = [r for r in wanted if parse_representation(r).transform] if op == "refit" else []
    if fitted_now and chunks < 2:  # before the staging copy, which a fit that cannot succeed would leave behind
        raise StoreError(f"cannot {op} {directory}: it holds {chunks} chunk(s), and `{fitted_now[0]}` is fitted on at least 2; "
                         f"add documents first, or refit without the transformed representations")
    dropped = [p for p in dims if p not in poolings_of(wanted)]
    if dropped:  # its stored vectors stop being kept up to date by add: it cannot come back without a rebuild
        log.warning("no representation uses %s any more: it is dropped from the index (a later representation of it "
                    "needs a rebuild)", ", ".join(f"`{p}`" for p in dropped))
    note = "FAISS files rebuilt from the metadata store"
    if op == "refit":
        fixed = {}
        note = ("transforms fitted again on the stored vectors" if fitted_now
                else "no representation has a transform: FAISS files rebuilt from the metadata store")
    else:
        try:
            fixed = load_transforms(gen_dir, manifest)
        except StoreError as exc:
            if op != "repair":
                raise StoreError(f"cannot {op} {directory}: {exc}; `python -m indexer repair {directory}` fits it again") from exc
            fixed = {}
            note += f"; transforms fitted again, as one could not be read ({exc})"
    try:
        labels = kept_labels(gen_dir, manifest)
    except StoreError as exc:
        if op != "repair":
            raise StoreError(f"cannot {op} {directory}: {exc}; `python -m indexer repair {directory}` publishes it without "
                             "its damaged labelled set") from exc
        labels = None
        note += f"; its labelled set was damaged and is no longer kept ({exc}): evaluation reads the source folder again"
    staging = Staging(directory, {"op": op, "base": pointer["generation"], "spec": spec and spec.to_dict(), "representations": wanted},
                      base=gen_dir, next_chunk_id=manifest.next_chunk_id)
    update = {"op": op, "from": pointer["generation"]}
    if spec is not None:
        update["vector_index"] = spec.to_dict()
    if op == "refit":
        update["representations"] = wanted
    base = replace(manifest, vector_index=spec or manifest.vector_index, updates=(*manifest.updates, update))
    from .search import tuning_encode  # approximate indexes are tuned on pseudo-queries, as a build tunes them

    generation = publish(directory, staging, base, dims, representations=wanted, fixed=fixed, labels=labels,
                         encode=tuning_encode(base), progress=progress)
    return Repaired(generation, True, note)
