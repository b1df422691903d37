"""Whether cutting batches where padding is least (encoder.length_batches) pays on this machine's CPU.

msmarco-5k's first 2,048 passages in calls of 512 documents, as a build makes them, encoded with
BATCH_OVERHEAD_TOKENS at 64 (the default), 16 and 256, and with full batches of 32 (an overhead no cut can beat:
the code before 91fef28), interleaved round by round. Prints seconds per round and each setting's time against
full batches' in the same round.

    PYTHONPATH=. python docs/experiments/batch_overhead.py [ROUNDS]    # 4 rounds: about 11 minutes on 2 cores
"""

import statistics
import sys
from pathlib import Path

import indexer.encoder as E
from indexer.bench import build_calls, interleaved_seconds, texts_of

texts = texts_of(Path(__file__).resolve().parents[3] / "shared/datasets/msmarco-5k", None)[:2048]
enc = E.Encoder.load(None)
calls = build_calls(texts, enc, 512)
configs = {"64": 64, "16": 16, "256": 256, "full": 10**9}
enc.encode_ids(calls[0])  # warm-up


def encode(overhead):
    E.BATCH_OVERHEAD_TOKENS = overhead  # read by encode_ids at each call
    for ids in calls:
        enc.encode_ids(ids)


times = interleaved_seconds({k: lambda o=o: encode(o) for k, o in configs.items()},
                            int(sys.argv[1]) if len(sys.argv) > 1 else 4, lambda r, k, t: print(r, k, "%.2f" % t, flush=True))
for k in configs:
    rel = [x / f for x, f in zip(times[k], times["full"])]
    print(k, "median %.2f s" % statistics.median(times[k]), "time / full batches: rounds", ["%.3f" % x for x in rel],
          "median %.3f" % statistics.median(rel))
