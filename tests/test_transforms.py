"""Post-processing transforms: BERT-whitening and all-but-the-top, fitted, saved, kept by `add`, refitted.

Checked against the properties the papers state (identity covariance; removed directions orthogonal to the
result), against numpy computations done here, and through a real index: documents and queries get the
same map, `add` keeps it fixed, `refit` fits it again, a damaged transform file is caught.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import build_random, random_corpus
from indexer.config import parse_representations
from indexer.encoder import Encoder
from indexer.integrity import refit, repair, verify
from indexer.pipeline import add_documents, build_index
from indexer.search import Searcher
from indexer.store import CURRENT, IndexReader, StoreError, read_manifest, transform_file
from indexer.transforms import Transform, TransformError, fit, represent


def anisotropic(n: int = 600, d: int = 12, seed: int = 0) -> np.ndarray:
    """Unit vectors crowded around a common direction, with unequal variances: what raw BERT vectors look like."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d) + 4.0 * np.eye(d)[0] + 1.5 * np.eye(d)[1]
    x = x @ np.linalg.qr(rng.normal(size=(d, d)))[0]  # a random rotation, so the axes are not the coordinates
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_whitening_gives_identity_covariance_and_zero_mean():
    x = anisotropic()
    t = fit("mean+whiten", x)
    y = t.project(x).astype(np.float64)
    assert t.dim == x.shape[1] and t.fitted_on == len(x)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(x.shape[1]), atol=2e-3)


def test_whiten_k_keeps_the_k_directions_of_largest_variance():
    x = anisotropic()
    t = fit("pooled+whiten4", x)
    y = t.project(x).astype(np.float64)
    assert y.shape == (len(x), 4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(4), atol=2e-3)
    # independently: the top 4 eigenvectors of numpy's covariance span the same subspace as the kept columns
    eigval, eigvec = np.linalg.eigh(np.cov(x.T.astype(np.float64)))
    top = eigvec[:, np.argsort(eigval)[::-1][:4]]
    basis = np.linalg.qr(t.matrix.astype(np.float64))[0]
    np.testing.assert_allclose(np.abs(np.linalg.svd(top.T @ basis, compute_uv=False)), 1.0, atol=1e-4)


def test_all_but_the_top_removes_exactly_the_top_directions():
    x = anisotropic()
    t = fit("cls+abtt2", x)
    y = t.project(x).astype(np.float64)
    eigval, eigvec = np.linalg.eigh(np.cov(x.T.astype(np.float64)))
    top = eigvec[:, np.argsort(eigval)[::-1][:2]]
    np.testing.assert_allclose(y @ top, 0.0, atol=1e-4)  # orthogonal to the removed directions
    rest = eigvec[:, np.argsort(eigval)[::-1][2:]]
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(y @ rest, centred @ rest, atol=1e-4)  # everything else kept as it was
    assert t.dim == x.shape[1]


def test_apply_is_project_then_unit_length():
    x = anisotropic()
    t = fit("mean+whiten", x)
    y = t.project(x[:5])
    np.testing.assert_allclose(t.apply(x[:5]), y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-6)
    assert t.apply(x[:5]).dtype == np.float32


def test_rank_deficient_collection_keeps_only_directions_with_variance(caplog):
    x = anisotropic(n=6, d=12)  # 6 vectors span at most 5 directions once centred
    with caplog.at_level(logging.WARNING, logger="indexer.transforms"):
        t = fit("mean+whiten", x)
    assert t.dim == 5 and "span only 5 dimensions" in caplog.text
    assert np.all(np.isfinite(t.apply(x)))
    np.testing.assert_allclose(np.cov(t.project(x).T.astype(np.float64)), np.eye(5), atol=1e-3)


@pytest.mark.parametrize("name, vectors, message", [
    ("mean+whiten", anisotropic(n=1), "needs at least 2"),
    ("mean+whiten64", anisotropic(), "keeps 64 dimensions, but `mean` has only 12"),
    ("mean+abtt12", anisotropic(), "removes 12 directions"),
    ("mean+whiten", np.tile(anisotropic(n=1), (5, 1)), "identical"),
])
def test_transforms_that_cannot_be_fitted_say_why(name, vectors, message):
    with pytest.raises(TransformError, match=message):
        fit(name, vectors)


def test_saved_transform_round_trips_and_garbage_is_refused():
    t = fit("mean+whiten3", anisotropic())
    back = Transform.from_bytes(t.to_bytes(), "whiten", 3)
    np.testing.assert_array_equal(back.matrix, t.matrix)
    np.testing.assert_array_equal(back.mean, t.mean)
    with pytest.raises(ValueError, match="safetensors"):
        Transform.from_bytes(b"\x00" * 40, "whiten", 3)
    data = t.to_bytes()  # safetensors: an 8-byte header length, then a JSON header naming the tensors (no pickle)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert set(header) == {"center", "matrix"} and header["matrix"]["shape"] == [12, 3]


def test_represent_maps_each_name_from_its_pooling():
    x = anisotropic()
    t = fit("mean+whiten", x)
    out = represent({"mean": x[:3]}, ["mean", "mean+whiten"], {"mean+whiten": t})
    np.testing.assert_array_equal(out["mean"], x[:3])
    np.testing.assert_allclose(out["mean+whiten"], t.apply(x[:3]))
    with pytest.raises(KeyError):
        represent({"mean": x[:3]}, ["mean+abtt1"], {})


# ---- through an index --------------------------------------------------------------------------------

REPS = ("pooled", "mean", "max", "first_last", "mean+whiten", "pooled+abtt2")


corpus = random_corpus


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=REPS, max_tokens=16, batch_size=16)


@pytest.fixture
def built(tmp_path, encoder):
    return build_random(tmp_path / "ix", encoder, 90)


def stored(reader: IndexReader, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    rows = reader.db.execute("SELECT chunk_id, vector FROM vectors WHERE representation = ? ORDER BY chunk_id", (pooling,)).fetchall()
    return np.array([r[0] for r in rows]), np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])


def test_five_poolings_and_transforms_from_one_forward_pass_per_batch(tmp_path, tiny_bert):
    encoder = Encoder.load(str(tiny_bert), representations=REPS, max_tokens=16, batch_size=16)
    calls = []
    hook = encoder.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        summary = build_index(corpus(tmp_path / "docs.jsonl", 90, 0), tmp_path / "ix", encoder, overlap=2, progress=False)
    finally:
        hook.remove()
    assert len(calls) == -(-summary.chunks // 16)  # one forward pass per batch of 16 chunks, whatever the representations
    reader = IndexReader(tmp_path / "ix")
    assert reader.representations == parse_representations(REPS)
    assert set(reader.manifest.poolings) == {"pooled", "mean", "max", "first_last"}


def test_index_vectors_are_the_transform_of_the_stored_pooling_and_queries_get_the_same_map(built, encoder):
    reader = IndexReader(built)
    for name in ("mean+whiten", "pooled+abtt2"):
        pooling = name.split("+")[0]
        ids, vectors = stored(reader, pooling)
        t = reader.transforms[name]
        assert t.fitted_on == len(ids) == reader.n_chunks
        # refit independently on the stored vectors: the saved transform is that fit
        np.testing.assert_allclose(t.apply(vectors), fit(name, vectors).apply(vectors), atol=1e-5)
        np.testing.assert_allclose(reader.vectors(name, ids), t.apply(vectors), atol=1e-6)
    searcher = Searcher(built, encoder, representations=["mean+whiten"])
    query = "the bees make honey"
    q = t_query = reader.transforms["mean+whiten"].apply(encoder.encode_texts([query])["mean"])
    ids, vectors = stored(reader, "mean")
    scores = reader.transforms["mean+whiten"].apply(vectors) @ t_query[0]
    chunk_doc = reader.chunk_docs(ids)
    best: dict[str, float] = {}
    for cid, s in zip(ids, scores):
        best[chunk_doc[int(cid)]] = max(best.get(chunk_doc[int(cid)], -9.0), float(s))
    expected = sorted(best, key=lambda d: -best[d])[:5]
    hits = searcher.search(query, k=5).results["mean+whiten"]
    assert [h.doc_id for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], [best[d] for d in expected], atol=1e-5)
    assert q.shape == (1, reader.manifest.representations["mean+whiten"].dim)


def test_add_keeps_transforms_fixed_and_refit_fits_them_again(built, encoder, tmp_path):
    before = read_manifest(built)
    old = IndexReader(built).transforms
    add_documents(built, corpus(tmp_path / "more.jsonl", 40, 1, prefix="n"), encoder, progress=False)
    after = read_manifest(built)
    reader = IndexReader(built)
    assert reader.n_documents == 130
    for name, t in reader.transforms.items():
        np.testing.assert_array_equal(t.matrix, old[name].matrix)  # the same map for old and new documents
        record = after.representations[name].transform
        assert record.fitted_in == before.generation and record.refitted is False
        assert record.fitted_on_chunks == before.counts.chunks
        ids, vectors = stored(reader, name.split("+")[0])
        np.testing.assert_allclose(reader.vectors(name, ids), old[name].apply(vectors), atol=1e-6)
    assert verify(built)[0] == []

    result = refit(built)
    refitted = read_manifest(built)
    reader = IndexReader(built)
    assert result.generation == refitted.generation
    for name, t in reader.transforms.items():
        assert refitted.representations[name].transform.fitted_on_chunks == reader.n_chunks
        assert refitted.representations[name].transform.fitted_in == refitted.generation
        ids, vectors = stored(reader, name.split("+")[0])
        np.testing.assert_allclose(t.matrix, fit(name, vectors).matrix, atol=1e-5)
    assert refitted.updates[-1]["op"] == "refit"


def test_refit_can_add_a_representation_of_a_stored_pooling_but_not_of_another(built, caplog):
    with caplog.at_level(logging.WARNING, logger="indexer.integrity"):
        refit(built, ["mean", "max+whiten8"])
    assert "no representation uses `pooled`, `first_last` any more: it is dropped" in caplog.text
    reader = IndexReader(built)
    assert reader.representations == ("mean", "max+whiten8")
    assert reader.manifest.representations["max+whiten8"].dim == 8
    assert verify(built)[0] == []
    with pytest.raises(StoreError, match="stores no `cls` vectors"):
        refit(built, ["cls+whiten"])
    with pytest.raises(ValueError, match="unknown representation"):
        refit(built, ["mean+whiten0"])


def test_a_damaged_transform_file_is_refused_by_readers_found_by_verify_and_refitted_by_repair(built):
    gen = json.loads((built / CURRENT).read_text())["generation"]
    path = built / gen / transform_file("mean+whiten")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupted"):
        IndexReader(built)
    problems, _ = verify(built)
    assert any(transform_file("mean+whiten") in p for p in problems)
    result = repair(built)
    assert "transforms fitted again" in result.note
    assert verify(built)[0] == []
    IndexReader(built)


def test_manifest_whose_transform_record_disagrees_with_the_name_is_refused(built):
    from indexer.store import load_manifest

    gen_dir = built / json.loads((built / CURRENT).read_text())["generation"]
    manifest = json.loads((gen_dir / "manifest.json").read_text())
    manifest["representations"]["mean+whiten"]["transform"]["file"] = "../../evil.safetensors"
    (gen_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="expected kind 'whiten'"):
        load_manifest(gen_dir, None)
