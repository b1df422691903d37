"""Building an index: load -> chunk -> encode -> store, streaming documents in batches.

Shared by the CLI and the app so that neither holds indexing logic of its own.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import __version__
from .chunking import make_chunks
from .config import ChunkingConfig, default_overlap
from .encoder import Encoder
from .loaders import HTML_SUFFIXES, TEXT_SUFFIXES, LoadIssue, LoadReport, detect_format, iter_documents
from .files import sha256_file
from .search import compatibility_problems
from .store import MANIFEST, IndexWriter, StoreError, read_manifest

log = logging.getLogger("indexer.pipeline")

#: Documents read, tokenised and chunked together before their chunks are encoded.
DOCS_PER_BATCH = 64


class BuildError(Exception):
    """A build that produced nothing to publish (every record was skipped)."""


@dataclass
class BuildSummary:
    index_dir: Path
    documents: int
    chunks: int
    tokens: int
    seconds: float
    ignored_files: int = 0
    issues: list[LoadIssue] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.issues)


def estimate_documents(source: Path, fmt: str) -> int | None:
    """A cheap upper estimate of the record count, for the progress bar's total."""
    try:
        if fmt in ("jsonl", "beir", "csv"):
            path = source / "corpus.jsonl" if fmt == "beir" else source
            with open(path, "rb") as f:
                lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
            return max(lines - (1 if fmt == "csv" else 0), 0)
        if fmt == "folder":
            return sum(
                1
                for _, _, names in os.walk(source)
                for name in names
                if Path(name).suffix.lower() in TEXT_SUFFIXES | HTML_SUFFIXES and not name.startswith(".")
            )
    except OSError:
        return None
    return None


def source_fingerprint(source: Path, fmt: str) -> str | None:
    """sha256 of a file-based source (the corpus file of a BEIR folder); None for folders."""
    if fmt == "folder":
        return None
    return sha256_file(source / "corpus.jsonl" if fmt == "beir" else source)


def index_matches(index_dir: Path, encoder: Encoder, source: Path, *, overlap: int | None = None) -> str | None:
    """Why the index at `index_dir` cannot be reused for `source` with `encoder` (None: it can)."""
    overlap = default_overlap(encoder.max_tokens) if overlap is None else overlap
    if not (Path(index_dir) / MANIFEST).is_file():
        return "no index there yet"
    try:
        manifest = read_manifest(index_dir)
    except StoreError as exc:
        return str(exc)
    fmt = detect_format(source)
    built = manifest.get("source", {})
    problems = compatibility_problems(manifest, encoder.info, encoder.max_tokens, encoder.representations)
    if manifest.get("chunking", {}).get("overlap") != overlap:
        problems.append(f"it was built with an overlap of {manifest.get('chunking', {}).get('overlap')} tokens, not {overlap}")
    if built.get("path") != str(source.resolve()) or built.get("sha256") != source_fingerprint(source, fmt) or fmt == "folder":
        problems.append(f"it was built from {built.get('path')} as it was then, not from {source.resolve()} as it is now")
    return "; ".join(problems) or None


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def build_index(
    source: str | Path,
    index_dir: str | Path,
    encoder: Encoder,
    *,
    overlap: int | None = None,
    overwrite: bool = False,
    format: str = "auto",
    id_column: str | None = None,
    title_column: str | None = "title",
    text_column: str = "text",
    progress: bool = True,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> BuildSummary:
    """Index every readable document of `source` into `index_dir`; bad records are reported and skipped.

    Nothing is published unless the whole build succeeds; an existing index stays until then.
    `on_progress(documents_done, estimated_total)` is called after every batch (the app's bar).
    """
    source = Path(source)
    chunking = ChunkingConfig(
        max_tokens=encoder.max_tokens, overlap=default_overlap(encoder.max_tokens) if overlap is None else overlap
    )
    fmt = detect_format(source) if format == "auto" else format
    report = LoadReport()
    documents = iter_documents(
        source, report, format=fmt, id_column=id_column, title_column=title_column, text_column=text_column
    )
    started = time.perf_counter()
    tokens = 0
    dims = {r: encoder.info.dim for r in encoder.representations}
    estimate = estimate_documents(source, fmt)
    with logging_redirect_tqdm(), IndexWriter(index_dir, dims, overwrite=overwrite) as writer, tqdm(
        total=estimate, unit="doc", desc="indexing", disable=not progress, dynamic_ncols=True
    ) as bar:
        for batch in _batched(documents, DOCS_PER_BATCH):
            kept, chunks = [], []
            for doc, tok in zip(batch, encoder.tokenize([d.content for d in batch])):
                if not tok.ids:
                    report.skip(doc.source, None, f"document {doc.doc_id!r} has no tokens")
                    continue
                kept.append(doc)
                chunks.extend(
                    make_chunks(doc.doc_id, doc.content, tok.ids, tok.offsets, tok.word_ids,
                                window=encoder.window, overlap=chunking.overlap)
                )
            if chunks:
                vectors = encoder.encode_ids([c.token_ids for c in chunks])
                writer.add(kept, chunks, vectors)
                tokens += sum(c.n_tokens for c in chunks)
            bar.update(len(batch))
            bar.set_postfix(chunks=writer.chunks, skipped=report.skipped, refresh=False)
            if on_progress is not None:
                on_progress(bar.n, estimate)
        bar.total = bar.n  # the total was an estimate from line or file counts
        bar.refresh()
        if writer.documents == 0:
            raise BuildError(
                f"no document could be indexed from {source} ({report.skipped} records skipped); nothing was written"
            )
        seconds = time.perf_counter() - started
        info = encoder.info
        manifest = {
            "indexer_version": __version__,
            "model": info.to_dict(),
            "pooler_check": {"status": info.pooler, "note": info.pooler_note},
            "tokenizer": info.tokenizer,
            "chunking": chunking.to_dict() | {"content_tokens_per_chunk": encoder.window},
            "representations": {},
            "normalized": True,
            "metric": "inner_product",
            "source": {"path": str(source.resolve()), "format": fmt, "sha256": source_fingerprint(source, fmt)},
            "build": {
                "seconds": round(seconds, 3),
                "tokens": tokens,
                "skipped_records": report.skipped,
                "ignored_files": report.ignored_files,
            },
        }
        index_dir = writer.commit(manifest)
    return BuildSummary(index_dir, writer.documents, writer.chunks, tokens, seconds, report.ignored_files, report.issues)

