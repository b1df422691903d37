"""The benchmark runs and reports sane numbers on a small input (no timing assertions)."""

import json

from conftest import SAMPLE
from indexer.bench import flops_per_sequence, texts_of
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
    assert report["docs"] == 40 and report["tokens"] > 40
    assert report["ratio"] == report["ours_s"] / report["peer_s"] and report["ratio"] > 0
    assert 0 < report["gflops"] and report["peak_gflops"] > 0
    assert report["latency"][0]["vectors"] == 1000 and 0 < report["latency"][0]["p50_ms"] <= report["latency"][0]["p95_ms"]
