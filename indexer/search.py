"""Searcher: encode a query once, search every representation, turn chunk hits into document rankings."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import faiss
import numpy as np

from .chunking import SLICE_CHARS
from .compat import compatibility_problems
from .config import DEFAULT_BATCH_SIZE, Precision
from .encoder import Encoder, ModelError
from .ranking import trec_order
from .store import IndexReader, Manifest, StoreError, read_pointer
from .text import describe_surrogate, is_blank
from .transforms import represent

log = logging.getLogger("indexer.search")


def search_threads(workers: int | None = None) -> ThreadPoolExecutor:
    """Threads that search representations side by side, each running FAISS on one OpenMP thread (the count is kept
    per thread): several searches at once already share the cores, and each FAISS call opening a team of its own on
    them made the threads wait for one another (measured at 200,000 vectors, efSearch 2048, two representations on
    this 2-core machine: p50 18.3 ms, p95 31.8 with FAISS's default; 15.6 and 20.5 on one thread each)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="search", initializer=faiss.omp_set_num_threads,
                              initargs=(1,))


class IndexMismatchError(StoreError):
    """The index was built with another model or settings than the searcher would use."""


@dataclass(frozen=True)
class Hit:
    """One document in a ranking; `score` is its best chunk's cosine similarity in that representation."""

    rank: int
    doc_id: str
    title: str
    chunk_id: int
    text: str
    score: float
    page: int | None = None  # the page of a PDF its best chunk starts on (None: a document without pages)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    query: str
    k: int
    results: Mapping[str, list[Hit]] = field(default_factory=dict)
    generation: str = ""  # the index generation every hit was served from

    def to_dict(self) -> dict:
        return {
            "query": self.query, "k": self.k, "generation": self.generation,
            "results": {r: [h.to_dict() for h in hits] for r, hits in self.results.items()},
        }


def rank_documents(
    scores: Sequence[float], chunk_ids: Sequence[int], chunk_doc: Mapping[int, str], k: int
) -> list[tuple[str, int, float]]:
    """(doc_id, best chunk id, score) of the k best documents; a document scores as its best chunk (of equal
    chunks, the lowest id).

    Documents of equal score are in ranking.trec_order, the order the evaluation's runs are scored in.
    """
    best: dict[str, tuple[float, int]] = {}
    for score, cid in zip(scores, chunk_ids):
        cid = int(cid)
        if cid < 0:  # FAISS pads with -1 when it has fewer vectors than asked
            continue
        doc = chunk_doc[cid]
        key = (-float(score), cid)
        if doc not in best or key < (-best[doc][0], best[doc][1]):
            best[doc] = (float(score), cid)
    ranked = trec_order({doc: score for doc, (score, _) in best.items()})
    return [(doc, best[doc][1], score) for doc, score in ranked[:k]]


def model_name_for(manifest: Manifest) -> str | None:
    """The `--model` value that loads the model an index was built with."""
    model = manifest.model
    return {"bundled": None, "local": model.location}.get(model.source, model.name)


def encoder_for(
    manifest: Manifest,
    model: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    trust_remote_code: bool = False,
    precision: Precision | None = None,
    load: Callable[..., Encoder] = Encoder.load,
) -> Encoder:
    """The encoder for an index: its own model (or `model`), its representations, its max length and its precision
    (or `precision`: None takes the index's, fp32 for an index that records none, so that queries are encoded as its
    vectors were; a value is used as given, to compare precisions).

    The one place that makes it, for the CLI, the app and evaluation. The index's max length is taken
    whenever the model allows it, so that naming the index's own model is accepted whatever `--max-tokens`
    the index was built with; whether the model really is the index's is left to `compatibility_problems`,
    which says what differs. `load` takes Encoder.load's arguments (the app passes its cached loader).
    """
    encoder = load(
        model_name_for(manifest) if model is None else model,
        representations=tuple(manifest.representations),
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
        precision=manifest.encoded_precision if precision is None else precision,
    )
    built_max = manifest.chunking.max_tokens
    if built_max != encoder.max_tokens and 8 <= built_max <= encoder.info.max_tokens:
        encoder = encoder.with_max_tokens(built_max)
    return encoder


def tuning_encode(manifest: Manifest, *, load: Callable[..., Encoder] = Encoder.load) -> Callable[[list[str]], Mapping[str, np.ndarray] | None]:
    """`staging.publish`'s `encode` for a writer that has no encoder at hand (convert, repair, refit, a delete that
    rebuilds): the index's own encoder (`encoder_for`), loaded only when a tuning first asks for probes. It gives
    None (the tuning then makes its probes from the vectors, and records so) when that model cannot be loaded or
    does not fit the index, with one warning saying why."""
    state: dict = {}

    def encode(texts: list[str]) -> Mapping[str, np.ndarray] | None:
        if "encoder" not in state:
            try:
                encoder = encoder_for(manifest, load=load)
                problems = compatibility_problems(manifest, encoder, "search", list(manifest.representations))
            except (ModelError, OSError, ValueError) as exc:
                encoder, problems = None, [str(exc)]
            if problems:
                log.warning("tuning on probes made from the vectors, not on pseudo-queries: the index's model cannot "
                            "encode them (%s)", "; ".join(problems))
                encoder = None
            state["encoder"] = encoder
        return None if state["encoder"] is None else state["encoder"].encode_texts(texts)

    return encode


def query_problem(query: str) -> str | None:
    """Why a query cannot be searched (one line), or None: blank text (zero-width characters count
    as blank, see text.is_blank) or a lone surrogate, which no tokenizer can encode."""
    if not isinstance(query, str):
        return f"the query must be text, got {type(query).__name__}"
    if is_blank(query):
        return "the query is empty"
    return describe_surrogate(query, "the query")


def query_cut(encoder: Encoder, query: str) -> str | None:
    """Why only the start of a query is searched (one line), or None: a query longer than the model's window is
    cut to it (Encoder.encode_texts), so its last words do not count."""
    tokens = len(encoder.tokenize([query[:SLICE_CHARS]])[0].ids)
    if tokens <= encoder.window and len(query) <= SLICE_CHARS:
        return None
    more = "more than " if len(query) > SLICE_CHARS else ""
    return (f"the query has {more}{tokens} tokens; the model reads at most {encoder.window}, "
            f"so only its first {encoder.window} tokens were searched")


@dataclass(frozen=True)
class Served:
    """What a query is served with, taken together: one generation of the index, an encoder that fits it, and the
    representations searched."""

    index: IndexReader
    encoder: Encoder
    representations: tuple[str, ...]


class Searcher:
    """A verified index and the encoder that matches it; safe to share between threads (the app holds one per index).

    Before each query it checks whether a writer has published a new generation and, if so,
    switches to it (after the same checks); a query is always served from one generation.
    `encoder` serves every generation (one it does not fit is not switched to). Without it, `make_encoder`
    (default: `encoder_for`, the index's own model) makes the encoder for the first generation, and again for a
    later one that the encoder in use does not fit (a rebuild with another model, length or representations).
    `representations` are those searched (default: all of each generation's).
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder: Encoder | None = None,
        *,
        representations: Sequence[str] | None = None,
        make_encoder: Callable[[Manifest], Encoder] | None = None,
    ) -> None:
        self.directory = Path(index_dir)
        self._wanted = tuple(representations) if representations else None
        self._make_encoder = make_encoder if make_encoder is not None or encoder is not None else encoder_for
        self._served = self._serve(IndexReader(index_dir), encoder)
        self._refresh = threading.Lock()
        self._refused: dict | None = None  # the CURRENT pointer of a generation that could not be served
        self._pool = search_threads()  # kept: starting threads per query cost ~2 ms of it

    def _serve(self, index: IndexReader, encoder: Encoder | None) -> Served:
        """`index` with `encoder`, or with a new one from `make_encoder` when it does not fit or is of another precision
        than the index (rebuilt in another: `make_encoder` decides again); IndexMismatchError (the index closed) when
        neither fits."""
        representations = self._wanted or index.representations
        try:
            problems = None if encoder is None else compatibility_problems(index.manifest, encoder, "search", representations)
            other_precision = encoder is not None and encoder.precision != index.manifest.encoded_precision
            if (encoder is None or problems or other_precision) and self._make_encoder is not None:
                encoder = self._make_encoder(index.manifest)
                problems = compatibility_problems(index.manifest, encoder, "search", representations)
        except BaseException:
            index.close()
            raise
        if problems:
            index.close()
            info = encoder.info
            raise IndexMismatchError(
                f"cannot search {index.directory} with this model: " + "; ".join(problems) + ". "
                f"Rebuild the index for this model: python -m indexer build SOURCE --index {index.directory} "
                f"--overwrite --model {info.name if info.source != 'local' else info.location}"
            )
        return Served(index, encoder, representations)

    def served(self) -> Served:
        """The newest published generation with its encoder (the one in use if it cannot be served)."""
        served = self._served
        try:
            latest = read_pointer(self.directory)
        except StoreError:
            return served
        # the manifest's checksum, not the generation's name: a folder deleted and built again restarts the names
        if latest["manifest_sha256"] != served.index.manifest_sha256 and latest != self._refused:
            with self._refresh:
                served = self._served
                if latest["manifest_sha256"] != served.index.manifest_sha256 and latest != self._refused:
                    try:
                        self._served = self._serve(IndexReader(self.directory), served.encoder)
                    except (StoreError, ModelError, ValueError, OSError) as exc:
                        # a published generation never changes: it is not tried again before CURRENT changes
                        self._refused = latest
                        log.warning("keeping %s: the new generation cannot be served (%s)", served.index.generation, exc)
                        return served
                    # the old reader is left to the garbage collector: other threads may still be using it
        return self._served

    def current(self) -> IndexReader:
        """The newest published generation (the one in use if it cannot be opened)."""
        return self.served().index

    @property
    def index(self) -> IndexReader:
        return self._served.index

    @property
    def encoder(self) -> Encoder:
        return self._served.encoder

    @property
    def representations(self) -> tuple[str, ...]:
        return self._served.representations

    @property
    def manifest(self) -> Manifest:
        return self.index.manifest

    def search(self, query: str, k: int = 10) -> SearchResult:
        """Rankings of the k best documents in every representation, from one encoding of the query."""
        problem = query_problem(query)
        if problem is not None:
            raise ValueError(problem)
        served = self.served()
        index = served.index
        rankings = self.rank_many([query], k, served=served)  # one query: encoded on QUERY_THREADS
        rows = index.chunks({cid for ranked in rankings.values() for _, cid, _ in ranked[0]})
        return SearchResult(
            query,
            k,
            {
                r: [
                    Hit(rank=i + 1, doc_id=doc, title=rows[cid].title, chunk_id=cid, text=rows[cid].text, score=score,
                        page=rows[cid].page)
                    for i, (doc, cid, score) in enumerate(ranked[0])
                ]
                for r, ranked in rankings.items()
            },
            generation=index.generation,
        )

    def rank_many(
        self,
        queries: Sequence[str],
        k: int,
        *,
        exclude: Sequence[str | None] | None = None,
        served: Served | None = None,
    ) -> dict[str, list[list[tuple[str, int, float]]]]:
        """(doc_id, best chunk id, score) of the k best documents per query and representation.

        Queries are encoded together, once. `exclude[i]` names a document to leave out of query
        i's ranking (BEIR's convention of ignoring a document whose id is the query's).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number, at least 1, got {k!r}")
        served = served or self.served()
        index = served.index
        # the index's transforms map the query's poolings as they mapped the documents'
        vectors = represent(served.encoder.encode_texts(list(queries)), served.representations, index.transforms)
        exclude = list(exclude) if exclude is not None else [None] * len(queries)
        reps = served.representations
        if len(reps) == 1:
            return {reps[0]: self._rank_batch(index, reps[0], vectors[reps[0]], k, exclude)}
        # one thread per representation: FAISS releases the GIL while it searches, so their searches overlap
        futures = {r: self._pool.submit(self._rank_batch, index, r, vectors[r], k, exclude) for r in reps}
        return {r: future.result() for r, future in futures.items()}

    @staticmethod
    def _rank_batch(
        index: IndexReader, representation: str, matrix: np.ndarray, k: int, exclude: list[str | None]
    ) -> list[list[tuple[str, int, float]]]:
        total = index.n_chunks
        results: list[list[tuple[str, int, float]]] = [[] for _ in range(len(matrix))]
        pending = list(range(len(matrix)))
        n = min(total, max(2 * k, k + 16))
        while pending and total:
            scores, ids = index.search(representation, matrix[pending], n)
            chunk_doc = index.chunk_docs(np.unique(ids))
            unfilled = []
            for row, q in enumerate(pending):
                ranked = [h for h in rank_documents(scores[row], ids[row], chunk_doc, k + 1) if h[0] != exclude[q]][:k]
                # complete when no chunk left unfetched can tie the k-th document: equal scores are ordered by document
                # id, so a tie that runs past the hits fetched must be fetched whole to be ordered as the metrics order it
                if n >= total or (len(ranked) >= k and float(scores[row][-1]) < ranked[-1][2]):
                    results[q] = ranked
                else:
                    unfilled.append(q)  # many hits were chunks of the same documents, or tied with the k-th: fetch more
            pending, n = unfilled, min(total, n * 4)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.index.close()
