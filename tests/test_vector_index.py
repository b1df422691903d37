"""Exact and approximate (HNSW) FAISS indexes: settings, brute-force agreement, recording in the manifest, conversion."""

import hashlib
import json

import numpy as np
import pytest

from indexer import vector_index
from indexer.cli import main
from indexer.integrity import convert, verify
from indexer.pipeline import add_documents, build_index, delete_documents
from indexer.search import Searcher
from indexer.store import CURRENT, MANIFEST, IndexReader, StoreError, read_manifest
from indexer.vector_index import IndexSpec
from test_store import unit, write_index


def clustered(rng, n, d, centres=20, spread=0.3):
    """Unit vectors around a few centres: neighbourhoods like those of real embeddings."""
    c = unit(rng, centres, d)
    v = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_spec_validation_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown index type 'ivf'; valid: flat, hnsw"):
        IndexSpec(type="ivf")
    with pytest.raises(ValueError, match=r"m must be an integer of at least 2, got 1"):
        IndexSpec(type="hnsw", m=1)
    with pytest.raises(ValueError, match=r"ef_search must be an integer of at least 1, got 0"):
        IndexSpec(type="hnsw", ef_search=0)
    with pytest.raises(ValueError, match=r"unknown vector index setting nprobe"):
        IndexSpec.from_dict({"type": "hnsw", "nprobe": 4})


def test_spec_round_trips_through_the_manifest_form():
    spec = IndexSpec(type="hnsw", m=16, ef_construction=40, ef_search=64)
    assert IndexSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert IndexSpec().to_dict() == {"type": "flat"}
    assert IndexSpec.from_dict(None) == IndexSpec()  # indexes written before the setting existed are flat


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_every_index_type_against_numpy_brute_force(kind):
    rng = np.random.default_rng(3)
    base = clustered(rng, 3000, 32)
    queries = clustered(rng, 50, 32)
    ids = np.arange(1000, 4000, dtype=np.int64)  # chunk ids need not start at 0
    index = vector_index.build(IndexSpec(type=kind, m=16, ef_construction=80, ef_search=256), ids, base)
    assert vector_index.kind_of(index) == kind
    scores, found = index.search(queries, 10)
    brute = queries @ base.T
    exact = ids[np.argsort(-brute, axis=1)[:, :10]]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall == 1.0 if kind == "flat" else recall >= 0.98
    # scores are exact inner products of the stored (uncompressed) vectors, whatever the type
    np.testing.assert_allclose(scores, np.take_along_axis(brute, found - 1000, axis=1), atol=1e-5)
    np.testing.assert_array_equal(index.reconstruct(1234), base[234])


def test_hnsw_recall_grows_with_ef_search():
    rng = np.random.default_rng(5)
    base, queries = unit(rng, 4000, 48), unit(rng, 40, 48)  # unstructured: the hard case
    index = vector_index.build(IndexSpec(type="hnsw", m=8, ef_construction=20), np.arange(4000), base)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    recalls = []
    for ef in (10, 400):
        vector_index.configure(index, IndexSpec(type="hnsw"), ef_search=ef)
        found = index.search(queries, 10)[1]
        recalls.append(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
    assert recalls[0] < recalls[1]


def test_manifest_records_the_type_and_settings_and_readers_apply_them(tmp_path):
    spec = IndexSpec(type="hnsw", m=12, ef_construction=30, ef_search=77)
    _, _, vectors = write_index(tmp_path / "ix", vector_index=spec)
    manifest = read_manifest(tmp_path / "ix")
    assert manifest.vector_index == IndexSpec(type="hnsw", m=12, ef_construction=30, ef_search=77)
    assert {r: s.index_type for r, s in manifest.representations.items()} == {"pooled": "hnsw-ip", "mean": "hnsw-ip"}
    assert all(s.build_seconds >= 0 for s in manifest.representations.values())
    reader = IndexReader(tmp_path / "ix")
    import faiss

    for index in reader.indexes.values():
        hnsw = faiss.downcast_index(index.index).hnsw
        assert (hnsw.efSearch, hnsw.efConstruction) == (77, 30)
    assert verify(tmp_path / "ix") == ([], [f"generation {manifest.generation}, created {manifest.created_at}"])


def test_a_file_of_another_type_than_the_manifest_says_is_refused(tmp_path):
    write_index(tmp_path / "ix")  # flat files
    directory = tmp_path / "ix"
    pointer = json.loads((directory / CURRENT).read_text())
    path = directory / pointer["generation"] / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["vector_index"] = {"type": "hnsw", "m": 32, "ef_construction": 100, "ef_search": 64}
    data = json.dumps(manifest).encode()
    path.write_bytes(data)  # a consistent but lying manifest: checksums alone cannot catch it
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(StoreError, match=r"pooled\.faiss is a flat index, the manifest says hnsw"):
        IndexReader(directory)
    problems, _ = verify(directory)
    assert any("is a flat index, the manifest says hnsw" in p for p in problems)
    manifest["vector_index"] = {"type": "annoy"}
    data = json.dumps(manifest).encode()
    path.write_bytes(data)
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(StoreError, match=r"invalid vector_index settings: unknown index type 'annoy'"):
        IndexReader(directory)


def test_convert_switches_type_without_re_embedding_and_back(tmp_path):
    _, chunks, vectors = write_index(tmp_path / "ix", n_docs=200)
    directory = tmp_path / "ix"
    queries = unit(np.random.default_rng(9), 8, 16)
    before = IndexReader(directory)
    exact = {r: before.search(r, queries, 10) for r in ("pooled", "mean")}
    convert(directory, IndexSpec(type="hnsw", ef_search=512))
    manifest = read_manifest(directory)
    assert manifest.vector_index.type == "hnsw" and manifest.updates[-1]["op"] == "convert"
    after = IndexReader(directory)
    for r in ("pooled", "mean"):
        np.testing.assert_array_equal(after.vectors(r, range(len(chunks))), vectors[r])  # the very same vectors
        scores, ids = after.search(r, queries, 10)
        np.testing.assert_array_equal(ids, exact[r][1])  # 600 vectors, efSearch 512: the exact answer
        np.testing.assert_allclose(scores, exact[r][0], atol=1e-6)
    assert verify(directory)[0] == []
    convert(directory, IndexSpec())
    assert read_manifest(directory).vector_index == IndexSpec()
    assert verify(directory)[0] == []


def test_hnsw_build_add_delete_keep_the_type_and_match_flat_rankings(tmp_path, tiny_encoder, small_jsonl):
    spec = IndexSpec(type="hnsw", m=8, ef_construction=40, ef_search=200)
    build_index(small_jsonl, tmp_path / "h", tiny_encoder, progress=False, vector_index=spec)
    build_index(small_jsonl, tmp_path / "f", tiny_encoder, progress=False)
    assert read_manifest(tmp_path / "h").vector_index == spec
    assert read_manifest(tmp_path / "f").vector_index == IndexSpec()
    for query in ("honey from the hive", "bread in the oven", "a comet in the sky"):
        h = Searcher(tmp_path / "h", tiny_encoder).search(query, 5)
        f = Searcher(tmp_path / "f", tiny_encoder).search(query, 5)
        assert {r: [x.doc_id for x in hits] for r, hits in h.results.items()} == {r: [x.doc_id for x in hits] for r, hits in f.results.items()}
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "tea-1", "text": "brew the tea with hot water"}) + "\n", encoding="utf-8")
    add_documents(tmp_path / "h", more, tiny_encoder, progress=False)
    delete_documents(tmp_path / "h", ["bee-1"])
    manifest = read_manifest(tmp_path / "h")
    assert manifest.vector_index == spec and manifest.counts.documents == 8
    assert verify(tmp_path / "h")[0] == []


def test_cli_build_with_hnsw_info_and_convert(tmp_path, tiny_bert, small_jsonl, capsys):
    ix = str(tmp_path / "ix")
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--index-type", "hnsw",
                 "--hnsw-m", "8", "--ef-search", "64", "--no-progress"]) == 0
    assert main(["info", ix]) == 0
    assert "vector index:   hnsw (approximate: M=8, efConstruction=100, efSearch=64)" in capsys.readouterr().out
    # the same build with another type: refused without --overwrite, with a pointer to `convert`
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--no-progress"]) == 2
    assert f"python -m indexer convert {tmp_path / 'ix'} --index-type flat" in capsys.readouterr().err
    assert main(["convert", ix, "--index-type", "flat"]) == 0
    assert "flat (exact)" in capsys.readouterr().out
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--no-progress", "--index-type", "hnsw", "--hnsw-m", "1"]) == 2
    assert "m must be an integer of at least 2, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", ix])  # --index-type is required
