"""How rankings of the same query agree with a baseline ranking: shared documents, rank-biased overlap, rank movement.

Rankings from different representations are compared by rank only: their scores live in
different spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence


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


#: Most rankings shown side by side (the app's Search page); more columns are too narrow to read.
MAX_COLUMNS = 4


def default_columns(representations: Sequence[str]) -> tuple[str, ...]:
    """The representations shown before the user picks: the first two (all of them when there are fewer)."""
    return tuple(representations[:2])


def columns_problem(picked: Sequence[str]) -> str | None:
    """Why a pick of representations cannot be shown side by side, or None when it can."""
    if not picked:
        return "pick at least one representation to show"
    if len(picked) > MAX_COLUMNS:
        return f"at most {MAX_COLUMNS} representations can be shown side by side ({len(picked)} picked)"
    if twice := [r for i, r in enumerate(picked) if r in picked[:i]]:
        return f"{', '.join(dict.fromkeys(twice))} is picked twice"  # one column each: a link may name one twice
    return None


#: Depth at which rankings are compared (overlap, RBO), whatever number of hits a page shows: a figure that
#: changed with the display length would not be comparable from one view to the next.
AGREEMENT_DEPTH = 10

#: How deep each ranking is searched for a page: a document's rank in another list is known down to here.
SEARCH_DEPTH = 100


@dataclass(frozen=True)
class Agreement:
    """How one ranking agrees with the baseline ranking of the same query.

    `overlap` and `rbo` are measured on the first `k` documents of both; `ranks`: each document of the
    ranking with its 1-based rank in the whole baseline ranking given, `searched` documents deep (None: not there).
    """

    baseline: str
    overlap: int
    k: int
    rbo: float
    ranks: dict[str, int | None]
    searched: int | None = None

    def movement(self, doc_id: str, rank: int, shown: int | None = None) -> str:
        """Where the document at `rank` stands in the baseline, as shown beside a hit ("↑2", "rank 57")."""
        return movement(rank, self.ranks.get(doc_id), shown=shown, searched=self.searched)


def against_baseline(rankings: Mapping[str, Sequence[str]], baseline: str | None = None, k: int | None = None) -> dict[str, Agreement]:
    """Every ranking other than the baseline's (default: the first), compared with the baseline's ranking.

    The one rule by which rankings are compared (the app's columns, the CLI's table): always
    against one chosen ranking, so every number and arrow on a page shares a reference.
    `k`: depth of the overlap and RBO (default: the longer list's length); rankings may run deeper,
    so that the ranks behind the arrows are known further down than the agreement is measured.
    """
    if not rankings:
        return {}
    baseline = next(iter(rankings)) if baseline is None else baseline
    if baseline not in rankings:
        raise ValueError(f"unknown baseline {baseline!r}; the rankings are {', '.join(rankings)}")
    base = list(rankings[baseline])
    out = {}
    for r, ranking in rankings.items():
        if r == baseline:
            continue
        ranking = list(ranking)
        wanted = k if k is not None else max(len(ranking), len(base))
        depth = min(wanted, len(ranking), len(base)) if ranking and base else wanted
        out[r] = Agreement(baseline, overlap_at_k(ranking, base, depth), depth,
                           rank_biased_overlap(ranking[:depth], base[:depth]), other_ranks(ranking, base), len(base))
    return out


def other_ranks(a: Sequence[str], b: Sequence[str]) -> dict[str, int | None]:
    """For each document of ranking `a`, its 1-based rank in ranking `b` (None: only in `a`)."""
    where = {doc: i + 1 for i, doc in enumerate(b)}
    return {doc: where.get(doc) for doc in a}


def movement(rank: int, other: int | None, *, shown: int | None = None, searched: int | None = None) -> str:
    """A document's place in the other list, as shown beside a hit: "↑2", "↓3" or "=" while the other list
    shows it too (its first `shown` documents; all when None), "rank 57" below those, and "not in top 100"
    when the other list, searched `searched` deep, does not hold it ("only here" when that depth is unknown)."""
    if other is None:
        return f"not in top {searched}" if searched else "only here"
    if shown is not None and other > shown:
        return f"rank {other}"
    if other == rank:
        return "="
    return f"↓{other - rank}" if other > rank else f"↑{rank - other}"


@dataclass(frozen=True)
class Missed:
    """A judged-relevant document that a ranking leaves out of its shown top: its grade and where it is."""

    doc_id: str
    grade: int
    rank: int | None  # 1-based rank in the deeper ranking; None: not in it


def relevant(grades: Mapping[str, int], threshold: int = 1) -> dict[str, int]:
    """The judged documents that count as relevant: grade >= threshold."""
    return {doc: g for doc, g in grades.items() if g >= threshold}


#: Judged-relevant documents a list of missed ones names (nearest first); the rest are counted, not named (a
#: labelled set may judge hundreds of documents relevant to one query).
MISSED_LISTED = 10


def missed_relevant(ranking: Sequence[str], grades: Mapping[str, int], k: int, threshold: int = 1) -> list[Missed]:
    """Relevant documents (grade >= threshold) not in the ranking's first k, nearest first (then by grade);
    `ranking` may run deeper than k, and gives the rank of those it holds."""
    where = {doc: i + 1 for i, doc in enumerate(ranking)}
    out = [Missed(doc, g, where.get(doc)) for doc, g in relevant(grades, threshold).items() if where.get(doc, k + 1) > k]
    return sorted(out, key=lambda m: (m.rank is None, m.rank or 0, -m.grade, m.doc_id))
