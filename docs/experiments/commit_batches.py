"""What committing a build's documents in batches costs the encoder (README, "Round two", row 4).

msmarco-5k's chunks encoded in the calls a build makes of them with DOCS_PER_BATCH documents per committed batch
(512, the default; 1024; 2048), and all in one call sorted together (as `bench` encodes, and `bench --build`'s
"one call"), interleaved round by round. Prints each layout's padding (share of the padded token positions, specials
left out), its seconds per round, and its throughput against one call's in the same round.

    PYTHONPATH=. python docs/experiments/commit_batches.py [ROUNDS]    # 3 rounds: about 20 minutes on 2 cores
"""

import statistics
import sys
from pathlib import Path

from indexer.bench import build_calls, interleaved_seconds, texts_of
from indexer.encoder import BATCH_OVERHEAD_TOKENS, Encoder, length_batches

texts = texts_of(Path(__file__).resolve().parents[3] / "shared/datasets/msmarco-5k", None)
enc = Encoder.load(None)


def padding(calls):
    real = padded = 0
    for call in calls:
        order = sorted(range(len(call)), key=lambda k: -len(call[k]))
        for b in length_batches([len(call[k]) for k in order], enc.batch_size, BATCH_OVERHEAD_TOKENS):
            lengths = [len(call[order[k]]) for k in b]
            real += sum(lengths)
            padded += len(lengths) * max(lengths)
    return 1 - real / padded


configs = {p: build_calls(texts, enc, p) for p in (512, 1024, 2048)}
configs["one"] = [[ids for call in configs[512] for ids in call]]
for k, c in configs.items():
    print(k, "calls", len(c), "padding %.2f%%" % (100 * padding(c)), flush=True)
enc.encode_ids(configs[512][0])  # warm-up
times = interleaved_seconds({k: lambda calls=calls: [enc.encode_ids(ids) for ids in calls] for k, calls in configs.items()},
                            int(sys.argv[1]) if len(sys.argv) > 1 else 3, lambda r, k, t: print(r, k, "%.2f" % t, flush=True))
for k in configs:
    rel = [o / x for o, x in zip(times["one"], times[k])]
    print(k, "median %.2f s" % statistics.median(times[k]), "throughput vs one call: rounds", ["%.3f" % x for x in rel],
          "median %.3f" % statistics.median(rel))
