"""The benchmark runs and reports sane numbers on a small input (no timing assertions)."""

import json

import numpy as np
import pytest

from conftest import SAMPLE
from indexer import bench
from indexer.bench import fit_gaussian, flops_per_sequence, median_seconds, queries_of, recall_at, synthetic_vectors, texts_of
from indexer.cli import main


def test_flops_per_sequence_by_hand():
    class Config:
        hidden_size, intermediate_size, num_hidden_layers = 4, 8, 2

    # 2 x 3 tokens x 2 layers x (4*16 + 2*32) weights, plus 2 x 2 layers x 2 x 3^2 x 4 for attention
    assert flops_per_sequence(Config, 3) == 2 * 3 * 2 * (64 + 64) + 2 * 2 * 2 * 9 * 4


def test_texts_are_repeated_to_reach_the_requested_count():
    texts = texts_of(SAMPLE, 500)
    assert len(texts) == 500 and len(set(texts)) == 500


def test_bench_reports_the_promised_keys(capsys, tiny_bert):
    assert main(["bench", "--data", str(SAMPLE), "--docs", "40", "--runs", "1", "--model", str(tiny_bert),
                 "--latency", "1000", "--queries", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"docs", "tokens", "ours_s", "peer_s", "ratio", "ours_tokens_per_s", "peer_tokens_per_s", "gflops", "peak_gflops"} <= set(report)
    # tokens: every text as the tokenizer itself cuts it to the model's 64 tokens (special tokens included)
    from transformers import AutoTokenizer

    texts = texts_of(SAMPLE, 40)
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_bert)(texts, truncation=True, max_length=64)["input_ids"]]
    assert report["docs"] == 40 and report["tokens"] == sum(lengths)
    # FLOPs by hand from the tiny config (hidden 32, feed-forward 64, 2 layers): per sequence of n tokens,
    # 2 n (4 * 32^2 + 2 * 32 * 64) per layer for the dense weights and 2 * 2 n^2 * 32 per layer for attention
    flops = sum(2 * (2 * n * (4 * 32 * 32 + 2 * 32 * 64) + 2 * 2 * n * n * 32) for n in lengths)
    assert report["gflops"] * report["ours_s"] * 1e9 == pytest.approx(flops, rel=1e-9)
    assert report["peer_gflops"] * report["peer_s"] * 1e9 == pytest.approx(flops, rel=1e-9)
    assert report["ours_s"] > 0 and report["peer_s"] > 0 and report["peak_gflops"] > 0
    # the machine it ran on, read independently here: the first "model name" line Linux lists
    import os
    import re
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace") if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.*?)\s*$", cpuinfo, re.M)
    machine = report["machine"]
    if name:
        assert machine["cpu"] == name.group(1)
    assert machine["cpus"] == os.cpu_count() and machine["device"] == "cpu" and isinstance(machine["native_bf16"], bool)
    row = report["latency"][0]
    assert row["vectors"] == 1000
    for part in ("exact", "approximate", "encode_only"):
        assert 0 < row[part]["p50_ms"] <= row[part]["p95_ms"]
    assert row["index_type"]["type"] == "hnsw" and set(row["recall_at_k"]) == {"pooled", "mean"}
    assert all(0.9 <= v <= 1.0 for v in row["recall_at_k"].values())  # 1000 vectors, tuned to 0.95 on the sample
    assert set(row["effort"]) == {"pooled", "mean"} and all(row["tuning"][r]["queries"] == 100 for r in row["effort"])
    add = row["add_1pct"]  # 10 vectors added to the graphs, not a rebuild
    assert add["vectors"] == 10 and add["extended"] and add["wall_s"] > 0 and set(add["structure_s"]) == {"pooled", "mean"}
    assert {"sequential", "concurrent"} == set(row["search_only"])
    assert [s["effort"] for s in row["effort_sweep"]] == sorted(s["effort"] for s in row["effort_sweep"])



def test_bench_of_ivf_reports_its_bytes_per_vector_nprobe_and_recall(capsys, tiny_bert):
    assert main(["bench", "--data", str(SAMPLE), "--no-encode", "--model", str(tiny_bert), "--latency", "2000",
                 "--queries", "5", "--index-type", "ivf", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["latency"][0]
    assert row["index_type"]["type"] == "ivf" and set(row["effort"]) == set(row["nlist"]) == {"pooled", "mean"}
    assert all(1 <= row["effort"][r] <= row["nlist"][r] == 46 for r in row["effort"])  # 1,800 vectors trained on: 1800 // 39 lists
    sizes = row["bytes_per_vector"]
    assert all(sizes["ivf"][r] < 0.5 * sizes["flat"][r] for r in ("pooled", "mean"))  # one byte per dimension, not four
    assert all(0.8 <= v <= 1.0 for v in row["recall_at_k"].values())
    assert [s["effort"] for s in row["effort_sweep"]] == sorted(s["effort"] for s in row["effort_sweep"])
    assert row["add_1pct"]["extended"]


def test_recall_at_by_hand():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [5, 6, 7, 8]])
    assert recall_at(found, truth) == (3 / 4 + 1) / 2


def test_synthetic_vectors_follow_the_fitted_distribution():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((8, 8)).astype(np.float32)
    real = rng.standard_normal((5000, 8)).astype(np.float32) @ mixing + 3.0
    mean, factor = fit_gaussian(real)
    np.testing.assert_allclose(factor.T @ factor, np.cov(real, rowvar=False), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5)
    out = synthetic_vectors((mean, factor), 20000, rng)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    direction = real.mean(0) / np.linalg.norm(real.mean(0))
    assert np.mean(out @ direction) > 0.5  # they share the real vectors' common direction (anisotropy)


def test_queries_come_from_the_collection_first_and_are_distinct():
    texts = texts_of(SAMPLE, None)
    queries = queries_of(SAMPLE, 100, texts)
    assert len(queries) == len(set(queries)) == 100
    first = json.loads((SAMPLE / "queries.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    assert queries[0] == first


def test_median_seconds_is_the_median_of_the_runs(monkeypatch):
    """A fake clock that each call advances by a known duration: the median is checked by hand."""
    for durations, expected in (([5.0, 1.0, 4.0, 2.0, 3.0], 3.0), ([1.0, 10.0, 2.0, 3.0], 2.5), ([7.0], 7.0)):
        now = [100.0]
        pending = list(durations)
        monkeypatch.setattr(bench.time, "perf_counter", lambda now=now: now[0])

        def call(now=now, pending=pending):
            now[0] += pending.pop(0)

        assert median_seconds(call, len(durations)) == expected and pending == []


def test_interleaved_seconds_alternates_the_calls_and_times_each(monkeypatch):
    """A fake clock each call advances by its own duration: every round calls each function once, in the order given,
    and each time is that call's duration, reported as it is taken."""
    now = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    order = []

    def make(name, durations):
        def call():
            order.append(name)
            now[0] += durations.pop(0)
        return call

    told = []
    times = bench.interleaved_seconds({"a": make("a", [1.0, 2.0, 3.0]), "b": make("b", [10.0, 20.0, 30.0])}, 3,
                                      lambda r, name, seconds: told.append((r, name, seconds)))
    assert order == ["a", "b"] * 3
    assert times == {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    assert told == [(0, "a", 1.0), (0, "b", 10.0), (1, "a", 2.0), (1, "b", 20.0), (2, "a", 3.0), (2, "b", 30.0)]
    with pytest.raises(ValueError, match="rounds must be"):
        bench.interleaved_seconds({"a": lambda: None}, 0)


@pytest.mark.parametrize(
    "option, value",
    [("--docs", "0"), ("--docs", "-3"), ("--runs", "0"), ("--queries", "0"), ("--batch-size", "0"),
     ("--latency", "-5"), ("--latency", "abc"), ("--latency", "1000,0"), ("--latency", ","), ("--memory", "0"),
     ("--memory", "5000,x"), ("--docs", "abc"), ("--runs", "1.5")],
)
def test_nonsense_counts_are_refused_with_one_line(option, value, capsys):
    try:
        code = main(["bench", option, value, "--no-encode"])
    except SystemExit as exit:  # argparse: a value that is not a whole number at all
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert option in err and "Traceback" not in err


def test_library_counts_are_checked_too():
    with pytest.raises(ValueError, match="docs must be a whole number of at least 1, got 0"):
        texts_of(SAMPLE, 0)
    with pytest.raises(ValueError, match="runs must be"):
        median_seconds(lambda: None, 0)
    with pytest.raises(ValueError, match="queries must be"):
        queries_of(SAMPLE, 0, ["a text"])


@pytest.mark.parametrize("reps", ["mean", "pooled,mean,cls,max,first_last", "mean,pooled+whiten"])
def test_bench_compares_any_set_of_representations(reps, capsys, tiny_bert):
    """Ours computes every requested representation's pooling in its one pass; the peer computes mean."""
    from indexer.config import parse_representations, poolings_of

    args = ["bench", "--data", str(SAMPLE), "--docs", "20", "--runs", "1", "--model", str(tiny_bert), "--representations", reps]
    latency = ["--latency", "300", "--queries", "3", "--index-type", "flat"] if "+" in reps else []
    assert main(args + latency + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = parse_representations(reps)
    assert report["representations"] == list(expected) and report["poolings"] == list(poolings_of(expected))
    assert report["docs"] == 20 and report["ours_s"] > 0 and report["peer_s"] > 0
    if latency:  # timed over the poolings (synthetic vectors carry no fitted transform)
        assert report["latency"][0]["vectors"] == 300 and report["latency"][0]["exact"]["p50_ms"] > 0
    if len(expected) == 5:  # the text report names them (once: each run loads both models again)
        assert main(args) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"machine: {report['machine']['cpu']} (") and "bf16 matrix hardware: " in out.splitlines()[0]
        assert f"ours ({', '.join(expected)}, one pass):" in out and "sentence-transformers (mean):" in out


def test_bench_refuses_an_unknown_representation_in_one_line(capsys):
    assert main(["bench", "--representations", "mean,avg", "--no-encode"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: unknown representation 'avg'") and err.count("\n") == 1


def test_bench_build_times_the_build_against_the_encoder_over_its_chunks(capsys, tiny_bert, monkeypatch):
    """--build: the encoder alone is timed over exactly the chunks and encoder calls of the build it is compared with."""
    import indexer.pipeline as pipeline

    calls = []
    real = pipeline.build_index

    def counted(*args, **options):
        summary = real(*args, **options)
        calls.append(summary)
        return summary

    from indexer.encoder import Encoder

    sizes = []  # the number of chunks of each encoder call
    real_encode = Encoder.encode_ids

    def encode_ids(self, sequences, **options):
        sizes.append(len(sequences))
        return real_encode(self, sequences, **options)

    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 8)
    monkeypatch.setattr(pipeline, "build_index", counted)
    monkeypatch.setattr(Encoder, "encode_ids", encode_ids)
    assert main(["bench", "--data", str(SAMPLE), "--docs", "20", "--runs", "2", "--model", str(tiny_bert), "--no-encode",
                 "--build", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["build"]
    assert len(calls) == 2 and all(s.documents == 20 for s in calls)
    assert row["chunks"] == calls[0].chunks and row["encoder_calls"] == 3 and row["docs"] == 20
    assert len(row["ratios"]) == 2 and row["ratio"] == pytest.approx(float(np.median(row["ratios"])))
    # per run: the build's 3 calls alone, the build (its 3 calls), then every chunk in one call
    per_call = sizes[1:4]  # after the warm-up (the first call's chunks)
    assert len(per_call) == 3 and sum(per_call) == row["chunks"] and sizes[0] == per_call[0]
    assert sizes[1:] == (per_call + per_call + [row["chunks"]]) * 2  # the runs alternate a, b and c
    assert len(row["ratios_to_one_call"]) == 2
    assert row["ratio_to_one_call"] == pytest.approx(float(np.median(row["ratios_to_one_call"])))
    assert row["one_call_docs_per_s"] == pytest.approx(20 / row["one_call_s"])
    disk = row["disk"]
    assert set(disk["files"]) >= {"pooled.faiss", "mean.faiss", "metadata.sqlite"}
    assert disk["float32_vector"] == 4 * 32 and disk["metadata_vectors_per_pooling"] >= disk["float32_vector"]


def test_bench_reports_each_precision_against_fp32(capsys, tiny_bert, tmp_path, monkeypatch):
    """Per precision: the ratio to the peer measured in the same run, GFLOP/s against that precision's matmul limit,
    the cosine distance of each pooling to fp32 vectors of the same texts, and with --beir the nDCG@10 of an index
    built at that precision, as `evaluate --beir` computes it (issue 14, item 1)."""
    from conftest import random_corpus
    from indexer import encoder as encoder_module
    from indexer.encoder import Encoder

    monkeypatch.setattr(encoder_module, "native_bf16", lambda device: True)  # auto = bf16
    limits = {"fp32": 100.0, "bf16": 200.0}  # stands for the matmul limit measured in each dtype
    monkeypatch.setattr(bench, "peak_gflops", lambda n=2048, runs=5, precision="fp32": limits[precision])
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    random_corpus(beir / "corpus.jsonl", 30)
    queries = {"q1": "bees and honey", "q2": "bread in the oven", "q3": "a comet in the sky"}
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td5\t2\nq3\td7\t1\n", encoding="utf-8")
    assert main(["bench", "--data", str(SAMPLE), "--docs", "20", "--runs", "1", "--model", str(tiny_bert),
                 "--precision", "auto,fp32", "--beir", str(beir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    auto, fp32 = report["precisions"]
    assert (auto["requested"], auto["precision"], fp32["requested"], fp32["precision"]) == ("auto", "bf16", "fp32", "fp32")
    assert (report["precision"], report["ours_s"], report["ratio"]) == ("bf16", auto["ours_s"], auto["ratio"])  # the first's
    for row in (auto, fp32):
        assert row["ratio"] == pytest.approx(row["ours_s"] / report["peer_s"])
        assert row["peak_gflops"] == limits[row["precision"]]  # the limit of that row's precision
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / row["peak_gflops"])
    # the quality cost, against an independent encoding of the same texts (cut to the window) in both precisions
    texts = texts_of(SAMPLE, 20)
    vectors = {}
    for precision in ("fp32", "bf16"):
        encoder = Encoder.load(str(tiny_bert), precision=precision)
        vectors[precision] = encoder.encode_ids([t.ids[: encoder.window] for t in encoder.tokenize(texts)])
    for p in ("pooled", "mean"):
        distance = 1 - np.sum(vectors["bf16"][p].astype(np.float64) * vectors["fp32"][p], axis=1)
        assert auto["cosine_distance"][p]["max"] == pytest.approx(distance.max(), abs=1e-7)
        assert auto["cosine_distance"][p]["mean"] == pytest.approx(distance.mean(), abs=1e-7)
        assert auto["cosine_distance"][p]["max"] > 1e-6 and fp32["cosine_distance"][p]["max"] < 1e-6
    # nDCG@10 per precision: what `evaluate --beir` reports for an index of that precision
    for row in report["beir"]:
        assert main(["evaluate", "--beir", str(beir), "--model", str(tiny_bert), "--precision", row["precision"],
                     "--index", str(tmp_path / f"ix-{row['precision']}"), "--out", str(tmp_path / "out"), "--json", "--no-progress"]) == 0
        metrics = json.loads(capsys.readouterr().out)["metrics"]
        assert row["ndcg_at_10"] == {r: pytest.approx(metrics[r]["ndcg@10"], abs=1e-12) for r in ("pooled", "mean")}
    assert report["beir"][1]["ndcg_at_10_change"] == {"pooled": 0.0, "mean": 0.0}  # fp32 against itself
    assert report["beir"][0]["ndcg_at_10_change"] == {
        r: pytest.approx(v - report["beir"][1]["ndcg_at_10"][r], abs=1e-12) for r, v in report["beir"][0]["ndcg_at_10"].items()}


def test_bench_refuses_an_unknown_precision_in_one_line(capsys):
    assert main(["bench", "--precision", "fp32,fp8", "--no-encode"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown precision 'fp8'; valid: auto, fp32, bf16\n"


def test_the_matmul_limit_is_measured_in_the_dtype_asked(monkeypatch):
    seen = []
    real_mm = bench.torch.mm
    monkeypatch.setattr(bench.torch, "mm", lambda a, b: seen.append((a.dtype, b.dtype)) or real_mm(a, b))
    assert bench.peak_gflops(n=64, runs=1, precision="bf16") > 0 and bench.peak_gflops(n=64, runs=1) > 0
    assert set(seen[:2]) == {(bench.torch.bfloat16, bench.torch.bfloat16)} and set(seen[2:]) == {(bench.torch.float32, bench.torch.float32)}
