"""Benchmarks: encoding against sentence-transformers, the machine's matmul limit, memory, search latency.

Speeds are always ratios against a peer measured in the same process on the same inputs, with
the median of several runs: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_gflops(n: int = 2048, runs: int = 5) -> float:
    """Achievable float32 GFLOP/s of this machine: a large matrix multiply (2 n^3 operations)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), runs) / 1e9


def flops_per_sequence(config, length: int) -> float:
    """Forward-pass FLOPs of a BERT encoder for one sequence: 2 x weights per token, plus attention."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * length * layers * (4 * h * h + 2 * h * i)  # Q, K, V, output projections and the feed-forward
    attention = 2 * layers * 2 * length * length * h  # QK^T and attention x V
    return float(dense + attention)


def encode_benchmark(texts: Sequence[str], encoder, peer, *, runs: int = 3, peer_batch_size: int = 32) -> dict:
    """(a) our encoder, `pooled` and `mean` from one pass, against (b) sentence-transformers' `encode` (`mean` only).

    Both tokenise the raw texts and cut them to the model's window, as a first chunk is.
    """
    texts = list(texts)

    def ours() -> dict:
        return encoder.encode_ids([t.ids[: encoder.window] for t in encoder.tokenize(texts)])

    def theirs():
        return peer.encode(texts, batch_size=peer_batch_size, normalize_embeddings=True, show_progress_bar=False)

    ours(), theirs()  # warm-up: first calls allocate and pick kernels
    ours_s, peer_s = median_seconds(ours, runs), median_seconds(theirs, runs)
    lengths = [min(len(t.ids), encoder.window) + encoder.max_tokens - encoder.window for t in encoder.tokenize(texts)]
    tokens = int(sum(lengths))
    flops = sum(flops_per_sequence(encoder.model.config, n) for n in lengths)
    peak = peak_gflops()
    return {
        "docs": len(texts),
        "tokens": tokens,
        "runs": runs,
        "ours_s": ours_s,
        "peer_s": peer_s,
        "ratio": ours_s / peer_s,
        "ours_docs_per_s": len(texts) / ours_s,
        "peer_docs_per_s": len(texts) / peer_s,
        "ours_tokens_per_s": tokens / ours_s,
        "peer_tokens_per_s": tokens / peer_s,
        "gflops": flops / ours_s / 1e9,
        "peer_gflops": flops / peer_s / 1e9,
        "peak_gflops": peak,
        "threads": torch.get_num_threads(),
    }


def search_latency(encoder, sizes: Sequence[int], *, dim: int, queries: Sequence[str], k: int = 10, seed: int = 0) -> list[dict]:
    """End-to-end query latency (encode once + exact search of two representations) over synthetic unit vectors."""
    import faiss

    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        indexes = []
        for _ in range(2):
            vectors = rng.standard_normal((n, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            index.add_with_ids(vectors, np.arange(n, dtype=np.int64))
            indexes.append(index)
            del vectors
        times = []
        for q in queries:
            started = time.perf_counter()
            vec = encoder.encode_texts([q])
            for index, r in zip(indexes, ("pooled", "mean")):
                index.search(vec[r], k)
            times.append(time.perf_counter() - started)
        out.append({"vectors": n, "p50_ms": 1000 * float(np.percentile(times, 50)), "p95_ms": 1000 * float(np.percentile(times, 95))})
        del indexes
    return out


def texts_of(source: Path, docs: int | None) -> list[str]:
    """Document contents of a collection, repeated (with a numbered suffix) to reach `docs` if asked."""
    from .loaders import LoadReport, iter_documents

    base = [d.content for d in iter_documents(source, LoadReport())]
    if not base:
        raise ValueError(f"{source} has no readable document")
    if docs is None:
        return base
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(docs)]


def build_peak_memory(texts: Sequence[str], sizes: Sequence[int], model: str | None) -> list[dict]:
    """Peak resident memory of `python -m indexer build` over `sizes` documents, each in a fresh process."""
    out = []
    with tempfile.TemporaryDirectory(prefix="pooling-lab-bench-") as tmp:
        for n in sizes:
            source = Path(tmp) / f"docs-{n}.jsonl"
            with open(source, "w", encoding="utf-8") as f:
                for i in range(n):
                    f.write(json.dumps({"_id": str(i), "text": texts[i % len(texts)] + (f" ({i // len(texts)})" if i >= len(texts) else "")}) + "\n")
            args = ["build", str(source), "--index", str(Path(tmp) / f"ix-{n}"), "--no-progress"] + (["--model", model] if model else [])
            child = (
                "import resource, sys\nfrom indexer.cli import main\ncode = main(sys.argv[1:])\n"
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)"
            )
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ))
            if done.returncode != 0:
                raise RuntimeError(f"build of {n} documents failed: {done.stderr[-500:]}")
            peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KB")))
            vectors_mb = n * 2 * 384 * 4 / 2**20
            out.append({"docs": n, "peak_rss_mb": peak_kb / 1024, "vectors_mb": vectors_mb,
                        "seconds": time.perf_counter() - started})
    return out
