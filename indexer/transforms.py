"""Post-processing fitted on a collection's vectors of one pooling: BERT-whitening and all-but-the-top.

Both are affine maps `x -> (x - mean) @ matrix`, followed by L2 normalisation so that inner
product stays cosine similarity; they differ only in the matrix fitted:

- `whiten` / `whitenK` (Su et al. 2021, "Whitening sentence representations"): matrix = U·S^-1/2
  from the SVD of the covariance, first K columns; the fitted vectors get identity covariance.
- `abttD` (Mu & Viswanath 2018, "All-but-the-top"): matrix = I - U_D·U_D^T, removing the top D
  principal directions (the common directions that dominate every vector).

A fitted transform is saved as safetensors (two float32 tensors, `center` = the fitted mean and
`matrix`; no pickle) inside an index
generation and applied to documents and queries alike. numpy only: the store uses it without torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .config import parse_representation

log = logging.getLogger("indexer.transforms")

#: Rows at a time when accumulating the covariance (bounded extra memory for any collection size).
_BLOCK = 65536
#: Eigenvalues below this fraction of the largest are taken as zero variance (rank deficiency).
_RANK_TOL = 1e-9


class TransformError(ValueError):
    """A transform that cannot be fitted on the given vectors (too few, or asking too many dimensions)."""


@dataclass(frozen=True)
class Transform:
    """A fitted affine map; `kind`/`param` as in the representation name (`whiten`, 128)."""

    kind: str
    param: int | None
    mean: np.ndarray  # (d_in,)
    matrix: np.ndarray  # (d_in, d_out)
    fitted_on: int  # number of vectors it was fitted on
    fitted_in: str = ""  # the index generation it was fitted for ("" outside an index)

    @property
    def dim_in(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """The affine map alone, without normalisation (what the papers' properties are stated for)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim_in:
            raise ValueError(f"expected vectors of {self.dim_in} dimensions, got shape {vectors.shape}")
        return (vectors - self.mean) @ self.matrix

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Transformed, L2-normalised float32 rows (a zero row stays zero)."""
        out = np.asarray(self.project(vectors), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        return save({"center": np.ascontiguousarray(self.mean, dtype=np.float32),
                     "matrix": np.ascontiguousarray(self.matrix, dtype=np.float32)})

    @classmethod
    def from_bytes(cls, data: bytes, kind: str, param: int | None, fitted_on: int = 0, fitted_in: str = "") -> "Transform":
        """A transform saved by `to_bytes`; ValueError when the tensors are missing or do not fit together."""
        from safetensors.numpy import load

        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error types for any malformed header
            raise ValueError(f"not a safetensors file: {exc}") from exc
        mean, matrix = tensors.get("center"), tensors.get("matrix")
        if mean is None or matrix is None or mean.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != mean.shape[0]:
            raise ValueError("expected a `center` vector and a `matrix` with as many rows")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(matrix))):
            raise ValueError("the transform holds non-finite numbers")
        return cls(kind, param, mean.astype(np.float32), matrix.astype(np.float32), fitted_on, fitted_in)


def _moments(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with n-1 as np.cov) in float64, accumulated block by block."""
    n, d = vectors.shape
    mean = np.zeros(d)
    for i in range(0, n, _BLOCK):
        mean += vectors[i : i + _BLOCK].sum(axis=0, dtype=np.float64)
    mean /= n
    scatter = np.zeros((d, d))
    for i in range(0, n, _BLOCK):
        block = vectors[i : i + _BLOCK].astype(np.float64) - mean
        scatter += block.T @ block
    return mean, scatter / max(n - 1, 1)


def principal_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the vectors' covariance."""
    mean, cov = _moments(vectors)
    u, s, _ = np.linalg.svd(cov, hermitian=True)
    return mean, s, u


def check_dimensions(name: str, dim: int) -> None:
    """TransformError when `name` asks more of `dim`-dimensional vectors than they have (whitenK: K <= dim;
    abttD: D < dim), whatever they are: checked before any text is embedded, and again by `fit`."""
    spec = parse_representation(name)
    if spec.transform == "whiten" and spec.param is not None and spec.param > dim:
        raise TransformError(f"`{spec.name}` keeps {spec.param} dimensions, but `{spec.pooling}` has only {dim}")
    if spec.transform == "abtt" and spec.param >= dim:
        raise TransformError(f"`{spec.name}` removes {spec.param} directions, but `{spec.pooling}` has only {dim} dimensions")


def fit(name: str, vectors: np.ndarray) -> Transform:
    """Fit the transform that the representation `name` (e.g. `pooled+whiten128`) asks for on `vectors`."""
    spec = parse_representation(name)
    if spec.transform is None:
        raise ValueError(f"representation {name!r} has no transform to fit")
    vectors = np.asarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    check_dimensions(name, d)
    if n < 2:
        raise TransformError(f"`{name}` cannot be fitted on {n} vector(s); it needs at least 2")
    mean, s, u = principal_axes(vectors)
    rank = int(np.sum(s > s[0] * _RANK_TOL)) if s[0] > 0 else 0
    if rank == 0:
        raise TransformError(f"`{name}` cannot be fitted: all {n} vectors are identical")
    if spec.transform == "whiten":
        wanted = d if spec.param is None else spec.param
        keep = min(wanted, rank)
        if keep < wanted:
            # directions without variance cannot be scaled to unit variance: they are dropped, and said
            log.warning("`%s`: the %d vectors span only %d dimensions; keeping %d instead of %d", name, n, rank, keep, wanted)
        matrix = u[:, :keep] / np.sqrt(s[:keep])
    else:
        removed = spec.param
        if removed >= min(d, rank):
            raise TransformError(
                f"`{name}` removes {removed} directions, but the {n} `{spec.pooling}` vectors span only {min(d, rank)}"
            )
        top = u[:, :removed]
        matrix = np.eye(d) - top @ top.T
    return Transform(spec.transform, spec.param, mean.astype(np.float32), matrix.astype(np.float32), n)


def represent(
    pooled: Mapping[str, np.ndarray], representations: Sequence[str], transforms: Mapping[str, Transform]
) -> dict[str, np.ndarray]:
    """Each representation's vectors from the poolings' ({pooling: vectors}), transformed where its name says so."""
    out = {}
    for r in representations:
        spec = parse_representation(r)
        base = pooled[spec.pooling]
        if spec.transform is None:
            out[r] = base
        elif r in transforms:
            out[r] = transforms[r].apply(base)
        else:
            raise KeyError(f"no fitted transform for `{r}`")
    return out
