"""Geometry of each representation: anisotropy, query-document similarities, a 2-D map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Mapping, Sequence, get_args

import numpy as np

from .config import require_one_of
from .transforms import principal_axes

NEGATIVES_PER_QUERY = 20  # unjudged non-relevant documents per query in the similarity histograms, random or hard
#: Which unjudged documents make the non-relevant pairs of the similarity histograms (relevance_similarities).
Negatives = Literal["random", "hard"]
NEGATIVES: tuple[str, ...] = get_args(Negatives)

if TYPE_CHECKING:  # numpy-only module: the store and the searcher are only passed in
    from .search import Searcher
    from .store import IndexReader, Manifest, RepresentationRecord


def anisotropy(vectors: np.ndarray, *, pairs: int = 5000, seed: int = 0) -> float:
    """Mean cosine similarity of random pairs of distinct (unit) vectors.

    Near 0: vectors spread over the sphere; near 1: they crowd into a narrow cone, so small
    score differences carry the ranking.
    """
    n = len(vectors)
    if n < 2:
        raise ValueError(f"anisotropy needs at least 2 vectors, got {n}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # never the same vector
    return float(np.mean(np.sum(vectors[i] * vectors[j], axis=1)))


def geometry(vectors: np.ndarray, *, sample: int = 20000, pairs: int = 5000, seed: int = 0) -> dict[str, float]:
    """Why a space ranks as it does, in three numbers (on up to `sample` random rows of unit vectors):

    - `anisotropy`: mean cosine of random pairs (see `anisotropy`);
    - `effective_rank`: exp of the entropy of the covariance's normalised eigenvalues (Roy & Vetterli
      2007), from 1 (one direction carries all variance) to the dimension (all equal);
    - `top3_variance`: share of the total variance in the top 3 principal directions.
    A few dominant common directions (high anisotropy, low effective rank, large top-3 share) are what
    whitening and all-but-the-top remove.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        raise ValueError(f"geometry needs at least 2 vectors, got {n}")
    rng = np.random.default_rng(seed)
    rows = vectors if n <= sample else vectors[np.sort(rng.choice(n, size=sample, replace=False))]
    _, eig, _ = principal_axes(rows)  # the covariance spectrum, as the transforms compute it (descending)
    total = float(eig.sum())
    if total <= 0:
        return {"anisotropy": anisotropy(rows, pairs=pairs, seed=seed), "effective_rank": 1.0, "top3_variance": 1.0}
    p = eig / total
    p = p[p > 0]
    return {
        "anisotropy": anisotropy(rows, pairs=pairs, seed=seed),
        "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
        "top3_variance": float(eig[:3].sum() / total),
    }


MAP_MINIMUM = 3  # documents a 2-D map needs


def pca_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the first two principal directions as rows) of the vectors: the projection behind `pca_2d`,
    kept so other vectors (a query, documents outside a sample) can be put on the same map with `project`."""
    from sklearn.decomposition import PCA

    if len(vectors) < MAP_MINIMUM:
        raise ValueError(f"a 2-D map needs at least {MAP_MINIMUM} documents, got {len(vectors)}")
    pca = PCA(n_components=2, random_state=0).fit(vectors)
    return pca.mean_.astype(np.float64), pca.components_.astype(np.float64)


def project(vectors: np.ndarray, axes: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Coordinates of vectors on the map of `axes` (from `pca_axes`)."""
    mean, components = axes
    return (np.asarray(vectors, dtype=np.float64).reshape(-1, mean.shape[0]) - mean) @ components.T


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Coordinates of each vector on the first two principal components."""
    return project(vectors, pca_axes(vectors))


def judged_similarities(
    query_vectors: np.ndarray,
    query_ids: Sequence[str],
    doc_vectors: Mapping[str, np.ndarray],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    unjudged_per_query: int = NEGATIVES_PER_QUERY,
    seed: int = 0,
    negatives: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[float]]:
    """Query-document cosines for relevant pairs (grade >= 1) and non-relevant ones.

    A document's similarity is its best chunk's (`doc_vectors[doc]` holds its chunk vectors).
    Non-relevant pairs are those judged 0 plus, per query, a random sample of unjudged documents, or the
    documents `negatives[query]` names instead (hard negatives: see `hard_negatives`).
    """
    rng = np.random.default_rng(seed)
    docs = sorted(doc_vectors)
    out: dict[str, list[float]] = {"relevant": [], "non-relevant": []}
    for q, vector in zip(query_ids, query_vectors):
        judged = qrels.get(q, {})
        if negatives is not None:
            sample = list(negatives.get(q, ()))
        else:
            sample = [docs[i] for i in rng.choice(len(docs), size=min(unjudged_per_query, len(docs)), replace=False)]
        pairs = [(d, g) for d, g in judged.items() if d in doc_vectors] + [(d, 0) for d in sample if d not in judged and d in doc_vectors]
        for d, grade in pairs:
            out["relevant" if grade > 0 else "non-relevant"].append(float(np.max(doc_vectors[d] @ vector)))
    return out


def document_sample(index: "IndexReader", representations: Sequence[str], *, limit: int = 1500, seed: int = 0) -> dict:
    """Stored first-chunk vectors of a seeded sample of up to `limit` documents, per representation:
    their `geometry` (None under 2 documents), 2-D map (`pca_2d`; zeros under 3 documents) and the map's
    `axes` (`pca_axes`, to `project` other vectors onto it; None under 3 documents)."""
    chunks = index.chunk_ids_by_doc()
    docs = sorted(chunks)
    if len(docs) > limit:
        docs = sorted(np.random.default_rng(seed).choice(docs, size=limit, replace=False).tolist())
    titles = index.titles(docs)
    out: dict = {"doc_ids": docs, "titles": [titles.get(d, "") for d in docs], "maps": {}, "geometry": {}, "axes": {}}
    for r in representations:
        vectors = index.vectors(r, [chunks[d][0] for d in docs])
        out["geometry"][r] = geometry(vectors, seed=seed) if len(docs) >= 2 else None
        out["axes"][r] = pca_axes(vectors) if len(docs) >= MAP_MINIMUM else None
        out["maps"][r] = project(vectors, out["axes"][r]) if out["axes"][r] is not None else np.zeros((len(docs), 2))
    return out


def relevance_similarities(
    searcher: "Searcher",
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    representations: Sequence[str],
    *,
    extra_docs: Sequence[str] = (),
    limit: int = 200,
    negatives: Negatives = "random",
    hard_per_query: int = NEGATIVES_PER_QUERY,
) -> dict[str, dict[str, list[float]]]:
    """`judged_similarities` per representation for up to `limit` judged queries, the queries
    encoded as the index maps them (its transforms applied). Non-relevant pairs beyond those judged 0:
    `random` unjudged documents (`extra_docs` widen the pool), or `hard` ones: each representation's own
    `hard_per_query` top-ranked documents not judged relevant (`hard_negatives`)."""
    from .transforms import represent

    require_one_of(negatives, Negatives, "kind of negatives")
    served = searcher.served()  # the generation and the encoder that fits it, together
    index = served.index
    qids = [q for q in qrels if q in queries][:limit]
    texts = [queries[q] for q in qids]
    encoded = represent(served.encoder.encode_texts(texts), representations, index.transforms)
    hard = hard_negatives(searcher, qids, texts, qrels, hard_per_query) if negatives == "hard" and qids else None
    pool = set(extra_docs) if hard is None else {d for per_query in hard.values() for ds in per_query.values() for d in ds}
    chunks = index.chunk_ids_by_doc({d for q in qids for d in qrels[q]} | pool)
    return {
        r: judged_similarities(encoded[r], qids, {d: index.vectors(r, ids) for d, ids in chunks.items()}, qrels,
                               negatives=None if hard is None else hard[r])
        for r in representations
    }


def hard_negatives(
    searcher: "Searcher", qids: Sequence[str], texts: Sequence[str], qrels: Mapping[str, Mapping[str, int]], per_query: int,
) -> dict[str, dict[str, list[str]]]:
    """representation -> query -> its `per_query` best-ranked documents not judged relevant (grade < 1):
    the pairs a representation finds hardest to tell apart from the relevant ones."""
    deepest = max((sum(1 for g in qrels[q].values() if g > 0) for q in qids), default=0)
    rankings = searcher.rank_many(list(texts), per_query + deepest, exclude=list(qids))  # BEIR: a query's own id is no answer
    return {
        r: {q: [d for d, _, _ in ranked if qrels[q].get(d, 0) < 1][:per_query] for q, ranked in zip(qids, rankings[r])}
        for r in rankings
    }


def densities(samples: Mapping[str, Sequence[float]], *, bins: int = 30) -> list[dict]:
    """Histogram bars of several samples on shared bins, each normalised to a density (its bars' area is 1):
    a few relevant pairs then show as clearly as many non-relevant ones. One row per (kind, bin):
    kind, start, end, density. Empty samples give no rows."""
    filled = {kind: np.asarray(v, dtype=np.float64) for kind, v in samples.items() if len(v)}
    if not filled:
        return []
    everything = np.concatenate(list(filled.values()))
    low, high = float(everything.min()), float(everything.max())
    if high - low < 1e-9:  # a single value: one narrow bar around it
        low, high = low - 0.005, high + 0.005
    edges = np.linspace(low, high, bins + 1)
    rows = []
    for kind, values in filled.items():
        density, _ = np.histogram(values, bins=edges, density=True)
        rows += [{"kind": kind, "start": float(a), "end": float(b), "density": float(d)}
                 for a, b, d in zip(edges[:-1], edges[1:], density)]
    return rows


def query_points(
    searcher: "Searcher", query: str, representations: Sequence[str], axes: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *, k: int = 10,
) -> dict[str, dict]:
    """Where a query and its k best documents fall on each representation's map (`axes`, from `document_sample`):
    representation -> {"query": (x, y), "hits": [(rank, doc id, title, (x, y))]}. Documents are placed by
    their first chunk, as on the map; the query is encoded and transformed as the index maps queries."""
    from .transforms import represent

    result = searcher.search(query, k)
    served = searcher.served()
    index = served.index
    encoded = represent(served.encoder.encode_texts([query]), list(representations), index.transforms)
    chunks = index.chunk_ids_by_doc({h.doc_id for r in representations for h in result.results[r]})
    out = {}
    for r in representations:
        hits = result.results[r]
        where = project(index.vectors(r, [chunks[h.doc_id][0] for h in hits]), axes[r]) if hits else np.zeros((0, 2))
        out[r] = {"query": tuple(project(encoded[r], axes[r])[0]),
                  "hits": [(h.rank, h.doc_id, h.title, tuple(xy)) for h, xy in zip(hits, where)]}
    return out


def describe_transform(spec: RepresentationRecord, directory: str | None = None) -> str:
    """A representation's transform in words (its manifest entry `spec`): what, fitted on what, kept or refitted."""
    record = spec.transform
    if record is None:
        return "none"
    when = "at this generation" if record.refitted else "kept fixed since by add, delete and repair"
    return (f"{record.kind}{record.param or ''} of `{spec.pooling}` ({record.dim_in} -> "
            f"{spec.dim} dims), fitted on {record.fitted_on_chunks} chunks in {record.fitted_in}, "
            f"{when}; `python -m indexer refit{' ' + directory if directory else ''}` fits it again")


def describe_representations(manifest: Manifest) -> list[dict]:
    """One row per representation of an index manifest: its pooling, dimension and transform, in words."""
    return [{"representation": r, "pooling": spec.pooling, "dimension": spec.dim, "transform": describe_transform(spec)}
            for r, spec in manifest.representations.items()]
