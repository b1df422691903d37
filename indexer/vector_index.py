"""Which FAISS index serves a representation: exact (`flat`, the default), approximate (`hnsw`), or
approximate and compressed (`ivf`).

The choice and its build settings are an `IndexSpec`, saved in the manifest as JSON. Every FAISS
file is an `IndexIDMap2` over the chosen index, so chunk ids and `verify` work the same for every
type. `flat` and `hnsw` keep the vectors uncompressed: only the neighbour search is approximate,
never the scores. `ivf` (an inverted file over k-means lists, each vector kept as 8-bit scalar or
product-quantisation codes) returns approximate scores: its candidates are re-scored exactly with
the stored float32 vectors (`store.IndexReader.search`, `rerank`), so users see exact scores too.

The search effort of an approximate index (HNSW's efSearch, IVF's nprobe: `EFFORT`) is tuned per
representation when it is built from scratch (`tune_search_effort`): the smallest value whose
recall@10 on query-like probes made from a held-out sample of the collection (`build_tuned`),
against exact search, reaches the spec's `recall_target`. An explicit `ef_search` / `nprobe` fixes
it instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, get_args

import faiss
import numpy as np

from .config import require_one_of

log = logging.getLogger("indexer.vector_index")

IndexType = Literal["flat", "hnsw", "ivf"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
#: the search-effort setting of each approximate type: the IndexSpec field that fixes it, and the
#: RepresentationRecord field that records the tuned value
EFFORT: dict[str, str] = {"hnsw": "ef_search", "ivf": "nprobe"}
#: recall@10 against exact search that a tuned efSearch reaches on the collection's own vectors
DEFAULT_RECALL_TARGET = 0.95
#: efSearch of a graph that records none (cannot happen for indexes this version writes; kept for safety)
FALLBACK_EF_SEARCH = 1024
#: The tuning ladder: efSearch doubles from EF_START until the target is reached (at most EF_CAP, or the number
#: of vectors), then a binary search between the last two values narrows it to within 1/16.
EF_START, EF_CAP = 16, 8192
TUNING_QUERIES, TUNING_K, TUNING_SEED = 500, 10, 0
#: IVF: lists per index when `nlist` is None (about 4 sqrt(n), at least 1, at most n / IVF_POINTS_PER_LIST so that
#: k-means has enough points per centroid); the k-means training sample (seeded): IVF_TRAIN_PER_LIST vectors per
#: list, at least IVF_TRAIN_MIN (what 8-bit product quantisation wants: 256 centroids x 39), at most IVF_TRAIN_CAP
IVF_POINTS_PER_LIST, IVF_TRAIN_PER_LIST, IVF_TRAIN_MIN, IVF_TRAIN_CAP = 39, 50, 9984, 200_000
DEFAULT_QUANTIZER, DEFAULT_RERANK = "sq8", 4


@dataclass(frozen=True)
class IndexSpec:
    """`flat`: exact inner-product search. `hnsw`: a graph with `m` links per vector, built with
    `ef_construction` candidates per insertion and searched with `ef_search` candidates (more: better recall,
    slower). `ivf`: `nlist` k-means lists (None: from the collection's size, see IVF_POINTS_PER_LIST), each vector
    stored as `quantizer` codes (`sq8`: one byte per dimension; `pqM`: M bytes, M sub-quantisers), `nprobe` lists
    searched per query, and `rerank` x n candidates re-scored exactly with the stored vectors for n results.
    `ef_search` / `nprobe` None (the default) tunes it per representation to reach `recall_target`."""

    type: IndexType = "flat"
    m: int = 32
    #: 200, not 100: at 1M vectors (README, round two) the better graph needs efSearch 544 / 1,856 instead of
    #: 736 / 2,816 for the recall target (search 25% faster), for twice the build time
    ef_construction: int = 200
    ef_search: int | None = None
    recall_target: float = DEFAULT_RECALL_TARGET
    nlist: int | None = None
    quantizer: str = DEFAULT_QUANTIZER
    nprobe: int | None = None
    rerank: int = DEFAULT_RERANK

    def __post_init__(self) -> None:
        require_one_of(self.type, IndexType, "index type")
        for name, low in (("m", 2), ("ef_construction", 1), ("ef_search", 1), ("nlist", 1), ("nprobe", 1), ("rerank", 1)):
            value = getattr(self, name)
            if name in ("ef_search", "nlist", "nprobe") and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
        target = self.recall_target
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise ValueError(f"recall_target must be a number above 0 and at most 1, got {target!r}")
        quantizer_codes(self.quantizer)

    @property
    def effort(self) -> int | None:
        """The fixed search effort of an approximate type (efSearch, nprobe); None: tuned, or `flat`."""
        return getattr(self, EFFORT[self.type]) if self.type in EFFORT else None

    @property
    def tuned(self) -> bool:
        """Whether the search effort is tuned per representation (no fixed value)."""
        return self.type in EFFORT and self.effort is None

    def to_dict(self) -> dict:
        """What the manifest records: the type, and its own settings (the recall target when it is used, or not the
        default; a fixed ef_search / nprobe when there is one, as manifests before tuning wrote it)."""
        if self.type == "flat":
            return {"type": "flat"}
        if self.type == "hnsw":
            out: dict = {"type": self.type, "m": self.m, "ef_construction": self.ef_construction}
        else:
            out = {"type": self.type, **({} if self.nlist is None else {"nlist": self.nlist}), "quantizer": self.quantizer,
                   "rerank": self.rerank}
        if self.effort is not None:
            out[EFFORT[self.type]] = self.effort
        if self.effort is None or self.recall_target != DEFAULT_RECALL_TARGET:
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
        name = {"hnsw": "efSearch", "ivf": "nprobe"}[self.type]
        effort = (f"{name} tuned per representation to recall@10 >= {self.recall_target:g}" if self.effort is None
                  else f"{name}={self.effort}")
        if self.type == "ivf":
            lists = "nlist from the collection size" if self.nlist is None else f"nlist={self.nlist}"
            return (f"ivf (approximate, compressed: {lists}, {self.quantizer} codes, {effort}, "
                    f"{self.rerank}x candidates re-scored exactly)")
        return f"hnsw (approximate: M={self.m}, efConstruction={self.ef_construction}, {effort})"


QUANTIZERS = "sq8 (one byte per dimension) or pqM (M bytes: M sub-quantisers, M dividing the dimension), e.g. pq48"


def quantizer_codes(quantizer: str) -> int | None:
    """None for `sq8`, M for `pqM`; a ValueError naming the value and the valid ones otherwise."""
    if quantizer == "sq8":
        return None
    if isinstance(quantizer, str) and quantizer.startswith("pq") and quantizer[2:].isdigit() and int(quantizer[2:]) >= 1:
        return int(quantizer[2:])
    raise ValueError(f"unknown quantizer {quantizer!r}; valid: {QUANTIZERS}")


def default_nlist(n: int) -> int:
    """IVF lists for `n` vectors: about 4 sqrt(n), at least 1, at most n / IVF_POINTS_PER_LIST."""
    return max(1, min(round(4 * np.sqrt(n)), n // IVF_POINTS_PER_LIST))


def build(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray, *, effort: int | None = None, nlist: int | None = None,
          seed: int = TUNING_SEED) -> faiss.Index:
    """A FAISS index of `spec`'s type over the unit vectors `matrix`, keyed by `ids`. An IVF index is trained first
    (`nlist` lists, else the spec's or `default_nlist`) on a seeded sample of `matrix` (see IVF_TRAIN_PER_LIST)."""
    dim = matrix.shape[1]
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if spec.type == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.ef_construction
    else:
        inner = _trained_ivf(spec, matrix, nlist or spec.nlist or default_nlist(len(matrix)), seed)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(matrix, np.ascontiguousarray(ids, dtype=np.int64))
    configure(index, spec, effort=effort)
    return index


def _trained_ivf(spec: IndexSpec, matrix: np.ndarray, nlist: int, seed: int) -> faiss.Index:
    """An empty IVF index (IndexFlatIP coarse quantiser, inner product) of `nlist` lists and `spec.quantizer` codes,
    trained on a seeded sample of `matrix`. Product quantisation uses 8-bit codes (256 centroids per
    sub-quantiser) when the sample has the 39 x 256 points k-means wants, fewer bits for small collections."""
    n, dim = matrix.shape
    if n < 1:
        raise ValueError("an ivf index needs at least one vector to train on")
    nlist = min(nlist, n)
    size = min(n, max(IVF_TRAIN_PER_LIST * nlist, IVF_TRAIN_MIN), IVF_TRAIN_CAP)
    sample = matrix if size == n else matrix[np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))]
    coarse = faiss.IndexFlatIP(dim)
    codes = quantizer_codes(spec.quantizer)
    if codes is None:
        inner = faiss.IndexIVFScalarQuantizer(coarse, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    else:
        if dim % codes:
            valid = ", ".join(f"pq{m}" for m in range(1, dim + 1) if dim % m == 0)
            raise ValueError(f"quantizer {spec.quantizer!r} needs a dimension divisible by {codes}, got {dim}; valid: sq8, {valid}")
        bits = int(min(8, max(1, np.log2(max(2, size // IVF_POINTS_PER_LIST)))))
        inner = faiss.IndexIVFPQ(coarse, dim, nlist, codes, bits, faiss.METRIC_INNER_PRODUCT)
    inner.cp.seed = seed
    if codes is not None:
        inner.pq.cp.seed = seed
    inner.train(np.ascontiguousarray(sample))
    return inner  # FAISS's Python wrapper keeps `coarse` alive with it


def build_timed(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray) -> tuple[faiss.Index, float]:
    started = time.perf_counter()
    index = build(spec, ids, matrix)
    return index, time.perf_counter() - started


_KINDS = {"IndexFlatIP": "flat", "IndexHNSWFlat": "hnsw", "IndexIVFScalarQuantizer": "ivf", "IndexIVFPQ": "ivf"}


def kind_of(index: faiss.Index) -> str:
    """`flat`, `hnsw` or `ivf` for an index this module built (anything else: FAISS's class name)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return _KINDS.get(type(inner).__name__, type(inner).__name__)


def configure(index: faiss.Index, spec: IndexSpec, *, effort: int | None = None) -> None:
    """Set the search-time settings of a built or loaded index: HNSW's efSearch or IVF's nprobe is `effort` (a
    representation's tuned value), else the spec's fixed one."""
    inner = faiss.downcast_index(index.index)
    if spec.type == "hnsw":
        inner.hnsw.efSearch = effort or spec.ef_search or FALLBACK_EF_SEARCH
    elif spec.type == "ivf":
        inner.nprobe = min(effort or spec.nprobe or inner.nlist, inner.nlist)  # no value recorded: every list (exact)


def effort_of(index: faiss.Index) -> int | None:
    """The search effort an approximate index is searched with: HNSW's efSearch, IVF's nprobe (None for `flat`)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        return int(inner.hnsw.efSearch)
    if isinstance(inner, faiss.IndexIVF):
        return int(inner.nprobe)
    return None


def nlist_of(index: faiss.Index) -> int | None:
    """The number of lists of an IVF index (None for other types)."""
    inner = faiss.downcast_index(index.index)
    return int(inner.nlist) if isinstance(inner, faiss.IndexIVF) else None


class Excluded:
    """Chunk ids left in a FAISS index but never returned (tombstones of deleted or replaced chunks): the search
    parameters that filter them, and the selectors those parameters point to (kept alive here)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._batch = faiss.IDSelectorBatch(self.ids)
        self._not = faiss.IDSelectorNot(self._batch)

    def params(self, index: faiss.Index) -> faiss.SearchParameters:
        """Parameters for one search of `index` (an IndexIDMap2: FAISS translates the selector to its inner ids)."""
        kind, effort = kind_of(index), effort_of(index)
        if kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=self._not, efSearch=effort)
        if kind == "ivf":
            return faiss.SearchParametersIVF(sel=self._not, nprobe=effort)
        return faiss.SearchParameters(sel=self._not)


def search(index: faiss.Index, queries: np.ndarray, n: int, excluded: Excluded | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the n best vectors of `index` per query, never an `excluded` id."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if excluded is None or not len(excluded.ids):
        return index.search(queries, n)
    return index.search(queries, n, params=excluded.params(index))


@dataclass(frozen=True)
class Tuning:
    """The search effort chosen for an approximate index (HNSW's efSearch, IVF's nprobe), the recall@10 it reached on
    `queries` probes made from a sample of the collection held out of the index while it was tuned, what they were
    (`probes`: PROBES_TEXT or PROBES_VECTORS, see `build_tuned`), every (effort, mean recall, its lower confidence
    bound) tried on the way, and the seconds the tuning took."""

    effort: int
    recall: float | None
    queries: int
    tried: tuple[tuple[int, float, float], ...] = ()
    seconds: float = 0.0
    probes: str | None = None


#: What a tuning's probes were (`Tuning.probes`, recorded per representation): pseudo-queries of the held-out
#: chunks' texts encoded by the index's model, or the held-out vectors turned away from themselves (`query_probes`)
#: where no encoder was at hand.
PROBES_TEXT, PROBES_VECTORS = "pseudo-queries", "perturbed vectors"


def build_tuned(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray, *, queries: int = TUNING_QUERIES,
                seed: int = TUNING_SEED, probes: Callable[[np.ndarray], np.ndarray | None] | None = None,
                ) -> tuple[faiss.Index, Tuning, float]:
    """(index, tuning, build seconds): an approximate index over `matrix` keyed by `ids` (sorted, as the store
    reads them), its search effort tuned to `spec.recall_target` on a seeded sample of the vectors (up to `queries`,
    at most a tenth of them).

    The sample is held out: the index is built over the other vectors, tuned with query-like probes made from the
    sample against their exact top-10 among those others, and only then are the sampled vectors added. A vector
    already in a graph is an easy query (the search lands on it and its links are its neighbours: with the self-hit
    merely dropped, recall measured on such queries was several points higher than on unseen queries), so held-out
    chunks stand for queries the index has never seen. The last vectors added change the graph as any insertion
    order would; an IVF index's lists are trained on the other vectors, and the sample is added to them without
    retraining. An IVF index is tuned as it is searched: `spec.rerank` x 10 candidates, re-scored exactly.

    `probes(held_out_ids)` gives the probes, one row per held-out id in the space of `matrix`: the publisher's
    pseudo-queries of those chunks' texts encoded by the index's model (`staging.publish`). Without it (or when it
    gives None) the held-out vectors themselves are turned into probes (`query_probes`), a cruder stand-in."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    size = min(queries, n // 10)
    start = _ladder(spec, n)[0]
    if size < 1:  # too few vectors to tune on: an index this small is searched whole from the start value
        index, seconds = build_timed(spec, ids, matrix)
        configure(index, spec, effort=start if spec.type == "hnsw" else nlist_of(index))
        return index, Tuning(effort_of(index), None, 0), seconds
    rows = np.zeros(n, dtype=bool)
    rows[np.random.default_rng(seed).choice(n, size=size, replace=False)] = True
    started = time.perf_counter()
    index = build(spec, ids[~rows], matrix[~rows], seed=seed)  # IVF: nlist from the vectors it is trained on
    seconds = time.perf_counter() - started
    made = probes(ids[rows]) if probes is not None else None
    kind = PROBES_TEXT if made is not None else PROBES_VECTORS
    if made is None:
        made = query_probes(matrix[rows], np.random.default_rng(seed + 1))
    elif np.shape(made) != (size, matrix.shape[1]):
        raise ValueError(f"{np.shape(made)} probes for {size} held-out vectors of dimension {matrix.shape[1]}")
    tuning = tune_search_effort(index, matrix[~rows], made, spec.recall_target, base_ids=ids[~rows], rerank=spec.rerank)
    tuning = dataclasses.replace(tuning, probes=kind)
    started = time.perf_counter()
    index.add_with_ids(np.ascontiguousarray(matrix[rows], dtype=np.float32), ids[rows])
    return index, tuning, seconds + time.perf_counter() - started


#: The cosine between a tuning probe and the held-out vector it is made from (see query_probes).
PROBE_COSINE = 0.5


def query_probes(vectors: np.ndarray, rng: np.random.Generator, cosine: float = PROBE_COSINE) -> np.ndarray:
    """Query-like probes made from held-out vectors: each turned towards a random direction orthogonal to it until
    their cosine is `cosine` (unit vectors in, unit vectors out).

    Queries are not documents: a query shares a topic with its best documents but lies farther from the collection
    than one document lies from another, in a sparser region where approximate search is harder. Measured at
    100,000 synthetic vectors with the bench's real msmarco queries (README, "Approximate search"), held-out documents
    were optimistic stand-ins (tuned efSearch 104/128 for `pooled`/`mean`; the real queries reached recall@10 0.89
    and 0.85 there), while probes at cosine 0.5 needed as much efSearch as the real queries or more. One cosine does
    not fit every space (at 1M they over-tuned `pooled` and under-tuned `mean`): this is the fallback for a tuning
    without the index's model; pseudo-queries of the chunks' texts are the probes otherwise (`build_tuned`)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    units = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    noise = rng.standard_normal(units.shape).astype(np.float32)
    noise -= np.sum(noise * units, axis=1, keepdims=True) * units  # orthogonal to its vector
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    probes = cosine * units + np.sqrt(1 - cosine * cosine) * noise
    return np.ascontiguousarray(probes / np.linalg.norm(probes, axis=1, keepdims=True), dtype=np.float32)


def _ladder(spec_or_kind: IndexSpec | str, n: int, lists: int | None = None) -> tuple[int, int]:
    """(start, cap) of the tuning ladder: efSearch from EF_START up to EF_CAP (or n); nprobe from 1 up to every list."""
    kind = spec_or_kind if isinstance(spec_or_kind, str) else spec_or_kind.type
    if kind == "ivf":
        return 1, max(1, lists or 1)
    return EF_START, max(EF_START, min(EF_CAP, n))


def rerank_exact(scores: np.ndarray, found: np.ndarray, queries: np.ndarray, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best of each query's candidates `found` (-1: none) by exact inner product with their float32 `vectors`
    (one row per candidate, in `found`'s shape plus the dimension): (scores, ids) sorted best first, as FAISS orders
    them (-1 ids, scored like FAISS's empty slots, last). `scores` are the approximate ones, only for their shape."""
    exact = np.einsum("qd,qcd->qc", queries, vectors, dtype=np.float32, optimize=False)
    exact[found < 0] = -np.finfo(np.float32).max
    order = np.argsort(-exact, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(exact, order, axis=1).astype(scores.dtype), np.take_along_axis(found, order, axis=1)


def tune_search_effort(index: faiss.Index, base: np.ndarray, queries: np.ndarray, target: float, *, k: int = TUNING_K,
                       base_ids: np.ndarray | None = None, rerank: int | None = None) -> Tuning:
    """The smallest search effort on the ladder (`_ladder`: HNSW's efSearch, IVF's nprobe) at which `index` (over
    the vectors `base`, keyed by the sorted `base_ids`, default 0..n-1) finds the exact top-k of `queries` (vectors
    not in it) with recall >= `target` (its 97.5% lower confidence bound on the sample, see `recall`); the index is
    left set to it. `tried` records the sample's mean recall at each value. With `rerank` (IVF), k x rerank
    candidates are fetched and re-scored exactly with `base`, as searches do.

    The effort doubles from the start until the target is reached (at most the cap), then a binary search between
    the last two values narrows it to within 1/16. A hit counts as correct when its exact score reaches the k-th
    exact score, so ties (duplicate vectors) are not counted as misses. If even the cap misses the target, the cap
    is kept and its recall recorded (and logged)."""
    started = time.perf_counter()
    n = len(base)
    k = min(k, n)
    kind = kind_of(index)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    spec = IndexSpec(type=kind)
    first, cap = _ladder(kind, n, nlist_of(index))
    if k < 1 or not len(queries):
        configure(index, spec, effort=first)
        return Tuning(first, None, 0)
    exact = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)[0]
    kth = exact[:, -1] - 1e-5  # float error between two computations of the same inner product
    base_ids = np.arange(n, dtype=np.int64) if base_ids is None else np.asarray(base_ids, dtype=np.int64)
    fetch = min(n, k * rerank) if rerank else k
    tried: dict[int, float] = {}
    bounds: dict[int, float] = {}

    def recall(effort: int) -> float:
        """The sample's recall's lower confidence bound (mean - 1.96 standard errors): a value reaching the target
        on it reaches it, with 97.5% confidence, on unseen queries of the same kind, not only on this sample."""
        if effort not in tried:
            configure(index, spec, effort=effort)
            scores, found = index.search(queries, fetch)
            if rerank:
                rows = np.searchsorted(base_ids, np.maximum(found, 0))
                scores, found = rerank_exact(scores, found, queries, base[rows], k)
            per_query = ((scores >= kth[:, None]) & (found >= 0)).sum(axis=1) / k
            tried[effort] = float(per_query.mean())
            bounds[effort] = tried[effort] - 1.96 * float(per_query.std()) / np.sqrt(len(per_query))
        return bounds[effort]

    lo, hi = None, first
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
        log.warning("%s %d (the cap) reaches recall@%d %.3f on the sample, below the target %.3f",
                    {"hnsw": "efSearch", "ivf": "nprobe"}[kind], hi, k, tried[hi], target)
    configure(index, spec, effort=hi)
    return Tuning(hi, round(tried[hi], 4), len(queries), tuple((e, tried[e], bounds[e]) for e in sorted(tried)),
                  time.perf_counter() - started)
