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
