"""Index directory: FAISS against numpy brute force, generations, checksums checked before anything is read."""

import json

import numpy as np
import pytest

from indexer.chunking import Chunk
from indexer.loaders import Document
from indexer.staging import Staging, WriterLock, publish
from indexer.store import CURRENT, MANIFEST, METADATA, IndexReader, StoreError, generation_id, read_manifest


def unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_index(directory, n_docs=50, chunks_per_doc=3, d=16, seed=0, vector_index=None):
    """Publish one generation of random vectors through the real writer path (no model needed)."""
    rng = np.random.default_rng(seed)
    docs = [Document(f"doc-{i}", f"text {i}", title=f"T{i}") for i in range(n_docs)]
    chunks = [Chunk(d_.doc_id, p, f"chunk {p} of {d_.doc_id}", 0, 4, (1, 2)) for d_ in docs for p in range(chunks_per_doc)]
    vectors = {"pooled": unit(rng, len(chunks), d), "mean": unit(rng, len(chunks), d)}
    with WriterLock(directory, "test"):
        staging = Staging(directory, {"op": "test", "seed": seed})
        half = len(docs) // 2
        split = half * chunks_per_doc
        staging.apply(documents=docs[:half], chunks=chunks[:split], vectors={r: v[:split] for r, v in vectors.items()}, consumed=half)
        staging.apply(documents=docs[half:], chunks=chunks[split:], vectors={r: v[split:] for r, v in vectors.items()}, consumed=n_docs)
        manifest = {"model": {"name": "test"}, "chunking": {"max_tokens": 16}}
        if vector_index is not None:
            manifest["vector_index"] = vector_index
        publish(directory, staging, manifest, {"pooled": d, "mean": d})
    return docs, chunks, vectors


def test_search_equals_numpy_brute_force(tmp_path):
    _, chunks, vectors = write_index(tmp_path / "ix")
    reader = IndexReader(tmp_path / "ix")
    queries = unit(np.random.default_rng(7), 5, 16)
    for r in ("pooled", "mean"):
        scores, ids = reader.search(r, queries, 10)
        brute = queries @ vectors[r].T
        expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), atol=1e-5)


def test_same_chunk_ids_and_metadata_in_every_representation(tmp_path):
    _, chunks, vectors = write_index(tmp_path / "ix")
    reader = IndexReader(tmp_path / "ix")
    rows = reader.chunks(range(len(chunks)))
    assert [(rows[i].doc_id, rows[i].position, rows[i].text) for i in range(len(chunks))] == [
        (c.doc_id, c.position, c.text) for c in chunks
    ]
    assert rows[4].title == "T1"
    assert reader.manifest["counts"] == {"documents": 50, "chunks": 150}
    for r in ("pooled", "mean"):
        np.testing.assert_array_equal(reader.vectors(r, range(len(chunks))), vectors[r])


def test_layout_pointer_and_manifest(tmp_path):
    write_index(tmp_path / "ix")
    directory = tmp_path / "ix"
    pointer = json.loads((directory / CURRENT).read_text())
    assert pointer["generation"] == "gen-000001" == generation_id(directory)
    manifest = read_manifest(directory)
    assert set(manifest["files"]) == {"pooled.faiss", "mean.faiss", METADATA}
    assert manifest["representations"]["mean"] == {"dim": 16, "file": "mean.faiss", "index_type": "flat-ip",
                                                   "build_seconds": manifest["representations"]["mean"]["build_seconds"]}
    assert manifest["vector_index"] == {"type": "flat"}
    assert manifest["format_version"] == 2 and manifest["next_chunk_id"] == 150
    assert sorted(p.name for p in directory.iterdir()) == [CURRENT, "gen-000001", "writer.lock"]  # staging removed


@pytest.mark.parametrize("name", ["pooled.faiss", "mean.faiss", METADATA, MANIFEST])
def test_a_flipped_byte_is_refused(tmp_path, name):
    write_index(tmp_path / "ix")
    path = tmp_path / "ix" / "gen-000001" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{name} is corrupted"):
        IndexReader(tmp_path / "ix")


def test_a_corrupted_pointer_is_refused(tmp_path):
    write_index(tmp_path / "ix")
    (tmp_path / "ix" / CURRENT).write_text('{"generation": "gen-000001"}')
    with pytest.raises(StoreError, match="CURRENT is corrupted"):
        IndexReader(tmp_path / "ix")


def test_missing_directory_and_non_index(tmp_path):
    with pytest.raises(StoreError, match="does not exist.*indexer build"):
        IndexReader(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="CURRENT is missing"):
        IndexReader(tmp_path / "empty")


def test_mismatched_vector_count_is_refused(tmp_path):
    with WriterLock(tmp_path / "ix", "test"):
        staging = Staging(tmp_path / "ix", {"op": "test"})
        with pytest.raises(ValueError, match="1 `mean` vectors for 2 chunks"):
            staging.apply(documents=[Document("a", "x")], chunks=[Chunk("a", 0, "x", 0, 1, (1,)), Chunk("a", 1, "x", 0, 1, (1,))],
                          vectors={"mean": np.zeros((1, 16), np.float32)})
        staging.remove()


def _resign(directory, gen_dir):
    """Recompute the manifest's checksum of metadata.sqlite and CURRENT's of the manifest, as a faulty writer would."""
    import hashlib

    from indexer.files import sha256_file

    manifest = json.loads((gen_dir / MANIFEST).read_text())
    manifest["files"][METADATA] = {"bytes": (gen_dir / METADATA).stat().st_size, "sha256": sha256_file(gen_dir / METADATA)}
    data = json.dumps(manifest).encode()
    (gen_dir / MANIFEST).write_bytes(data)
    pointer = json.loads((directory / CURRENT).read_text())
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))


@pytest.mark.parametrize("damage, problem", [
    ("UPDATE vectors SET vector = substr(vector, 1, 8) WHERE chunk_id = 3 AND representation = 'mean'",
     "chunk 3 has a `mean` vector of 2 dimensions, expected 16"),
    ("DELETE FROM vectors WHERE chunk_id IN (5, 6) AND representation = 'pooled'",
     "2 chunks (e.g. 5) have no `pooled` vector"),
    ("INSERT INTO vectors VALUES (999, 'mean', zeroblob(64))",
     "the metadata store holds 1 `mean` vectors of no chunk"),
])
def test_verify_names_stored_vectors_that_do_not_match_the_chunks(tmp_path, damage, problem):
    import sqlite3

    from indexer.integrity import verify

    write_index(tmp_path / "ix")
    gen_dir = tmp_path / "ix" / "gen-000001"
    db = sqlite3.connect(gen_dir / METADATA)
    with db:
        db.execute(damage)
    db.close()
    _resign(tmp_path / "ix", gen_dir)
    problems, _ = verify(tmp_path / "ix")
    assert any(problem in p for p in problems), problems
