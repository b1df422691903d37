"""The library's face: `Index.build`, `Index.open`, then `search`, `add`, `delete` and `evaluate` on the index.

The CLI and the app call the same functions underneath (pipeline, search, evaluation); this module only holds
them together, so that a notebook needs one import:

    from indexer import Index
    index = Index.build("data/sample", "indexes/demo")             # or a list of dicts / Documents
    with Index.open("indexes/demo") as index:
        hits = index.search("how do vaccines work", k=5)           # {"pooled": [Hit, ...], "mean": [...]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .config import DEFAULT_PRECISION, DEFAULT_REPRESENTATIONS, Precision, parse_representations
from .encoder import Encoder
from .evaluation import Evaluation, evaluate, load_labels
from .loaders import Format
from .pipeline import BuildSummary, DeleteSummary, Source, add_documents, build_index, delete_documents
from .search import Hit, Searcher, encoder_for
from .store import Manifest
from .vector_index import IndexSpec, IndexType


class Index:
    """A built index directory with the encoder that matches it. Every call is served from the newest published
    generation, so a build or add by another process is picked up by the next search."""

    def __init__(self, searcher: Searcher, summary: BuildSummary | None = None) -> None:
        self._opened: Searcher | None = searcher
        #: What the last build or add through this object did (documents, chunks, skipped records and why).
        self.summary = summary

    # -- making and opening ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        source: Source,
        directory: str | Path,
        *,
        model: str | None = None,
        representations: str | Sequence[str] | None = None,
        max_tokens: int | None = None,
        overlap: int | None = None,
        index_type: IndexType = "flat",
        overwrite: bool = False,
        format: Format = "auto",
        id_column: str | None = None,
        title_column: str | None = "title",
        text_column: str = "text",
        progress: bool = False,
        trust_remote_code: bool = False,
        precision: Precision = DEFAULT_PRECISION,
    ) -> Index:
        """Index `source` into `directory` (what `pooling-lab build` does) and open it.

        `source`: a folder, a JSONL/CSV/TSV file or a BEIR folder, or records from memory: dicts shaped like a
        JSONL line (`_id`, `text`, optional `title`, anything else kept as metadata) or `Document`s, in a list or
        an iterator. Bad records are skipped and named in `index.summary.issues`. A killed build resumes when run
        again with the same arguments; for records that means the same list (an iterator is read once, so its
        build starts over). `model`: the embedded default, a local folder or a hub id. `representations`: e.g.
        "pooled,mean,max" or ["pooled", "mean+whiten"] (default: pooled and mean). `precision`: what the model
        computes in, "fp32", "bf16" or "auto" (bf16 where the device has native bf16, else fp32; recorded in the
        manifest, and the index's queries are encoded in it); the vectors are float32 either way.
        """
        wanted = parse_representations(DEFAULT_REPRESENTATIONS if representations is None else representations)
        encoder = Encoder.load(model, representations=wanted, max_tokens=max_tokens,
                               trust_remote_code=trust_remote_code, precision=precision)
        summary = build_index(source, directory, encoder, overlap=overlap, overwrite=overwrite, format=format,
                              id_column=id_column, title_column=title_column, text_column=text_column,
                              progress=progress, vector_index=IndexSpec(type=index_type))
        return cls(Searcher(directory, encoder), summary)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        model: str | None = None,
        representations: str | Sequence[str] | None = None,
        trust_remote_code: bool = False,
        precision: Precision | None = None,
    ) -> Index:
        """Open a built index with its own model (or `model`, which must match it); `representations`: the ones
        to search (default: every one it holds); `precision`: what queries are encoded in (default: the index's own;
        `add` needs the index's)."""
        wanted = None if representations is None else parse_representations(representations)
        # the encoder is made for each generation served, so a rebuild with another model or length is followed
        return cls(Searcher(directory, representations=wanted, make_encoder=lambda manifest: encoder_for(
            manifest, model, trust_remote_code=trust_remote_code, precision=precision)))

    # -- using ---------------------------------------------------------------------------------------------

    @property
    def _searcher(self) -> Searcher:
        if self._opened is None:
            raise ValueError("this Index is closed; open it again with Index.open(directory)")
        return self._opened

    @property
    def directory(self) -> Path:
        return self._searcher.directory

    @property
    def representations(self) -> tuple[str, ...]:
        """The representations searched, e.g. ("pooled", "mean")."""
        return tuple(self._searcher.representations)

    @property
    def manifest(self) -> Manifest:
        """The manifest of the generation served now (model, chunking, counts, checksums): store.Manifest."""
        return self._searcher.current().manifest

    def search(self, query: str, k: int = 10) -> dict[str, list[Hit]]:
        """The k best documents for `query` in each representation, from one encoding of the query; a document
        scores as its best chunk. Raises ValueError for a blank query."""
        return dict(self._searcher.search(query, k=k).results)

    def add(self, source: Source, *, format: Format = "auto", id_column: str | None = None,
            title_column: str | None = "title", text_column: str = "text", progress: bool = False) -> BuildSummary:
        """Index new documents and re-embed changed ones (by content); unchanged ones are skipped. The next
        search sees them."""
        self._searcher.current()  # the encoder of the newest generation
        self.summary = add_documents(self.directory, source, self._searcher.encoder, format=format, id_column=id_column,
                                     title_column=title_column, text_column=text_column, progress=progress)
        return self.summary

    def delete(self, doc_ids: Sequence[str]) -> DeleteSummary:
        """Remove documents by id (ids not in the index are listed in the summary)."""
        return delete_documents(self.directory, doc_ids)

    def evaluate(
        self,
        queries: str | Path | Mapping[str, str],
        qrels: str | Path | Mapping[str, Mapping[str, int]],
        *,
        dataset: str = "queries",
        split: str = "test",
        baseline: str | None = None,
        fuse: str | Sequence[str] | None = None,
        ignore_identical_ids: bool = True,
        out_dir: str | Path | None = None,
        progress: bool = False,
    ) -> Evaluation:
        """Retrieval metrics of each representation and BM25 on labelled queries, with paired significance tests:
        the numbers `pooling-lab evaluate` prints. `queries`: a BEIR queries.jsonl or {query id: text};
        `qrels`: a qrels TSV or {query id: {document id: grade}}. Bad lines or entries are skipped and listed in
        the result's issues. `out_dir`: where to write the reports too (default: nowhere)."""
        queries, qrels, issues = load_labels(queries, qrels, self._searcher.current().doc_ids())
        return evaluate(self._searcher, queries, qrels, dataset=dataset, split=split, issues=issues,
                        ignore_identical_ids=ignore_identical_ids, out_dir=out_dir, progress=progress,
                        baseline=baseline, fuse=fuse)

    # -- closing -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the index's files; using the object afterwards raises ValueError. Closing twice is fine."""
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._opened is None:
            return "Index(closed)"
        return f"Index({str(self.directory)!r}, representations={list(self.representations)})"
