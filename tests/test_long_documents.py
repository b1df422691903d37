"""Long and unusual documents: windows and re-tokenisation with the bundled tokenizer, slicing, and a
huge document embedded as it is cut, with visible progress, and committed whole."""

import base64
import json
import math
import random
import sqlite3

import pytest

from conftest import SAMPLE
from indexer import chunking, pipeline
from indexer.chunking import chunk_document, plan_windows
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.store import IndexReader
from test_chunking import check_chunks


def unusual_texts() -> dict[str, str]:
    rng = random.Random(0)
    alnum = "qwertyuiopasdfghjklzxcvbnm0123456789"
    return {
        # sha384-long hex digests: about 68 tokens each, more than a 64-token window less its overlap
        "hex hashes": " ".join("".join(rng.choice("0123456789abcdef") for _ in range(96)) for _ in range(12)),
        "urls": " ".join(f"https://example.com/{''.join(rng.choice(alnum) for _ in range(60))}?id={rng.randrange(10**9)}"
                         for _ in range(40)),
        "base64": "\n".join(base64.b64encode(bytes(rng.randrange(256) for _ in range(57))).decode() for _ in range(40)),
        # no space at all; runs of 99 characters (the tokenizer's longest word) of about 70 tokens each
        "space-free 5000 tokens": ".".join("".join(rng.choice(alnum) for _ in range(99)) for _ in range(72)),
        "cjk": "蜜蜂在春天采集花粉和花蜜，然后在蜂巢里酿造蜂蜜。" * 60,
        "prose": " ".join(json.loads(line)["text"] for line in (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:20]),
    }


TEXTS = unusual_texts()


@pytest.mark.parametrize("exact", [False, True], ids=["retokenise-all", "wordpiece-reuse"])
@pytest.mark.parametrize("max_tokens", [64, 256])
@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_real_tokenizer_chunks_retokenise_exactly_and_respect_the_window_bound(bundled_encoder, kind, max_tokens, exact):
    content, tokenize = TEXTS[kind], bundled_encoder.tokenize
    window, overlap = max_tokens - 2, min(32, max_tokens // 8)  # [CLS] and [SEP]; the default overlap
    # the bundled WordPiece tokenizer qualifies for reusing the whole text's ids at word boundaries
    assert bundled_encoder.exact_at_word_boundaries
    chunks = list(chunk_document("d", content, tokenize, window=window, overlap=overlap, exact_at_word_boundaries=exact))
    check_chunks(content, chunks, tokenize, window)
    n = len(tokenize([content])[0].ids)
    assert len(chunks) <= max(1, math.ceil((n - overlap) / (window / 2)))


def test_space_free_string_of_5000_tokens_has_few_windows(bundled_encoder):
    content = TEXTS["space-free 5000 tokens"]
    whole = bundled_encoder.tokenize([content])[0]
    assert 4500 < len(whole.ids) < 5500
    windows = plan_windows(whole.word_ids, window=62, overlap=8)
    assert len(windows) <= math.ceil((len(whole.ids) - 8) / 31)  # ~160, where a one-token stride gave thousands


def test_sliced_chunks_equal_whole_text_windows_with_the_real_tokenizer(bundled_encoder):
    content = TEXTS["prose"]
    whole = bundled_encoder.tokenize([content])[0]
    expected = [(whole.offsets[s][0], whole.offsets[e - 1][1], tuple(whole.ids[s:e]))
                for s, e in plan_windows(whole.word_ids, window=62, overlap=8)]
    lengths = []

    def recording(texts):
        lengths.extend(len(t) for t in texts)
        return bundled_encoder.tokenize(texts)

    chunks = list(chunk_document("d", content, recording, window=62, overlap=8, slice_chars=1500))
    assert [(c.char_start, c.char_end, c.token_ids) for c in chunks] == expected
    assert len(content) > 4 * 1500 and max(lengths) <= 1500


def test_slice_boundaries_inside_a_space_free_run_keep_chunks_exact(bundled_encoder):
    content = TEXTS["space-free 5000 tokens"] + " " + TEXTS["cjk"]
    chunks = list(chunk_document("d", content, bundled_encoder.tokenize, window=62, overlap=8, slice_chars=700))
    check_chunks(content, chunks, bundled_encoder.tokenize, 62)


def test_hex_hash_document_at_64_tokens_builds_exact_chunks(tmp_path, bundled_encoder):
    """The issue's case: 840 tokens of hex hashes at --max-tokens 64 gave 569 chunks, 131 of them inexact."""
    enc = Encoder(bundled_encoder.model, bundled_encoder.tokenizer, bundled_encoder.info, representations=("mean",), max_tokens=64)
    content = TEXTS["hex hashes"]
    src = tmp_path / "hashes.jsonl"
    src.write_text(json.dumps({"_id": "h", "text": content}) + "\n", encoding="utf-8")
    build_index(src, tmp_path / "ix", enc, progress=False)
    rows = IndexReader(tmp_path / "ix").db.execute("SELECT text, n_tokens FROM chunks ORDER BY position").fetchall()
    n = len(enc.tokenize([content])[0].ids)
    assert len(rows) <= math.ceil((n - 8) / 31)
    assert all(len(enc.tokenize([text])[0].ids) == n_tokens <= enc.window for text, n_tokens in rows)


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return Encoder.load(str(tiny_bert), max_tokens=32, batch_size=8)


class RecordingBar:
    """Stands in for tqdm: records what the build shows, in order."""

    def __init__(self, *args, total=None, **kwargs):
        self.n, self.total, self.events = 0, total, []
        RecordingBar.last = self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.n += n
        self.events.append(("documents", self.n))

    def set_postfix(self, refresh=True, **values):
        self.events.append(("postfix", values))

    def refresh(self):
        pass


def huge_jsonl(tmp_path):
    words = ("the bees make honey from nectar and pollen in the hive " * 300).split()
    src = tmp_path / "huge.jsonl"
    rows = [{"_id": "small", "text": "a comet and a planet"}, {"_id": "huge", "text": " ".join(words)}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return src


def test_a_huge_document_is_sliced_embedded_as_it_is_cut_and_shows_progress(tmp_path, tiny, monkeypatch):
    src = huge_jsonl(tmp_path)
    monkeypatch.setattr(chunking, "SLICE_CHARS", 2000)
    monkeypatch.setattr(pipeline, "CHUNKS_PER_ENCODE", 32)
    monkeypatch.setattr(pipeline, "tqdm", RecordingBar)
    calls, lengths = [], []
    real_encode, real_tokenize = tiny.encode_ids, tiny.tokenize
    monkeypatch.setattr(tiny, "encode_ids", lambda seqs, **kw: calls.append(len(seqs)) or real_encode(seqs, **kw))
    monkeypatch.setattr(tiny, "tokenize", lambda texts: lengths.extend(map(len, texts)) or real_tokenize(texts))
    summary = build_index(src, tmp_path / "ix", tiny, overlap=4, progress=True)
    assert max(lengths) <= 2000 < len(json.loads(src.read_text().splitlines()[1])["text"])
    assert len(calls) >= 4 and max(calls) <= 32 and sum(calls) == summary.chunks
    # the bar's postfix counted embedded tokens many times before the two documents were counted done
    events = RecordingBar.last.events
    done = next(i for i, e in enumerate(events) if e == ("documents", 2))
    tokens = [e[1]["tokens"] for e in events[:done] if e[0] == "postfix" and "tokens" in e[1]]
    assert len(tokens) >= 10 and tokens == sorted(tokens) and tokens[-1] == summary.tokens


def test_a_huge_document_interrupted_while_embedded_is_committed_whole_on_resume(tmp_path, tiny, monkeypatch):
    src = huge_jsonl(tmp_path)
    clean = build_index(src, tmp_path / "clean", tiny, overlap=4, progress=False)
    monkeypatch.setattr(pipeline, "CHUNKS_PER_ENCODE", 32)
    real_encode, calls = tiny.encode_ids, []

    def interrupted(seqs, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(seqs, **kw)

    monkeypatch.setattr(tiny, "encode_ids", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(src, tmp_path / "ix", tiny, overlap=4, progress=False)
    staged = sqlite3.connect(tmp_path / "ix" / "staging" / "work.sqlite")
    assert staged.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0  # no part of a document is committed
    assert staged.execute("SELECT value FROM meta WHERE key = 'consumed'").fetchone()[0] == "0"
    staged.close()
    monkeypatch.setattr(tiny, "encode_ids", real_encode)
    resumed = build_index(src, tmp_path / "ix", tiny, overlap=4, progress=False)
    query = "SELECT doc_id, position, char_start, char_end, n_tokens, text FROM chunks ORDER BY chunk_id"
    assert IndexReader(tmp_path / "ix").db.execute(query).fetchall() == IndexReader(tmp_path / "clean").db.execute(query).fetchall()
    assert resumed.chunks == clean.chunks > 64


def test_a_huge_query_is_tokenised_only_as_far_as_one_slice(tiny, monkeypatch):
    lengths, real_tokenize = [], tiny.tokenize
    monkeypatch.setattr(tiny, "tokenize", lambda texts: lengths.extend(map(len, texts)) or real_tokenize(texts))
    text = "the bees make honey " * (chunking.SLICE_CHARS // 5)
    vectors = tiny.encode_texts([text])
    assert max(lengths) <= chunking.SLICE_CHARS < len(text)
    monkeypatch.setattr(tiny, "tokenize", real_tokenize)
    expected = tiny.encode_ids([real_tokenize([text[:2000]])[0].ids[: tiny.window]])  # the first window, found independently
    assert all((vectors[r] == expected[r]).all() for r in vectors)


def test_bench_long_document_is_prose_within_its_utf8_size():
    from indexer.bench import long_document

    texts = ["Caf\u00e9 au lait is coffee with hot milk.", "Bees make honey."]
    doc = long_document(texts, 1000)
    assert 990 <= len(doc.encode()) <= 1000 and doc.startswith(texts[0] + "\n\n" + texts[1])


@pytest.mark.parametrize("value", ["abc", "0", "60", "2,,3"])
def test_bench_memory_doc_mb_refuses_a_bad_size_with_one_line(capsys, value):
    from indexer.cli import main

    assert main(["bench", "--memory-doc-mb", value, "--no-encode"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --memory-doc-mb") and "\n" not in err
