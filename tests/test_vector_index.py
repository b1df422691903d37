"""Exact and approximate (HNSW) FAISS indexes: settings, brute-force agreement, recording in the manifest, conversion."""

import hashlib
import json

import faiss
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
    with pytest.raises(ValueError, match=r"unknown index type 'annoy'; valid: flat, hnsw, ivf"):
        IndexSpec(type="annoy")
    with pytest.raises(ValueError, match=r"m must be an integer of at least 2, got 1"):
        IndexSpec(type="hnsw", m=1)
    with pytest.raises(ValueError, match=r"ef_search must be an integer of at least 1, got 0"):
        IndexSpec(type="hnsw", ef_search=0)
    with pytest.raises(ValueError, match=r"unknown vector index setting nbits"):
        IndexSpec.from_dict({"type": "ivf", "nbits": 4})
    with pytest.raises(ValueError, match=r"unknown quantizer 'pq'; valid: sq8 \(one byte per dimension\) or pqM"):
        IndexSpec(type="ivf", quantizer="pq")
    with pytest.raises(ValueError, match=r"nprobe must be an integer of at least 1, got 0"):
        IndexSpec(type="ivf", nprobe=0)
    with pytest.raises(ValueError, match=r"quantizer 'pq5' needs a dimension divisible by 5, got 16; valid: sq8, pq1, pq2, pq4, pq8, pq16"):
        vector_index.build(IndexSpec(type="ivf", quantizer="pq5"), np.arange(100), unit(np.random.default_rng(0), 100, 16))


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
        vector_index.configure(index, IndexSpec(type="hnsw"), effort=ef)
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
    # without --ef-construction: the spec's default
    assert (f"vector index:   hnsw (approximate: M=8, efConstruction={IndexSpec().ef_construction}, efSearch=64)"
            in capsys.readouterr().out)
    # the same build with another type: refused without --overwrite, with a pointer to `convert`
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--no-progress"]) == 2
    assert f"python -m indexer convert {tmp_path / 'ix'} --index-type flat" in capsys.readouterr().err
    assert main(["convert", ix, "--index-type", "flat"]) == 0
    assert "flat (exact)" in capsys.readouterr().out
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--no-progress", "--index-type", "hnsw", "--hnsw-m", "1"]) == 2
    assert "m must be an integer of at least 2, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", ix])  # --index-type is required


def test_building_approximate_indexes_shows_a_bar_over_the_representations(tmp_path, tiny_bert, small_jsonl, capsys):
    """An HNSW graph over a million vectors takes half an hour: convert, repair, refit, build and add show a bar over
    the representations' indexes while approximate ones are built; none for exact ones or with --no-progress."""
    ix = str(tmp_path / "ix")
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--no-progress"]) == 0
    capsys.readouterr()
    served = len(read_manifest(ix).representations)
    assert served >= 2
    done = "hnsw indexes: 100%"
    for argv in (["convert", ix, "--index-type", "hnsw"], ["repair", ix], ["refit", ix]):
        assert main(argv) == 0, argv
        err = capsys.readouterr().err
        assert done in err and f"{served}/{served}" in err, (argv, err)
    assert main(["build", str(small_jsonl), "--index", ix, "--model", str(tiny_bert), "--overwrite", "--index-type", "hnsw"]) == 0
    assert done in capsys.readouterr().err
    more = tmp_path / "more.jsonl"  # an add extends each graph: the bar names it, and ends at every representation
    more.write_text(json.dumps({"_id": "new-1", "text": "a passage the index has not seen yet"}) + "\n", encoding="utf-8")
    assert main(["add", ix, str(more)]) == 0
    err = capsys.readouterr().err
    assert done in err and f"{served}/{served}" in err and ": extending" in err, err
    assert all(read_manifest(ix).representations[r].built_from for r in read_manifest(ix).representations)
    for argv in (["convert", ix, "--index-type", "hnsw", "--no-progress"], ["repair", ix, "--no-progress"],
                 ["convert", ix, "--index-type", "flat"], ["repair", ix]):
        assert main(argv) == 0, argv
        assert "indexes" not in capsys.readouterr().err, argv


# -- efSearch tuned per representation --------------------------------------------------------------------------

def exact_top(queries, base, k=10):
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :k]


def recall_of(found, exact):
    return float(np.mean([len(set(f) & set(e)) / exact.shape[1] for f, e in zip(found, exact)]))


def test_tuned_ef_search_is_the_smallest_on_the_ladder_reaching_the_target_and_holds_on_held_out_queries():
    both = clustered(np.random.default_rng(11), 20500, 32, centres=40, spread=1.0)
    base, held_out = both[:20000], both[20000:]  # queries of the collection's kind that the index never saw
    spec = IndexSpec(type="hnsw", m=6, ef_construction=20)  # a sparse graph: a small efSearch misses neighbours
    assert spec.tuned and spec.recall_target == 0.95
    ids = np.arange(5000, 25000, dtype=np.int64)
    index, tuning, _ = vector_index.build_tuned(spec, ids, base)
    assert index.ntotal == 20000  # the held-out sample is in the index too
    tried = {ef: (mean, bound) for ef, mean, bound in tuning.tried}
    assert tried[vector_index.EF_START][0] < 0.95  # the default start does not reach it: tuning had work to do
    assert tuning.recall == round(tried[tuning.effort][0], 4) and tuning.queries == vector_index.TUNING_QUERIES
    # the smallest value tried whose recall on the sample reaches the target (its 97.5% lower confidence bound does)
    assert tried[tuning.effort][1] >= 0.95
    assert all(bound < 0.95 for ef, (_, bound) in tried.items() if ef < tuning.effort)
    # doubling from EF_START, then a binary search: a value within 1/16 below the result was tried and missed
    assert max(ef for ef in tried if ef < tuning.effort) >= tuning.effort - max(1, tuning.effort // 16)
    assert vector_index.effort_of(index) == tuning.effort  # left set to it
    # on queries it never saw, against numpy brute force, the tuned value reaches the target too
    found = index.search(held_out, 10)[1] - 5000
    assert recall_of(found, exact_top(held_out, base)) >= 0.95
    vector_index.configure(index, spec, effort=vector_index.EF_START)
    assert recall_of(index.search(held_out, 10)[1] - 5000, exact_top(held_out, base)) < 0.95


def test_tuning_probes_are_query_like_and_the_tuned_value_holds_for_queries_farther_than_documents():
    """Tuning probes are unit vectors at cosine PROBE_COSINE from held-out vectors (queries lie farther from the
    collection than documents do); the efSearch tuned on them is at least what held-out documents alone would need,
    and reaches the target on unseen queries of that kind, against numpy brute force."""
    rng = np.random.default_rng(5)
    sample = clustered(rng, 200, 32, centres=40, spread=1.0)
    probes = vector_index.query_probes(sample, np.random.default_rng(6))
    assert np.allclose(np.linalg.norm(probes, axis=1), 1, atol=1e-5)
    assert np.allclose(np.sum(probes * sample, axis=1), vector_index.PROBE_COSINE, atol=1e-5)
    both = clustered(np.random.default_rng(11), 20500, 32, centres=40, spread=1.0)
    base, held_out = both[:20000], both[20000:]
    spec = IndexSpec(type="hnsw", m=6, ef_construction=20)
    ids = np.arange(20000, dtype=np.int64)
    index, tuning, _ = vector_index.build_tuned(spec, ids, base)
    # what held-out documents alone would have asked for, on the same graph
    plain = vector_index.tune_search_effort(index, base, held_out, spec.recall_target)
    assert tuning.effort >= plain.effort
    vector_index.configure(index, spec, effort=tuning.effort)
    queries = vector_index.query_probes(held_out, np.random.default_rng(99))  # unseen, never tuned on
    assert recall_of(index.search(queries, 10)[1], exact_top(queries, base)) >= 0.95


def test_build_records_the_tuned_ef_search_per_representation_and_readers_apply_it(tmp_path, capsys):
    _, _, vectors = write_index(tmp_path / "ix", n_docs=400, vector_index=IndexSpec(type="hnsw", m=4, ef_construction=8))
    manifest = read_manifest(tmp_path / "ix")
    assert manifest.vector_index.to_dict() == {"type": "hnsw", "m": 4, "ef_construction": 8, "recall_target": 0.95}
    reader = IndexReader(tmp_path / "ix")
    for r, record in manifest.representations.items():
        again = vector_index.build_tuned(manifest.vector_index, np.arange(len(vectors[r])), vectors[r])[1]
        assert (record.ef_search, record.recall_at_10, record.tuning_queries) == (again.effort, again.recall, 120)
        assert record.recall_at_10 >= 0.95 and record.tuning_seconds >= 0
        assert vector_index.effort_of(reader.indexes[r]) == record.ef_search
    assert main(["info", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out
    assert "efSearch tuned per representation to recall@10 >= 0.95" in out
    record = manifest.representations["mean"]
    assert f"efSearch {record.ef_search} (tuned to 0.95: recall@10 {record.recall_at_10:.3f} on 120 probes from its own vectors)" in out
    # an explicit efSearch fixes it for every representation: nothing is tuned or recorded per representation
    convert(tmp_path / "ix", IndexSpec(type="hnsw", m=4, ef_construction=8, ef_search=40))
    fixed = IndexReader(tmp_path / "ix")
    assert all(rec.ef_search is None and rec.recall_at_10 is None for rec in fixed.manifest.representations.values())
    assert {vector_index.effort_of(i) for i in fixed.indexes.values()} == {40}


# -- cheap updates: the previous generation's index extended, deletions as tombstones -------------------------------

def update(directory, *, add=0, remove=(), seed=1, d=16):
    """An add and/or delete through the writer path `add_documents` and `delete_documents` take (incremental publish),
    with random vectors; returns the new documents' vectors."""
    from dataclasses import replace

    from indexer.chunking import Chunk
    from indexer.loaders import Document
    from indexer.staging import Staging, WriterLock, base_state, publish

    rng = np.random.default_rng(seed)
    docs = [Document(f"new-{seed}-{i}", f"text {i}", title=f"N{i}") for i in range(add)]
    chunks = [Chunk(x.doc_id, 0, f"chunk of {x.doc_id}", 0, 4, (1, 2)) for x in docs]
    vectors = {"pooled": unit(rng, len(chunks), d), "mean": unit(rng, len(chunks), d)}
    with WriterLock(directory, "test"):
        gen_dir, manifest = base_state(directory)
        staging = Staging(directory, {"op": "test-update", "seed": seed}, base=gen_dir, next_chunk_id=manifest.next_chunk_id)
        staging.apply(remove=list(remove), documents=docs, chunks=chunks, vectors=vectors, consumed=len(docs))
        publish(directory, staging, replace(manifest, updates=(*manifest.updates, {"op": "test"})), manifest.poolings,
                incremental=True)
    return vectors


def all_vectors(reader, r):
    """(chunk ids, stored vectors) of every live chunk, from the metadata store."""
    from indexer.store import read_vectors

    return read_vectors(reader.db, r, 16, reader.directory)


def test_an_incremental_hnsw_add_gives_the_top_10_of_a_rebuilt_index_and_of_brute_force(tmp_path):
    spec = IndexSpec(type="hnsw", m=8, ef_construction=40, ef_search=2000)  # efSearch above the size: exact answers
    write_index(tmp_path / "ix", n_docs=200, vector_index=spec)
    before = read_manifest(tmp_path / "ix")
    update(tmp_path / "ix", add=30)
    after = IndexReader(tmp_path / "ix")
    queries = unit(np.random.default_rng(5), 20, 16)
    write_index(tmp_path / "fresh", n_docs=1, vector_index=spec)
    for r, record in after.manifest.representations.items():
        assert record.built_from == before.generation and record.tombstones is None and record.build_seconds >= 0
        assert after.indexes[r].ntotal == 630
        ids, stored = all_vectors(after, r)
        rebuilt = vector_index.build(spec, ids, stored)
        found = after.search(r, queries, 10)[1]
        np.testing.assert_array_equal(found, rebuilt.search(queries, 10)[1])
        np.testing.assert_array_equal(found, ids[exact_top(queries, stored)])
    assert verify(tmp_path / "ix")[0] == []


def test_an_incremental_add_keeps_the_tuned_ef_search_and_a_rebuild_tunes_it_again(tmp_path):
    write_index(tmp_path / "ix", n_docs=300, vector_index=IndexSpec(type="hnsw", m=4, ef_construction=8))
    tuned = {r: rec.ef_search for r, rec in read_manifest(tmp_path / "ix").representations.items()}
    update(tmp_path / "ix", add=10)
    reader = IndexReader(tmp_path / "ix")
    assert {r: rec.ef_search for r, rec in reader.manifest.representations.items()} == tuned
    assert {r: vector_index.effort_of(i) for r, i in reader.indexes.items()} == tuned
    convert(tmp_path / "ix", reader.manifest.vector_index)
    for r, rec in read_manifest(tmp_path / "ix").representations.items():
        ids, stored = all_vectors(IndexReader(tmp_path / "ix"), r)
        again = vector_index.build_tuned(read_manifest(tmp_path / "ix").vector_index, ids, stored)[1]
        assert rec.built_from is None and rec.ef_search == again.effort and rec.tuning_queries == 91


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_deleted_documents_never_appear_after_an_incremental_delete_nor_after_a_rebuild(tmp_path, kind):
    spec = IndexSpec(type=kind, m=8, ef_search=64) if kind == "hnsw" else IndexSpec()
    write_index(tmp_path / "ix", n_docs=200, vector_index=spec)
    directory = tmp_path / "ix"
    gone_docs = [f"doc-{i}" for i in range(0, 30, 2)]  # 15 of 200 documents: 45 of 600 chunks, under 10%
    gone_chunks = {c for d in gone_docs for c in IndexReader(directory).chunk_ids_by_doc(gone_docs)[d]}
    update(directory, add=5, remove=gone_docs)
    reader = IndexReader(directory)  # a reader opened afterwards: a restart
    queries = unit(np.random.default_rng(3), 30, 16)
    for r, record in reader.manifest.representations.items():
        assert record.built_from is not None
        if kind == "hnsw":
            assert record.tombstones == 45 and set(reader.excluded[r].ids.tolist()) == gone_chunks
            assert reader.indexes[r].ntotal == 600 - 45 + 5 + 45
        else:  # removed from a flat index outright
            assert record.tombstones is None and r not in reader.excluded and reader.indexes[r].ntotal == 560
        scores, found = reader.search(r, queries, reader.n_chunks)  # every live chunk, in order
        assert not gone_chunks & set(found.ravel().tolist())
        ids, stored = all_vectors(reader, r)
        if kind == "flat":
            np.testing.assert_array_equal(found[:, :10], ids[exact_top(queries, stored)])
    hits = Searcher(directory, _NoEncoder(reader)).index.search("mean", queries, 50)[1]
    assert not gone_chunks & set(hits.ravel().tolist())
    assert verify(directory)[0] == []
    convert(directory, spec)  # a rebuild: clean graphs, no tombstones left anywhere
    rebuilt = IndexReader(directory)
    for r, record in rebuilt.manifest.representations.items():
        assert record.tombstones is None and record.built_from is None and r not in rebuilt.excluded
        held = set(faiss_ids_of(rebuilt.indexes[r]))
        assert not gone_chunks & held and len(held) == 560


class _NoEncoder:
    """Stands in for an encoder where only the reader is used (compatibility taken from the index itself)."""

    def __init__(self, reader):
        self.info = reader.manifest.model
        self.max_tokens = reader.manifest.chunking.max_tokens
        self.window = reader.manifest.content_tokens_per_chunk
        self.representations = reader.representations
        self.poolings = tuple(reader.manifest.poolings)
        self.precision = reader.manifest.encoded_precision


def faiss_ids_of(index):
    from indexer.store import faiss_ids

    return faiss_ids(index).tolist()


def test_tombstones_past_the_limit_rebuild_the_graph(tmp_path):
    write_index(tmp_path / "ix", n_docs=100, vector_index=IndexSpec(type="hnsw", m=8, ef_search=64))
    update(tmp_path / "ix", remove=[f"doc-{i}" for i in range(11)])  # 33 of 300 chunks: over 10%
    reader = IndexReader(tmp_path / "ix")
    for r, record in reader.manifest.representations.items():
        assert record.built_from is None and record.tombstones is None and reader.indexes[r].ntotal == 267


def rewrite_generation(directory, edit_manifest=None, faiss_files=None):
    """Change a published generation's manifest or FAISS files consistently (checksums and CURRENT follow):
    what only the id checks, not the checksums, can catch."""
    from indexer.files import sha256_file

    pointer = json.loads((directory / CURRENT).read_text())
    gen = directory / pointer["generation"]
    manifest = json.loads((gen / MANIFEST).read_text())
    for name, data in (faiss_files or {}).items():
        (gen / name).write_bytes(data)
        manifest["files"][name] = {"bytes": len(data), "sha256": sha256_file(gen / name)}
    if edit_manifest:
        edit_manifest(manifest)
    data = json.dumps(manifest).encode()
    (gen / MANIFEST).write_bytes(data)
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))


def test_verify_accepts_recorded_tombstones_and_refuses_ids_that_are_neither_chunks_nor_tombstones(tmp_path):
    import faiss

    directory = tmp_path / "ix"
    write_index(directory, n_docs=100, vector_index=IndexSpec(type="hnsw", m=8, ef_search=64))
    update(directory, remove=["doc-1", "doc-2"])  # 6 tombstones
    assert verify(directory)[0] == []
    assert IndexReader(directory).manifest.representations["mean"].tombstones == 6
    # the manifest owns up to fewer tombstones than the file holds: refused
    rewrite_generation(directory, lambda m: m["representations"]["mean"].update(tombstones=5))
    with pytest.raises(StoreError, match=r"FAISS files hold \[294, 295\] live vectors, the manifest says 294 chunks"):
        IndexReader(directory)
    assert any("`mean` holds 300 vectors whose ids differ" in p for p in verify(directory)[0])
    rewrite_generation(directory, lambda m: m["representations"]["mean"].update(tombstones=6))
    assert verify(directory)[0] == []
    # as many ids as chunks + tombstones, but a chunk is missing and an unknown id stands in its place: refused
    reader = IndexReader(directory)
    index = faiss.deserialize_index(faiss.serialize_index(reader.indexes["mean"]))
    live = reader.chunk_ids_by_doc(["doc-50"])["doc-50"][0]
    id_map = faiss.vector_to_array(index.id_map)
    id_map[id_map == live] = 10_000
    faiss.copy_array_to_vector(id_map, index.id_map)
    rewrite_generation(directory, faiss_files={"mean.faiss": faiss.serialize_index(index).tobytes()})
    with pytest.raises(StoreError, match=r"mean\.faiss holds chunk ids that differ"):
        IndexReader(directory)
    assert any("`mean` holds 300 vectors whose ids differ" in p for p in verify(directory)[0])


# -- ivf: compressed, re-ranked exactly with the stored vectors --------------------------------------------------------

def test_ivf_scores_are_exact_inner_products_of_the_stored_vectors_and_its_file_is_smaller(tmp_path):
    _, _, vectors = write_index(tmp_path / "ix", n_docs=400, vector_index=IndexSpec(type="ivf"))
    write_index(tmp_path / "flat", n_docs=400)
    reader, flat = IndexReader(tmp_path / "ix"), IndexReader(tmp_path / "flat")
    queries = unit(np.random.default_rng(7), 20, 16)
    for r in ("pooled", "mean"):
        record = reader.manifest.representations[r]
        assert record.nlist == vector_index.default_nlist(1200 - 120) and record.nprobe == vector_index.effort_of(reader.indexes[r])
        scores, ids = reader.search(r, queries, 10)
        brute = queries @ vectors[r].T
        np.testing.assert_allclose(scores, np.take_along_axis(brute, ids, axis=1), atol=1e-6)  # exact, not the codes'
        assert np.all(np.diff(scores, axis=1) <= 0)  # best first
        compressed = faiss_search_raw(reader, r, queries)
        assert np.abs(compressed - np.take_along_axis(brute, ids, axis=1)).max() > 1e-4  # what re-ranking corrects
        ivf_bytes, flat_bytes = (x.manifest.files[x.manifest.representations[r].file].bytes / 1200 for x in (reader, flat))
        # per vector: 16 one-byte codes + 2 ids (the list's, the id map's) against 64 bytes of floats + 1 id, the
        # centroids shared: under 55% (float16 codes would be about 70%)
        assert ivf_bytes < 0.55 * flat_bytes
    assert verify(tmp_path / "ix")[0] == []


def faiss_search_raw(reader, r, queries):
    """The compressed index's own (approximate) scores of the same query, without the re-rank."""
    return vector_index.search(reader.indexes[r], queries, 10)[0]


def test_ivf_tuned_nprobe_reaches_the_target_on_held_out_queries_against_brute_force():
    both = clustered(np.random.default_rng(11), 20500, 32, centres=40, spread=1.0)
    base, held_out = both[:20000], both[20000:]
    spec = IndexSpec(type="ivf", rerank=2)
    ids = np.arange(5000, 25000, dtype=np.int64)
    index, tuning, _ = vector_index.build_tuned(spec, ids, base)
    assert index.ntotal == 20000 and vector_index.effort_of(index) == tuning.effort
    tried = {e: (mean, bound) for e, mean, bound in tuning.tried}
    assert tried[1][0] < 0.95 and tried[tuning.effort][1] >= 0.95  # one list is not enough; the tuned value is
    assert all(bound < 0.95 for e, (_, bound) in tried.items() if e < tuning.effort)
    assert tuning.effort < vector_index.nlist_of(index)  # approximate: fewer lists than all of them

    def recall_at(effort):
        vector_index.configure(index, spec, effort=effort)
        scores, found = index.search(held_out, 20)
        rescored = vector_index.rerank_exact(scores, found, held_out, base[found - 5000], 10)[1] - 5000
        return recall_of(rescored, exact_top(held_out, base))

    assert recall_at(tuning.effort) >= 0.95
    assert recall_at(1) < 0.95


def test_ivf_pq_codes_are_a_few_bytes_per_vector_and_still_exact_after_re_ranking(tmp_path):
    write_index(tmp_path / "ix", n_docs=400, vector_index=IndexSpec(type="ivf", quantizer="pq4", nlist=8, nprobe=8, rerank=50))
    reader = IndexReader(tmp_path / "ix")
    queries = unit(np.random.default_rng(1), 10, 16)
    for r in ("pooled", "mean"):
        pq = faiss.downcast_index(reader.indexes[r].index)
        # 1,200 vectors: too few for 256 centroids per sub-quantiser, so fewer bits (1200 // 39 = 30 points: 4 bits)
        assert (pq.pq.M, pq.pq.nbits, pq.code_size) == (4, 4, 2)
        ids, stored = all_vectors(reader, r)
        scores, found = reader.search(r, queries, 10)  # every list, 500 candidates re-scored: the exact top 10
        np.testing.assert_array_equal(found, ids[exact_top(queries, stored)])
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ stored.T, found, axis=1), atol=1e-6)
    assert verify(tmp_path / "ix")[0] == []


def test_ivf_of_a_whitened_representation_is_re_ranked_in_the_whitened_space(five_index, tmp_path):
    import shutil

    directory = tmp_path / "five"
    shutil.copytree(five_index[0], directory)
    convert(directory, IndexSpec(type="ivf"))
    reader = IndexReader(directory)
    transform = reader.transforms["mean+whiten"]
    ids, stored_mean = all_vectors_of(reader, "mean")
    documents = transform.apply(stored_mean)  # the documents as the build mapped them
    queries = transform.apply(unit(np.random.default_rng(2), 4, stored_mean.shape[1]))
    scores, found = reader.search("mean+whiten", queries, 5)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, np.searchsorted(ids, found), axis=1), atol=1e-5)
    assert verify(directory)[0] == []


def all_vectors_of(reader, pooling):
    from indexer.store import read_vectors

    return read_vectors(reader.db, pooling, reader.manifest.poolings[pooling], reader.directory)


def test_ivf_deletions_never_show_up_and_adds_use_the_trained_lists(tmp_path):
    directory = tmp_path / "ix"
    write_index(directory, n_docs=200, vector_index=IndexSpec(type="ivf"))
    before = read_manifest(directory)
    gone_docs = [f"doc-{i}" for i in range(0, 30, 2)]  # 45 of 600 chunks: tombstones, under the 10% limit
    gone_chunks = {c for d in gone_docs for c in IndexReader(directory).chunk_ids_by_doc(gone_docs)[d]}
    update(directory, add=5, remove=gone_docs)
    reader = IndexReader(directory)
    queries = unit(np.random.default_rng(3), 30, 16)
    for r, record in reader.manifest.representations.items():
        old = before.representations[r]
        assert record.built_from == before.generation and record.tombstones == 45
        assert (record.nlist, record.nprobe) == (old.nlist, old.nprobe)  # no retraining, the tuned nprobe kept
        assert reader.indexes[r].ntotal == 600 + 5
        scores, found = reader.search(r, queries, reader.n_chunks)  # every live chunk
        assert not gone_chunks & set(found.ravel().tolist()) and set(found.ravel().tolist()) - {-1}
        ids, stored = all_vectors(reader, r)
        np.testing.assert_allclose(scores[found >= 0], (queries @ stored.T)[np.nonzero(found >= 0)[0], np.searchsorted(ids, found[found >= 0])], atol=1e-6)
    assert verify(directory)[0] == []
    update(directory, remove=[f"doc-{i}" for i in range(1, 60, 2)], seed=2)  # past 10%: trained again, no tombstones
    for record in read_manifest(directory).representations.values():
        assert record.built_from is None and record.tombstones is None
    assert verify(directory)[0] == []


def test_convert_flat_to_ivf_and_back_keeps_the_results_of_exact_queries(tmp_path, capsys):
    directory = tmp_path / "ix"
    _, chunks, vectors = write_index(directory, n_docs=200)
    queries = np.vstack([vectors["mean"][:5], vectors["pooled"][5:10]])  # stored vectors: each finds itself first
    before = IndexReader(directory)
    exact = {r: before.search(r, queries, 10) for r in ("pooled", "mean")}
    convert(directory, IndexSpec(type="ivf", nprobe=1000))  # every list: the exact answer after re-ranking
    after = IndexReader(directory)
    for r in ("pooled", "mean"):
        scores, ids = after.search(r, queries, 10)
        np.testing.assert_array_equal(ids, exact[r][1])
        np.testing.assert_allclose(scores, exact[r][0], atol=1e-6)
        np.testing.assert_array_equal(after.vectors(r, range(len(chunks))), vectors[r])  # from the metadata store
    assert verify(directory)[0] == []
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "vector index:   ivf (approximate, compressed: nlist from the collection size, sq8 codes, nprobe=1000" in out
    # what is searched: the 15 lists the index has, as opening it caps the value asked for
    assert {vector_index.effort_of(i) for i in after.indexes.values()} == {15}
    assert ("15 lists, sq8 codes, nprobe 15 (fixed: 1000 asked for, capped at the number of lists), 4x candidates "
            "re-scored exactly; FAISS file ") in out
    convert(directory, IndexSpec())
    back = IndexReader(directory)
    for r in ("pooled", "mean"):
        np.testing.assert_array_equal(back.search(r, queries, 10)[1], exact[r][1])
    assert verify(directory)[0] == []


def test_verify_catches_an_ivf_file_holding_other_vectors(tmp_path):
    directory = tmp_path / "ix"
    write_index(directory, n_docs=100, vector_index=IndexSpec(type="ivf"))
    reader = IndexReader(directory)
    other = vector_index.build(IndexSpec(type="ivf"), faiss_ids_of_array(reader.indexes["mean"]), unit(np.random.default_rng(99), 300, 16))
    rewrite_generation(directory, faiss_files={"mean.faiss": faiss.serialize_index(other).tobytes()},
                       edit_manifest=lambda m: m["representations"]["mean"].update(nprobe=1))
    assert verify(directory)[0] == ["`mean` vectors in the FAISS file differ from those in the metadata store"]


def faiss_ids_of_array(index):
    from indexer.store import faiss_ids

    return faiss_ids(index)


# -- what tuning probes are: pseudo-queries of held-out chunks, encoded by the index's model ---------------------------

def test_build_tuned_tunes_on_the_probes_it_is_given_for_the_held_out_ids_and_falls_back_to_vector_probes():
    both = clustered(np.random.default_rng(11), 20000, 32, centres=40, spread=1.0)
    ids = np.arange(100, 20100, dtype=np.int64)
    spec = IndexSpec(type="hnsw", m=6, ef_construction=20)
    asked = []

    def probes(kind):
        def make(held_out):
            asked.append(np.array(held_out))
            rows = np.searchsorted(ids, held_out)
            if kind == "same":  # the held-out vectors themselves: the easiest queries there are
                return both[rows]
            return unit(np.random.default_rng(3), len(rows), 32)  # random directions, far from every cluster: hard
        return make

    _, easy, _ = vector_index.build_tuned(spec, ids, both, probes=probes("same"))
    _, hard, _ = vector_index.build_tuned(spec, ids, both, probes=probes("random"))
    assert easy.probes == hard.probes == vector_index.PROBES_TEXT
    held = asked[0]
    assert len(held) == vector_index.TUNING_QUERIES == len(set(held.tolist())) and set(held.tolist()) <= set(ids.tolist())
    np.testing.assert_array_equal(asked[1], held)  # the same seeded sample for every representation
    assert hard.effort > easy.effort  # the probes given are the ones tuned on
    # what the recorded recall says, computed independently: the held-out vectors against numpy brute force over the others
    index = vector_index.build(spec, ids[~np.isin(ids, held)], both[~np.isin(ids, held)], seed=vector_index.TUNING_SEED)
    vector_index.configure(index, spec, effort=easy.effort)
    others = both[~np.isin(ids, held)]
    found = np.searchsorted(ids[~np.isin(ids, held)], index.search(both[np.isin(ids, held)], 10)[1])
    assert abs(recall_of(found, exact_top(both[np.isin(ids, held)], others)) - easy.recall) < 0.02
    # a publisher without an encoder (None): the held-out vectors turned into probes, as without `probes`
    _, fallback, _ = vector_index.build_tuned(spec, ids, both, probes=lambda held_out: None)
    _, plain, _ = vector_index.build_tuned(spec, ids, both)
    assert fallback.probes == plain.probes == vector_index.PROBES_VECTORS and fallback.effort == plain.effort
    with pytest.raises(ValueError, match="probes for 500 held-out vectors"):
        vector_index.build_tuned(spec, ids, both, probes=lambda held_out: both[:3])


def test_a_build_tunes_on_pseudo_queries_of_held_out_chunks_mapped_like_queries(tmp_path, tiny_bert, monkeypatch):
    """The probes of every representation are the first words of held-out chunks' texts, encoded once by the index's
    encoder for all poolings and passed through the representation's transform, as a query is (checked against the
    published chunks and transform, and the encoder called again)."""
    from indexer.config import parse_representation
    from indexer.encoder import Encoder
    from indexer.store import load_transforms
    from indexer.text import QUERY_WORDS, pseudo_query

    encoder = Encoder.load(str(tiny_bert), representations=("mean", "mean+whiten", "max"))
    calls, tuned = [], {}
    encode = encoder.encode_texts
    monkeypatch.setattr(encoder, "encode_texts", lambda texts: calls.append(list(texts)) or encode(texts))
    real_tune = vector_index.tune_search_effort

    def spy(index, base, queries, target, **kw):
        tuned[index.d, len(tuned)] = np.array(queries)
        return real_tune(index, base, queries, target, **kw)

    monkeypatch.setattr(vector_index, "tune_search_effort", spy)
    from conftest import random_corpus
    from indexer.pipeline import build_index

    build_index(random_corpus(tmp_path / "c.jsonl", 150), tmp_path / "ix", encoder, overlap=2, progress=False,
                vector_index=IndexSpec(type="hnsw", m=4, ef_construction=8))
    reader = IndexReader(tmp_path / "ix")
    manifest = reader.manifest
    assert len(calls) == 1, "one encoding of the pseudo-queries for every representation"
    texts = calls[0]
    n = manifest.counts.chunks // 10
    assert len(texts) == n and all(r.tuning_probes == vector_index.PROBES_TEXT and r.tuning_queries == n
                                   for r in manifest.representations.values())
    chunk_words = {" ".join(t.split()[:QUERY_WORDS]) for t in reader.db.execute("SELECT text FROM chunks").fetchall() for t in t}
    assert set(texts) <= chunk_words and all(pseudo_query(t) == t for t in texts)
    expected = encode(texts)
    transforms = load_transforms(tmp_path / "ix" / manifest.generation, manifest)
    got = list(tuned.values())
    for r, queries in zip(manifest.representations, got):
        pooling = parse_representation(r).pooling
        want = transforms[r].apply(expected[pooling]) if r in transforms else expected[pooling]
        np.testing.assert_allclose(queries, want, atol=1e-5)


def test_convert_and_a_delete_that_rebuilds_tune_on_pseudo_queries_with_the_index_model(tmp_path, tiny_encoder, caplog):
    from conftest import build_random

    build_random(tmp_path / "ix", tiny_encoder, 120)
    convert(tmp_path / "ix", IndexSpec(type="hnsw", m=4, ef_construction=8))
    assert {r.tuning_probes for r in read_manifest(tmp_path / "ix").representations.values()} == {vector_index.PROBES_TEXT}
    delete_documents(tmp_path / "ix", [f"d{i}" for i in range(30)])  # a quarter of the chunks: past the tombstone limit
    after = read_manifest(tmp_path / "ix").representations.values()
    assert all(r.built_from is None and r.tuning_probes == vector_index.PROBES_TEXT for r in after)
    # an index whose model cannot be loaded (random vectors, no model): probes from the vectors, and a warning saying why
    write_index(tmp_path / "nomodel", n_docs=100)
    with caplog.at_level("WARNING", logger="indexer.search"):
        convert(tmp_path / "nomodel", IndexSpec(type="hnsw", m=4, ef_construction=8))
    assert {r.tuning_probes for r in read_manifest(tmp_path / "nomodel").representations.values()} == {vector_index.PROBES_VECTORS}
    assert "tuning on probes made from the vectors" in caplog.text and "/nowhere" in caplog.text


def test_search_threads_run_faiss_on_one_openmp_thread_each():
    from indexer.search import search_threads

    before = faiss.omp_get_max_threads()
    with search_threads(2) as pool:
        assert {pool.submit(faiss.omp_get_max_threads).result() for _ in range(4)} == {1}
    assert faiss.omp_get_max_threads() == before
