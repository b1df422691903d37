"""Semantic textual similarity (STS): how well each representation's cosine follows human similarity scores.

The benchmark on which pooling strategies and whitening are usually compared (Sentence-BERT,
BERT-whitening): for each sentence pair, the cosine of the two sentences' vectors against the gold
score, as Spearman (the headline number) and Pearson correlation ×100. Every unique sentence is
encoded once, in one forward pass per batch for every pooling; a transform (`+whiten`, `+abtt3`) is
fitted on the evaluation's own sentences, as the whitening papers do, or taken from an index.

Uncertainty: a percentile bootstrap over pairs (seeded) gives each Spearman a 95% interval, and the
same resampled pairs serve every representation, so differences are tested pairwise (paired
bootstrap) with Holm-corrected p-values. Retrieval evaluation lives in evaluation.py.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .config import parse_representation, parse_representations, poolings_of
from .evaluation import check_choices, format_p, holm, pair_name, pairs_tested
from .explore import geometry
from .loaders import CsvRows, LoadIssue, LoadReport, SourceError, format_bytes, json_objects, numbered_lines, printable_path, require_path
from .text import describe_surrogate, is_blank
from .transforms import Transform, TransformError, fit, represent

if TYPE_CHECKING:  # annotations only: reading a file needs no model code
    from .encoder import Encoder

log = logging.getLogger("indexer.sts")

#: File extension -> format: the STS Benchmark's own tab-separated layout, or CSV/JSONL with named fields.
STS_FORMATS = {".tsv": "stsb", ".txt": "stsb", ".csv": "csv", ".jsonl": "jsonl"}
#: Fields of the STS Benchmark's files (sts-train/dev/test.csv), in order; more trailing fields are ignored.
STSB_FIELDS = ("genre", "file", "year", "id", "score", "sentence 1", "sentence 2")
#: Field names of a CSV header or a JSONL record.
FIELDS = ("sentence1", "sentence2", "score")
#: An STS file larger than this is refused before it is read (the full STS Benchmark is about 1 MB).
MAX_FILE_BYTES = 200_000_000
N_RESAMPLES = 1000
SEED = 0
#: Sentences per forward pass for an STS run: they are short (STS Benchmark: about 15 tokens), so a larger
#: batch than a build's costs little memory and about halves the CPU time of encoding (measured here).
BATCH_SIZE = 128
#: Unique sentences per call to the encoder (it batches and sorts by length within a call): the progress step.
ENCODE_SLICE = 512
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class StsPair:
    sentence1: str
    sentence2: str
    score: float
    line: int  # 1-based line of the file (the first line of a CSV row)


@dataclass
class StsData:
    """The usable pairs of an STS file, and the lines that were skipped (with their reasons)."""

    path: str
    pairs: list[StsPair]
    issues: list[LoadIssue] = field(default_factory=list)


def read_sts(path: str | os.PathLike[str]) -> StsData:
    """Read an STS file by its extension (.tsv/.txt: STS Benchmark layout; .csv; .jsonl); bad rows are skipped.

    SourceError when the file is missing, of another type, too large, lacks a needed CSV column, or
    holds no usable pair at all.
    """
    path = require_path(path)
    kind = STS_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SourceError(
            f"{printable_path(path)}: unsupported STS file type {path.suffix or '(no extension)'!r}; supported: .tsv/.txt "
            f"(STS Benchmark: {', '.join(STSB_FIELDS)}, tab-separated, no header), .csv or .jsonl with fields {', '.join(FIELDS)}"
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SourceError(f"{printable_path(path)}: file is {format_bytes(size)}, larger than the {format_bytes(MAX_FILE_BYTES)} limit for an STS file")
    report = LoadReport()
    rows = {"stsb": _stsb_rows, "csv": _csv_rows, "jsonl": _jsonl_rows}[kind](path, report)
    pairs = []
    for line, s1, s2, score in rows:
        problem = _pair_problem(s1, s2, score)
        if problem:
            report.skip(path, line, problem)
        else:
            pairs.append(StsPair(s1, s2, float(score), line))
    if not pairs:
        detail = f"; {report.skipped} lines skipped, the first: {report.issues[0]}" if report.issues else ""
        raise SourceError(f"{printable_path(path)}: no usable sentence pair{detail}")
    return StsData(str(path), pairs, report.issues)


def _pair_problem(s1, s2, score) -> str | None:
    """Why a row is not a usable pair (a sentence not text, blank or not valid Unicode; a score not a finite number)."""
    for name, value in (("sentence1", s1), ("sentence2", s2)):
        if not isinstance(value, str):
            return f"{name} must be text, got {type(value).__name__}"
        if is_blank(value):
            return f"{name} is empty"
        if reason := describe_surrogate(value, name):
            return reason
    if isinstance(score, bool) or not isinstance(score, (int, float, str)):
        return f"score must be a number, got {type(score).__name__}"
    if isinstance(score, str):
        if not _NUMBER.fullmatch(score.strip()):
            infinite = score.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
            return f"score must be a {'finite ' if infinite else ''}number, got {score[:40]!r}"
    try:
        value = float(score)
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        return "score must be a finite number, got an integer too large for a float"
    if not math.isfinite(value):
        return f"score must be a finite number, got {score if isinstance(score, str) else value}"
    return None


def _stsb_rows(path: Path, report: LoadReport) -> Iterator[tuple[int, str, str, str]]:
    """STS Benchmark lines: split on tabs only, no quoting (its sentences contain `"`); extra fields ignored."""
    for lineno, text, error in numbered_lines(path):
        if error:
            report.skip(path, lineno, error)
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < len(STSB_FIELDS):
            report.skip(path, lineno, f"expected at least {len(STSB_FIELDS)} tab-separated fields "
                                      f"({', '.join(STSB_FIELDS)}), got {len(fields)}")
            continue
        yield lineno, fields[5], fields[6], fields[4]


def _csv_rows(path: Path, report: LoadReport) -> Iterator[tuple[int, str, str, str]]:
    """CSV with a header naming sentence1, sentence2 and score (other columns ignored); checked before any row."""
    rows = iter(CsvRows(path))
    try:
        lineno, header, problem = next(rows, (1, [], None))
    except Exception as exc:  # csv.Error on an unreadable header
        raise SourceError(f"{printable_path(path)}: unreadable header row: {exc}") from exc
    if problem:
        raise SourceError(f"{printable_path(path)}:{lineno}: header row is {problem}")
    header = [name.strip() for name in header or []]
    missing = [f for f in FIELDS if f not in header]
    if missing:
        found = ", ".join(map(printable_path, header)) or "none (empty file)"
        raise SourceError(f"{printable_path(path)}: no column {missing[0]!r}; an STS CSV needs {', '.join(FIELDS)}; columns found: {found}")
    at = {f: header.index(f) for f in FIELDS}
    return _csv_pairs(path, report, rows, len(header), at)


def _csv_pairs(path, report, rows, width, at) -> Iterator[tuple[int, str, str, str]]:
    for start, row, problem in rows:
        if problem:
            report.skip(path, start, problem)
        elif not row:
            continue  # a blank line
        elif len(row) != width:
            report.skip(path, start, f"expected {width} fields, got {len(row)}")
        else:
            yield start, row[at["sentence1"]], row[at["sentence2"]], row[at["score"]]


def _jsonl_rows(path: Path, report: LoadReport) -> Iterator[tuple[int, object, object, object]]:
    """JSON objects with sentence1, sentence2 and score (a number, or a number as text)."""
    for lineno, obj in json_objects(path, report):
        missing = [f for f in FIELDS if f not in obj]
        if missing:
            report.skip(path, lineno, f"field {missing[0]!r} is missing")
        else:
            yield lineno, obj["sentence1"], obj["sentence2"], obj["score"]


# -- evaluation ------------------------------------------------------------------------------------


@dataclass
class StsEvaluation:
    """Everything an STS run measured; `to_dict` is the JSON report, `to_markdown` the readable one."""

    file: str
    model: str
    pairs: int
    sentences: int  # unique sentences encoded
    representations: list[str]
    metrics: dict[str, dict]  # representation -> spearman, pearson, spearman_ci95, geometry
    comparisons: list[dict]
    fits: dict[str, dict]  # transformed representation -> how its transform was fitted
    issues: list[LoadIssue] = field(default_factory=list)
    baseline: str | None = None
    resamples: int = N_RESAMPLES
    seed: int = SEED

    def to_dict(self) -> dict:
        """The JSON report; an undefined number (a correlation with constant scores) is null, not NaN."""
        return _json_safe({
            "file": self.file,
            "model": self.model,
            "pairs": self.pairs,
            "sentences": self.sentences,
            "representations": list(self.representations),
            "metrics": self.metrics,
            "comparisons": self.comparisons,
            "baseline": self.baseline,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "interval": "percentile, 95%"},
            "transforms": self.fits,
            "skipped": [{"path": i.path, "line": i.line, "reason": i.reason} for i in self.issues],
        })

    def to_markdown(self) -> str:
        lines = [
            f"# STS: {printable_path(Path(self.file).name)}",
            "",
            f"{self.pairs} sentence pairs ({self.sentences} unique sentences), model `{self.model}`; "
            f"cosine against the gold scores, correlations ×100; 95% interval: percentile bootstrap over pairs "
            f"({self.resamples} resamples, seed {self.seed}).",
            "",
            "| representation | Spearman | 95% CI | Pearson | anisotropy | effective rank | top-3 variance |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r, m in self.metrics.items():
            lo, hi = m["spearman_ci95"]
            lines.append(
                f"| {r} | {m['spearman']:.2f} | {lo:.2f}–{hi:.2f} | {m['pearson']:.2f} | {m['anisotropy']:.3f} | "
                f"{m['effective_rank']:.1f} | {m['top3_variance']:.3f} |"
            )
        if self.fits:
            lines += [""] + [f"- `{r}`: {fit['description']}" for r, fit in self.fits.items()]
        if self.comparisons:
            against = f"each against `{self.baseline}`" if self.baseline else "every pair"
            corrected = "Holm-corrected p" if len(self.comparisons) > 1 else "p (one test: no correction)"
            lines += [
                "",
                f"## Paired bootstrap of the Spearman difference ({against}; same resampled pairs for both)",
                "",
                f"| comparison | Δ Spearman | 95% CI | p | {corrected} |",
                "|---|---:|---:|---:|---:|",
            ]
            for c in self.comparisons:
                lo, hi = c["delta_ci95"]
                lines.append(f"| {c['pair']} | {c['delta']:+.2f} | {lo:+.2f}–{hi:+.2f} | {format_p(c['p'])} | {format_p(c['p_holm'])} |")
        elif len(self.representations) == 1:
            lines += ["", f"One representation (`{self.representations[0]}`): no paired comparison."]
        if self.issues:
            lines += ["", f"## Skipped lines ({len(self.issues)})", ""] + [f"- {i}" for i in self.issues]
        return "\n".join(lines) + "\n"


def check_baseline(representations: Sequence[str], baseline: str | None) -> str | None:
    """The baseline's canonical name (None: every pair); ValueError unless it is one of `representations`
    (evaluation.check_choices, the rule retrieval evaluation uses)."""
    if baseline is None:
        return None
    return check_choices(representations, baseline=parse_representation(baseline).name)[0]


def _json_safe(value):
    """`value` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def evaluate_sts(
    data: StsData,
    encoder: "Encoder",
    representations: Sequence[str] | str,
    *,
    fit_on: str | os.PathLike[str] | None = None,
    baseline: str | None = None,
    resamples: int = N_RESAMPLES,
    seed: int = SEED,
    progress: bool = True,
    on_step: Callable[[str, float], None] | None = None,
) -> StsEvaluation:
    """Spearman/Pearson ×100, bootstrap intervals, geometry and paired tests for each representation.

    Transforms are fitted on the evaluation's unique sentences, or with `fit_on` taken from that
    index (its fitted transform of the same name, else fitted on its stored vectors of the pooling).
    ValueError (TransformError, StoreError aside) names what cannot be done: an unknown baseline, a
    pooling the encoder does not compute, a transform that cannot be fitted, an index of another model.
    """
    from scipy import stats

    reps = list(parse_representations(representations))
    baseline = check_baseline(reps, baseline)
    missing = [p for p in poolings_of(reps) if p not in encoder.poolings]
    if missing:
        raise ValueError(f"the encoder does not compute `{missing[0]}` (it computes {', '.join(encoder.poolings)})")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    scores = {p.score for p in data.pairs}
    if len(scores) < 2:  # checked before encoding: no correlation (nor its interval or test) is defined
        raise ValueError(f"{printable_path(Path(data.path))}: its {len(data.pairs)} usable pair(s) all have gold score "
                         f"{next(iter(scores), float('nan')):g}; Spearman and Pearson need gold scores that differ")
    step = on_step or (lambda label, fraction: None)

    index_of: dict[str, int] = {}
    for p in data.pairs:
        index_of.setdefault(p.sentence1, len(index_of))
        index_of.setdefault(p.sentence2, len(index_of))
    sentences = list(index_of)
    if len(sentences) < 2:  # every cosine is 1: nothing to correlate, and no geometry of one vector
        raise ValueError(f"{printable_path(Path(data.path))}: its {len(data.pairs)} pairs compare one sentence with itself; "
                         "an STS evaluation needs pairs of different sentences")
    left = np.array([index_of[p.sentence1] for p in data.pairs])
    right = np.array([index_of[p.sentence2] for p in data.pairs])
    gold = np.array([p.score for p in data.pairs], dtype=np.float64)

    wanted = [r for r in reps if parse_representation(r).transform is not None]
    transforms, fits = {}, {}
    if wanted and fit_on is not None:  # before any encoding: an index that cannot lend its transforms ends the run at once
        transforms, fits = _transforms_from_index(wanted, encoder, Path(fit_on))
    by_pooling = _encode(encoder, sentences, progress=progress, on_step=step)
    if wanted and fit_on is None:
        step("fitting transforms", 0.8)
        transforms, fits = _fit_on_sentences(wanted, by_pooling)
    vectors = represent(by_pooling, reps, transforms)

    step("bootstrap", 0.9)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(gold), size=(resamples, len(gold)))  # the same resampled pairs for every representation
    gold_ranks = stats.rankdata(gold[samples], axis=1)
    metrics, boot = {}, {}
    for r in reps:
        cosine = np.sum(vectors[r][left] * vectors[r][right], axis=1, dtype=np.float64)
        boot[r] = 100 * _rowwise_pearson(gold_ranks, stats.rankdata(cosine[samples], axis=1))
        metrics[r] = {
            "spearman": 100 * _correlation(stats.spearmanr, gold, cosine),
            "pearson": 100 * _correlation(stats.pearsonr, gold, cosine),
            "spearman_ci95": _interval(boot[r]),
        } | geometry(vectors[r])
    comparisons = [_paired_bootstrap(a, b, metrics, boot) for a, b in pairs_tested(reps, baseline)]
    for c, adjusted in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = adjusted
    step("done", 1.0)
    return StsEvaluation(
        file=data.path, model=encoder.info.name, pairs=len(gold), sentences=len(sentences), representations=reps,
        metrics=metrics, comparisons=comparisons, fits=fits, issues=list(data.issues), baseline=baseline,
        resamples=resamples, seed=seed,
    )


def _encode(encoder: "Encoder", sentences: list[str], *, progress: bool, on_step) -> dict[str, np.ndarray]:
    """{pooling: vectors of the unique sentences}, in slices so that the bar moves (one forward pass per batch)."""
    parts: list[dict[str, np.ndarray]] = []
    with tqdm(total=len(sentences), desc="encoding sentences", unit="sentence", disable=not progress) as bar:
        for i in range(0, len(sentences), ENCODE_SLICE):
            on_step("encoding sentences", 0.8 * i / len(sentences))
            parts.append(encoder.encode_texts(sentences[i : i + ENCODE_SLICE]))
            bar.update(len(sentences[i : i + ENCODE_SLICE]))
    return {p: np.concatenate([part[p] for part in parts]) for p in encoder.poolings}


def _fit_on_sentences(wanted, by_pooling) -> tuple[dict[str, Transform], dict[str, dict]]:
    """Each transform fitted on the evaluation's unique sentences (as the whitening papers do), and a record of it."""
    transforms, fits = {}, {}
    for r in wanted:
        vectors = by_pooling[parse_representation(r).pooling]
        try:
            transforms[r] = fit(r, vectors)
        except TransformError as exc:
            raise TransformError(f"{exc} (fitted on the {len(vectors)} evaluation sentences)") from exc
        fits[r] = {"fitted_on": "evaluation", "vectors": len(vectors), "dim": transforms[r].dim,
                   "description": f"fitted on the {len(vectors)} evaluation sentences"}
    return transforms, fits


def _transforms_from_index(wanted, encoder, directory: Path) -> tuple[dict[str, Transform], dict[str, dict]]:
    """Transforms of an index: its own fitted one of the same name, else fitted on its stored vectors of the pooling."""
    from .compat import compatibility_problems
    from .store import IndexReader, StoreError, is_index, read_vectors

    if not is_index(directory):
        raise SourceError(f"--fit-on {printable_path(directory)}: not an index directory")
    reader = IndexReader(directory)
    try:
        # the one rule for "same model"; `fit` asks only for the same vector space (not chunking or representations)
        problems = compatibility_problems(reader.manifest, encoder, "fit")
        if problems:
            raise ValueError(f"cannot fit on index {printable_path(reader.directory)}: {problems[0]}")
        dims, stored = reader.manifest.poolings, {}
        transforms, fits = {}, {}
        for r in wanted:
            pooling = parse_representation(r).pooling
            where = f"index {printable_path(reader.directory)} ({reader.n_chunks} chunks)"
            if r in reader.transforms:
                transforms[r] = reader.transforms[r]
                # `add` keeps a transform fixed: it may have been fitted on fewer chunks than the index holds now
                fitted_on = transforms[r].fitted_on or reader.n_chunks
                fits[r] = {"fitted_on": "index", "index": str(reader.directory), "chunks": fitted_on,
                           "stored_transform": True, "dim": transforms[r].dim,
                           "description": f"fitted on index {printable_path(reader.directory)} ({fitted_on} chunks): "
                                          f"the index's own `{r}` transform"}
                continue
            if pooling not in dims:
                raise TransformError(f"cannot fit `{r}` on index {printable_path(reader.directory)}: it keeps no `{pooling}` "
                                     f"vectors (it keeps {', '.join(dims)})")
            if pooling not in stored:
                _, stored[pooling] = read_vectors(reader.db, pooling, dims[pooling], reader.directory)
            try:
                transforms[r] = fit(r, stored[pooling])
            except TransformError as exc:
                raise TransformError(f"{exc} (fitted on {where})") from exc
            fits[r] = {"fitted_on": "index", "index": str(reader.directory), "chunks": reader.n_chunks,
                       "stored_transform": False, "dim": transforms[r].dim,
                       "description": f"fitted on {where}, on its stored `{pooling}` vectors"}
        return transforms, fits
    except StoreError as exc:
        raise SourceError(f"cannot fit on index {printable_path(reader.directory)}: {exc}") from exc
    finally:
        reader.close()


def _correlation(test, x: np.ndarray, y: np.ndarray) -> float:
    """scipy's coefficient; nan when one side is constant (no correlation is defined)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(test(x, y)[0])


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x with the same row of y (nan for a constant row); on ranks: Spearman."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt(np.sum(x * x, axis=1) * np.sum(y * y, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, np.sum(x * y, axis=1) / denominator, np.nan)


def _interval(values: np.ndarray) -> list[float]:
    """95% percentile interval of the finite bootstrap values ([nan, nan] when none is)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def _paired_bootstrap(a: str, b: str, metrics: dict, boot: dict) -> dict:
    """Spearman(a) − Spearman(b) with its bootstrap interval and two-sided p.

    p is twice the smaller share of resamples on either side of zero (with the +1 correction, so
    never 0): the smallest level at which the percentile interval of the difference excludes zero.
    """
    diff = boot[a] - boot[b]
    diff = diff[np.isfinite(diff)]
    n = len(diff)
    p = float("nan") if n == 0 else min(1.0, 2 * min(np.sum(diff <= 0) + 1, np.sum(diff >= 0) + 1) / (n + 1))
    return {
        "pair": pair_name(a, b),
        "a": a,
        "b": b,
        "delta": metrics[a]["spearman"] - metrics[b]["spearman"],
        "delta_ci95": _interval(diff),
        "p": p,
    }
