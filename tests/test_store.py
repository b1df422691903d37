"""Index directory: FAISS against numpy brute force, checksums, refusal to clobber, atomic publish."""

import json

import numpy as np
import pytest

from indexer.chunking import Chunk
from indexer.loaders import Document
from indexer.store import MANIFEST, METADATA, IndexReader, IndexWriter, StoreError, read_manifest


def unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_index(directory, n_docs=50, chunks_per_doc=3, d=16, seed=0, **kw):
    rng = np.random.default_rng(seed)
    docs = [Document(f"doc-{i}", f"text {i}", title=f"T{i}") for i in range(n_docs)]
    chunks = [Chunk(d_.doc_id, p, f"chunk {p} of {d_.doc_id}", 0, 4, (1, 2)) for d_ in docs for p in range(chunks_per_doc)]
    vectors = {"pooled": unit(rng, len(chunks), d), "mean": unit(rng, len(chunks), d)}
    writer = IndexWriter(directory, {"pooled": d, "mean": d}, **kw)
    half = len(docs) // 2
    split = half * chunks_per_doc
    writer.add(docs[:half], chunks[:split], {r: v[:split] for r, v in vectors.items()})
    writer.add(docs[half:], chunks[split:], {r: v[split:] for r, v in vectors.items()})
    writer.commit({"model": {"name": "test"}, "chunking": {"max_tokens": 16}})
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
    _, chunks, _ = write_index(tmp_path / "ix")
    reader = IndexReader(tmp_path / "ix")
    rows = reader.chunks(range(len(chunks)))
    assert [(rows[i].doc_id, rows[i].position, rows[i].text) for i in range(len(chunks))] == [
        (c.doc_id, c.position, c.text) for c in chunks
    ]
    assert rows[4].title == "T1"
    assert reader.manifest["counts"] == {"documents": 50, "chunks": 150}
    assert {i.ntotal for i in reader.indexes.values()} == {150}


def test_manifest_records_checksums_and_layout(tmp_path):
    write_index(tmp_path / "ix")
    manifest = read_manifest(tmp_path / "ix")
    assert set(manifest["files"]) == {"pooled.faiss", "mean.faiss", METADATA}
    assert manifest["representations"]["mean"] == {"dim": 16, "file": "mean.faiss", "index_type": "flat-ip"}
    assert manifest["format_version"] == 1 and manifest["created_at"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


@pytest.mark.parametrize("name", ["pooled.faiss", "mean.faiss", METADATA])
def test_a_flipped_byte_is_refused(tmp_path, name):
    write_index(tmp_path / "ix")
    path = tmp_path / "ix" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{name} is corrupted"):
        IndexReader(tmp_path / "ix")


def test_a_truncated_file_is_refused(tmp_path):
    write_index(tmp_path / "ix")
    path = tmp_path / "ix" / "mean.faiss"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match="mean.faiss is corrupted"):
        IndexReader(tmp_path / "ix")


def test_missing_or_corrupt_manifest_and_missing_directory(tmp_path):
    with pytest.raises(StoreError, match="does not exist.*indexer build"):
        IndexReader(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="manifest.json is missing"):
        IndexReader(tmp_path / "empty")
    write_index(tmp_path / "ix")
    (tmp_path / "ix" / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match="manifest.json is corrupted"):
        IndexReader(tmp_path / "ix")


def test_existing_index_is_not_replaced_without_overwrite(tmp_path):
    write_index(tmp_path / "ix", seed=1)
    before = read_manifest(tmp_path / "ix")
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        IndexWriter(tmp_path / "ix", {"mean": 16})
    assert read_manifest(tmp_path / "ix") == before


def test_overwrite_replaces_only_on_commit_and_abort_keeps_the_old_index(tmp_path):
    write_index(tmp_path / "ix", n_docs=50)
    writer = IndexWriter(tmp_path / "ix", {"mean": 16}, overwrite=True)
    writer.abort()
    assert IndexReader(tmp_path / "ix").n_documents == 50
    write_index(tmp_path / "ix", n_docs=10, overwrite=True)
    assert IndexReader(tmp_path / "ix").n_documents == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_refuses_to_write_into_a_non_index_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(StoreError, match="not an index directory"):
        IndexWriter(tmp_path / "mine", {"mean": 16}, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_add_checks_vector_shapes(tmp_path):
    writer = IndexWriter(tmp_path / "ix", {"mean": 16})
    chunk = Chunk("a", 0, "x", 0, 1, (1,))
    with pytest.raises(ValueError, match=r"shape \(1, 8\), expected \(1, 16\)"):
        writer.add([Document("a", "x")], [chunk], {"mean": np.zeros((1, 8), np.float32)})
    with pytest.raises(ValueError, match="this index keeps"):
        writer.add([Document("a", "x")], [chunk], {"pooled": np.zeros((1, 16), np.float32)})
    writer.abort()
