"""The experiment behind the tuning probes (README, "Approximate search that meets its recall target").

At N synthetic vectors per representation (the bench's data model: a Gaussian fitted to real msmarco-5k
embeddings), one HNSW graph (M=32, efConstruction=100) per representation, and recall@10 against brute force at
several efSearch values (mean over the queries / its 97.5% lower confidence bound, what tuning compares with the
target) for msmarco-5k's 50 real queries (`realq`, the reference: queries.jsonl only), for the bench's 200 queries
(`bench200`: `bench.queries_of`, those 50, then pseudo-queries of the first documents, `text.pseudo_query`), and for candidate
probes made from 500 documents: their first 8, 6 or 5 words, their first 3 to 8 words (cycling), or 6 random
consecutive words.

    python docs/experiments/tuning_probes.py [N]    # N defaults to 1000000: about 35 minutes on 2 cores

Its earlier version (git show c3447c3:docs/experiments/tuning_probes.py) measured at 200,000 vectors, also with
10-word spans and held-out vectors at cosine 0.5.
"""

import sys
import time
from pathlib import Path

import faiss
import numpy as np

from indexer.bench import fit_gaussian, queries_of, synthetic_vectors, texts_of
from indexer.encoder import Encoder
from indexer.loaders import LoadReport, load_queries
from indexer.text import pseudo_query

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
EFS = [256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096]
source = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "msmarco-5k"
encoder = Encoder.load(None)
texts = texts_of(source, None)
real = encoder.encode_texts(texts[:2000])
queries = list(load_queries(source / "queries.jsonl", LoadReport()).values())
query_vectors = encoder.encode_texts(queries)
rng = np.random.default_rng(0)
picked = rng.choice(np.arange(2000, len(texts)), 500, replace=False)
words = np.random.default_rng(5)


def span(text: str, n: int) -> str:
    w = text.split()
    if len(w) <= n:
        return text
    start = words.integers(0, len(w) - n + 1)
    return " ".join(w[start:start + n])


candidates = {"first8": [pseudo_query(texts[i], 8) for i in picked],
              "first6": [pseudo_query(texts[i], 6) for i in picked],
              "first5": [pseudo_query(texts[i], 5) for i in picked],
              "first3-8": [pseudo_query(texts[i], 3 + j % 6) for j, i in enumerate(picked)],
              "span6": [span(texts[i], 6) for i in picked]}
candidate_vectors = {name: encoder.encode_texts(texts_) for name, texts_ in candidates.items()}
bench_vectors = encoder.encode_texts(queries_of(source, 200, texts))  # the bench's own 200 queries
print("queries", len(queries), "median words", np.median([len(q.split()) for q in queries]), flush=True)
for rep in ("pooled", "mean"):
    fit = fit_gaussian(real[rep])
    base = synthetic_vectors(fit, N, rng)
    started = time.time()
    index = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(base)
    print(rep, "build", round(time.time() - started), "s", flush=True)
    probes = {"realq": query_vectors[rep], "bench200": bench_vectors[rep],
              **{name: vectors[rep] for name, vectors in candidate_vectors.items()}}
    for name, p in probes.items():
        p = np.ascontiguousarray(p, dtype=np.float32)
        exact = faiss.knn(p, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[0]
        kth = exact[:, -1] - 1e-5
        row = []
        for ef in EFS:
            index.hnsw.efSearch = ef
            scores, found = index.search(p, 10)
            per = ((scores >= kth[:, None]) & (found >= 0)).sum(1) / 10
            bound = per.mean() - 1.96 * per.std() / np.sqrt(len(per))
            row.append(f"{ef}:{per.mean():.3f}/{bound:.3f}")
        print(f"  {rep} {name:9s} " + " ".join(row), flush=True)
