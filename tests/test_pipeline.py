"""Building: huge documents are chunked completely, a failed build loses nothing already indexed."""

import json

import pytest

from indexer.encoder import Encoder
from indexer.pipeline import DOCS_PER_BATCH, build_index
from indexer.staging import LOCK, STAGING
from indexer.store import CURRENT, IndexReader, read_manifest


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), max_tokens=32, batch_size=16)


def test_huge_document_is_chunked_without_truncation(tmp_path, encoder):
    words = ("the bees make honey from nectar and pollen in the hive " * 2000).split()
    content = " ".join(f"{w}" for w in words)
    src = tmp_path / "big.jsonl"
    src.write_text(json.dumps({"_id": "big", "text": content}) + "\n", encoding="utf-8")
    summary = build_index(src, tmp_path / "ix", encoder, overlap=4, progress=False)
    reader = IndexReader(tmp_path / "ix")
    spans = reader.db.execute("SELECT char_start, char_end, n_tokens FROM chunks ORDER BY position").fetchall()
    assert summary.documents == 1 and summary.chunks == len(spans) > 700
    covered = bytearray(len(content))
    for start, end, n_tokens in spans:
        assert n_tokens <= encoder.window
        covered[start:end] = b"\x01" * (end - start)
    assert all(covered[i] or content[i] == " " for i in range(len(content)))  # every word is in a chunk


def test_batches_end_at_a_document_count_or_a_character_budget():
    from indexer.loaders import Document
    from indexer.pipeline import _batched

    docs = [Document(str(i), "x" * size) for i, size in enumerate([5, 5, 5, 20, 1, 1, 1, 1, 1])]
    sizes = [[len(d.text) for d in b] for b in _batched(iter(docs), 4, 12)]
    assert sizes == [[5, 5, 5], [20], [1, 1, 1, 1], [1]]
    assert sum(len(b) for b in _batched(iter(docs), 4, 12)) == len(docs)


@pytest.mark.parametrize("where", ["encoding", "publishing"])
def test_interrupted_rebuild_keeps_the_existing_index(tmp_path, encoder, small_jsonl, monkeypatch, where):
    import indexer.staging

    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    before = read_manifest(tmp_path / "ix")
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({"_id": str(i), "text": "the sky"}) + "\n" for i in range(3 * DOCS_PER_BATCH)), encoding="utf-8")
    calls = []

    def interrupted(sequences, _real=encoder.encode_ids, **options):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _real(sequences, **options)

    def interrupted_export(self, path, _real=indexer.staging.Staging.export):
        _real(self, path)  # the new generation's metadata is written, then Ctrl-C
        raise KeyboardInterrupt

    if where == "encoding":
        monkeypatch.setattr(encoder, "encode_ids", interrupted)
    else:
        monkeypatch.setattr(indexer.staging.Staging, "export", interrupted_export)
    with pytest.raises(KeyboardInterrupt):
        build_index(many, tmp_path / "ix", encoder, overlap=4, overwrite=True, progress=False)
    assert read_manifest(tmp_path / "ix") == before
    assert IndexReader(tmp_path / "ix").n_documents == 8
    # no temporary generation is left in the index directory; the staging area stays, so the same command resumes
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [CURRENT, before.generation, STAGING, LOCK]


def test_overlap_larger_than_half_a_chunk_is_refused(tmp_path, encoder, small_jsonl):
    with pytest.raises(ValueError, match="overlap must be between 0 and"):
        build_index(small_jsonl, tmp_path / "ix", encoder, overlap=20, progress=False)
    assert not (tmp_path / "ix").exists()


def test_overwrite_replaces_an_index_whose_current_is_damaged(tmp_path, encoder, small_jsonl):
    from indexer.integrity import verify
    from indexer.store import StoreError

    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    (tmp_path / "ix" / CURRENT).write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match="CURRENT is corrupted.*indexer repair"):
        build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    summary = build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, overwrite=True, progress=False)
    assert summary.generation == "gen-000002" and summary.documents == 8
    assert verify(tmp_path / "ix")[0] == []


def _read_ahead_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "indexer-read-ahead"]


def test_overlapped_build_embeds_what_a_sequential_build_does(tmp_path, encoder, monkeypatch):
    """The reading thread changes nothing: same chunks, ids and vectors, from the same encoder calls, as chunking
    each batch here and calling the encoder on it, CHUNKS_PER_ENCODE chunks at a time."""
    import numpy as np

    import indexer.pipeline as pipeline
    from indexer.chunking import chunk_document, first_slice
    from indexer.loaders import Document

    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 3)
    monkeypatch.setattr(pipeline, "CHUNKS_PER_ENCODE", 5)
    texts = [f"document {i} about bees and honey " * (1 + i % 4) for i in range(10)]
    texts[4] = "the hive " * 200  # a long document: embedded 5 chunks at a time while it is cut
    texts[7] = "\x01\x7f"  # control characters only: no tokens, reported and skipped
    records = [{"_id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    calls = []

    def recorded(sequences, _real=encoder.encode_ids, **options):
        calls.append([list(s) for s in sequences])
        return _real(sequences, **options)

    monkeypatch.setattr(encoder, "encode_ids", recorded)
    summary = build_index(records, tmp_path / "ix", encoder, overlap=4, progress=False)
    monkeypatch.undo()

    expected_calls, expected_chunks = [], []
    for batch in pipeline._batched((Document(f"d{i}", t) for i, t in enumerate(texts)), 3, pipeline.CHARS_PER_BATCH):
        cut = [c for d, first in zip(batch, encoder.tokenize([first_slice(d.content) for d in batch]))
               for c in chunk_document(d.doc_id, d.content, encoder.tokenize, window=encoder.window, overlap=4, first=first,
                                       exact_at_word_boundaries=encoder.exact_at_word_boundaries)]
        expected_chunks += cut
        expected_calls += [[list(c.token_ids) for c in cut[i : i + 5]] for i in range(0, len(cut), 5)]
    assert calls == expected_calls and any(len(c) == 5 for c in calls)
    assert [i.reason for i in summary.issues] == ["document 'd7' has no tokens"]

    reader = IndexReader(tmp_path / "ix")
    rows = reader.db.execute("SELECT chunk_id, doc_id, position, char_start, char_end, text FROM chunks ORDER BY chunk_id").fetchall()
    assert rows == [(i, c.doc_id, c.position, c.char_start, c.char_end, c.text) for i, c in enumerate(expected_chunks)]
    for pooling in encoder.poolings:
        want = np.concatenate([encoder.encode_ids(ids)[pooling] for ids in expected_calls])
        stored = reader.db.execute("SELECT vector FROM vectors WHERE representation = ? ORDER BY chunk_id", (pooling,)).fetchall()
        assert np.array_equal(np.stack([np.frombuffer(v, dtype=np.float32) for (v,) in stored]), want)


@pytest.mark.parametrize("where", ["reading", "on_stage", "encoding"])
def test_a_failure_in_any_stage_stops_the_build_and_its_thread(tmp_path, encoder, small_jsonl, monkeypatch, where):
    """A loader's unexpected error (in the reading thread), a callback's exception or Ctrl-C while encoding stop the
    build with that error; no thread is left running and nothing is published over the existing index."""
    import indexer.pipeline as pipeline

    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    before = read_manifest(tmp_path / "ix")
    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 2)
    error = {"reading": OSError("the disk went away"), "on_stage": ValueError("the app's bar broke"),
             "encoding": KeyboardInterrupt()}[where]

    def records():
        for i in range(20):
            if where == "reading" and i == 5:
                raise error
            yield {"_id": str(i), "text": f"bees and honey number {i}"}

    embedding = []

    def on_stage(stage, done, total):
        embedding.append(stage)
        if where == "on_stage" and len(embedding) == 4:
            raise error

    if where == "encoding":
        calls = []

        def interrupted(sequences, _real=encoder.encode_ids, **options):
            calls.append(1)
            if len(calls) == 3:
                raise error
            return _real(sequences, **options)

        monkeypatch.setattr(encoder, "encode_ids", interrupted)
    with pytest.raises(type(error)) as raised:
        build_index(records(), tmp_path / "ix", encoder, overlap=4, overwrite=True, progress=False, on_stage=on_stage)
    assert raised.value is error
    assert _read_ahead_threads() == []
    assert read_manifest(tmp_path / "ix") == before and IndexReader(tmp_path / "ix").n_documents == 8
