"""Benchmarks: encoding against sentence-transformers, the machine's matmul limit, memory, search latency.

Speeds are always ratios against a peer measured in the same process on the same inputs, with
the median of several runs: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch


def positive(name: str, value: int) -> int:
    """`value` if it is a whole number of at least 1, else ValueError naming `name`: every count and size of a benchmark."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def parse_sizes(name: str, text: str) -> list[int]:
    """Comma-separated sizes such as "10000,100000", each at least 1, else ValueError naming `name`."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise ValueError(f"{name} takes comma-separated whole numbers such as 10000,100000; got {text!r}")
        sizes.append(positive(name, int(part)))
    return sizes


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls of fn."""
    positive("runs", runs)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_seconds(fns: Mapping[str, Callable[[], object]], rounds: int,
                        on_time: Callable[[int, str, float], None] | None = None) -> dict[str, list[float]]:
    """Wall time of each of `fns` once per round, the rounds one after another and each round calling them in the
    order given, so that each round's figures share the machine's load of the moment (a ratio of two of them is
    taken within a round). `on_time(round, name, seconds)` is told each time as it is taken."""
    positive("rounds", rounds)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            if on_time is not None:
                on_time(round_, name, times[name][-1])
    return times


def parse_precisions(text: str) -> list[str]:
    """Comma-separated precisions such as "fp32,bf16" (config.Precision), each once, in the order given; else
    ValueError naming the value and the valid ones."""
    from .config import Precision, require_one_of

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"--precision takes comma-separated precisions such as fp32,bf16; got {text!r}")
    return list(dict.fromkeys(require_one_of(name, Precision, "precision") for name in names))


#: The torch dtype of each precision an encoder computes in (config.ENCODED_PRECISIONS).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_gflops(n: int = 2048, runs: int = 5, precision: str = "fp32") -> float:
    """Achievable GFLOP/s of this machine in `precision` (fp32 or bf16): a large matrix multiply (2 n^3 operations)
    of that dtype, the limit of the encoder's matrix products in it."""
    dtype = DTYPES[precision]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), runs) / 1e9


def flops_per_sequence(config, length: int) -> float:
    """Forward-pass FLOPs of a BERT encoder for one sequence: 2 x weights per token, plus attention."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * length * layers * (4 * h * h + 2 * h * i)  # Q, K, V, output projections and the feed-forward
    attention = 2 * layers * 2 * length * length * h  # QK^T and attention x V
    return float(dense + attention)


def cosine_distances(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per pooling, the max and mean of 1 - cos between each vector and its reference twin (both L2-normalised)."""
    out = {}
    for p, ref in reference.items():
        distance = 1.0 - np.sum(vectors[p].astype(np.float64) * ref.astype(np.float64), axis=1)
        out[p] = {"max": float(distance.max()), "mean": float(distance.mean())}
    return out


def encode_benchmark(texts: Sequence[str], encoder, peer, *, runs: int = 3, peer_batch_size: int = 32,
                     precisions: Sequence[str] = ("auto",)) -> dict:
    """(a) our encoder, all its representations from one pass per batch, in each of `precisions`, against (b)
    sentence-transformers' `encode` (`mean` only, fp32).

    Both tokenise the raw texts and cut them to the model's window, as a first chunk is. Ours computes
    the poolings behind its representations; a transform (fitted on a collection, one matrix product
    per batch) is not timed. Per precision (a row of "precisions"): the ratio to the peer, GFLOP/s against the
    matmul limit of that precision measured in this run, and the quality cost, the max and mean cosine distance
    of each pooling's vectors to our fp32 vectors of the same texts. The top-level figures are the first
    precision's, as they were before precision was a choice.
    """
    texts = list(texts)
    positive("runs", runs)
    if not texts:
        raise ValueError("no text to encode")
    windows = [t.ids[: encoder.window] for t in encoder.tokenize(texts)]

    def theirs():
        return peer.encode(texts, batch_size=peer_batch_size, normalize_embeddings=True, show_progress_bar=False)

    theirs()  # warm-up: first calls allocate and pick kernels
    peer_s = median_seconds(theirs, runs)
    lengths = [len(w) + encoder.max_tokens - encoder.window for w in windows]
    tokens = int(sum(lengths))
    flops = sum(flops_per_sequence(encoder.model.config, n) for n in lengths)
    peaks: dict[str, float] = {}
    reference = None  # our fp32 vectors, computed once
    rows = []
    for requested in precisions:
        ours_encoder = encoder.with_precision(requested)
        done = next((row for row in rows if row["precision"] == ours_encoder.precision), None)
        if done is not None:  # `auto` resolved to a precision measured already: the same row
            rows.append(done | {"requested": requested})
            continue
        vectors = ours_encoder.encode_ids(windows)  # also the warm-up
        ours_s = median_seconds(lambda e=ours_encoder: e.encode_ids(windows), runs)
        if ours_encoder.precision == "fp32" and reference is None:
            reference = vectors
        precision = ours_encoder.precision
        if precision not in peaks:
            peaks[precision] = peak_gflops(precision=precision)
        rows.append({"requested": requested, "precision": precision, "ours_s": ours_s, "ratio": ours_s / peer_s,
                     "ours_docs_per_s": len(texts) / ours_s, "ours_tokens_per_s": tokens / ours_s,
                     "gflops": flops / ours_s / 1e9, "peak_gflops": peaks[precision],
                     "fraction_of_peak": flops / ours_s / 1e9 / peaks[precision], "vectors": vectors})
    if reference is None:
        reference = encoder.with_precision("fp32").encode_ids(windows)
    for row in rows:
        row["cosine_distance"] = cosine_distances(row.pop("vectors"), reference)
    first = rows[0]
    return {
        "docs": len(texts),
        "representations": list(encoder.representations),
        "poolings": list(encoder.poolings),
        "tokens": tokens,
        "runs": runs,
        "precision": first["precision"],
        "ours_s": first["ours_s"],
        "peer_s": peer_s,
        "ratio": first["ratio"],
        "ours_docs_per_s": first["ours_docs_per_s"],
        "peer_docs_per_s": len(texts) / peer_s,
        "ours_tokens_per_s": first["ours_tokens_per_s"],
        "peer_tokens_per_s": tokens / peer_s,
        "gflops": first["gflops"],
        "peer_gflops": flops / peer_s / 1e9,
        "peak_gflops": first["peak_gflops"],
        "fp32_peak_gflops": peaks.get("fp32") or peak_gflops(precision="fp32"),  # the peer's limit
        "threads": torch.get_num_threads(),
        "precisions": rows,
    }


def beir_quality(dataset: Path, encoder, precisions: Sequence[str], *, split: str = "test", progress: bool = False) -> list[dict]:
    """nDCG@10 of each representation on a BEIR folder's `split`, per precision: the corpus indexed through `build`'s
    pipeline into a temporary index at that precision, evaluated as `evaluate` does; with the change against fp32
    (built too if not among `precisions`)."""
    from .evaluation import evaluate, load_labels
    from .loaders import SourceError, open_beir
    from .pipeline import build_index
    from .search import Searcher

    beir = open_beir(dataset)
    if beir.queries is None or split not in beir.qrels:
        raise SourceError(f"{beir.root}: --beir needs queries.jsonl and qrels/{split}.tsv")
    resolved = {p: encoder.with_precision(p) for p in precisions}
    if "fp32" not in {e.precision for e in resolved.values()}:
        resolved["fp32"] = encoder.with_precision("fp32")
    scores: dict[str, dict[str, float]] = {}  # by resolved precision: each is built once
    with tempfile.TemporaryDirectory(prefix="pooling-lab-bench-beir-") as tmp:
        for e in resolved.values():
            if e.precision in scores:
                continue
            directory = Path(tmp) / e.precision
            started = time.perf_counter()
            build_index(beir.root, directory, e, progress=progress)
            built_s = time.perf_counter() - started
            searcher = Searcher(directory, e, representations=e.representations)
            try:
                queries, qrels, issues = load_labels(beir.queries, beir.qrels[split], searcher.index.doc_ids())
                result = evaluate(searcher, queries, qrels, dataset=beir.root.name, split=split, issues=issues, progress=progress)
            finally:
                searcher.close()
            metrics = result.metrics()
            scores[e.precision] = {r: metrics[r]["ndcg@10"] for r in e.representations} | {"_build_s": built_s}
    rows = []
    for requested in precisions:
        p = resolved[requested].precision
        ndcg = {r: v for r, v in scores[p].items() if not r.startswith("_")}
        rows.append({"requested": requested, "precision": p, "dataset": beir.root.name, "split": split,
                     "build_s": scores[p]["_build_s"], "ndcg_at_10": ndcg,
                     "ndcg_at_10_change": {r: v - scores["fp32"][r] for r, v in ndcg.items()}})
    return rows


def fit_gaussian(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Cholesky factor of the covariance of real embeddings: synthetic vectors drawn from it
    have their correlations but no cluster structure, which makes approximate search harder, not easier."""
    vectors = np.asarray(vectors, dtype=np.float64)
    cov = np.cov(vectors, rowvar=False) + 1e-6 * np.eye(vectors.shape[1])
    return vectors.mean(0).astype(np.float32), np.linalg.cholesky(cov).T.astype(np.float32)


def synthetic_vectors(fit: tuple[np.ndarray, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    mean, factor = fit
    out = mean + rng.standard_normal((n, len(mean)), dtype=np.float32) @ factor
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def synthetic_index(directory: Path, encoder, texts: Sequence[str], fits: dict, n: int, *, seed: int = 0, batch: int = 20_000) -> None:
    """A real index directory of `n` one-chunk documents (texts repeated) with synthetic vectors, written
    through the same staging and publish path as `build`, so that a query reads a real metadata store."""
    from . import __version__
    from .config import ChunkingConfig
    from .staging import Staging, publish
    from .store import BuildRecord, Manifest, SourceRecord

    rng = np.random.default_rng(seed)
    staging = Staging(directory, {"op": "bench", "n": n, "seed": seed})
    for start in range(0, n, batch):
        _synthetic_batch(staging, texts, fits, range(start, min(start + batch, n)), rng)
    info = encoder.info
    manifest = Manifest(indexer_version=__version__, model=info, chunking=ChunkingConfig(encoder.max_tokens),
                        content_tokens_per_chunk=encoder.window, precision=encoder.precision, source=SourceRecord("synthetic", "synthetic", ""),
                        build=BuildRecord(0.0, 0, 0))
    publish(directory, staging, manifest, {r: info.dim for r in fits})


def _synthetic_batch(staging, texts: Sequence[str], fits: dict, numbers: range, rng: np.random.Generator) -> None:
    """One-chunk documents d{i} for i in `numbers`, with synthetic vectors, committed to `staging`."""
    from .chunking import Chunk
    from .loaders import Document

    docs = [Document(f"d{i}", texts[i % len(texts)], source="synthetic") for i in numbers]
    chunks = [Chunk(d.doc_id, 0, d.text, 0, len(d.text), ()) for d in docs]
    staging.apply(documents=docs, chunks=chunks, vectors={r: synthetic_vectors(fit, len(docs), rng) for r, fit in fits.items()})


def synthetic_add(directory: Path, texts: Sequence[str], fits: dict, n: int, *, seed: int = 1) -> float:
    """Add `n` synthetic one-chunk documents to a synthetic index the way `add` does (staging from the published
    generation, then an incremental publish); returns the wall seconds of the whole update."""
    from dataclasses import replace

    from .staging import Staging, publish
    from .store import open_generation

    started = time.perf_counter()
    gen_dir, manifest = open_generation(directory)
    staging = Staging(directory, {"op": "bench-add", "n": n, "seed": seed}, base=gen_dir, next_chunk_id=manifest.next_chunk_id)
    start = manifest.next_chunk_id
    _synthetic_batch(staging, texts, fits, range(start, start + n), np.random.default_rng(seed))
    publish(directory, staging, replace(manifest, updates=(*manifest.updates, {"op": "add", "bench": n})), manifest.poolings,
            incremental=True)
    return time.perf_counter() - started


def _bytes_per_vector(index) -> dict:
    """Bytes per vector of each representation's FAISS file (as the manifest lists it), over the vectors it holds."""
    files, records = index.manifest.files, index.manifest.representations
    return {r: files[records[r].file].bytes / max(1, faiss_index.ntotal) for r, faiss_index in index.indexes.items()}


def _percentiles(times: Sequence[float]) -> dict:
    return {"p50_ms": 1000 * float(np.percentile(times, 50)), "p95_ms": 1000 * float(np.percentile(times, 95))}


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found top-k ∩ exact top-k| / k."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def scale_benchmark(
    encoder,
    texts: Sequence[str],
    queries: Sequence[str],
    sizes: Sequence[int],
    *,
    spec=None,
    ef_sweep: Sequence[int] = (128, 256, 512, 1024, 2048, 4096),
    nprobe_sweep: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    k: int = 10,
    fit_docs: int = 2000,
) -> list[dict]:
    """Per size: end-to-end query latency (encode once + search every representation + read the hits'
    metadata, through `Searcher`) over a synthetic index; with an `hnsw` or `ivf` spec also its build time,
    latency and recall@k against exact search, the tuned search effort, over a sweep of efSearch / nprobe values,
    the bytes per vector of its FAISS files against the flat ones', and the cost of an add of 1%."""
    from . import vector_index
    from .integrity import convert
    from .search import Searcher

    for n in sizes:
        positive("sizes", n)
    if not queries:
        raise ValueError("no query to time")
    real = encoder.encode_texts(list(texts[:fit_docs]))
    fits = {r: fit_gaussian(real[r]) for r in encoder.representations}
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="pooling-lab-scale-") as tmp:
            directory = Path(tmp) / "index"
            started = time.perf_counter()
            synthetic_index(directory, encoder, texts, fits, n)
            row: dict = {"vectors": n, "setup_s": time.perf_counter() - started}
            searcher = Searcher(directory, encoder)
            qvecs = encoder.encode_texts(list(queries))
            truth = {r: searcher.index.search(r, qvecs[r], k)[1] for r in encoder.representations}
            row["encode_only"] = _percentiles(_timed(lambda q: encoder.encode_texts([q]), queries))
            row["exact"] = _percentiles(_timed(lambda q, s=searcher: s.search(q, k), queries))
            row["bytes_per_vector"] = {"flat": _bytes_per_vector(searcher.index)}
            if spec is not None and spec.type != "flat":
                convert(directory, spec)
                index = searcher.current()  # the searcher switches to the new generation
                row["index_type"] = spec.to_dict()
                records = index.manifest.representations
                row["build_s"] = {r: records[r].build_seconds for r in encoder.representations}
                row["bytes_per_vector"][spec.type] = _bytes_per_vector(index)
                tuned = {r: vector_index.effort_of(index.indexes[r]) for r in encoder.representations}
                row["effort"] = tuned  # efSearch (hnsw) or nprobe (ivf), per representation
                if spec.type == "ivf":
                    row["nlist"] = {r: vector_index.nlist_of(index.indexes[r]) for r in encoder.representations}
                row["tuning"] = {r: {"recall_at_10": records[r].recall_at_10, "queries": records[r].tuning_queries,
                                     "seconds": records[r].tuning_seconds} for r in encoder.representations if records[r].effort}
                row["approximate"] = _percentiles(_timed(lambda q, s=searcher: s.search(q, k), queries))
                row["recall_at_k"] = {r: recall_at(index.search(r, qvecs[r], k)[1], truth[r]) for r in encoder.representations}
                # the searches alone, at the tuned efSearch: one representation after the other, and concurrently
                # (Searcher's way: one thread per representation, FAISS releasing the GIL)
                one = {r: qvecs[r] for r in encoder.representations}
                from .search import search_threads

                with search_threads(len(one)) as pool:
                    row["search_only"] = {
                        "sequential": _percentiles(_timed(lambda j, ix=index, one=one: [ix.search(r, v[j : j + 1], k) for r, v in one.items()],
                                                          range(len(queries)))),
                        "concurrent": _percentiles(_timed(lambda j, ix=index, one=one, pool=pool: [f.result() for f in [
                            pool.submit(ix.search, r, v[j : j + 1], k) for r, v in one.items()]], range(len(queries)))),
                    }
                sweep = []
                if spec.type == "ivf":
                    lists = min(n for n in row["nlist"].values())
                    efforts = {e for e in nprobe_sweep if e <= lists}
                else:
                    efforts = set(ef_sweep)
                for ef in sorted(efforts | {e for e in tuned.values() if e}):
                    for faiss_index in index.indexes.values():
                        vector_index.configure(faiss_index, spec, effort=ef)
                    per_query = _timed(lambda j, ix=index, qv=qvecs: [ix.search(r, qv[r][j : j + 1], k) for r in encoder.representations],
                                       range(len(queries)))
                    sweep.append({"effort": ef, "search_p50_ms": 1000 * float(np.percentile(per_query, 50)),
                                  **{f"recall_{r}": recall_at(index.search(r, qvecs[r], k)[1], truth[r]) for r in encoder.representations}})
                for r, faiss_index in index.indexes.items():
                    vector_index.configure(faiss_index, spec, effort=tuned[r])
                row["effort_sweep"] = sweep
                if spec.type in vector_index.EFFORT:  # an add of 1% extends the indexes: its cost against the full build's
                    added = max(1, n // 100)
                    wall = synthetic_add(directory, texts, fits, added)
                    after = searcher.current().manifest.representations
                    row["add_1pct"] = {"vectors": added, "wall_s": wall,
                                       "structure_s": {r: after[r].build_seconds for r in encoder.representations},
                                       "extended": all(after[r].built_from for r in encoder.representations)}
            searcher.close()
            out.append(row)
    return out


def _timed(fn: Callable, items: Sequence) -> list[float]:
    """Seconds of fn(item) for every item, after two warm-up calls."""
    items = list(items)
    for item in items[:2]:
        fn(item)
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - started)
    return times


def queries_of(source: Path, n: int, texts: Sequence[str]) -> list[str]:
    """n distinct query texts: the collection's queries.jsonl first, then pseudo-queries of its documents."""
    from .loaders import LoadReport, load_queries
    from .text import pseudo_query

    positive("queries", n)
    path = Path(source) / "queries.jsonl"
    found = list(load_queries(path, LoadReport()).values()) if path.is_file() else []
    found += [pseudo_query(t) for t in texts]
    return list(dict.fromkeys(q for q in found if q.strip()))[:n]


def texts_of(source: Path, docs: int | None) -> list[str]:
    """Document contents of a collection, repeated (with a numbered suffix) to reach `docs` if asked."""
    from .loaders import LoadReport, iter_documents

    if docs is not None:
        positive("docs", docs)
    base = [d.content for d in iter_documents(source, LoadReport())]
    if not base:
        raise ValueError(f"{source} has no readable document")
    if docs is None:
        return base
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(docs)]


_PEAK_CHILD = (
    "import resource, sys\nfrom indexer.cli import main\ncode = main(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)"
)


def _peak_of_build(source: Path, index: Path, model: str | None, *, cwd: Path | None = None, extra: Sequence[str] = ()) -> dict:
    """Peak resident memory (bytes) and wall seconds of `python -m indexer build` in a fresh process."""
    args = ["build", str(source), "--index", str(index), *extra] + (["--model", model] if model else [])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_CHILD, *args], capture_output=True, text=True,
                          cwd=cwd or Path(__file__).resolve().parent.parent, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"build of {source.name} failed: {done.stderr[-500:]}")
    # ru_maxrss counts KiB on Linux; reports carry bytes, shown by loaders.format_bytes like every size
    peak_kib = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KB")))
    return {"peak_rss_bytes": peak_kib * 1024, "seconds": time.perf_counter() - started, "stderr": done.stderr}


def build_peak_memory(texts: Sequence[str], sizes: Sequence[int], model: str | None, extra: Sequence[str] = ()) -> list[dict]:
    """Peak resident memory of `python -m indexer build` over `sizes` documents, each in a fresh process (`extra`
    arguments for it, e.g. `--ray local`: then it is the driver's, the actors being processes of their own)."""
    for n in sizes:
        positive("sizes", n)
    out = []
    with tempfile.TemporaryDirectory(prefix="pooling-lab-bench-") as tmp:
        for n in sizes:
            source = Path(tmp) / f"docs-{n}.jsonl"
            with open(source, "w", encoding="utf-8") as f:
                for i in range(n):
                    f.write(json.dumps({"_id": str(i), "text": texts[i % len(texts)] + (f" ({i // len(texts)})" if i >= len(texts) else "")}) + "\n")
            row = _peak_of_build(source, Path(tmp) / f"ix-{n}", model, extra=["--no-progress", *extra])
            out.append({"docs": n, "peak_rss_bytes": row["peak_rss_bytes"], "vectors_bytes": n * 2 * 384 * 4,
                        "seconds": row["seconds"]})
    return out


def long_document(texts: Sequence[str], size: int) -> str:
    """One document of real prose of at most `size` bytes in UTF-8: the collection's texts as paragraphs, repeated."""
    parts, total, i = [], 0, 0
    while total < size:
        paragraph = texts[i % len(texts)] + (f" ({i // len(texts)})" if i >= len(texts) else "")
        parts.append(paragraph)
        total += len(paragraph.encode()) + 2
        i += 1
    return "\n\n".join(parts).encode()[:size].decode(errors="ignore")


def document_peak_memory(texts: Sequence[str], sizes_mb: Sequence[float], model: str | None, *, cwd: Path | None = None) -> list[dict]:
    """Peak resident memory and seconds of `build` over one JSONL record of each size (MB = 10^6 bytes of
    prose in UTF-8, the loader's limit being 50 MB), each in a fresh process; also how many times the progress bar
    was redrawn with a new count of embedded tokens while that one record was being worked on."""
    out = []
    with tempfile.TemporaryDirectory(prefix="pooling-lab-bench-doc-") as tmp:
        for mb in sizes_mb:
            source = Path(tmp) / f"doc-{mb}mb.jsonl"
            source.write_text(json.dumps({"_id": "long", "text": long_document(texts, int(mb * 10**6))}) + "\n", encoding="utf-8")
            row = _peak_of_build(source, Path(tmp) / f"ix-{mb}", model, cwd=cwd)
            during = {line for line in re.split(r"[\r\n]", row["stderr"]) if " 0/1 " in line and "tokens=" in line}
            out.append({"document_mb": mb, "peak_rss_bytes": row["peak_rss_bytes"], "seconds": row["seconds"],
                        "progress_updates": len(during)})
            source.unlink()
    return out


def build_calls(texts: Sequence[str], encoder, docs_per_batch: int | None = None) -> list[list[list[int]]]:
    """The token ids of each encoder call a build of `texts` (one document each) makes, cut as the build cuts them:
    its committed batches (`docs_per_batch` documents, default pipeline.DOCS_PER_BATCH) and its encoder calls in each
    (pipeline.encoder_calls), with the default overlap."""
    from . import pipeline
    from .config import default_overlap
    from .loaders import Document

    overlap = default_overlap(encoder.max_tokens)
    documents = (Document(str(i), t) for i, t in enumerate(texts))
    return [[c.token_ids for c in call]
            for batch in pipeline._batched(documents, docs_per_batch or pipeline.DOCS_PER_BATCH, pipeline.CHARS_PER_BATCH)
            for call in pipeline.encoder_calls(batch, encoder, overlap, lambda document: None)]


def build_benchmark(texts: Sequence[str], encoder, *, runs: int = 3) -> dict:
    """(b) a whole `build_index` of the texts (read a JSONL file, tokenise, chunk, encode, stage, publish) against
    (a) the encoder alone over exactly the chunks that build embeds, in the same encoder calls (one per batch of
    the build, at most CHUNKS_PER_ENCODE chunks each), and (c) the encoder alone over the same chunks in one call,
    all sorted by length together, as `encode_benchmark` encodes its windows (the least padding; what a build, which
    commits a batch of documents at a time, cannot do). Runs alternate a, b and c, so that each round shares the
    machine's load of the moment; times are medians, and each ratio of throughputs (b/a, the share of the encoder's
    speed a build keeps; b/c, the same against one sorted call) is the median of the rounds' ratios. Also: the built
    index's disk use per chunk."""
    from .pipeline import build_index
    from .store import read_manifest

    texts = list(texts)
    positive("runs", runs)
    if not texts:
        raise ValueError("no text to encode")
    calls = build_calls(texts, encoder)
    with tempfile.TemporaryDirectory(prefix="pooling-lab-build-") as tmp:
        source = Path(tmp) / "docs.jsonl"
        source.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        built = iter(range(runs))

        def encoder_only() -> None:
            for ids in calls:
                encoder.encode_ids(ids)

        every_chunk = [ids for call in calls for ids in call]

        def build() -> None:
            build_index(source, Path(tmp) / f"ix-{next(built)}", encoder, progress=False)

        encoder.encode_ids(calls[0])  # warm-up: first calls allocate and pick kernels
        times = interleaved_seconds({"encoder": encoder_only, "build": build,
                                     "one_call": lambda: encoder.encode_ids(every_chunk)}, runs)
        encoder_s, build_s, one_call_s = times["encoder"], times["build"], times["one_call"]
        index = Path(tmp) / "ix-0"
        disk = disk_per_chunk(index, read_manifest(index))
    a, b, c = statistics.median(encoder_s), statistics.median(build_s), statistics.median(one_call_s)
    ratios = [x / y for x, y in zip(encoder_s, build_s)]
    one_call_ratios = [z / y for z, y in zip(one_call_s, build_s)]
    return {
        "docs": len(texts),
        "chunks": sum(len(ids) for ids in calls),
        "encoder_calls": len(calls),
        "runs": runs,
        "encoder_s": a,
        "build_s": b,
        "encoder_docs_per_s": len(texts) / a,
        "build_docs_per_s": len(texts) / b,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "one_call_s": c,
        "one_call_docs_per_s": len(texts) / c,
        "ratio_to_one_call": statistics.median(one_call_ratios),
        "ratios_to_one_call": one_call_ratios,
        "disk": disk,
    }


def disk_per_chunk(directory: Path, manifest) -> dict:
    """Bytes per chunk of each file of an index's generation (from the manifest's sizes, as `info` shows them), and
    of the metadata store's parts, measured with SQLite's dbstat: the stored vectors (their table and its index)
    per pooling, and the rest (documents, chunk texts)."""
    from .store import METADATA, bytes_per_chunk

    chunks = manifest.counts.chunks
    db = sqlite3.connect(f"{(directory / manifest.generation / METADATA).as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        pages = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    finally:
        db.close()
    vectors = pages.pop("vectors", 0) + pages.pop("sqlite_autoindex_vectors_1", 0)
    return {
        "chunks": chunks,
        "files": bytes_per_chunk(manifest),
        "metadata_vectors_per_pooling": vectors / chunks / len(manifest.poolings),
        "float32_vector": 4 * manifest.model.dim,
        "metadata_rest": sum(pages.values()) / chunks,
    }


def ray_benchmark(texts: Sequence[str], encoder, *, runs: int = 3) -> dict:
    """Whole builds of the texts (a JSONL file): locally, on Ray with one actor of this process's thread count, and on
    Ray with two single-threaded actors, on a cluster started in this process (`--ray local`); and Ray's fixed
    start-up cost: ray.init once, then each build's actors started with their model loaded. A Ray build's time after
    start-up is its whole time less its actors' start-up. Runs alternate the three systems, so that each round shares
    the machine's load of the moment; times are medians. Also: how much of the embedding phase the driver spent on its
    own work (reading, batching, committing) rather than waiting for the actors (what bounds the scaling), and whether
    the Ray builds hold what the local build holds (chunk ids, texts, vectors within 1e-5)."""
    from .distributed import LOCAL, connect
    from .encoder import DEFAULT_THREADS
    from .pipeline import build_index
    from .store import IndexReader, read_manifest

    positive("runs", runs)
    texts = list(texts)
    if not texts:
        raise ValueError("no text to build")
    systems = {"ray_1_actor": (1, DEFAULT_THREADS), "ray_2_actors": (2, 1)}
    with tempfile.TemporaryDirectory(prefix="pooling-lab-ray-") as tmp:
        source = Path(tmp) / "docs.jsonl"
        source.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        times: dict[str, list[float]] = {"local": [], **{name: [] for name in systems}}
        startup: dict[str, list[float]] = {name: [] for name in systems}
        driver: dict[str, list[float]] = {name: [] for name in systems}
        nodes: dict[str, int] = {}
        with connect(LOCAL, actors=None, threads=1) as cluster:
            for run in range(runs):
                started = time.perf_counter()
                build_index(source, Path(tmp) / f"local-{run}", encoder, progress=False)
                times["local"].append(time.perf_counter() - started)
                for name, (actors, threads) in systems.items():
                    cluster.actors, cluster.threads = actors, threads
                    started = time.perf_counter()
                    build_index(source, Path(tmp) / f"{name}-{run}", encoder, progress=False, ray=cluster)
                    total = time.perf_counter() - started
                    startup[name].append(cluster.startup_s)
                    times[name].append(total - cluster.startup_s)
                    driver[name].append(cluster.wall_s - cluster.startup_s - cluster.waited_s)
                    nodes[name] = cluster.nodes
            init_s = cluster.init_s
        reference = IndexReader(Path(tmp) / "local-0")
        same = {}
        for name in systems:
            other = IndexReader(Path(tmp) / f"{name}-0")
            query = "SELECT chunk_id, doc_id, position, text FROM chunks ORDER BY chunk_id"
            ids = [row[0] for row in reference.db.execute(query)]
            same[name] = {
                "chunks_equal": reference.db.execute(query).fetchall() == other.db.execute(query).fetchall(),
                "max_abs_vector_difference": max(float(np.abs(reference.vectors(r, ids) - other.vectors(r, ids)).max())
                                                 for r in reference.representations),
            }
            other.close()
        reference.close()
        chunks = read_manifest(Path(tmp) / "local-0").counts.chunks
    local = statistics.median(times["local"])
    out = {"docs": len(texts), "chunks": chunks, "runs": runs, "cpus": os.cpu_count(), "local_threads": DEFAULT_THREADS,
           "local_s": local, "local_docs_per_s": len(texts) / local, "ray_init_s": init_s, "systems": {}}
    for name, (actors, threads) in systems.items():
        after = statistics.median(times[name])
        own = statistics.median(driver[name])
        out["systems"][name] = {
            "actors": actors, "threads_per_actor": threads, "nodes": nodes[name],
            "build_s": after, "docs_per_s": len(texts) / after, "ratio_to_local": after / local,
            "startup_s": statistics.median(startup[name]), "driver_own_s": own,
            "driver_docs_per_s": len(texts) / own if own > 0 else None,
            **same[name],
        }
    return out
