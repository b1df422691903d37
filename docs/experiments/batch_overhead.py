"""Whether cutting batches where padding is least (encoder.length_batches) pays on this machine's CPU.

msmarco-5k's first 2,048 passages in calls of 512 documents, as a build makes them, encoded with
BATCH_OVERHEAD_TOKENS at 64 (the default), 16 and 256, and with full batches of 32 (an overhead no cut can beat:
the code before 91fef28), interleaved round by round. Prints seconds per round and each setting's time against
full batches' in the same round.

    PYTHONPATH=. python docs/experiments/batch_overhead.py [ROUNDS]    # 4 rounds: about 11 minutes on 2 cores
"""

import statistics
import sys
import time
from pathlib import Path

import indexer.encoder as E
from indexer.bench import texts_of
from indexer.chunking import chunk_document, first_slice
from indexer.config import default_overlap
from indexer.loaders import Document
from indexer.pipeline import CHARS_PER_BATCH, CHUNKS_PER_ENCODE, _batched

texts = texts_of(Path(__file__).resolve().parents[3] / "shared/datasets/msmarco-5k", None)[:2048]
enc = E.Encoder.load(None)
overlap = default_overlap(enc.max_tokens)
calls = []
for batch in _batched((Document(str(i), t) for i, t in enumerate(texts)), 512, CHARS_PER_BATCH):
    ids = [c.token_ids for d, first in zip(batch, enc.tokenize([first_slice(d.content) for d in batch]))
           for c in chunk_document(d.doc_id, d.content, enc.tokenize, window=enc.window, overlap=overlap,
                                   first=first, exact_at_word_boundaries=enc.exact_at_word_boundaries)]
    calls += [ids[i:i + CHUNKS_PER_ENCODE] for i in range(0, len(ids), CHUNKS_PER_ENCODE)]
configs = {"64": 64, "16": 16, "256": 256, "full": 10**9}
enc.encode_ids(calls[0])  # warm-up
times = {k: [] for k in configs}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
    for k, overhead in configs.items():
        E.BATCH_OVERHEAD_TOKENS = overhead  # read by encode_ids at each call
        t = time.perf_counter()
        for ids in calls:
            enc.encode_ids(ids)
        times[k].append(time.perf_counter() - t)
        print(r, k, "%.2f" % times[k][-1], flush=True)
for k in configs:
    rel = [x / f for x, f in zip(times[k], times["full"])]
    print(k, "median %.2f s" % statistics.median(times[k]), "time / full batches: rounds", ["%.3f" % x for x in rel],
          "median %.3f" % statistics.median(rel))
