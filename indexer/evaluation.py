"""Retrieval quality of an index's representations: standard metrics, paired significance, BM25 and RRF baselines.

Works with any non-empty set of representations: metrics and the geometry of the stored vectors for
each, a paired comparison for each pair or of each against a chosen baseline (Holm-corrected when
more than one pair is tested; none with one representation), and RRF of the rankings the user names
(none unless asked).

Metrics come from pytrec_eval (trec_eval's own C code), the library BEIR and MTEB score with, so the numbers are comparable with theirs and with any tool that reads the
TREC run files written beside the report. Ties within a run are broken as trec_eval breaks
them (by descending document id, ranking.trec_order), so every tool scoring those files gets the same
numbers, and the Searcher orders its rankings by the same rule.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Container, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .explore import geometry
from .loaders import Document, LoadIssue, LoadReport, SourceError, load_qrels, load_queries, open_beir
from .ranking import encode_trec_id, trec_order
from .search import query_problem
from .store import Manifest, kept_labels
from .text import STOP_WORDS

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: grade}

METRIC_NAMES = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100")
DEPTH = 100  # documents retrieved per query and representation
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
N_RESAMPLES = 10_000  # Fisher randomisation test
BM25 = "bm25"  # the lexical baseline system, always run; it may also be fused
RRF = "rrf"  # the fused system's name (and run file `rrf.run`)
GEOMETRY_SAMPLE = 20_000  # stored chunk vectors (seeded sample) behind each representation's geometry
P_VALUES = ("t_test_p", "randomization_p")  # each gets a Holm-corrected twin, `<name>_holm`


#: trec_eval measure behind each metric; MRR@10 is trec_eval's recip_rank over the top 10.
TREC_MEASURES = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100", "map@100": "map_cut_100"}


def per_query_metrics(run: Run, qrels: Qrels) -> dict[str, dict[str, float]]:
    """Every metric for every judged query, from trec_eval (pytrec_eval); a query without results scores 0.

    Graded gains for nDCG; the binary metrics count any grade >= 1 as relevant (BEIR's convention).
    """
    import pytrec_eval

    # scored on the ids as the run files hold them (encode_trec_id), so that trec_eval breaks ties identically
    encoded = {q: {encode_trec_id(d): g for d, g in judged.items()} for q, judged in qrels.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(encoded, {"ndcg_cut.10", "recall.10,100", "map_cut.100", "recip_rank"})
    full = evaluator.evaluate({q: {encode_trec_id(d): s for d, s in docs.items()} for q, docs in run.items() if docs})
    top10 = evaluator.evaluate({q: {encode_trec_id(d): s for d, s in trec_order(docs)[:10]} for q, docs in run.items() if docs})
    scores = {}
    for q in qrels:
        values = full.get(q, {})
        scores[q] = {m: float(values.get(t, 0.0)) for m, t in TREC_MEASURES.items()}
        scores[q]["mrr@10"] = float(top10.get(q, {}).get("recip_rank", 0.0))
    return {q: {m: v[m] for m in METRIC_NAMES} for q, v in scores.items()}


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([v[m] for v in per_query.values()])) if per_query else 0.0 for m in METRIC_NAMES}


def paired_comparison(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> dict:
    """Two-sided paired t-test and Fisher's randomisation test of mean(a - b), with wins/ties/losses."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    out = {
        "delta": float(diff.mean()) if len(diff) else 0.0,
        "n": int(len(diff)),
        "wins": int((diff > 1e-12).sum()),
        "losses": int((diff < -1e-12).sum()),
        "ties": int((np.abs(diff) <= 1e-12).sum()),
    }
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        # no variation: the t statistic is undefined and every sign flip gives the same mean
        same = len(diff) == 0 or abs(diff[0]) <= 1e-12
        out.update(t_test_p=1.0 if same else 0.0, randomization_p=1.0 if same else 0.0)
        return out
    out["t_test_p"] = float(stats.ttest_rel(a, b).pvalue)
    result = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=N_RESAMPLES,
        alternative="two-sided",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    out["randomization_p"] = float(result.pvalue)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order.

    Controls the family-wise error rate when several pairs of representations are tested at once.
    An undefined p (NaN: no test could be made) stays NaN and is not counted among the tests.
    """
    defined = [i for i, p in enumerate(p_values) if not math.isnan(float(p))]
    m = len(defined)
    order = sorted(defined, key=lambda i: float(p_values[i]))
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def rrf(runs: Sequence[Run], *, k: int = RRF_K, depth: int = DEPTH) -> Run:
    """Reciprocal-rank fusion: a document scores sum(1 / (k + rank)) over the runs that retrieved it."""
    fused: Run = {}
    for run in runs:
        for q, docs in run.items():
            target = fused.setdefault(q, {})
            for rank, (doc, _) in enumerate(trec_order(docs), start=1):
                target[doc] = target.get(doc, 0.0) + 1.0 / (k + rank)
    return {q: dict(trec_order(docs)[:depth]) for q, docs in fused.items()}


def bm25_run(
    documents: Sequence[tuple[str, str]], queries: Mapping[str, str], *, depth: int = DEPTH,
    exclude_identical: bool = True,
) -> Run:
    """BM25 (bm25s, Lucene variant, text.STOP_WORDS and Snowball stemming) over (doc_id, text) pairs."""
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import and would print internals

    stemmer = Stemmer.Stemmer("english")
    ids = [d for d, _ in documents]
    retriever = bm25s.BM25()
    stopwords = sorted(STOP_WORDS)
    retriever.index(bm25s.tokenize([t for _, t in documents], stopwords=stopwords, stemmer=stemmer, show_progress=False), show_progress=False)
    qids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=stopwords, stemmer=stemmer, return_ids=False, show_progress=False)
    k = min(len(ids), depth + 1)
    hits, scores = retriever.retrieve(tokens, k=k, show_progress=False)
    run: Run = {}
    for qi, q in enumerate(qids):
        ranked = {ids[int(i)]: float(s) for i, s in zip(hits[qi], scores[qi]) if s > 0}  # score 0: no query term
        if exclude_identical:
            ranked.pop(q, None)
        run[q] = dict(list(ranked.items())[:depth])
    return run


def trec_run_lines(run: Run, tag: str):
    """The lines of a TREC run file: `qid Q0 docid rank score tag`, in trec_eval's order; ids through `encode_trec_id`."""
    for q in sorted(run):
        for rank, (doc, score) in enumerate(trec_order(run[q]), start=1):
            yield f"{encode_trec_id(q)} Q0 {encode_trec_id(doc)} {rank} {score:.8f} {tag}\n"


def write_trec_run(run: Run, path: Path, tag: str) -> None:
    """A TREC run file (`trec_run_lines`) at `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(trec_run_lines(run, tag))


def pairs_tested(representations: Sequence[str], baseline: str | None = None) -> list[tuple[str, str]]:
    """The pairs a comparison tests (delta = first - second): each other representation against the
    baseline when one is chosen, else every pair in the given order. Retrieval and STS share this rule."""
    if baseline is not None:
        return [(r, baseline) for r in representations if r != baseline]
    return list(combinations(representations, 2))


def check_choices(
    representations: Sequence[str], *, baseline: str | None = None, fuse: str | Sequence[str] | None = None,
) -> tuple[str | None, tuple[str, ...]]:
    """(baseline, fused systems) checked against the representations evaluated; ValueError in one line listing the valid names.

    `fuse` is "mean,pooled" or a sequence; `bm25` may be among them. Fusion needs two distinct rankings.
    """
    reps = list(representations)
    if baseline is not None:
        baseline = baseline.strip()
        if baseline not in reps:
            raise ValueError(f"baseline {baseline!r} is not among the representations evaluated; they are: {', '.join(reps)}")
    if fuse is None:
        return baseline, ()
    names = list(dict.fromkeys(n.strip() for n in (fuse.split(",") if isinstance(fuse, str) else fuse) if n.strip()))
    valid = reps + [BM25]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"cannot fuse {', '.join(map(repr, unknown))}: not among the rankings evaluated; valid: {', '.join(valid)}")
    if len(names) < 2:
        raise ValueError(f"fusion needs at least two rankings, got {', '.join(names) or 'none'}; valid: {', '.join(valid)}")
    return baseline, tuple(names)


def stored_geometry(index, representation: str, *, sample: int = GEOMETRY_SAMPLE, seed: int = 0) -> dict[str, float] | None:
    """`explore.geometry` of a representation's vectors as the index stores them (a seeded sample of
    at most `sample` chunks); None when the index holds fewer than 2 chunks."""
    ids = index.sample_chunk_ids(sample, seed=seed)
    if len(ids) < 2:
        return None
    return geometry(index.vectors(representation, ids), sample=sample, seed=seed)


def pair_name(a: str, b: str) -> str:
    """Key of the paired comparison of representations a and b (delta = a - b) in reports."""
    return f"{a} vs {b}"


@dataclass
class Evaluation:
    """Everything `evaluate` measured; `to_dict` is the JSON report, `to_markdown` the readable one."""

    dataset: str
    split: str
    index: str
    model: str
    queries: dict[str, str]
    per_query: dict[str, dict[str, dict[str, float]]]  # system -> query -> metric -> value
    excluded_no_positive: list[str]
    issues: list[LoadIssue] = field(default_factory=list)
    ignore_identical_ids: bool = True
    artifacts: dict[str, str] = field(default_factory=dict)
    representations: list[str] = field(default_factory=list)  # the index's dense representations, in its order
    runs: dict[str, Run] = field(default_factory=dict, repr=False)  # system -> run, for the TREC run files
    baseline: str | None = None  # compare every other representation with this one (None: every pair)
    fused: list[str] = field(default_factory=list)  # the rankings fused into the `rrf` system (none: no fusion)
    geometry: dict[str, dict[str, float] | None] = field(default_factory=dict)  # representation -> explore.geometry
    _significance: dict | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def systems(self) -> list[str]:
        return list(self.per_query)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The pairs tested (delta = first - second): each other representation against the baseline when
        one is chosen, else every pair in the index's order. The first is the per-query table's delta."""
        return pairs_tested(self.representations, self.baseline)

    def metrics(self) -> dict[str, dict[str, float]]:
        return {s: mean_metrics(self.per_query[s]) for s in self.systems}

    def compare(self, a: str, b: str) -> dict[str, dict]:
        """Paired tests of a against b for each metric; counts and means are named by the representations."""
        qids = sorted(self.queries)
        out = {}
        for m in METRIC_NAMES:
            x = [self.per_query[a][q][m] for q in qids]
            y = [self.per_query[b][q][m] for q in qids]
            test = paired_comparison(x, y)
            out[m] = {
                a: float(np.mean(x)) if x else 0.0,
                b: float(np.mean(y)) if y else 0.0,
                "delta": test["delta"],
                "n": test["n"],
                "t_test_p": test["t_test_p"],
                "randomization_p": test["randomization_p"],
                f"{a}_wins": test["wins"],
                f"{b}_wins": test["losses"],
                "ties": test["ties"],
            }
        return out

    def significance(self) -> dict[str, dict[str, dict]]:
        """pair name ("a vs b") -> metric -> paired tests; empty with one representation.

        Each p-value has a Holm-corrected twin (`t_test_p_holm`, `randomization_p_holm`), corrected over
        the pairs tested, separately per metric and test (equal to the raw p when one pair is tested).
        """
        if self._significance is None:
            tests = {pair_name(a, b): self.compare(a, b) for a, b in self.pairs}
            for m in METRIC_NAMES:
                for key in P_VALUES:
                    for name, p in zip(tests, holm([t[m][key] for t in tests.values()])):
                        tests[name][m][f"{key}_holm"] = p
            self._significance = tests
        return self._significance

    def per_query_table(self) -> list[dict]:
        """One row per query with each representation's metrics and the first pair's delta, largest delta first
        (with one representation: best nDCG@10 first)."""
        first = self.pairs[0] if self.pairs else None
        rows = []
        for q in sorted(self.queries):
            row = {"query_id": q, "text": self.queries.get(q, "")} | {r: self.per_query[r][q] for r in self.representations}
            if first is not None:
                row["delta"] = {m: row[first[0]][m] - row[first[1]][m] for m in METRIC_NAMES}
            rows.append(row)
        key = "delta" if first is not None else (self.representations[0] if self.representations else None)
        return sorted(rows, key=lambda r: (-r[key]["ndcg@10"] if key else 0.0, r["query_id"]))

    def to_dict(self) -> dict:
        first = self.pairs[0] if self.pairs else None
        return {
            "dataset": self.dataset,
            "split": self.split,
            "index": self.index,
            "model": self.model,
            "representations": list(self.representations),
            "queries_evaluated": len(self.queries),
            "queries_excluded_no_positive": len(self.excluded_no_positive),
            "ignore_identical_ids": self.ignore_identical_ids,
            "depth": DEPTH,
            "metrics": self.metrics(),
            "geometry": dict(self.geometry),
            "baseline": self.baseline,
            "pairs": [list(pair) for pair in self.pairs],
            "correction": {"method": "holm", "pairs": len(self.pairs), "applied": len(self.pairs) > 1,
                           "note": "per metric and test, over the pairs tested"},
            "significance": self.significance(),
            "fusion": {"system": RRF, "of": list(self.fused), "k": RRF_K} if self.fused else None,
            "delta": f"{first[0]} - {first[1]}" if first else None,
            "per_query": self.per_query_table(),
            "issues": [str(i) for i in self.issues],
            "artifacts": self.artifacts,
        }

    def to_markdown(self) -> str:
        report = self.to_dict()
        lines = [
            f"# Evaluation: {self.dataset} ({self.split})",
            "",
            f"Index `{self.index}`, model `{self.model}`; {report['queries_evaluated']} judged queries "
            f"({report['queries_excluded_no_positive']} without any relevant document excluded), "
            f"top {DEPTH} documents per query.",
            "",
            "| system | " + " | ".join(METRIC_NAMES) + " | " + " | ".join(GEOMETRY_LABELS.values()) + " |",
            "|---|" + "---:|" * (len(METRIC_NAMES) + len(GEOMETRY_LABELS)),
        ]
        for system, values in report["metrics"].items():
            cells = [f"{values[m]:.4f}" for m in METRIC_NAMES] + format_geometry(report["geometry"].get(system))
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines += ["", GEOMETRY_NOTE, "", fusion_line(report)]
        if not self.pairs:
            lines += ["", f"One representation ({', '.join(self.representations)}): no paired comparison."]
        corrected = len(self.pairs) > 1
        if corrected:
            lines += ["", f"p-values Holm-corrected over the {len(self.pairs)} pairs tested, per metric and test "
                          f"({'each against ' + self.baseline if self.baseline else 'every pair'}); raw p beside them."]
        for a, b in self.pairs:
            holm_head = " t-test p (Holm) | randomisation p (Holm) |" if corrected else ""
            lines += [
                "",
                f"## {a} vs {b} (paired, per query)",
                "",
                f"| metric | {a} | {b} | delta ({a} − {b}) | t-test p | randomisation p |{holm_head} {a} wins | {b} wins | ties |",
                "|---|---:|---:|---:|---:|---:|" + "---:|---:|" * corrected + "---:|---:|---:|",
            ]
            for m, s in report["significance"][pair_name(a, b)].items():
                holm_cells = f" {format_p(s['t_test_p_holm'])} | {format_p(s['randomization_p_holm'])} |" if corrected else ""
                lines.append(
                    f"| {m} | {s[a]:.4f} | {s[b]:.4f} | {s['delta']:+.4f} | {format_p(s['t_test_p'])} | "
                    f"{format_p(s['randomization_p'])} |{holm_cells} {s[f'{a}_wins']} | {s[f'{b}_wins']} | {s['ties']} |"
                )
        reps, delta = self.representations, report["delta"]
        heading = f"Queries by nDCG@10 difference ({delta.replace(' - ', ' − ')})" if delta else "Queries by nDCG@10"
        lines += [
            "", f"## {heading}", "",
            "| query | text | " + " | ".join(reps) + (" | delta |" if delta else " |"),
            "|---|---|" + "---:|" * (len(reps) + bool(delta)),
        ]
        for row in report["per_query"]:
            text = " ".join(row["text"].split()).replace("|", "\\|")
            cells = [f"{row[r]['ndcg@10']:.3f}" for r in reps] + ([f"{row['delta']['ndcg@10']:+.3f}"] if delta else [])
            lines.append(f"| {row['query_id']} | {text[:80]} | " + " | ".join(cells) + " |")
        if report["issues"]:
            lines += ["", "## Skipped lines", ""] + [f"- {i}" for i in report["issues"]]
        return "\n".join(lines) + "\n"


def per_query_csv(report: Mapping) -> str:
    """The report's per-query table as CSV: query id, text, every metric of each representation, and the
    first pair's differences (the `delta` columns) when there is a pair."""
    import csv
    import io

    reps, delta = report["representations"], report["delta"]
    header = ["query_id", "text"] + [f"{r} {m}" for r in reps for m in METRIC_NAMES]
    header += [f"delta ({delta}) {m}" for m in METRIC_NAMES] if delta else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in report["per_query"]:
        cells = [row["query_id"], row["text"]] + [row[r][m] for r in reps for m in METRIC_NAMES]
        writer.writerow(cells + ([row["delta"][m] for m in METRIC_NAMES] if delta else []))
    return out.getvalue()


def format_p(p: float) -> str:
    return "—" if p is None or math.isnan(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


#: Column labels of `explore.geometry`'s numbers, in report order.
GEOMETRY_LABELS = {"anisotropy": "anisotropy", "effective_rank": "eff. rank", "top3_variance": "top-3 var."}
GEOMETRY_NOTE = (
    f"Geometry of each representation's stored vectors (a seeded sample of at most {GEOMETRY_SAMPLE:,} chunks): "
    "anisotropy = mean cosine of random pairs, eff. rank = exp(entropy of the covariance spectrum), "
    "top-3 var. = share of variance in the top 3 principal directions."
)


def format_geometry(values: Mapping[str, float] | None) -> list[str]:
    """The geometry cells of one system's row ("—" for BM25, RRF, or an index of fewer than 2 chunks)."""
    if not values:
        return ["—"] * len(GEOMETRY_LABELS)
    return [f"{values['anisotropy']:.3f}", f"{values['effective_rank']:.1f}", f"{values['top3_variance']:.3f}"]


def fusion_line(report: Mapping) -> str:
    """One sentence saying what the `rrf` system fused, or that nothing was fused."""
    fusion = report.get("fusion")
    if not fusion:
        return "No fusion (ask for one with --fuse, e.g. --fuse mean,bm25)."
    return f"`{fusion['system']}`: reciprocal-rank fusion (k={fusion['k']}) of {', '.join(fusion['of'])}."


def evaluate(
    searcher,
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    dataset: str,
    split: str = "test",
    issues: Sequence[LoadIssue] = (),
    ignore_identical_ids: bool = True,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[str, float], None] | None = None,
    baseline: str | None = None,
    fuse: str | Sequence[str] | None = None,
    geometry_sample: int = GEOMETRY_SAMPLE,
    reuse: Evaluation | None = None,
) -> Evaluation:
    """Rank every judged query in each representation and with BM25 (plus `rrf`, the fusion of `fuse`,
    when asked), score them, and measure each representation's stored geometry.

    `baseline`: compare each other representation with it (default: every pair). `fuse`: the rankings
    to fuse ("mean,pooled", "mean,bm25" or a sequence); None: no fusion. Both are checked first
    (check_choices: ValueError listing the valid names).

    `qrels` must already be restricted to known queries and documents (see loaders.load_qrels).
    Queries without any judgement of grade >= 1 are excluded and counted; a query that cannot be
    searched (blank, lone surrogate: search.query_problem) is skipped and listed in `issues`.
    `on_step(label, fraction)` reports progress (the app's bar).
    `reuse`: an earlier evaluation of the same queries and judgements on the same index generation (the
    app's cache): its representation and BM25 runs and its geometry are taken as they are, not computed again.
    """
    baseline, fused = check_choices(searcher.representations, baseline=baseline, fuse=fuse)
    issues = list(issues)
    unsearchable = {q: query_problem(text) for q, text in queries.items() if q in qrels}
    unsearchable = {q: why for q, why in unsearchable.items() if why is not None}
    issues += [LoadIssue(f"query {q!r}", None, f"skipped: {why}") for q, why in sorted(unsearchable.items())]
    queries = {q: text for q, text in queries.items() if q not in unsearchable}
    judged = {q: j for q, j in qrels.items() if q in queries}
    positive = {q: j for q, j in judged.items() if any(g > 0 for g in j.values())}
    excluded = sorted(set(judged) - set(positive))
    qids = sorted(positive)
    if not qids:
        raise ValueError("no query has a relevant document (grade >= 1) in the judgements; nothing to evaluate")
    texts = [queries[q] for q in qids]
    exclude = qids if ignore_identical_ids else None
    reps = list(searcher.representations)
    steps = reps + [BM25] + ([RRF] if fused else []) + ["geometry", "metrics"]
    runs: dict[str, Run] = {}
    with tqdm(total=len(steps), desc="evaluating", unit="step", disable=not progress) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label)
            if on_step is not None:
                on_step(label, bar.n / len(steps))

        reused = reusable_runs(reuse, reps, qids, ignore_identical_ids)
        step("encoding and searching")
        rankings = None if reused else searcher.rank_many(texts, DEPTH, exclude=exclude)
        for r in searcher.representations:
            runs[r] = reused[r] if reused else {q: {doc: score for doc, _, score in ranked} for q, ranked in zip(qids, rankings[r])}
            bar.update()
        step("bm25")
        if reused:
            runs[BM25] = reused[BM25]
        else:
            documents = [(d, Document(d, text, title).content) for d, title, text in searcher.index.documents()]
            runs[BM25] = bm25_run(documents, {q: queries[q] for q in qids}, exclude_identical=ignore_identical_ids)
        bar.update()
        if fused:
            step("fusion")
            runs[RRF] = rrf([runs[r] for r in fused])
            bar.update()
        step("geometry")
        shapes = dict(reuse.geometry) if reused else {r: stored_geometry(searcher.index, r, sample=geometry_sample) for r in reps}
        bar.update()
        step("metrics")
        per_query = {system: per_query_metrics(run, positive) for system, run in runs.items()}
        bar.update()
        step("done")
    result = Evaluation(
        dataset=dataset,
        split=split,
        index=str(searcher.index.directory),
        model=searcher.encoder.info.name,
        queries={q: queries[q] for q in qids},
        per_query=per_query,
        excluded_no_positive=excluded,
        issues=issues,
        ignore_identical_ids=ignore_identical_ids,
        representations=reps,
        runs=runs,
        baseline=baseline,
        fused=list(fused),
        geometry=shapes,
    )
    if out_dir is not None:
        write_artifacts(result, Path(out_dir))
    return result


def reusable_runs(earlier: Evaluation | None, representations: Sequence[str], qids: Sequence[str],
                  ignore_identical_ids: bool) -> dict[str, Run] | None:
    """The representation and BM25 runs of an earlier evaluation when they answer exactly these queries in
    these representations under the same rule for identical ids; None when anything differs."""
    if earlier is None or earlier.ignore_identical_ids != ignore_identical_ids:
        return None
    if list(earlier.representations) != list(representations) or sorted(earlier.queries) != sorted(qids):
        return None
    if any(system not in earlier.runs for system in [*representations, BM25]):
        return None
    return {system: earlier.runs[system] for system in [*representations, BM25]}


@dataclass(frozen=True)
class LabelledSet:
    """Queries and judgements that belong to an index (a split of the BEIR dataset it was built from)."""

    name: str
    queries: Path
    qrels: Path
    dataset: str = ""
    split: str = ""


def labelled_sets(manifest: Manifest, directory: str | Path | None = None) -> list[LabelledSet]:
    """The labelled query sets of the BEIR dataset an index was built from (none for other sources).

    An index keeps a copy of them (store.kept_labels): read from index `directory`, checked against the
    manifest (StoreError if damaged), so a moved or deleted source folder changes nothing. Indexes built
    before copies were kept, or a call without `directory`, read the source folder named in the manifest.
    """
    if directory is not None and manifest.labels is not None:
        kept = kept_labels(Path(directory) / manifest.generation, manifest)
        return [LabelledSet(f"{kept.name} · {split}", kept.queries, path, kept.name, split) for split, path in kept.qrels.items()]
    if manifest.source.format != "beir":
        return []
    try:
        dataset = open_beir(manifest.source.path)
    except SourceError:
        return []
    if dataset.queries is None:
        return []
    return [LabelledSet(f"{dataset.root.name} · {split}", dataset.queries, path, dataset.root.name, split)
            for split, path in dataset.qrels.items()]


def load_labels(
    queries: str | Path | Mapping[str, str], qrels: str | Path | Mapping[str, Mapping[str, int]], doc_ids: Container[str],
) -> tuple[dict[str, str], Qrels, list[LoadIssue]]:
    """Queries and judgements (files, or mappings from memory), with bad lines and unknown query or document ids
    reported and skipped."""
    report = LoadReport()
    queries = load_queries(queries, report)
    qrels = load_qrels(qrels, report, known_queries=queries, known_documents=doc_ids)
    return queries, qrels, report.issues


def write_artifacts(result: Evaluation, out_dir: Path) -> None:
    """report.json, report.md and one TREC run file per system (OSError if the folder cannot be written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for system, run in result.runs.items():
        path = out_dir / f"{system}.run"
        write_trec_run(run, path, tag=system)
        result.artifacts[f"run_{system}"] = str(path)
    result.artifacts["report_json"] = str(out_dir / "report.json")
    result.artifacts["report_md"] = str(out_dir / "report.md")
    (out_dir / "report.md").write_text(result.to_markdown(), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
