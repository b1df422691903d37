"""What committing a build's documents in batches costs the encoder (README, "Round two", row 4).

msmarco-5k's chunks encoded in the calls a build makes of them with DOCS_PER_BATCH documents per committed batch
(512, the default; 1024; 2048), and all in one call sorted together (as `bench` encodes, and `bench --build`'s
"one call"), interleaved round by round. Prints each layout's padding (share of the padded token positions, specials
left out), its seconds per round, and its throughput against one call's in the same round.

    PYTHONPATH=. python docs/experiments/commit_batches.py [ROUNDS]    # 3 rounds: about 20 minutes on 2 cores
"""

import statistics
import sys
import time
from pathlib import Path

from indexer.bench import texts_of
from indexer.chunking import chunk_document, first_slice
from indexer.config import default_overlap
from indexer.encoder import BATCH_OVERHEAD_TOKENS, Encoder, length_batches
from indexer.loaders import Document
from indexer.pipeline import CHARS_PER_BATCH, CHUNKS_PER_ENCODE, _batched

texts = texts_of(Path(__file__).resolve().parents[3] / "shared/datasets/msmarco-5k", None)
enc = Encoder.load(None)
overlap = default_overlap(enc.max_tokens)


def cut(per):
    calls = []
    for batch in _batched((Document(str(i), t) for i, t in enumerate(texts)), per, CHARS_PER_BATCH):
        ids = [c.token_ids for d, first in zip(batch, enc.tokenize([first_slice(d.content) for d in batch]))
               for c in chunk_document(d.doc_id, d.content, enc.tokenize, window=enc.window, overlap=overlap,
                                       first=first, exact_at_word_boundaries=enc.exact_at_word_boundaries)]
        calls += [ids[i:i + CHUNKS_PER_ENCODE] for i in range(0, len(ids), CHUNKS_PER_ENCODE)]
    return calls


def padding(calls):
    real = padded = 0
    for call in calls:
        order = sorted(range(len(call)), key=lambda k: -len(call[k]))
        for b in length_batches([len(call[k]) for k in order], enc.batch_size, BATCH_OVERHEAD_TOKENS):
            lengths = [len(call[order[k]]) for k in b]
            real += sum(lengths)
            padded += len(lengths) * max(lengths)
    return 1 - real / padded


configs = {p: cut(p) for p in (512, 1024, 2048)}
configs["one"] = [[ids for call in configs[512] for ids in call]]
for k, c in configs.items():
    print(k, "calls", len(c), "padding %.2f%%" % (100 * padding(c)), flush=True)
enc.encode_ids(configs[512][0])  # warm-up
times = {k: [] for k in configs}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for k, calls in configs.items():
        t = time.perf_counter()
        for ids in calls:
            enc.encode_ids(ids)
        times[k].append(time.perf_counter() - t)
        print(r, k, "%.2f" % times[k][-1], flush=True)
for k in configs:
    rel = [o / x for o, x in zip(times["one"], times[k])]
    print(k, "median %.2f s" % statistics.median(times[k]), "throughput vs one call: rounds", ["%.3f" % x for x in rel],
          "median %.3f" % statistics.median(rel))
