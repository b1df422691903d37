"""Where an end-to-end query's time goes at N vectors (README, "Round two", the 1M bullet).

A synthetic index as the bench builds it (`bench.synthetic_index`), converted to HNSW (M=32; efConstruction 100
here, to halve the build time: the parts' timings depend on efSearch, not on how the graph was built), each
representation set to the efSearch the 1M bench tuned with efConstruction 200 (544 `pooled`, 1,856 `mean`). Two
rounds of: encoding a query alone, both searches side by side alone, then `Searcher.search` with the encoding and
each representation's `_rank_batch` (search + document ids) timed inside it, on one thread (QUERY_THREADS=1, the
default) and on two. Medians over the bench's 200 queries, in ms.

    PYTHONPATH=. python docs/experiments/latency_parts.py [N]    # N defaults to 1000000: about 27 minutes on 2 cores
"""

import sys
import tempfile
import time
from pathlib import Path

import indexer.encoder as E
from indexer import search as S
from indexer import vector_index
from indexer.bench import _percentiles, _timed, fit_gaussian, queries_of, synthetic_index, texts_of
from indexer.encoder import Encoder
from indexer.integrity import convert
from indexer.vector_index import IndexSpec

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
EF = {"pooled": 544, "mean": 1856}
src = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "msmarco-5k"
enc = Encoder.load(None)
texts = texts_of(src, None)
queries = queries_of(src, 200, texts)
real = enc.encode_texts(texts[:2000])
fits = {r: fit_gaussian(real[r]) for r in enc.representations}
T: dict[str, list[float]] = {}


def med(v):
    return round(_percentiles(v)["p50_ms"], 2)


def timed_as(name, f):
    def g(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        T.setdefault(name, []).append(time.perf_counter() - t)
        return r

    return g


with tempfile.TemporaryDirectory() as tmp:
    d = Path(tmp) / "index"
    t0 = time.perf_counter()
    synthetic_index(d, enc, texts, fits, N)
    convert(d, IndexSpec(type="hnsw", m=32, ef_construction=100, ef_search=1024))
    print("setup+convert s", round(time.perf_counter() - t0), flush=True)
    s = S.Searcher(d, enc)
    ix = s.current()
    spec = ix.manifest.vector_index
    for r, fi in ix.indexes.items():
        vector_index.configure(fi, spec, effort=EF[r])
    qv = enc.encode_texts(queries)
    reps = enc.representations
    pool = S.search_threads(2)
    J = range(len(queries))
    orig_enc, orig_rb = type(enc).encode_texts, S.Searcher._rank_batch
    for rnd in range(2):
        print("round", rnd)
        print(" encode alone", med(_timed(lambda q: enc.encode_texts([q]), queries)))
        both = _timed(lambda j: [f.result() for f in [pool.submit(ix.search, r, qv[r][j : j + 1], 26) for r in reps]], J)
        print(" both searches concurrent, k 26", med(both))
        for threads in (1, 2):
            E.QUERY_THREADS = threads
            type(enc).encode_texts = timed_as("encode", orig_enc)
            S.Searcher._rank_batch = staticmethod(timed_as("rank_batch", orig_rb))
            T.clear()
            tot = _timed(lambda q: s.search(q, 10), queries)
            type(enc).encode_texts, S.Searcher._rank_batch = orig_enc, staticmethod(orig_rb)
            # rank_batch: the median over both representations' calls together
            print(f" QUERY_THREADS={threads}: search() p50 {med(tot)} p95 {round(_percentiles(tot)['p95_ms'], 2)};",
                  "inside it: encode", med(T["encode"]), "rank_batch (search + doc ids) per representation", med(T["rank_batch"]),
                  flush=True)
        E.QUERY_THREADS = 1
    s.close()
