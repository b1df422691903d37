"""`verify` checks everything an index directory promises; `repair` rebuilds FAISS files from the metadata store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import faiss
import numpy as np

from .staging import STAGING, Staging, WriterLock, manifest_base, manifest_dims, publish
from .store import METADATA, StoreError, load_faiss, open_generation, read_pointer, read_vectors, verified_file
from .vector_index import IndexSpec


def verify(directory: str | Path) -> tuple[list[str], list[str]]:
    """(problems, notes): problems make the index unfit to serve; notes are for information.

    Checks the CURRENT pointer, the manifest's checksum, every file's size and sha256, that FAISS
    and SQLite can read their files, SQLite's own integrity check, the counts, and that every
    representation holds exactly the chunk ids of the metadata store with the stored vectors.
    """
    directory = Path(directory)
    problems: list[str] = []
    notes: list[str] = []
    if (directory / STAGING).is_dir():
        notes.append(f"an interrupted write left {directory / STAGING}; running the same command again resumes it")
    try:
        gen_dir, manifest = open_generation(directory)
    except StoreError as exc:
        return [str(exc)], notes
    notes.append(f"generation {gen_dir.name}, created {manifest.get('created_at')}")
    files = manifest["files"]
    indexes = {}
    for r in manifest.get("representations", {}):
        try:
            indexes[r] = load_faiss(gen_dir, manifest, r)
        except (StoreError, KeyError) as exc:
            problems.append(str(exc))
    try:
        verified_file(gen_dir, METADATA, files)
    except StoreError as exc:
        problems.append(str(exc))
        return problems, notes
    db = sqlite3.connect(f"{(gen_dir / METADATA).as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        problems += _check_metadata(db, gen_dir, manifest, indexes)
    except sqlite3.DatabaseError as exc:
        problems.append(f"{gen_dir / METADATA} cannot be read by SQLite: {exc}")
    finally:
        db.close()
    return problems, notes


def _check_metadata(db: sqlite3.Connection, gen_dir: Path, manifest: dict, indexes: dict) -> list[str]:
    problems = []
    result = db.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        problems.append(f"{gen_dir / METADATA} fails SQLite's integrity check: {result}")
    docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    chunk_ids = np.array([r[0] for r in db.execute("SELECT chunk_id FROM chunks ORDER BY chunk_id")], dtype=np.int64)
    counts = manifest.get("counts", {})
    if (docs, len(chunk_ids)) != (counts.get("documents"), counts.get("chunks")):
        problems.append(f"the metadata store holds {docs} documents and {len(chunk_ids)} chunks; the manifest says "
                        f"{counts.get('documents')} and {counts.get('chunks')}")
    orphans = db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)").fetchone()[0]
    if orphans:
        problems.append(f"{orphans} chunks belong to no document")
    wrong = db.execute(
        "SELECT COUNT(*) FROM documents d WHERE n_chunks != (SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id)"
    ).fetchone()[0]
    if wrong:
        problems.append(f"{wrong} documents record a chunk count that differs from their chunks")
    if len(chunk_ids) and chunk_ids.max() >= manifest.get("next_chunk_id", 0):
        problems.append(f"chunk id {chunk_ids.max()} is not below the manifest's next_chunk_id {manifest.get('next_chunk_id')}")
    for r, index in indexes.items():
        ids = faiss.vector_to_array(index.id_map)  # FAISS ids in FAISS order
        if not np.array_equal(np.sort(ids), chunk_ids):
            problems.append(f"`{r}` holds {len(ids)} vectors whose ids differ from the {len(chunk_ids)} chunk ids of the metadata store")
            continue
        try:
            _, stored = read_vectors(db, r, index.d, gen_dir / METADATA)
        except StoreError as exc:
            problems.append(str(exc))
            continue
        extra = db.execute("SELECT COUNT(*) FROM vectors WHERE representation = ?", (r,)).fetchone()[0] - len(stored)
        if extra:
            problems.append(f"the metadata store holds {extra} `{r}` vectors of no chunk")
            continue
        served = index.index.reconstruct_n(0, index.ntotal)[np.argsort(ids)] if len(ids) else stored
        if not np.array_equal(stored, served):
            problems.append(f"`{r}` vectors in the FAISS file differ from those in the metadata store")
    return problems


def repair(directory: str | Path) -> str:
    """Publish a new generation whose FAISS files are rebuilt from the metadata store's vectors.

    Fixes a corrupted, missing or inconsistent FAISS file. The metadata store itself must be
    intact (its checksum is verified first); if it is not, the index must be rebuilt.
    """
    return _rebuild_faiss(Path(directory).resolve(), "repair", None)


def convert(directory: str | Path, spec: IndexSpec) -> str:
    """Publish a new generation whose FAISS files are of another type (`flat` or `hnsw`), from the stored vectors.

    Nothing is re-embedded: switching an index to approximate search, or back, costs only the FAISS build.
    """
    return _rebuild_faiss(Path(directory).resolve(), "convert", spec)


def _rebuild_faiss(directory: Path, op: str, spec: IndexSpec | None) -> str:
    with WriterLock(directory, op):
        try:
            pointer = read_pointer(directory)
            gen_dir, manifest = open_generation(directory)
        except StoreError as exc:
            raise StoreError(f"cannot {op} {directory}: {exc}. Rebuild it with `python -m indexer build SOURCE --index {directory} --overwrite`") from exc
        try:
            verified_file(gen_dir, METADATA, manifest["files"])
        except StoreError as exc:
            raise StoreError(
                f"cannot {op} {directory}: its metadata store, the source of the vectors, is damaged ({exc}). "
                f"Rebuild it with `python -m indexer build SOURCE --index {directory} --overwrite`"
            ) from exc
        staging = Staging(directory, {"op": op, "base": pointer["generation"], "spec": spec and spec.to_dict()},
                          base=gen_dir, next_chunk_id=manifest["next_chunk_id"])
        base = manifest_base(manifest)
        update = {"op": op, "from": pointer["generation"]}
        if spec is not None:
            update["vector_index"] = spec.to_dict()
            base["vector_index"] = spec.to_dict()
        base["updates"] = list(base.get("updates", [])) + [update]
        return publish(directory, staging, base, manifest_dims(manifest))
