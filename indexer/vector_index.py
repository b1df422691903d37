"""Which FAISS index serves a representation: exact (`flat`, the default) or approximate (`hnsw`).

The choice and its build settings are an `IndexSpec`, saved in the manifest as JSON. Every FAISS
file is an `IndexIDMap2` over the chosen index, so chunk ids, `reconstruct` and `verify` work the
same for every type. Both types keep the vectors uncompressed: only the neighbour search is
approximate, never the scores.

HNSW's search effort (efSearch) is tuned per representation when a graph is built from scratch
(`tune_ef_search`): the smallest value whose recall@10 on a sample of the collection's own vectors,
against exact search, reaches the spec's `recall_target`. An explicit `ef_search` fixes it instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal, Mapping, get_args

import faiss
import numpy as np

from .config import require_one_of

log = logging.getLogger("indexer.vector_index")

IndexType = Literal["flat", "hnsw"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
#: recall@10 against exact search that a tuned efSearch reaches on the collection's own vectors
DEFAULT_RECALL_TARGET = 0.95
#: efSearch of a graph that records none (cannot happen for indexes this version writes; kept for safety)
FALLBACK_EF_SEARCH = 1024
#: The tuning ladder: efSearch doubles from EF_START until the target is reached (at most EF_CAP, or the number
#: of vectors), then a binary search between the last two values narrows it to within 1/16.
EF_START, EF_CAP = 16, 8192
TUNING_QUERIES, TUNING_K, TUNING_SEED = 500, 10, 0


@dataclass(frozen=True)
class IndexSpec:
    """`flat`: exact inner-product search. `hnsw`: a graph with `m` links per vector, built with
    `ef_construction` candidates per insertion and searched with `ef_search` candidates (more: better recall,
    slower); `ef_search` None (the default) tunes it per representation to reach `recall_target`."""

    type: IndexType = "flat"
    m: int = 32
    ef_construction: int = 100
    ef_search: int | None = None
    recall_target: float = DEFAULT_RECALL_TARGET

    def __post_init__(self) -> None:
        require_one_of(self.type, IndexType, "index type")
        for name, low in (("m", 2), ("ef_construction", 1), ("ef_search", 1)):
            value = getattr(self, name)
            if name == "ef_search" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
        target = self.recall_target
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise ValueError(f"recall_target must be a number above 0 and at most 1, got {target!r}")

    @property
    def tuned(self) -> bool:
        """Whether efSearch is tuned per representation (no fixed value)."""
        return self.type == "hnsw" and self.ef_search is None

    def to_dict(self) -> dict:
        """What the manifest records: the type, and for `hnsw` its settings (the recall target when it is used, or
        not the default; a fixed ef_search when there is one, as manifests before tuning wrote it)."""
        if self.type == "flat":
            return {"type": "flat"}
        out: dict = {"type": self.type, "m": self.m, "ef_construction": self.ef_construction}
        if self.ef_search is not None:
            out["ef_search"] = self.ef_search
        if self.ef_search is None or self.recall_target != DEFAULT_RECALL_TARGET:
            out["recall_target"] = self.recall_target
        return out

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "IndexSpec":
        """The spec of a manifest's `vector_index` (absent: `flat`, what indexes before it used)."""
        if data is None:
            return cls()
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown vector index setting {', '.join(sorted(unknown))}; valid: {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)

    @property
    def label(self) -> str:
        """Short description for messages and the app."""
        if self.type == "flat":
            return "flat (exact)"
        ef = (f"efSearch tuned per representation to recall@10 >= {self.recall_target:g}" if self.ef_search is None
              else f"efSearch={self.ef_search}")
        return f"hnsw (approximate: M={self.m}, efConstruction={self.ef_construction}, {ef})"


def build(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray, *, ef_search: int | None = None) -> faiss.Index:
    """A FAISS index of `spec`'s type over the unit vectors `matrix`, keyed by `ids`."""
    dim = matrix.shape[1]
    if spec.type == "flat":
        inner = faiss.IndexFlatIP(dim)
    else:
        inner = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.ef_construction
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(np.ascontiguousarray(matrix, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    configure(index, spec, ef_search=ef_search)
    return index


def build_timed(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray) -> tuple[faiss.Index, float]:
    started = time.perf_counter()
    index = build(spec, ids, matrix)
    return index, time.perf_counter() - started


def kind_of(index: faiss.Index) -> str:
    """`flat` or `hnsw` for an index this module built (anything else: FAISS's class name)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return {"IndexFlatIP": "flat", "IndexHNSWFlat": "hnsw"}.get(type(inner).__name__, type(inner).__name__)


def configure(index: faiss.Index, spec: IndexSpec, *, ef_search: int | None = None) -> None:
    """Set the search-time settings of a built or loaded index: HNSW's efSearch is `ef_search` (a representation's
    tuned value), else the spec's fixed one."""
    if spec.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = ef_search or spec.ef_search or FALLBACK_EF_SEARCH


def ef_search_of(index: faiss.Index) -> int | None:
    """The efSearch an HNSW index is searched with (None for other types)."""
    inner = faiss.downcast_index(index.index)
    return int(inner.hnsw.efSearch) if isinstance(inner, faiss.IndexHNSWFlat) else None


class Excluded:
    """Chunk ids left in a FAISS index but never returned (tombstones of deleted or replaced chunks): the search
    parameters that filter them, and the selectors those parameters point to (kept alive here)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._batch = faiss.IDSelectorBatch(self.ids)
        self._not = faiss.IDSelectorNot(self._batch)

    def params(self, index: faiss.Index) -> faiss.SearchParameters:
        """Parameters for one search of `index` (an IndexIDMap2: FAISS translates the selector to its inner ids)."""
        ef = ef_search_of(index)
        if ef is None:
            return faiss.SearchParameters(sel=self._not)
        return faiss.SearchParametersHNSW(sel=self._not, efSearch=ef)


def search(index: faiss.Index, queries: np.ndarray, n: int, excluded: Excluded | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the n best vectors of `index` per query, never an `excluded` id."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if excluded is None or not len(excluded.ids):
        return index.search(queries, n)
    return index.search(queries, n, params=excluded.params(index))


@dataclass(frozen=True)
class Tuning:
    """The efSearch chosen for a graph, the recall@10 it reached on `queries` of the collection's own vectors, and
    every (efSearch, recall) tried on the way."""

    ef_search: int
    recall: float | None
    queries: int
    tried: tuple[tuple[int, float], ...] = ()


def _without_self(scores: np.ndarray, ids: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of k+1 hits per row once the query's own id is dropped (the last hit when it is absent)."""
    keep = ids != own[:, None]
    keep[keep.all(axis=1), -1] = False
    return scores[keep].reshape(len(ids), k), ids[keep].reshape(len(ids), k)


def tune_ef_search(index: faiss.Index, ids: np.ndarray, matrix: np.ndarray, target: float, *,
                   queries: int = TUNING_QUERIES, k: int = TUNING_K, seed: int = TUNING_SEED) -> Tuning:
    """The smallest efSearch on the ladder (see EF_START) at which `index` (HNSW, holding `matrix` keyed by `ids`)
    finds the exact top-k of a seeded sample of its own vectors with recall >= `target`; the index is left set to it.

    Each query's own vector is dropped from both the exact and the approximate hits (k+1 are fetched), so the
    trivial self-match does not inflate the recall. A hit counts as correct when its exact score reaches the k-th
    exact score, so ties (duplicate vectors) are not counted as misses. If even the cap misses the target, the cap
    is kept and its recall recorded (and logged)."""
    n = len(ids)
    k = min(k, n - 1)
    if k < 1:
        configure(index, IndexSpec(type="hnsw"), ef_search=EF_START)
        return Tuning(EF_START, None, 0)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    sample = np.ascontiguousarray(matrix[rows], dtype=np.float32)
    own = np.asarray(ids, dtype=np.int64)[rows]
    exact_scores, exact_rows = faiss.knn(sample, np.ascontiguousarray(matrix, dtype=np.float32), k + 1,
                                         metric=faiss.METRIC_INNER_PRODUCT)
    exact_scores, _ = _without_self(exact_scores, exact_rows, rows, k)
    kth = exact_scores[:, -1] - 1e-5  # float error between FAISS's and BLAS's inner products
    hnsw = faiss.downcast_index(index.index).hnsw
    tried: dict[int, float] = {}

    def recall(ef: int) -> float:
        if ef not in tried:
            hnsw.efSearch = ef
            scores, found = index.search(sample, k + 1)
            scores, found = _without_self(scores, found, own, k)
            tried[ef] = float(np.mean(((scores >= kth[:, None]) & (found >= 0)).sum(axis=1) / k))
        return tried[ef]

    cap = max(EF_START, min(EF_CAP, n))
    lo, hi = None, EF_START
    while recall(hi) < target and hi < cap:
        lo, hi = hi, min(2 * hi, cap)
    if recall(hi) >= target and lo is not None:
        while hi - lo > max(1, hi // 16):
            mid = (lo + hi) // 2
            if recall(mid) >= target:
                hi = mid
            else:
                lo = mid
    elif recall(hi) < target:
        log.warning("efSearch %d (the cap) reaches recall@%d %.3f on the sample, below the target %.3f", hi, k, recall(hi), target)
    hnsw.efSearch = hi
    return Tuning(hi, round(tried[hi], 4), len(rows), tuple(sorted(tried.items())))
