"""Document rankings from chunk hits, end-to-end search on a tiny model, manifest mismatches refused."""

import logging
from dataclasses import replace

import numpy as np
import pytest

from conftest import build_random, edited_copy, forward_pre_hook, relu_one_layer, swap_bees_and_honey
from indexer.compat import compatibility_problems
from indexer.config import parse_representation, parse_representations, poolings_of
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.search import IndexMismatchError, Searcher, encoder_for, rank_documents
from indexer.store import IndexReader, read_manifest


def test_document_scores_are_their_best_chunk():
    chunk_doc = {0: "a", 1: "b", 2: "a", 3: "c"}
    ranked = rank_documents([0.9, 0.8, 0.7, 0.1], [2, 1, 0, 3], chunk_doc, k=10)
    assert ranked == [("a", 2, 0.9), ("b", 1, 0.8), ("c", 3, 0.1)]


def test_ties_break_by_descending_document_id_and_faiss_padding_is_ignored():
    chunk_doc = {5: "z", 3: "y", 1: "x", 0: "z"}
    ranked = rank_documents([0.5, 0.5, 0.5, 0.5, -3.4e38], [1, 3, 5, 0, -1], chunk_doc, k=2)
    assert ranked == [("z", 0, 0.5), ("y", 3, 0.5)]  # trec_eval's order (ranking.trec_order); of z's equal chunks, the first


@pytest.fixture
def tiny_index(tmp_path, tiny_bert, small_jsonl):
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls"), max_tokens=12)
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=2, progress=False)
    return tmp_path / "ix", encoder


def brute_force_documents(reader, encoder, representation, query, k):
    """Independent ranking: score every chunk with numpy, keep each document's best."""
    q = encoder.encode_texts([query])[representation][0]
    ids = np.arange(reader.n_chunks)
    vectors = reader.indexes[representation].index.reconstruct_n(0, reader.n_chunks)
    docs = reader.chunk_docs(ids)
    best = {}
    for cid, score in zip(ids, vectors @ q):
        if docs[int(cid)] not in best or score > best[docs[int(cid)]]:
            best[docs[int(cid)]] = score
    return sorted(best, key=lambda d: -best[d])[:k], best


def test_search_matches_brute_force_in_every_representation(tiny_index):
    directory, encoder = tiny_index
    searcher = Searcher(directory, encoder)
    assert searcher.index.n_chunks > searcher.index.n_documents  # long documents made several chunks
    result = searcher.search("bees and honey in the hive", k=5)
    assert set(result.results) == {"pooled", "mean", "cls"}
    for r, hits in result.results.items():
        expected, best = brute_force_documents(searcher.index, encoder, r, "bees and honey in the hive", 5)
        # a random model makes near-ties, so compare scores (with float tolerance), not only ids
        np.testing.assert_allclose([h.score for h in hits], [best[d] for d in expected], atol=1e-5)
        for h in hits:
            assert h.score == pytest.approx(float(best[h.doc_id]), abs=1e-5)
        assert len({h.doc_id for h in hits}) == 5
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_k_is_filled_with_distinct_documents_even_when_chunks_repeat(tiny_index):
    directory, encoder = tiny_index
    hits = Searcher(directory, encoder).search("rain and snow fill the river", k=8).results["mean"]
    assert len(hits) == 8 and len({h.doc_id for h in hits}) == 8


def test_hit_carries_title_and_best_chunk_text(tiny_index):
    directory, encoder = tiny_index
    reader = IndexReader(directory)
    hit = Searcher(directory, encoder).search("bake bread", k=1).results["pooled"][0]
    row = reader.chunks([hit.chunk_id])[hit.chunk_id]
    assert (hit.doc_id, hit.text, hit.title) == (row.doc_id, row.text, row.title)


def test_empty_query_and_bad_k_are_refused(tiny_index):
    searcher = Searcher(*tiny_index)
    with pytest.raises(ValueError, match="empty"):
        searcher.search("   ")
    with pytest.raises(ValueError, match="k must be"):
        searcher.search("bees", k=0)


def test_searcher_loads_the_indexs_own_model_by_default(tiny_index):
    directory, encoder = tiny_index
    searcher = Searcher(directory)
    assert searcher.encoder.info.weights_sha256 == encoder.info.weights_sha256
    assert searcher.encoder.max_tokens == 12


def test_another_model_is_refused_with_what_differs_and_how_to_rebuild(tiny_index, tiny_bert_other):
    directory, _ = tiny_index
    other = Encoder.load(str(tiny_bert_other), representations=("pooled", "mean", "cls"), max_tokens=12)
    with pytest.raises(IndexMismatchError, match=r"built with model .* but the searcher uses .*python -m indexer build"):
        Searcher(directory, other)


def test_another_max_length_is_refused(tiny_index, tiny_bert):
    directory, _ = tiny_index
    longer = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls"), max_tokens=20)
    with pytest.raises(IndexMismatchError, match="max length of 12 tokens, the searcher's is 20"):
        Searcher(directory, longer)


def test_missing_representation_is_refused(tmp_path, tiny_bert, small_jsonl):
    encoder = Encoder.load(str(tiny_bert), representations=("mean",))
    build_index(small_jsonl, tmp_path / "mean-only", encoder, overlap=4, progress=False)
    with pytest.raises(IndexMismatchError, match="no `pooled` representation"):
        Searcher(tmp_path / "mean-only", encoder, representations=("pooled", "mean"))
    assert set(Searcher(tmp_path / "mean-only", encoder).search("bees").results) == {"mean"}


def test_one_searcher_serves_many_threads_at_once(tiny_index):
    """The app shares one Searcher between browser sessions: concurrent queries must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    searcher = Searcher(*tiny_index)
    queries = ["bees and honey", "bake bread", "rain and snow", "repair the bike", "a comet in the sky"] * 8
    expected = {q: searcher.search(q, k=5).to_dict() for q in set(queries)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: searcher.search(q, k=5).to_dict(), queries))
    for query, result in zip(queries, results):
        for r, hits in result["results"].items():
            want = expected[query]["results"][r]
            assert [h["doc_id"] for h in hits] == [h["doc_id"] for h in want]
            np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in want], atol=1e-5)


@pytest.mark.parametrize("name, edit", [("config.json", relu_one_layer), ("tokenizer.json", swap_bees_and_honey)])
def test_same_weights_with_another_config_or_tokenizer_is_refused_naming_the_file(tiny_index, tiny_bert, tmp_path, name, edit):
    directory, _ = tiny_index
    copy = edited_copy(tiny_bert, tmp_path / "edited", name, edit)
    other = Encoder.load(str(copy), representations=("pooled", "mean", "cls"), max_tokens=12)
    with pytest.raises(IndexMismatchError, match=rf"built with model .* but the searcher uses .*: they differ in {name}\b.*Rebuild"):
        Searcher(directory, other)
    manifest = read_manifest(directory)
    for purpose in ("reuse", "add"):  # the same rule keeps it from reusing or adding to the index
        assert [p for p in compatibility_problems(manifest, other, purpose) if f"differ in {name}" in p]


class Computing:
    """An encoder as compatibility_problems sees it: the index's model, computing `representations`."""

    def __init__(self, manifest, representations):
        self.info, self.max_tokens, self.precision = manifest.model, manifest.chunking.max_tokens, manifest.encoded_precision
        self.representations = parse_representations(representations)
        self.poolings = poolings_of(self.representations)


HELD = {"pooled": 16, "mean": 16, "mean+whiten": 8}  # stored poolings: pooled and mean


@pytest.mark.parametrize("purpose, computed, wanted, problems", [
    # search: the representations searched (default all the index holds); a transform is the index's own
    ("search", "pooled,mean", None, []),
    ("search", "mean", None, ["the encoder does not compute `pooled`"]),
    ("search", "mean", "mean,mean+whiten", []),
    ("search", "pooled,mean,cls", "cls", ["the index has no `cls` representation"]),
    # reuse: those wanted (default the encoder's); the index may hold more
    ("reuse", "mean", None, []),
    ("reuse", "mean,mean+whiten", None, []),
    ("reuse", "mean,cls", None, ["the index has no `cls` representation"]),
    # add: every representation the index holds, whatever is asked; computing more is fine
    ("add", "pooled,mean,cls", None, []),
    ("add", "mean,mean+whiten", None,
     ["the encoder does not compute `pooled`: a new document needs a vector in every representation of the index"]),
    ("add", "mean", "mean", ["the encoder does not compute `pooled`: a new document needs a vector in every representation of the index"]),
    # fit: the same model and vector space only
    ("fit", "cls", None, []),
])
def test_one_rule_for_representations_by_purpose(purpose, computed, wanted, problems):
    """Needed representations must be held by the index and their poolings computed by the encoder; only which are
    needed depends on the purpose."""
    from indexer.store import RepresentationRecord
    from test_store import described

    manifest = replace(described(), poolings={"pooled": 16, "mean": 16}, representations={
        r: RepresentationRecord(d, f"{r}.faiss", parse_representation(r).pooling) for r, d in HELD.items()})
    wanted = wanted and parse_representations(wanted)
    assert compatibility_problems(manifest, Computing(manifest, computed), purpose, wanted) == problems
    with pytest.raises(ValueError, match="unknown purpose 'serve'; valid: search, reuse, add, fit"):
        compatibility_problems(manifest, Computing(manifest, computed), "serve")


def test_adding_with_an_encoder_that_computes_more_stores_only_the_indexs_poolings(tiny_index, tmp_path):
    import sqlite3

    from indexer.integrity import verify
    from indexer.pipeline import add_documents

    _, encoder = tiny_index  # computes pooled, mean and cls
    two = Encoder(encoder.model, encoder.tokenizer, encoder.info, representations=("mean", "mean+whiten4"), max_tokens=12)
    directory = tmp_path / "two"
    build_random(directory, two, 12)
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "fresh", "text": "bees and honey"}\n', encoding="utf-8")
    add_documents(directory, more, encoder, progress=False)  # computes pooled, mean and cls
    manifest = read_manifest(directory)
    db = sqlite3.connect(directory / manifest.generation / "metadata.sqlite")
    assert {r for (r,) in db.execute("SELECT DISTINCT representation FROM vectors")} == {"mean"} == set(manifest.poolings)
    db.close()
    assert verify(directory)[0] == [] and "fresh" in IndexReader(directory).doc_ids()


def test_an_index_from_before_fingerprints_is_searched_with_a_warning_but_not_reused_or_added_to(tiny_index, tiny_bert_other, caplog):
    directory, encoder = tiny_index
    manifest = read_manifest(directory)
    legacy = replace(manifest, model=replace(manifest.model, fingerprint=None, files=None))
    with caplog.at_level(logging.WARNING, logger="indexer.compat"):
        assert compatibility_problems(legacy, encoder, "search") == []
    assert "predates model fingerprints" in caplog.text and "rebuild" in caplog.text
    for purpose in ("reuse", "add"):
        assert [p for p in compatibility_problems(legacy, encoder, purpose) if "predates model fingerprints" in p]
    other = Encoder.load(str(tiny_bert_other), representations=("pooled", "mean", "cls"), max_tokens=12)
    assert ["weights sha256" in p for p in compatibility_problems(legacy, other, "search")] == [True]


def test_the_indexs_own_model_is_taken_at_the_indexs_max_length(tiny_index, tiny_bert):
    directory, built_with = tiny_index  # built with max_tokens=12; the model's own limit is 64
    encoder = encoder_for(read_manifest(directory), str(tiny_bert))
    assert encoder.max_tokens == 12 and encoder.info.max_tokens == 64
    got = Searcher(directory, encoder).search("bees and honey", k=3).to_dict()
    assert got == Searcher(directory, built_with).search("bees and honey", k=3).to_dict()


def test_one_query_is_encoded_on_one_thread_and_the_count_comes_back(tiny_index):
    """A single query runs torch on QUERY_THREADS (a short forward pass split across threads stalls on shared
    cores); a batch of queries (evaluation, a build) runs on the process's threads; the count is restored."""
    import torch

    from indexer.encoder import DEFAULT_THREADS, QUERY_THREADS

    directory, encoder = tiny_index
    searcher = Searcher(directory, encoder)
    seen = []
    with forward_pre_hook(encoder, lambda *_: seen.append(torch.get_num_threads())):
        searcher.search("bees and honey", k=3)
        assert seen == [QUERY_THREADS] and torch.get_num_threads() == DEFAULT_THREADS
        seen.clear()
        searcher.rank_many(["bees and honey", "bread"], 3)
        assert seen == [DEFAULT_THREADS]


def test_a_batch_started_while_another_session_searches_keeps_the_process_threads(tiny_encoder, tmp_path):
    """A thread's OpenMP count is fixed at its first torch call: a thread that starts while a query holds the count
    at one (another Streamlit session's build or evaluation) must still encode its batches on every thread."""
    import threading

    import torch

    from conftest import build_random
    from indexer.encoder import DEFAULT_THREADS

    searcher = Searcher(build_random(tmp_path / "ix", tiny_encoder, 6), tiny_encoder)
    in_search, batch_started = threading.Event(), threading.Event()
    seen = {}

    def hook(*_):
        name = threading.current_thread().name
        if name == "search":  # hold the search inside its one-thread block until the batch has begun
            in_search.set()
            batch_started.wait(10)
        else:
            seen.setdefault(name, torch.get_num_threads())

    with forward_pre_hook(tiny_encoder, hook):
        def batch():
            in_search.wait(10)
            torch.ones(4, 4).sum()  # the thread's first torch call, while the query's block is open
            batch_started.set()
            tiny_encoder.encode_texts(["bees and honey"] * 8)

        threads = [threading.Thread(target=searcher.search, args=("bees",), name="search"),
                   threading.Thread(target=batch, name="batch")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        later = threading.Thread(target=lambda: tiny_encoder.encode_texts(["bees"] * 8), name="later")
        later.start()
        later.join(30)
    assert seen == {"batch": DEFAULT_THREADS, "later": DEFAULT_THREADS}
