"""The experiment behind the tuning probes (README, "Approximate search that meets its recall target").

At N synthetic vectors per representation (the bench's data model: a Gaussian fitted to real msmarco-5k
embeddings), one HNSW graph (M=32, efConstruction=100) per representation, and recall@10 against brute force at
several efSearch values, for msmarco-5k's 50 real queries (the reference: queries.jsonl only, no pseudo-queries)
and for candidate probes: pseudo-queries of documents (first 8 words; 6 or 10 random consecutive words) and held-out
vectors at cosine 0.5.

    python docs/experiments/tuning_probes.py [N]    # N defaults to 200000; about 8 minutes on 2 cores
"""

import sys
import time
from pathlib import Path

import faiss
import numpy as np

from indexer.bench import fit_gaussian, synthetic_vectors, texts_of
from indexer.encoder import Encoder
from indexer.loaders import LoadReport, load_queries
from indexer.text import pseudo_query
from indexer.vector_index import query_probes

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
source = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "msmarco-5k"
encoder = Encoder.load(None)
texts = texts_of(source, None)
real = encoder.encode_texts(texts[:2000])
queries = list(load_queries(source / "queries.jsonl", LoadReport()).values())
query_vectors = encoder.encode_texts(queries)
rng = np.random.default_rng(0)
picked = rng.choice(np.arange(2000, len(texts)), 400, replace=False)
words = np.random.default_rng(5)


def span(text: str, n: int) -> str:
    w = text.split()
    if len(w) <= n:
        return text
    start = words.integers(0, len(w) - n + 1)
    return " ".join(w[start:start + n])


candidates = {"span6": encoder.encode_texts([span(texts[i], 6) for i in picked]),
              "span10": encoder.encode_texts([span(texts[i], 10) for i in picked]),
              "first8": encoder.encode_texts([pseudo_query(texts[i]) for i in picked])}
print("queries", len(queries), "median words", np.median([len(q.split()) for q in queries]), flush=True)
for rep in ("pooled", "mean"):
    fit = fit_gaussian(real[rep])
    base = synthetic_vectors(fit, N, rng)
    held = synthetic_vectors(fit, 400, rng)
    started = time.time()
    index = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(base)
    print(rep, "build", round(time.time() - started), "s", flush=True)
    probes = {"cos0.5": query_probes(held, np.random.default_rng(1)), "realq": query_vectors[rep],
              **{name: vectors[rep] for name, vectors in candidates.items()}}
    for name, p in probes.items():
        p = np.ascontiguousarray(p, dtype=np.float32)
        exact = faiss.knn(p, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[0]
        kth = exact[:, -1] - 1e-5
        row = []
        for ef in (64, 128, 256, 512, 1024, 2048):
            index.hnsw.efSearch = ef
            scores, found = index.search(p, 10)
            row.append(f"{ef}:{((scores >= kth[:, None]) & (found >= 0)).sum(1).mean() / 10:.3f}")
        print(f"  {rep} {name:8s} " + " ".join(row), flush=True)
