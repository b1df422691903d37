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
    """The efSearch chosen for a graph, the recall@10 it reached on `queries` of the collection's own vectors held out
    of the graph while it was tuned, every (efSearch, mean recall, its lower confidence bound) tried on the way, and
    the seconds the tuning took."""

    ef_search: int
    recall: float | None
    queries: int
    tried: tuple[tuple[int, float, float], ...] = ()
    seconds: float = 0.0


def build_tuned(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray, *, queries: int = TUNING_QUERIES,
                seed: int = TUNING_SEED) -> tuple[faiss.Index, Tuning, float]:
    """(index, tuning, build seconds): an HNSW graph over `matrix` keyed by `ids`, its efSearch tuned to
    `spec.recall_target` on a seeded sample of the vectors (up to `queries`, at most a tenth of them).

    The sample is held out: the graph is built over the other vectors, tuned with the sample as queries against the
    exact top-10 of those others, and only then are the sampled vectors added. A vector already in the graph is an
    easy query (the search lands on it and its links are its neighbours: with the self-hit merely dropped, recall
    measured on such queries was several points higher than on unseen queries), so held-out vectors stand for
    queries the index has never seen. The last vectors added change the graph as any insertion order would."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    size = min(queries, n // 10)
    if size < 1:  # too few vectors to tune on: a graph this small is searched whole from the start value
        index, seconds = build_timed(spec, ids, matrix)
        configure(index, spec, ef_search=EF_START)
        return index, Tuning(EF_START, None, 0), seconds
    rows = np.zeros(n, dtype=bool)
    rows[np.random.default_rng(seed).choice(n, size=size, replace=False)] = True
    started = time.perf_counter()
    index = build(spec, ids[~rows], matrix[~rows])
    seconds = time.perf_counter() - started
    tuning = tune_ef_search(index, matrix[~rows], matrix[rows], spec.recall_target)
    started = time.perf_counter()
    index.add_with_ids(np.ascontiguousarray(matrix[rows], dtype=np.float32), ids[rows])
    return index, tuning, seconds + time.perf_counter() - started


def tune_ef_search(index: faiss.Index, base: np.ndarray, queries: np.ndarray, target: float, *, k: int = TUNING_K) -> Tuning:
    """The smallest efSearch on the ladder (see EF_START) at which `index` (HNSW over the vectors `base`) finds the
    exact top-k of `queries` (vectors not in it) with recall >= `target` (its 97.5% lower confidence bound on the
    sample, see `recall`); the index is left set to it. `tried` records the sample's mean recall at each value.

    A hit counts as correct when its exact score reaches the k-th exact score, so ties (duplicate vectors) are not
    counted as misses. If even the cap misses the target, the cap is kept and its recall recorded (and logged)."""
    started = time.perf_counter()
    n = len(base)
    k = min(k, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if k < 1 or not len(queries):
        configure(index, IndexSpec(type="hnsw"), ef_search=EF_START)
        return Tuning(EF_START, None, 0)
    exact = faiss.knn(queries, np.ascontiguousarray(base, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)[0]
    kth = exact[:, -1] - 1e-5  # float error between two computations of the same inner product
    hnsw = faiss.downcast_index(index.index).hnsw
    tried: dict[int, float] = {}

    bounds: dict[int, float] = {}

    def recall(ef: int) -> float:
        """The sample's recall's lower confidence bound (mean - 1.96 standard errors): a value reaching the target
        on it reaches it, with 97.5% confidence, on unseen queries of the same kind, not only on this sample."""
        if ef not in tried:
            hnsw.efSearch = ef
            scores, found = index.search(queries, k)
            per_query = ((scores >= kth[:, None]) & (found >= 0)).sum(axis=1) / k
            tried[ef] = float(per_query.mean())
            bounds[ef] = tried[ef] - 1.96 * float(per_query.std()) / np.sqrt(len(per_query))
        return bounds[ef]

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
        log.warning("efSearch %d (the cap) reaches recall@%d %.3f on the sample, below the target %.3f", hi, k, tried[hi], target)
    hnsw.efSearch = hi
    return Tuning(hi, round(tried[hi], 4), len(queries), tuple((ef, tried[ef], bounds[ef]) for ef in sorted(tried)),
                  time.perf_counter() - started)
