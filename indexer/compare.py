"""How two rankings of the same query agree: shared documents, rank-biased overlap, rank movement.

Rankings from different representations are compared by rank only: their scores live in
different spaces.
"""

from __future__ import annotations

from typing import Sequence


def overlap_at_k(a: Sequence[str], b: Sequence[str], k: int) -> int:
    """Number of documents in both top-k lists."""
    return len(set(a[:k]) & set(b[:k]))


def rank_biased_overlap(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap of two rankings evaluated to the same depth.

    RBO_ext of Webber, Moffat & Zobel (2010), eq. 32: the agreement at every depth d, weighted
    by p**d, assuming the agreement seen at the last depth continues. 1.0 for identical lists,
    0.0 for disjoint ones; p = 0.9 puts about 86% of the weight on the top 10.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    k = min(len(a), len(b))
    if k == 0:
        return 0.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap = 0
    total = 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += overlap / d * p**d
    return overlap / k * p**k + (1 - p) / p * total


def counterpart(representations: Sequence[str], r: str) -> str | None:
    """The ranking a representation's list is compared with: the first other one (pooled <-> mean,
    cls -> pooled); None when the index holds one representation."""
    return next((o for o in representations if o != r), None)


def other_ranks(a: Sequence[str], b: Sequence[str]) -> dict[str, int | None]:
    """For each document of ranking `a`, its 1-based rank in ranking `b` (None: only in `a`)."""
    where = {doc: i + 1 for i, doc in enumerate(b)}
    return {doc: where.get(doc) for doc in a}


def movement(rank: int, other: int | None) -> str:
    """A document's place in the other list, as shown beside a hit: "↑2", "↓3", "=" or "only here"."""
    if other is None:
        return "only here"
    if other == rank:
        return "="
    return f"↓{other - rank}" if other > rank else f"↑{rank - other}"
