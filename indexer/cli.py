"""Command line: `pooling-lab` or `python -m indexer` build | search | info | app | demo …. Parses arguments, calls
the library, prints."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import unicodedata
from pathlib import Path
from typing import Mapping, Sequence

from . import __version__, vector_index
from .app.serve import DEFAULT_PORT, LOOPBACK, LOOPBACK_NAMES, add_app_arguments, app_argv, streamlit_command
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_OVERLAP,
    DEFAULT_PRECISION,
    DEFAULT_REPRESENTATIONS,
    POOLINGS,
    PRECISIONS,
    SAMPLE_INDEX,
    SAMPLE_SOURCE,
    parse_representations,
    poolings_of,
)
from .encoder import SPEED_CPU_FLAGS, Encoder, ModelError, machine_summary
from .evaluation import (
    GEOMETRY_LABELS,
    GEOMETRY_NOTE,
    METRIC_NAMES,
    Evaluation,
    check_choices,
    evaluate,
    format_geometry,
    format_p,
    fusion_line,
    labelled_sets,
    load_labels,
    pair_name,
    write_artifacts,
)
from .explore import describe_transform
from .files import unwritable_dir
from .integrity import convert, refit, repair, verify
from .loaders import FORMATS, LoadReport, SourceError, format_bytes, load_queries, open_beir
from .pipeline import BuildError, BuildSummary, add_documents, build_index, delete_documents, index_matches
from .search import Searcher, SearchResult, encoder_for
from .staging import MAX_TOMBSTONE_FRACTION
from .store import METADATA, Manifest, StoreError, bytes_per_chunk, is_index, read_manifest
from .text import describe_surrogate, is_blank
from .vector_index import INDEX_TYPES, IndexSpec

EXIT_USAGE = 2  # bad input the user can fix: missing path, unknown format, mismatched index
EXIT_INTERNAL = 1  # an unexpected fault of the program (one line; -v shows the traceback)


def _clean(text: str) -> str:
    """One line of printable text: control characters (terminal escapes included) become spaces."""
    return " ".join("".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text).split())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_result(result: SearchResult, width: int | None = None) -> str:
    """Side-by-side table of the rankings; scores are only comparable within a column."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    reps = list(result.results)
    col = max((width - 5 - 3 * (len(reps) - 1)) // max(len(reps), 1), 24)
    text_w = col - 8
    lines = [f'query: "{_clean(result.query)}"   k={result.k}', ""]
    lines.append("  #  " + " │ ".join(f"{r:<{text_w}} {'score':>7}" for r in reps))
    lines.append("─" * min(width, 5 + len(reps) * col + 3 * (len(reps) - 1)))
    for i in range(max((len(h) for h in result.results.values()), default=0)):
        cells = []
        for r in reps:
            hits = result.results[r]
            if i < len(hits):
                h = hits[i]
                label = _clean(f"{h.doc_id}{'' if h.page is None else f' · page {h.page}'}  {h.title or h.text}")
                cells.append(f"{_cut(label, text_w):<{text_w}} {h.score:>7.3f}")
            else:
                cells.append(" " * col)
        lines.append(f"{i + 1:>3}  " + " │ ".join(cells))
    from .compare import against_baseline  # imported here: keeps this edit local to the function

    # every column against the first one (compare.against_baseline, as the app's columns)
    agreement = against_baseline({r: [h.doc_id for h in hits] for r, hits in result.results.items()}, k=result.k)
    lines += [""] if agreement else []
    for r, a in agreement.items():
        lines.append(f"in both top-{result.k} ({a.baseline}, {r}): {a.overlap} of {result.k} documents")
    lines.append("scores are cosine similarities within one representation; compare ranks, not scores, across columns")
    return "\n".join(lines)


def format_summary(s: BuildSummary, show: int = 10, *, update: bool = False) -> str:
    rate = s.processed / s.seconds if s.seconds > 0 else 0.0
    head = (
        f"added {s.added}, re-embedded {s.updated} changed, left {s.unchanged} unchanged documents "
        f"({s.tokens} tokens) in {s.seconds:.1f} s; the index now holds {s.documents} documents in {s.chunks} chunks"
        if update else
        f"indexed {s.documents} documents into {s.chunks} chunks ({s.tokens} tokens) in {s.seconds:.1f} s "
        f"({rate:.1f} documents/s)"
    )
    if s.already_complete:
        head = f"{s.index_dir} is already complete: this same build was published before ({s.documents} documents); nothing to do"
    lines = [head]
    if s.resumed_at:
        lines.append(f"resumed an interrupted run after {s.resumed_at} source records")
    lines.append(f"skipped records: {s.skipped}" + (f"; files with other extensions ignored: {s.ignored_files}" if s.ignored_files else ""))
    for issue in s.issues[:show]:
        lines.append(f"  skipped: {issue}")
    if s.skipped > show:
        lines.append(f"  … and {s.skipped - show} more (all were logged above)")
    lines.append(f"index: {s.index_dir} ({s.generation})")
    return "\n".join(lines)


def format_info(manifest: Manifest, directory: Path) -> str:
    model, chunking, counts = manifest.model, manifest.chunking, manifest.counts
    lines = [
        f"index:          {directory}",
        f"created:        {manifest.created_at}  (format {manifest.format_version}, indexer {manifest.indexer_version})",
        f"model:          {model.name}  [{model.source}]  {model.architecture}, dim {model.dim}",
        f"weights sha256: {model.weights_sha256}",
        f"fingerprint:    {model.fingerprint or 'none (built before fingerprints: rebuild to record one)'}  "
        f"(weights, config and tokenizer files)",
        f"tokenizer:      {model.tokenizer}",
        f"pooler:         {model.pooler} — {model.pooler_note}",
        f"chunking:       {chunking.max_tokens} tokens per chunk (special tokens included), overlap {chunking.overlap}",
        f"documents:      {counts.documents}",
        f"chunks:         {counts.chunks}",
        f"vectors:        L2-normalised float32, {manifest.metric}",
        f"precision:      {manifest.encoded_precision} "
        + ("(the forward pass; vectors are stored as float32)" if manifest.precision else "(not recorded: built before precision was a choice)"),
        f"vector index:   {manifest.vector_index.label}",
        "representations:",
    ]
    reps = manifest.representations
    width = max((len(r) for r in reps), default=7)
    per_chunk = bytes_per_chunk(manifest)
    for r, spec in reps.items():
        listed = manifest.files.get(spec.file)
        size = format_bytes(listed.bytes if listed else 0)
        lines.append(f"  {r:<{width}} dim {spec.dim}, {spec.index_type}, {spec.file} ({size}, "
                     f"{format_bytes(round(per_chunk.get(spec.file, 0)))} per chunk)")
        if (search := describe_search(manifest, r)):
            lines.append(f"  {'':<{width}} {search}")
        if spec.transform is not None:
            lines.append(f"  {'':<{width}} {describe_transform(spec, str(directory))}")
    if METADATA in manifest.files:
        stored = ", ".join(f"{p} {format_bytes(4 * d)}" for p, d in manifest.poolings.items())
        lines.append(f"metadata:       {METADATA} ({format_bytes(manifest.files[METADATA].bytes)}, "
                     f"{format_bytes(round(per_chunk[METADATA]))} per chunk: texts, and each chunk's vectors again as "
                     f"float32: {stored})")
    lines.append(f"disk:           {format_bytes(round(sum(per_chunk.values())))} per chunk "
                 f"({format_bytes(sum(f.bytes for f in manifest.files.values()))} in {len(manifest.files)} files)")
    lines.append(f"source:         {manifest.source.path} ({manifest.source.format})")
    lines.append(f"build:          {manifest.build.seconds} s, {manifest.build.skipped_records} records skipped")
    if manifest.build.ray:
        lines.append(f"                built on Ray: {describe_ray(manifest.build.ray)}")
    for update in manifest.updates:
        if isinstance(update.get("ray"), dict):
            lines.append(f"                {update.get('op', 'update')} of {update.get('at', '?')} on Ray: {describe_ray(update['ray'])}")
    if model.pooler == "missing" and "pooled" in poolings_of(reps):
        lines.insert(0, "WARNING: `pooled` vectors of this index come from a randomly initialised pooler")
    return "\n".join(lines)


def _count(n, word: str) -> str:
    """"1 actor", "2 actors" ("? actors" for a count a record lacks)."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_pool(record: Mapping) -> str:
    """A Ray pool's size in words, from a record with `actors` and `threads_per_actor`: "2 actors x 1 thread"."""
    return f"{_count(record.get('actors', '?'), 'actor')} x {_count(record.get('threads_per_actor', '?'), 'thread')}"


def describe_ray(record: Mapping) -> str:
    """A build's or update's BuildRecord.ray in words: "2 nodes, 2 actors x 1 thread, 35.2 s"."""
    wall = record.get("wall_s")
    return (f"{_count(record.get('nodes', '?'), 'node')}, {describe_pool(record)}"
            + (f", {wall:.1f} s" if isinstance(wall, (int, float)) else ""))


def describe_search(manifest: Manifest, representation: str) -> str:
    """How a representation's approximate index is searched and was built (empty for an exact one): its efSearch
    (tuned, with the recall it reached, or fixed) and, for a graph extended by add or delete, its tombstones."""
    spec, record = manifest.vector_index, manifest.representations[representation]
    if spec.type == "flat":
        return ""
    name = EFFORT_NAMES[spec.type]
    if record.effort is not None:
        probes = ("pseudo-queries of its own chunks" if record.tuning_probes == vector_index.PROBES_TEXT
                  else "probes from its own vectors")
        recall = "" if record.recall_at_10 is None else f": recall@10 {record.recall_at_10:.3f} on {record.tuning_queries} {probes}"
        parts = [f"{name} {record.effort} (tuned to {spec.recall_target:g}{recall})"]
    elif spec.type == "ivf" and record.nlist is not None and spec.effort > record.nlist:  # as configure caps it
        parts = [f"{name} {record.nlist} (fixed: {spec.effort} asked for, capped at the number of lists)"]
    else:
        parts = [f"{name} {spec.effort} (fixed)"]
    if spec.type == "ivf":
        listed = manifest.files.get(record.file)
        held = manifest.counts.chunks + (record.tombstones or 0)
        size = f"; FAISS file {listed.bytes / held:.0f} bytes per vector (flat: {4 * record.dim})" if listed and held else ""
        parts[0] = (f"{record.nlist} lists, {spec.quantizer} codes, {parts[0]}, {spec.rerank}x candidates re-scored "
                    f"exactly{size}")
    if record.built_from:
        stale = record.tombstones or 0
        what = "graph" if spec.type == "hnsw" else "index"
        parts.append(f"{what} extended from {record.built_from}, {stale} tombstones (rebuilt when they pass "
                     f"{MAX_TOMBSTONE_FRACTION:.0%} of it)")
    return "; ".join(parts)


#: how `info` and the bench name each approximate type's search effort
EFFORT_NAMES = {"hnsw": "efSearch", "ivf": "nprobe"}


def describe_update(manifest: Manifest) -> str:
    """How an add or delete updated each FAISS index: extended from the previous generation, or built again in full."""
    parts = []
    for r, record in manifest.representations.items():
        took = f" in {record.build_seconds:.2f} s" if record.build_seconds is not None else ""
        if record.built_from:
            stale = f", {record.tombstones} tombstones" if record.tombstones else ""
            parts.append(f"`{r}` extended from {record.built_from}{took}{stale}")
        else:
            parts.append(f"`{r}` built again in full{took}")
    return (f"FAISS indexes: {'; '.join(parts)} (an HNSW or IVF index is rebuilt when its tombstones would pass "
            f"{MAX_TOMBSTONE_FRACTION:.0%} of it)")


def _index_spec(args: argparse.Namespace) -> IndexSpec:
    return IndexSpec(type=args.index_type, m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                     recall_target=args.recall_target, nlist=args.nlist, quantizer=args.quantizer, nprobe=args.nprobe,
                     rerank=args.rerank)


def _load_encoder(args: argparse.Namespace, representations: Sequence[str]) -> Encoder:
    return Encoder.load(
        args.model,
        representations=representations,
        batch_size=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
        max_tokens=getattr(args, "max_tokens", None),
        trust_remote_code=args.trust_remote_code,
        precision=getattr(args, "precision", None) or DEFAULT_PRECISION,
    )


def _ray_cluster(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The Ray cluster of --ray (connected before the model is loaded, so that a missing cluster costs nothing), or
    None without it: then nothing imports ray."""
    if args.ray is None:
        given = [name for name in ("--ray-actors", "--ray-threads") if getattr(args, name[2:].replace("-", "_")) is not None]
        if given:
            raise SourceError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --ray [ADDRESS]")
        return contextlib.nullcontext()
    from .distributed import connect

    return connect(args.ray, actors=args.ray_actors, threads=args.ray_threads or 1, trust_remote_code=args.trust_remote_code)


def cmd_build(args: argparse.Namespace) -> int:
    with _ray_cluster(args) as cluster:
        encoder = _load_encoder(args, parse_representations(args.representations))
        summary = build_index(
            args.source,
            args.index,
            encoder,
            overlap=args.overlap,
            overwrite=args.overwrite,
            format=args.format,
            id_column=args.id_column,
            title_column=args.title_column,
            text_column=args.text_column,
            progress=not args.no_progress,
            vector_index=_index_spec(args),
            ray=cluster,
        )
    print(format_summary(summary))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    with _ray_cluster(args) as cluster:
        encoder = encoder_for(read_manifest(args.index), batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
                              precision=args.precision)
        summary = add_documents(
            args.index, args.source, encoder, format=args.format, id_column=args.id_column,
            title_column=args.title_column, text_column=args.text_column, progress=not args.no_progress, ray=cluster,
        )
    print(format_summary(summary, update=True))
    print(describe_update(read_manifest(args.index)))
    return 0


def read_ids_file(path: Path) -> list[str]:
    """One id per line, exactly as written: only the line end (\\n or \\r\\n) is removed, so ids may hold spaces; blank lines are ignored."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return [line for line in lines if not is_blank(line)]


def cmd_delete(args: argparse.Namespace) -> int:
    ids = list(args.ids or [])
    if args.ids_file is not None:
        ids += read_ids_file(args.ids_file)
    for i, doc_id in enumerate(args.ids or []):
        if (reason := describe_surrogate(doc_id, f"--ids argument {i + 1}")):
            raise SourceError(reason)
    summary = delete_documents(args.index, ids)
    if not summary.removed:
        # like a build that is already complete: the index already is what was asked for
        print(f"none of the {len(summary.missing)} ids is in the index; nothing was deleted and nothing published "
              f"(still {summary.generation}, {summary.documents} documents)")
        return 0
    print(f"deleted {len(summary.removed)} documents; the index now holds {summary.documents} ({summary.generation})")
    print(describe_update(read_manifest(args.index)))
    if summary.missing:
        print(f"not in the index: {', '.join(summary.missing[:20])}" + (" …" if len(summary.missing) > 20 else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    problems, notes = verify(args.index)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"{args.index}: " + (f"{len(problems)} problems; do not serve this index" if problems else "ok"))
    return 1 if problems else 0


def cmd_repair(args: argparse.Namespace) -> int:
    repaired = repair(args.index, progress=not args.no_progress)
    problems, _ = verify(args.index)
    print(f"published {repaired.generation}: {repaired.note}; verify: " + ("ok" if not problems else "; ".join(problems)))
    return 0 if not problems else 1


def cmd_convert(args: argparse.Namespace) -> int:
    spec = _index_spec(args)
    started = time.perf_counter()
    generation = convert(args.index, spec, progress=not args.no_progress)
    print(f"published {generation} with {spec.label} FAISS files, built from the stored vectors in "
          f"{time.perf_counter() - started:.1f} s (nothing re-embedded)")
    return 0


def _searcher(args: argparse.Namespace, representations: Sequence[str] | None = None) -> Searcher:
    """The searcher of --index with --model (default: the index's own), --precision (default: the index's) and
    --trust-remote-code."""
    encoder = encoder_for(read_manifest(args.index), args.model, trust_remote_code=args.trust_remote_code, precision=args.precision)
    return Searcher(args.index, encoder, representations=representations)


def cmd_refit(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    result = refit(args.index, args.representations, progress=not args.no_progress)
    manifest = read_manifest(args.index)
    print(f"published {result.generation}: {result.note}, in {time.perf_counter() - started:.1f} s (nothing re-embedded); "
          f"representations: {', '.join(manifest.representations)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    searcher = _searcher(args)
    result = searcher.search(args.query, k=args.k)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) if args.json else format_result(result))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.index)
    directory = Path(args.index).resolve()
    if args.json:
        print(json.dumps({"directory": str(directory)} | manifest.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_info(manifest, directory))
    return 0


def default_eval_index(dataset: Path, model: str | None) -> Path:
    """Cache folder for a BEIR dataset's index: one per dataset path and model, reused across runs."""
    root = os.environ.get("POOLING_LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pooling-lab"
    key = hashlib.sha256(f"{dataset.resolve()}\n{model or 'bundled'}".encode()).hexdigest()[:10]
    return Path(root) / "indexes" / f"{dataset.resolve().name}-{key}"


def _evaluate_sts(args: argparse.Namespace) -> int:
    """`evaluate --sts FILE`: sentence-pair similarity, no index needed (`--fit-on` only lends its transforms)."""
    from .config import parse_representation
    from .sts import BATCH_SIZE, check_baseline, evaluate_sts, read_sts

    others = [f"--{name.replace('_', '-')}" for name in ("beir", "index", "queries", "qrels", "out", "fuse") if getattr(args, name, None) is not None]
    if others:
        raise SourceError(f"--sts evaluates a file of sentence pairs without an index; it does not take {', '.join(others)}")
    representations = parse_representations(args.representations or DEFAULT_REPRESENTATIONS)
    check_baseline(representations, args.baseline)
    if args.fit_on is not None and not any(parse_representation(r).transform for r in representations):
        print(f"warning: --fit-on is not used: none of {', '.join(representations)} has a transform", file=sys.stderr)
    data = read_sts(args.sts)
    encoder = Encoder.load(args.model, representations=representations, batch_size=BATCH_SIZE, trust_remote_code=args.trust_remote_code,
                           precision=args.precision or DEFAULT_PRECISION)
    result = evaluate_sts(data, encoder, representations, fit_on=args.fit_on, baseline=args.baseline, progress=not args.no_progress)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) if args.json else result.to_markdown())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.sts is not None:
        return _evaluate_sts(args)
    if args.fit_on is not None:
        raise SourceError("--fit-on INDEX_DIR goes with --sts FILE: it names the index whose transforms an STS evaluation uses")
    if args.beir is not None:
        dataset = open_beir(args.beir)
        if dataset.queries is None:
            raise SourceError(f"{dataset.root}: queries.jsonl is missing; it is needed to evaluate")
        if args.split not in dataset.qrels:
            raise SourceError(
                f"{dataset.root}: no qrels/{args.split}.tsv; splits found: {', '.join(dataset.qrels) or 'none'}"
            )
        queries_file, qrels_file, name = dataset.queries, dataset.qrels[args.split], dataset.root.name
        index = args.index or default_eval_index(dataset.root, args.model)
        representations = parse_representations(args.representations or DEFAULT_REPRESENTATIONS)
        check_choices(representations, baseline=args.baseline, fuse=args.fuse)  # a typo costs no build
        out_dir, out_problem = _evaluation_out(args, index, name)
        encoder = _load_encoder(args, representations)
        why = index_matches(index, encoder, dataset.root)
        if why is None:
            print(f"reusing the index at {index}", file=sys.stderr)
        else:
            print(f"building the index at {index} ({why})", file=sys.stderr)
            summary = build_index(dataset.root, index, encoder, overwrite=True, progress=not args.no_progress)
            print(format_summary(summary), file=sys.stderr)
        searcher = Searcher(index, encoder, representations=encoder.representations)  # a reused index may hold more
    else:
        kept = args.queries is None and args.qrels is None  # the labelled set kept with the index
        if args.index is None or (not kept and (args.queries is None or args.qrels is None)) or (kept and not is_index(args.index)):
            raise SourceError("evaluate needs --beir DATASET_DIR, or --index DIR with --queries FILE and --qrels FILE "
                              "(or --index alone, for an index built from a BEIR folder: the labelled set kept with it)")
        # the representations asked for, each of which the index must serve (default: all it serves)
        searcher = _searcher(args, args.representations and parse_representations(args.representations))
        if kept:
            queries_file, qrels_file, name = _kept_labels(searcher, args.split)
        else:
            queries_file, qrels_file = args.queries, args.qrels
            name = Path(args.queries).resolve().parent.name
        check_choices(searcher.representations, baseline=args.baseline, fuse=args.fuse)
        out_dir, out_problem = _evaluation_out(args, args.index, name)
    queries, qrels, issues = load_labels(queries_file, qrels_file, searcher.index.doc_ids())
    result = evaluate(
        searcher, queries, qrels, dataset=name, split=args.split, issues=issues,
        ignore_identical_ids=not args.keep_identical_ids, progress=not args.no_progress,
        baseline=args.baseline, fuse=args.fuse,
    )
    failed = None  # a write that fails after all (disk full): the results are still printed
    if out_problem is None:
        try:
            write_artifacts(result, out_dir)
        except OSError as exc:
            failed = f"{out_dir}: {exc.strerror or exc}"
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_evaluation(result))
    if failed is not None:
        print(f"{'warning' if args.json else 'error'}: the reports were not written ({failed})", file=sys.stderr)
        return 0 if args.json else EXIT_USAGE
    return 0


def _kept_labels(searcher: Searcher, split: str) -> tuple[Path, Path, str]:
    """(queries file, qrels file, dataset name) of a split of the labelled set an index keeps."""
    sets = labelled_sets(searcher.manifest, searcher.index.directory)
    chosen = next((s for s in sets if s.split == split), None)
    if chosen is None:
        found = ", ".join(s.split for s in sets)
        raise SourceError(f"{searcher.index.directory} keeps no labelled queries of split {split!r}"
                          + (f" (splits kept: {found})" if found else " (it was not built from a BEIR folder)")
                          + "; pass --queries FILE and --qrels FILE")
    return chosen.queries, chosen.qrels, chosen.dataset


def _evaluation_out(args: argparse.Namespace, index: Path, name: str) -> tuple[Path, str | None]:
    """Where `evaluate` writes its reports, checked before any work: (folder, why it cannot be written or None).

    Without --json an unwritable folder ends the command at once; with --json the results are
    still computed and printed, and a warning says the reports were not written.
    """
    out_dir = args.out or Path(f"{Path(index).resolve()}.eval") / f"{name}-{args.split}"
    problem = unwritable_dir(out_dir)
    if problem is not None:
        if not args.json:
            raise SourceError(f"cannot write the evaluation reports to {problem}")
        print(f"warning: cannot write the evaluation reports to {problem}; the results are printed only", file=sys.stderr)
    return out_dir, problem


def format_evaluation(result: Evaluation) -> str:
    report = result.to_dict()
    lines = [
        f"{report['dataset']} ({report['split']}): {report['queries_evaluated']} queries evaluated, "
        f"{report['queries_excluded_no_positive']} without relevant documents excluded, {len(report['issues'])} lines skipped",
        "",
    ]
    width = max(len(s) for s in ["system", *report["metrics"]]) + 2
    lines.append(f"{'system':<{width}}" + "".join(f"{m:>12}" for m in METRIC_NAMES)
                 + "".join(f"{label.replace(' ', ''):>12}" for label in GEOMETRY_LABELS.values()))
    for system, values in report["metrics"].items():
        lines.append(f"{system:<{width}}" + "".join(f"{values[m]:>12.4f}" for m in METRIC_NAMES)
                     + "".join(f"{cell:>12}" for cell in format_geometry(report["geometry"].get(system))))
    lines += ["", GEOMETRY_NOTE, fusion_line(report)]
    if not result.pairs:
        lines += ["", f"one representation ({', '.join(result.representations)}): no paired comparison"]
    corrected = len(result.pairs) > 1
    if corrected:
        lines += ["", f"p-values: raw, then Holm-corrected over the {len(result.pairs)} pairs tested (per metric and test)"]
    for a, b in result.pairs:
        head = f"{'metric':<11}{'delta':>9}{'t-test p':>11}{'random. p':>11}"
        head += f"{'t (Holm)':>11}{'rand. (Holm)':>13}" if corrected else ""
        lines += ["", f"{a} - {b}, paired over queries:", f"{head}  wins {a}/{b}/ties"]
        for m, sig in report["significance"][pair_name(a, b)].items():
            row = f"{m:<11}{sig['delta']:>+9.4f}{format_p(sig['t_test_p']):>11}{format_p(sig['randomization_p']):>11}"
            if corrected:
                row += f"{format_p(sig['t_test_p_holm']):>11}{format_p(sig['randomization_p_holm']):>13}"
            lines.append(f"{row}  {sig[f'{a}_wins']}/{sig[f'{b}_wins']}/{sig['ties']}")
    lines.append("")
    lines += [f"{k}: {v}" for k, v in report["artifacts"].items()]
    return "\n".join(lines)


def _document_sizes(value: str) -> list[float]:
    """--memory-doc-mb: sizes in MB, each above 0 and within the loader's limit per document (50 MB)."""
    try:
        sizes = [float(x) for x in value.split(",")]
    except ValueError:
        raise ValueError(f"--memory-doc-mb takes sizes in MB separated by commas (e.g. 2,10,50), not {value!r}") from None
    if not all(0 < mb <= 50 for mb in sizes):
        raise ValueError(f"--memory-doc-mb sizes must be above 0 and at most 50 (the loader's limit per document), got {value!r}")
    return sizes


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import (
        beir_quality,
        build_benchmark,
        build_peak_memory,
        document_peak_memory,
        encode_benchmark,
        parse_precisions,
        parse_sizes,
        positive,
        queries_of,
        ray_benchmark,
        scale_benchmark,
        texts_of,
    )

    # every count and size is checked before any work, so a typo costs nothing
    for option, value in (("--docs", args.docs), ("--runs", args.runs), ("--batch-size", args.batch_size), ("--queries", args.queries)):
        if value is not None:
            positive(option, value)
    latency = parse_sizes("--latency", args.latency) if args.latency is not None else None
    memory = parse_sizes("--memory", args.memory) if args.memory is not None else None

    sizes_mb = _document_sizes(args.memory_doc_mb) if args.memory_doc_mb else []
    representations = parse_representations(args.representations)
    precisions = parse_precisions(args.precision)
    if args.beir is not None:
        open_beir(args.beir)  # a wrong folder costs no encoding

    from sentence_transformers import SentenceTransformer

    texts = texts_of(Path(args.data), args.docs)
    encoder = Encoder.load(args.model, representations=representations, batch_size=args.batch_size)
    peer = SentenceTransformer(encoder.info.location, device=str(encoder.device))
    peer.max_seq_length = encoder.max_tokens
    report: dict = {}
    if not args.no_encode:
        print(f"encoding {len(texts)} documents, {args.runs} runs each …", file=sys.stderr)
        report = encode_benchmark(texts, encoder, peer, runs=args.runs, precisions=precisions)
    if args.beir is not None:
        print(f"nDCG@10 on {args.beir} (test split), an index built at each precision …", file=sys.stderr)
        report["beir"] = beir_quality(args.beir, encoder, precisions)
    if args.build:
        print(f"building {len(texts)} documents against the encoder alone, {args.runs} runs each …", file=sys.stderr)
        report["build"] = build_benchmark(texts, encoder, runs=args.runs)
    if args.ray:
        print(f"builds of {len(texts)} documents, locally and on Ray (one actor; two single-threaded actors), {args.runs} runs each …",
              file=sys.stderr)
        report["ray"] = ray_benchmark(texts, encoder, runs=args.runs)
    if latency:
        sizes = latency
        spec = _index_spec(args)
        print(f"search latency over {sizes} vectors, exact" + (f" and {spec.label}" if spec.type != "flat" else "") + " …", file=sys.stderr)
        collection = texts_of(Path(args.data), None)  # the Gaussian fit wants every distinct text
        # over the poolings themselves: synthetic vectors carry no fitted transform (it would add one product per query)
        plain = Encoder(encoder.model, encoder.tokenizer, encoder.info, representations=encoder.poolings,
                        batch_size=encoder.batch_size, max_tokens=encoder.max_tokens, precision=encoder.precision)
        report["latency"] = scale_benchmark(plain, collection, queries_of(Path(args.data), args.queries, collection), sizes, spec=spec)
    if memory:
        sizes = memory
        print(f"peak memory of builds of {sizes} documents …", file=sys.stderr)
        report["memory"] = build_peak_memory(texts, sizes, args.model)
        if args.ray:
            report["ray_memory"] = build_peak_memory(texts, sizes, args.model, extra=["--ray", "local"])
    if sizes_mb:
        print(f"peak memory of builds of one document of {sizes_mb} MB …", file=sys.stderr)
        report["memory_document"] = document_peak_memory(texts_of(Path(args.data), None), sizes_mb, args.model)
    report["machine"] = machine = machine_summary(encoder.device)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"machine: {machine['cpu']} ({machine['architecture']}), {machine['cpus']} CPUs, {machine['torch_threads']} torch threads, "
          f"device {machine['device']}" + (f" ({machine['device_name']})" if machine["device_name"] else "") + "; "
          f"CPU features: {' '.join(machine['cpu_flags']) or 'none of ' + ', '.join(SPEED_CPU_FLAGS)}; "
          f"bf16 matrix hardware: {'yes' if machine['native_bf16'] else 'no'} (figures from another machine do not compare)")
    if report.get("docs"):
        ours = f"ours ({', '.join(report['representations'])}, one pass):"
        peer = "sentence-transformers (mean):"
        width = max(len(ours), len(peer)) + 1
        print(
            f"{report['docs']} documents, {report['tokens']} tokens, {report['threads']} threads, median of {report['runs']} runs\n"
            f"  {ours:<{width}}{report['ours_s']:.2f} s  {report['ours_docs_per_s']:.1f} docs/s  "
            f"{report['ours_tokens_per_s']:.0f} tokens/s  {report['gflops']:.1f} GFLOP/s\n"
            f"  {peer:<{width}}{report['peer_s']:.2f} s  {report['peer_docs_per_s']:.1f} docs/s  "
            f"{report['peer_tokens_per_s']:.0f} tokens/s  {report['peer_gflops']:.1f} GFLOP/s\n"
            f"  ratio ours/peer: {report['ratio']:.3f}   machine limit ({report['precision']} matmul): {report['peak_gflops']:.1f} GFLOP/s, "
            f"ours at {report['gflops'] / report['peak_gflops']:.0%}"
        )
        print("  per precision (ours, all representations / sentence-transformers fp32, mean only):")
        for row in report["precisions"]:
            cost = ", ".join(f"{p} {d['max']:.2e}/{d['mean']:.2e}" for p, d in row["cosine_distance"].items())
            print(f"    {row['requested']:>4} = {row['precision']}: {row['ours_s']:.2f} s, ratio {row['ratio']:.3f}, "
                  f"{row['gflops']:.1f} GFLOP/s = {row['fraction_of_peak']:.0%} of the {row['peak_gflops']:.1f} GFLOP/s "
                  f"{row['precision']} matmul limit; cosine distance to fp32, max/mean: {cost}")
    for row in report.get("beir", []):
        change = ", ".join(f"{r} {v:.4f} ({row['ndcg_at_10_change'][r]:+.4f})" for r, v in row["ndcg_at_10"].items())
        print(f"  nDCG@10 on {row['dataset']} ({row['split']}), {row['requested']} = {row['precision']} "
              f"(change vs fp32): {change}")
    if "build" in report:
        row, disk = report["build"], report["build"]["disk"]
        print(f"build of {row['docs']} documents ({row['chunks']} chunks, {row['encoder_calls']} encoder calls), median of {row['runs']} runs\n"
              f"  encoder alone, the build's chunks: {row['encoder_s']:.2f} s  {row['encoder_docs_per_s']:.1f} docs/s\n"
              f"  whole build (read, chunk, encode, stage, publish): {row['build_s']:.2f} s  {row['build_docs_per_s']:.1f} docs/s\n"
              f"  encoder alone, the same chunks in one call sorted together: {row['one_call_s']:.2f} s  "
              f"{row['one_call_docs_per_s']:.1f} docs/s\n"
              f"  ratio build/encoder throughput: {row['ratio']:.3f} (the build's calls), {row['ratio_to_one_call']:.3f} (one call)\n"
              f"  disk per chunk: " + ", ".join(f"{name} {format_bytes(round(b))}" for name, b in disk["files"].items())
              + f"; total {format_bytes(round(sum(disk['files'].values())))}\n"
              f"    in {METADATA}: vectors {format_bytes(round(disk['metadata_vectors_per_pooling']))} per pooling "
              f"(float32 payload {format_bytes(disk['float32_vector'])}), documents and chunk texts {format_bytes(round(disk['metadata_rest']))}")
    for row in report.get("latency", []):
        print(f"  query at {row['vectors']:>9} vectors (encode + search all + metadata): exact p50 {row['exact']['p50_ms']:.1f} ms, "
              f"p95 {row['exact']['p95_ms']:.1f} ms (encoding alone p50 {row['encode_only']['p50_ms']:.1f} ms)")
        if "approximate" in row:
            recall = ", ".join(f"{r} {v:.3f}" for r, v in row["recall_at_k"].items())
            build = ", ".join(f"{r} {v:.0f} s" for r, v in row["build_s"].items())
            print(f"    {row['index_type']['type']}: p50 {row['approximate']['p50_ms']:.1f} ms, p95 {row['approximate']['p95_ms']:.1f} ms; "
                  f"recall@10 vs exact: {recall}; build {build}")
            name = EFFORT_NAMES[row["index_type"]["type"]]
            tuned = ", ".join(f"{r} {ef}" + (f" (sample recall {row['tuning'][r]['recall_at_10']:.3f}, tuned in "
                                              f"{row['tuning'][r]['seconds']:.0f} s)" if r in row["tuning"] else "")
                              for r, ef in row["effort"].items())
            print(f"    {name}: {tuned}" + (f"; lists: {', '.join(f'{r} {v}' for r, v in row['nlist'].items())}" if "nlist" in row else ""))
            sizes = row["bytes_per_vector"]
            print(f"    FAISS file bytes per vector: {', '.join(f'{r} {v:.1f}' for r, v in sizes[row['index_type']['type']].items())} "
                  f"(flat: {', '.join(f'{r} {v:.1f}' for r, v in sizes['flat'].items())})")
            so = row["search_only"]
            print(f"    searches alone, all representations: p50 {so['sequential']['p50_ms']:.2f} ms one after the other, "
                  f"{so['concurrent']['p50_ms']:.2f} ms concurrently")
            if "add_1pct" in row:
                add = row["add_1pct"]
                ratios = ", ".join(f"{r} {add['structure_s'][r]:.2f} s = {add['structure_s'][r] / row['build_s'][r]:.3f} of the full build"
                                   for r in add["structure_s"] if row["build_s"][r])
                print(f"    add of {add['vectors']} vectors (1%): {add['wall_s']:.1f} s in all; index structures: {ratios}"
                      + ("" if add["extended"] else " (a graph was rebuilt)"))
            for sweep in row["effort_sweep"]:
                recalls = ", ".join(f"{k[7:]} {v:.3f}" for k, v in sweep.items() if k.startswith("recall_"))
                print(f"      {name} {sweep['effort']:>5}: search all p50 {sweep['search_p50_ms']:.2f} ms, recall@10 {recalls}")
    for row in report.get("memory", []):
        print(f"  build of {row['docs']:>6} documents: peak RSS {format_bytes(row['peak_rss_bytes'])} "
              f"(vectors {format_bytes(row['vectors_bytes'])})")
    for row in report.get("ray_memory", []):
        print(f"  build of {row['docs']:>6} documents on Ray (--ray local): the driver's peak RSS {format_bytes(row['peak_rss_bytes'])}")
    for row in report.get("memory_document", []):
        print(f"  build of one {row['document_mb']:g} MB document: peak RSS {format_bytes(row['peak_rss_bytes'])}, {row['seconds']:.0f} s, "
              f"progress bar moved {row['progress_updates']} times during it")
    if "ray" in report:
        print(format_ray_benchmark(report["ray"]))
    return 0


def format_ray_benchmark(row: dict) -> str:
    lines = [f"builds of {row['docs']} documents ({row['chunks']} chunks) on {row['cpus']} CPUs, median of {row['runs']} runs, "
             "after Ray's start-up",
             f"  local build ({row['local_threads']} threads):{'':<14}{row['local_s']:.2f} s  {row['local_docs_per_s']:.1f} docs/s"]
    for s in row["systems"].values():
        label = f"Ray, {describe_pool(s)}:"
        driver = f"{s['driver_docs_per_s']:.0f} docs/s" if s["driver_docs_per_s"] else "n/a"
        lines.append(f"  {label:<37}{s['build_s']:.2f} s  {s['docs_per_s']:.1f} docs/s  ({s['ratio_to_local']:.2f}x the local time; "
                     f"actors' start-up {s['startup_s']:.1f} s; the driver's own work {s['driver_own_s']:.2f} s = {driver}; "
                     f"same chunks: {s['chunks_equal']}, max vector difference {s['max_abs_vector_difference']:.1e})")
    lines.append(f"  Ray's fixed start-up: ray.init {row['ray_init_s']:.1f} s, then each build's actors (model loaded) as above")
    return "\n".join(lines)


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the Streamlit app until interrupted (what `make run` starts)."""
    if not is_index(args.index):
        print(f"note: {args.index} is not an index yet; build one (python -m indexer build SOURCE --index {args.index})"
              + (" or upload files on the Index page" if args.allow_build else ""), file=sys.stderr)
    if args.host not in LOOPBACK_NAMES:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the app (it has no login)",
              file=sys.stderr)
    cmd = streamlit_command(app_argv(args), address=args.host, port=args.port, headless=args.headless)
    sys.stdout.flush(), sys.stderr.flush()
    # Streamlit takes this process's place: a signal to it (Ctrl-C, a service manager's SIGTERM) stops the
    # server itself, with nothing left behind
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover  (execv does not return)


def cmd_demo(args: argparse.Namespace) -> int:
    """Terminal demo: build the sample index if missing, run sample queries, then read queries from stdin."""
    index = Path(args.index)
    if not is_index(index):
        print(f"building the demo index from {args.source} into {index} …", file=sys.stderr)
        encoder = _load_encoder(args, DEFAULT_REPRESENTATIONS)
        print(format_summary(build_index(args.source, index, encoder)), file=sys.stderr)
    searcher = Searcher(index)
    print(format_info(searcher.manifest, searcher.index.directory), end="\n\n")
    queries_file = Path(args.source) / "queries.jsonl"
    queries = list(load_queries(queries_file, LoadReport()).values()) if queries_file.is_file() else []
    step = max(len(queries) // max(args.n, 1), 1)
    for q in queries[::step][: args.n]:  # spread over the collection's topics
        print(format_result(searcher.search(q, k=args.k)), end="\n\n")
    if sys.stdin.isatty():
        print("type a query (empty line or Ctrl-D to quit)")
        while True:
            try:
                query = input("query> ")
            except EOFError:  # Ctrl-D
                print()
                break
            if is_blank(query):
                break
            try:
                print(format_result(searcher.search(query, k=args.k)), end="\n\n")
            except ValueError as exc:  # a query that cannot be searched (search.query_problem): say why, go on
                print(f"error: {exc}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (`error: …`), exit 2, like every other refusal of the CLI."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {_clean(message)} (see: {self.prog} --help)\n")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, not {value!r}")
    return port


def _host(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("the host is empty; give an address such as 127.0.0.1")
    return value.strip()


def _program_name() -> str:
    """How the user called us, for usage lines: the console script or `python -m indexer`."""
    return "pooling-lab" if Path(sys.argv[0]).name == "pooling-lab" else "python -m indexer"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_program_name(),
        description="Index documents with a BERT-family model and compare what each representation (pooled, mean, cls, "
                    "max, first_last, and transforms such as pooled+whiten) retrieves.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped record and more")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p: argparse.ArgumentParser, default_help: str) -> None:
        p.add_argument("--model", default=None, help=default_help)
        p.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own Python code (off by default)")

    def precision_option(p: argparse.ArgumentParser, default: str | None, default_help: str) -> None:
        p.add_argument("--precision", choices=PRECISIONS, default=default,
                       help=f"what the model computes in: fp32, bf16, or auto (bf16 where the CPU or GPU has native bf16 "
                            f"instructions, else fp32); vectors are stored as float32 either way (default: {default_help})")

    def progress_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-progress", action="store_true", help="no progress bars (on standard error)")

    def ray_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                       help="embed on a Ray cluster (needs `pip install ray==2.60.0`; put it after SOURCE): `auto` (the default) "
                            "joins the cluster running here (`ray start --head`), HOST:PORT another one, `local` starts one "
                            "in this process; the same index as a local build")
        p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                       help="with --ray: actors, each holding the model (default: the cluster's CPUs / --ray-threads)")
        p.add_argument("--ray-threads", type=int, default=None, metavar="N", help="with --ray: torch threads (and CPUs) per actor (default 1)")

    def index_type_options(p: argparse.ArgumentParser, required: bool = False, default: str = "flat", help: str | None = None) -> None:
        d = IndexSpec()
        p.add_argument("--index-type", choices=INDEX_TYPES, required=required, default=None if required else default,
                       help=help or "flat: exact search (default); hnsw: approximate graph search for large collections; "
                                    "ivf: approximate and compressed, for vectors that do not fit in memory (re-ranked exactly)")
        p.add_argument("--hnsw-m", type=int, default=d.m, help=f"hnsw: links per vector (default {d.m})")
        p.add_argument("--ef-construction", type=int, default=d.ef_construction, help=f"hnsw: build effort (default {d.ef_construction})")
        p.add_argument("--ef-search", type=int, default=None,
                       help="hnsw: search effort, more = better recall; fixes it for every representation "
                            "(default: tuned per representation to --recall-target at build, convert and repair)")
        p.add_argument("--recall-target", type=float, default=d.recall_target,
                       help=f"hnsw, ivf: recall@10 against exact search that the tuned efSearch / nprobe reaches on "
                            f"query-like probes made from the collection's own vectors (default {d.recall_target})")
        p.add_argument("--nlist", type=int, default=None,
                       help="ivf: k-means lists (default: about 4 sqrt(vectors), at most vectors / 39)")
        p.add_argument("--quantizer", default=d.quantizer,
                       help=f"ivf: how vectors are compressed: {vector_index.QUANTIZERS} (default {d.quantizer})")
        p.add_argument("--nprobe", type=int, default=None,
                       help="ivf: lists searched per query; fixes it for every representation (default: tuned per "
                            "representation to --recall-target)")
        p.add_argument("--rerank", type=int, default=d.rerank,
                       help=f"ivf: candidates fetched per result and re-scored exactly with the stored vectors "
                            f"(default {d.rerank}: 4k candidates for k results)")

    b = sub.add_parser("build", help="index a folder, JSONL, CSV or BEIR dataset")
    b.add_argument("source", help="folder of .txt/.md/.html/.pdf/.docx, a .jsonl/.csv/.tsv file, or a BEIR dataset folder")
    b.add_argument("--index", required=True, type=Path, help="index directory to create")
    model_options(b, "embedded all-MiniLM-L6-v2 by default; or a local model directory, or a Hugging Face model id (downloaded)")
    b.add_argument("--max-tokens", type=int, default=None, help="tokens per chunk incl. special tokens (default: the model's limit, 256 for all-MiniLM-L6-v2)")
    b.add_argument("--overlap", type=int, default=None, help=f"tokens shared by neighbouring chunks (default {DEFAULT_OVERLAP}, or an eighth of shorter chunks)")
    b.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"at most this many chunks per forward pass (default {DEFAULT_BATCH_SIZE})")
    b.add_argument("--representations", default=",".join(DEFAULT_REPRESENTATIONS), metavar="LIST",
                   help=f"comma-separated: poolings ({', '.join(POOLINGS)}), each optionally with a transform fitted on the "
                        f"collection (+whiten, +whitenK, +abttD), e.g. pooled,mean,max,pooled+whiten (default {','.join(DEFAULT_REPRESENTATIONS)})")
    b.add_argument("--format", default="auto", choices=FORMATS, help="source format (default: detected)")
    b.add_argument("--id-column", default=None, help="CSV: id column (default: _id, id or doc_id; else row numbers)")
    b.add_argument("--title-column", default="title", help="CSV: title column (default title, optional)")
    b.add_argument("--text-column", default="text", help="CSV: text column (default text)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index (kept until the new one is complete)")
    precision_option(b, DEFAULT_PRECISION, DEFAULT_PRECISION)
    progress_option(b)
    index_type_options(b)
    ray_options(b)
    b.set_defaults(func=cmd_build)

    a = sub.add_parser("add", help="index new documents and re-embed changed ones (by content hash)")
    a.add_argument("index", type=Path, help="index directory")
    a.add_argument("source", help="folder, JSONL, CSV/TSV or BEIR dataset")
    a.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"at most this many chunks per forward pass (default {DEFAULT_BATCH_SIZE})")
    a.add_argument("--trust-remote-code", action="store_true", help="allow the index's hub model its own Python code (off by default)")
    a.add_argument("--format", default="auto", choices=FORMATS)
    a.add_argument("--id-column", default=None)
    a.add_argument("--title-column", default="title")
    a.add_argument("--text-column", default="text")
    progress_option(a)
    precision_option(a, None, "the index's; new vectors must be of the index's precision")
    ray_options(a)
    a.set_defaults(func=cmd_add)

    rm = sub.add_parser("delete", help="remove documents by id")
    rm.add_argument("index", type=Path)
    rm.add_argument("--ids", nargs="+", default=None, metavar="ID")
    rm.add_argument("--ids-file", type=Path, default=None, help="a file with one id per line")
    rm.set_defaults(func=cmd_delete)

    v = sub.add_parser("verify", help="check files, checksums, counts and ids; exit 1 if anything is wrong")
    v.add_argument("index", type=Path)
    v.set_defaults(func=cmd_verify)

    rp = sub.add_parser("repair", help="rebuild the FAISS files from the metadata store, as a new generation")
    rp.add_argument("index", type=Path)
    progress_option(rp)
    rp.set_defaults(func=cmd_repair)

    cv = sub.add_parser("convert", help="switch an index between exact (flat) and approximate (hnsw) search; nothing is re-embedded")
    cv.add_argument("index", type=Path)
    index_type_options(cv, required=True)
    progress_option(cv)
    cv.set_defaults(func=cmd_convert)

    rf = sub.add_parser("refit", help="fit the transforms (+whiten, +abtt) again on the index's vectors, or change the set of "
                                      "representations it serves from its stored poolings; nothing is re-embedded")
    rf.add_argument("index", type=Path)
    rf.add_argument("--representations", default=None, metavar="LIST",
                    help="the representations to serve afterwards (default: the index's own), e.g. mean,mean+whiten; "
                         "their poolings must be stored in the index (a pooling that no representation uses any more is dropped)")
    progress_option(rf)
    rf.set_defaults(func=cmd_refit)

    s = sub.add_parser("search", help="show each representation's ranking for a query, side by side")
    s.add_argument("index", type=Path, help="index directory")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10, help="documents per ranking (default 10)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    model_options(s, "model to encode the query with (default: the index's own); must match the index")
    precision_option(s, None, "the index's, so that queries are encoded as its documents were")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("info", help="show an index's manifest and counts")
    i.add_argument("index", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("evaluate", help="retrieval quality of each representation (and BM25, optional RRF) on labelled queries")
    e.add_argument("--beir", type=Path, default=None, help="BEIR dataset folder: its corpus is indexed (or a matching index reused)")
    e.add_argument("--index", type=Path, default=None, help="index directory (with --beir: where to build it; default a cache folder; "
                   "alone: evaluated on the labelled set kept with it)")
    e.add_argument("--split", default="test", help="qrels split of a BEIR dataset (default test)")
    e.add_argument("--queries", type=Path, default=None, help="queries.jsonl, for an existing --index")
    e.add_argument("--qrels", type=Path, default=None, help="qrels TSV (query-id, corpus-id, score), for an existing --index")
    e.add_argument("--out", type=Path, default=None, help="where to write the reports and run files (default DIR.eval/NAME-SPLIT)")
    e.add_argument("--keep-identical-ids", action="store_true", help="keep a document whose id equals the query id (BEIR ignores it)")
    e.add_argument("--representations", default=None, metavar="LIST",
                   help=f"with --beir: representations to build, as for build (a matching index is reused); with --sts: to evaluate "
                        f"(default {','.join(DEFAULT_REPRESENTATIONS)}); with --index: which of the index's to evaluate (default all)")
    e.add_argument("--baseline", default=None, metavar="REPRESENTATION",
                   help="compare every other representation with this one (default: every pair); Holm-corrected when more than one pair")
    e.add_argument("--fuse", default=None, metavar="LIST",
                   help="reciprocal-rank fusion (system `rrf`) of these representations and/or `bm25`, e.g. mean,pooled "
                        "or mean,bm25; without it, no fusion")
    e.add_argument("--sts", type=Path, default=None, metavar="FILE",
                   help="semantic textual similarity on sentence pairs, no index needed: STS Benchmark .tsv/.txt, "
                        "or .csv/.jsonl with sentence1, sentence2, score")
    e.add_argument("--fit-on", type=Path, default=None, metavar="INDEX_DIR",
                   help="with --sts: take transforms (+whiten, +abtt) from this index instead of fitting them on the STS sentences")
    e.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    progress_option(e)
    precision_option(e, None, f"with --index: the index's; with --beir or --sts: {DEFAULT_PRECISION}, and a cached index of "
                              "another precision is rebuilt")
    model_options(e, "with --beir or --sts: model to encode with (default: embedded all-MiniLM-L6-v2); with --index alone: "
                     "model to encode the queries with (default: the index's own); must match the index")
    e.set_defaults(func=cmd_evaluate)

    bn = sub.add_parser("bench", help="speed against sentence-transformers, machine limit, latency and memory")
    bn.add_argument("--data", type=Path, default=SAMPLE_SOURCE, help="collection whose texts are encoded (default data/sample)")
    bn.add_argument("--docs", type=int, default=None, help="number of documents (texts repeated to reach it)")
    bn.add_argument("--runs", type=int, default=3, help="runs of each system; the median is reported (default 3)")
    bn.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    bn.add_argument("--representations", default=",".join(DEFAULT_REPRESENTATIONS),
                    help=f"what our encoder computes in its one pass per batch (default {','.join(DEFAULT_REPRESENTATIONS)}); "
                         "sentence-transformers computes mean; --latency uses their poolings")
    bn.add_argument("--build", action="store_true",
                    help="also time a whole build of the texts against the encoder alone over the same chunks, and its disk per chunk")
    bn.add_argument("--latency", default=None, metavar="SIZES", help="e.g. 10000,100000,1000000: query latency over synthetic vectors")
    bn.add_argument("--queries", type=int, default=200, help="queries per latency size: the collection's queries.jsonl, then the first words of documents (default 200)")
    bn.add_argument("--memory", default=None, metavar="SIZES", help="e.g. 5000,50000: peak memory of builds of that many documents")
    bn.add_argument("--memory-doc-mb", default=None, metavar="SIZES",
                    help="e.g. 2,10,50: peak memory and time of builds of ONE document of that many MB of the collection's prose")
    bn.add_argument("--precision", default=DEFAULT_PRECISION, metavar="LIST",
                    help=f"precisions of our encoder to measure, comma-separated from {', '.join(PRECISIONS)} (default "
                         f"{DEFAULT_PRECISION}; e.g. fp32,bf16): each one's ratio to sentence-transformers fp32, GFLOP/s against "
                         "that precision's matmul limit, and cosine distance to our fp32 vectors")
    bn.add_argument("--beir", type=Path, default=None, metavar="DIR",
                    help="also nDCG@10 of each representation at each precision on this BEIR folder's test split (an index "
                         "of its corpus is built at each, and at fp32 for the change), e.g. ../shared/datasets/msmarco-5k")
    bn.add_argument("--no-encode", action="store_true", help="skip the encoding comparison (only --latency / --memory / --memory-doc-mb / --ray)")
    bn.add_argument("--ray", action="store_true",
                    help="also whole builds of the texts locally, on Ray with one actor and with two single-threaded actors (a "
                         "cluster started in this process), and Ray's start-up cost; with --memory, the peak memory of the "
                         "driver of Ray builds too")
    bn.add_argument("--json", action="store_true")
    index_type_options(bn, default="hnsw", help="with --latency: approximate index measured against exact search (default hnsw; flat: exact only)")
    bn.add_argument("--model", default=None, help="default: the embedded all-MiniLM-L6-v2")
    bn.set_defaults(func=cmd_bench)

    ap = sub.add_parser("app", help="serve the Streamlit app (what `make run` starts): rankings side by side in a browser")
    add_app_arguments(ap)
    ap.add_argument("--host", type=_host, default=LOOPBACK,
                    help=f"address to listen on (default {LOOPBACK}: this machine only; 0.0.0.0 opens it to the network)")
    ap.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port, 1-65535 (default {DEFAULT_PORT})")
    ap.add_argument("--headless", action="store_true", help="do not open a browser window")
    ap.set_defaults(func=cmd_app)

    d = sub.add_parser("demo", help="terminal demo on the sample collection (`make demo`)")
    d.add_argument("--index", type=Path, default=SAMPLE_INDEX, help=f"demo index (default {SAMPLE_INDEX})")
    d.add_argument("--source", type=Path, default=SAMPLE_SOURCE, help="collection to build it from if missing")
    d.add_argument("-k", type=int, default=5)
    d.add_argument("-n", type=int, default=3, help="sample queries to show (default 3)")
    model_options(d, "model for a missing demo index (default: embedded all-MiniLM-L6-v2)")
    d.set_defaults(func=cmd_demo)
    return parser


def _robust_output() -> None:
    """Printing never fails on text that is not valid Unicode (a path or id holding a lone surrogate from
    a non-UTF-8 byte): it is shown backslash-escaped instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to print to anyway
                pass


def _one_line(exc: BaseException) -> str:
    """An exception as one printable line, e.g. for an OSError: what failed and on which path."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return _clean(str(exc)) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    _robust_output()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bar is noise next to ours
    except ImportError:  # pragma: no cover
        pass
    started = time.perf_counter()
    try:
        return args.func(args)
    except (SourceError, StoreError, ModelError, BuildError, ValueError, OSError) as exc:
        if args.verbose:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.perf_counter() - started:.0f} s; nothing was published", file=sys.stderr)
        return 130
    except Exception as exc:  # a fault of ours, not of the input: one line, the traceback with -v
        if args.verbose:
            raise
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
