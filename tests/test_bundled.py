"""Integration with the embedded all-MiniLM-L6-v2: checksum, and vectors against independent computations."""

import shutil

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from indexer.encoder import BUNDLED_SHA256, ModelError, bundled_model_dir, verify_bundled
from indexer.search import Searcher

TEXTS = [
    "How do honey bees keep their hive warm in winter?",
    "Sourdough needs a lively starter; feed it flour and water the day before baking. " * 4,
    "capital of australia",
]


@pytest.fixture(scope="session")
def reference_models():
    """Loaded directly with transformers and sentence-transformers, not through our code."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel, BertTokenizerFast

    path = bundled_model_dir()
    return BertModel.from_pretrained(path).eval(), BertTokenizerFast.from_pretrained(path), SentenceTransformer(str(path), device="cpu")


def test_bundled_weights_checksum_is_verified(bundled_encoder):
    assert bundled_encoder.info.weights_sha256 == BUNDLED_SHA256
    assert bundled_encoder.info.source == "bundled" and bundled_encoder.info.max_tokens == 256
    assert bundled_encoder.info.pooler == "loaded"


def test_tampered_weights_are_refused(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), copy)
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelError, match=f"refusing the embedded model.*{BUNDLED_SHA256}"):
        verify_bundled(copy)


def test_pooled_equals_bert_pooler_output(bundled_encoder, reference_models):
    bert, tokenizer, _ = reference_models
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(bert(**batch).pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(bundled_encoder.encode_texts(TEXTS)["pooled"], expected, atol=1e-4)


def test_mean_equals_sentence_transformers_encode(bundled_encoder, reference_models):
    *_, st = reference_models
    expected = st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(bundled_encoder.encode_texts(TEXTS)["mean"], expected, atol=1e-4)


def test_sample_collection_builds_completely(sample_index):
    _, summary = sample_index
    assert summary.skipped == 0
    assert summary.documents >= 200 and summary.chunks > summary.documents  # long documents span chunks


def test_search_scores_equal_independent_cosines(sample_index, bundled_encoder, reference_models):
    """A hit's score is the cosine between independent encodings of the query and of the hit's chunk text."""
    bert, tokenizer, st = reference_models
    query = "why does my bread come out flat and dense"
    result = Searcher(sample_index[0], bundled_encoder).search(query, k=5)
    mean_hits, pooled_hits = result.results["mean"], result.results["pooled"]
    q, chunks = st.encode([query], normalize_embeddings=True)[0], st.encode([h.text for h in mean_hits], normalize_embeddings=True)
    np.testing.assert_allclose([h.score for h in mean_hits], chunks @ q, atol=1e-4)

    batch = tokenizer([query] + [h.text for h in pooled_hits], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        v = torch.nn.functional.normalize(bert(**batch).pooler_output, dim=-1).numpy()
    np.testing.assert_allclose([h.score for h in pooled_hits], v[1:] @ v[0], atol=1e-4)


def test_long_document_chunks_reencode_to_their_stored_tokens(sample_index, bundled_encoder):
    """Cuts at word boundaries: each stored chunk text tokenises back to the tokens that were embedded."""
    from indexer.store import IndexReader

    reader = IndexReader(sample_index[0])
    rows = reader.db.execute("SELECT chunk_id, doc_id, position, text, n_tokens FROM chunks WHERE doc_id IN "
                             "(SELECT doc_id FROM documents WHERE n_chunks > 1)").fetchall()
    assert len(rows) >= 6
    for _, _, _, text, n_tokens in rows:
        assert len(bundled_encoder.tokenize([text])[0].ids) == n_tokens <= bundled_encoder.window


def test_demo_builds_the_sample_index_and_shows_both_rankings(tmp_path, capsys):
    """What `make run` starts: with no terminal attached it shows sample queries and exits."""
    from indexer.cli import main

    assert main(["demo", "--index", str(tmp_path / "demo"), "--source", str(SAMPLE), "-n", "2", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("in both top-3 (pooled, mean)") == 2
    assert "pooler:         loaded" in out and (tmp_path / "demo" / "CURRENT").is_file()
