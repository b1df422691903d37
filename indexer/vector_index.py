"""Which FAISS index serves a representation: exact (`flat`, the default) or approximate (`hnsw`).

The choice and its build settings are an `IndexSpec`, saved in the manifest as JSON. Every FAISS
file is an `IndexIDMap2` over the chosen index, so chunk ids, `reconstruct` and `verify` work the
same for every type. Both types keep the vectors uncompressed: only the neighbour search is
approximate, never the scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal, Mapping, get_args

import faiss
import numpy as np

from .config import require_one_of

IndexType = Literal["flat", "hnsw"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)


@dataclass(frozen=True)
class IndexSpec:
    """`flat`: exact inner-product search. `hnsw`: a graph with `m` links per vector, built with
    `ef_construction` candidates per insertion and searched with `ef_search` (more: better recall, slower)."""

    type: IndexType = "flat"
    m: int = 32
    ef_construction: int = 100
    ef_search: int = 1024

    def __post_init__(self) -> None:
        require_one_of(self.type, IndexType, "index type")
        for name, low in (("m", 2), ("ef_construction", 1), ("ef_search", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")

    def to_dict(self) -> dict:
        """What the manifest records: the type, and for `hnsw` its settings."""
        return {"type": "flat"} if self.type == "flat" else asdict(self)

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
        return f"hnsw (approximate: M={self.m}, efConstruction={self.ef_construction}, efSearch={self.ef_search})"


def build(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray) -> faiss.Index:
    """A FAISS index of `spec`'s type over the unit vectors `matrix`, keyed by `ids`."""
    dim = matrix.shape[1]
    if spec.type == "flat":
        inner = faiss.IndexFlatIP(dim)
    else:
        inner = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.ef_construction
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(np.ascontiguousarray(matrix, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    configure(index, spec)
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
    """Set the search-time settings (HNSW's efSearch) of a built or loaded index."""
    if spec.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = ef_search or spec.ef_search
