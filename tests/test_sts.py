"""STS evaluation: the readers, the correlations against scipy, the bootstrap, paired tests, transforms and the CLI."""

import csv
import json
import os
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from scipy import stats

from conftest import STSB, make_tiny_distilbert
from indexer.cli import main
from indexer.encoder import Encoder
from indexer.loaders import SourceError
from indexer.pipeline import build_index
from indexer.store import IndexReader, chunk_ids
from indexer.sts import StsData, StsPair, evaluate_sts, read_sts
from indexer.text import is_blank
from indexer.transforms import TransformError, fit

# (sentence1, sentence2, gold score): words of the tiny model's vocabulary, quotes and commas included
PAIRS = [
    ("the bees make honey", "bees make honey in the hive", 4.6),
    ("bake bread in the oven", "the dough and the crust of the bread", 3.2),
    ("a comet and a planet", "the sun and the moon in the sky", 2.0),
    ('rain and "snow" fill the river', "the river and the lake", 2.8),
    ("repair the chain of the bike", "ride the road on a bike", 1.9),
    ("the queen of the hive", "bake bread, flour and water", 0.2),
    ("fish in the lake", "a star in the galaxy", 0.0),
    ("wind and storm at sea", "the storm, the rain and the wind", 3.9),
    ("the bees make honey", "the wax of the hive", 2.5),
    ("the bike has a wheel", "a bike with a tire and a brake", 3.1),
]


def write_tsv(path, pairs=PAIRS, extra=False):
    lines = []
    for i, (a, b, s) in enumerate(pairs):
        tail = "\tsource-a\tsource-b" if extra and i % 2 else ""
        lines.append(f"main-news\tMSRpar\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}{tail}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_csv(path, pairs=PAIRS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "score", "sentence1", "sentence2"])
        writer.writerows([i, s, a, b] for i, (a, b, s) in enumerate(pairs))
    return path


def write_jsonl(path, pairs=PAIRS):
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in pairs), encoding="utf-8")
    return path


# -- reading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer, name", [(write_tsv, "p.tsv"), (write_tsv, "p.txt"), (write_csv, "p.csv"), (write_jsonl, "p.jsonl")])
def test_each_format_gives_the_same_pairs(tmp_path, writer, name):
    data = read_sts(writer(tmp_path / name))
    assert [(p.sentence1, p.sentence2, p.score) for p in data.pairs] == PAIRS
    first_line = 2 if name.endswith(".csv") else 1  # after the CSV header
    assert [p.line for p in data.pairs] == list(range(first_line, first_line + len(PAIRS)))
    assert data.issues == []


def test_stsb_format_ignores_extra_fields_and_keeps_quotes(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text('main-forums\tdeft\t2015\t0001\t3.5\t"The bees" make honey\tHoney, said "he\tsrc1\tsrc2\n', encoding="utf-8")
    [pair] = read_sts(path).pairs
    assert (pair.sentence1, pair.sentence2, pair.score) == ('"The bees" make honey', 'Honey, said "he', 3.5)


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path):
    good = "g\tf\ty\t1\t2.5\tthe bees\tthe honey\n"
    rows = [
        good,                                             # 1
        "g\tf\ty\t2\t2.5\tonly one sentence\n",          # 2 too few fields
        "g\tf\ty\t3\thigh\tthe bees\tthe hive\n",        # 3 non-numeric score
        "g\tf\ty\t4\tnan\tthe bees\tthe hive\n",         # 4 non-finite
        "g\tf\ty\t5\tinf\tthe bees\tthe hive\n",         # 5 non-finite
        "g\tf\ty\t6\t1.0\t \u200b \tthe hive\n",         # 6 blank sentence
        "\n",                                             # 7 blank line: not an issue
        good,                                             # 8
    ]
    path = tmp_path / "bad.tsv"
    path.write_bytes("".join(rows).encode() + b"g\tf\ty\t9\t1.0\tthe \xff bees\tthe hive\n")  # 9 undecodable byte
    data = read_sts(path)
    assert [p.line for p in data.pairs] == [1, 8]
    reasons = {i.line: i.reason for i in data.issues}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 9]
    assert "expected at least 7 tab-separated fields" in reasons[2] and "got 6" in reasons[2]
    assert reasons[3] == "score must be a number, got 'high'"
    assert "finite" in reasons[4] and "finite" in reasons[5]
    assert reasons[6] == "sentence1 is empty"
    assert "not valid UTF-8" in reasons[9]
    assert all(i.path == str(path) for i in data.issues)


def test_bad_jsonl_and_csv_rows(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        '{"sentence1": "the bees", "sentence2": "the hive", "score": 3}\n'
        '{"sentence1": "the bees", "sentence2": "\\ud800", "score": 3}\n'
        '{"sentence1": "the bees", "score": 3}\n'
        '{"sentence1": "the bees", "sentence2": "the hive", "score": true}\n'
        '{"sentence1": "the bees", "sentence2": "the hive", "score": "4.5"}\n'
        '{"sentence1": 7, "sentence2": "the hive", "score": 1}\n'
        'not json\n'
        '{"sentence1": "the bees", "sentence2": "the hive", "score": 1%s}\n'
        '{"sentence1": "the bees", "sentence2": "the hive", "score": 1e999}\n' % ("0" * 400),
        encoding="utf-8",
    )
    data = read_sts(jsonl)
    assert [(p.line, p.score) for p in data.pairs] == [(1, 3.0), (5, 4.5)]
    reasons = {i.line: i.reason for i in data.issues}
    assert sorted(reasons) == [2, 3, 4, 6, 7, 8, 9]
    assert reasons[8] == "score must be a finite number, got an integer too large for a float"
    assert reasons[9] == "score must be a finite number, got inf"
    assert "lone surrogate" in reasons[2] and "sentence2" in reasons[2]
    assert reasons[3] == "field 'sentence2' is missing"
    assert reasons[4] == "score must be a number, got bool"
    assert reasons[6] == "sentence1 must be text, got int"

    path = tmp_path / "bad.csv"
    path.write_text('sentence1,sentence2,score\nthe bees,the hive,1\nthe bees,the hive\n"",the hive,2\nthe bees,the hive,x\n', encoding="utf-8")
    data = read_sts(path)
    assert [p.line for p in data.pairs] == [2]
    assert [(i.line, i.reason) for i in data.issues] == [
        (3, "expected 3 fields, got 2"), (4, "sentence1 is empty"), (5, "score must be a number, got 'x'")]


def test_unusable_files_are_one_clear_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_sts(tmp_path / "missing.tsv")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(SourceError, match=r"unsupported STS file type '\.xlsx'"):
        read_sts(tmp_path / "p.xlsx")
    (tmp_path / "p.csv").write_text("text,score\na,1\n")
    with pytest.raises(SourceError, match="no column 'sentence1'.*columns found: text, score"):
        read_sts(tmp_path / "p.csv")
    (tmp_path / "bad.tsv").write_text("a\tb\n\nc\n")
    with pytest.raises(SourceError, match=r"bad\.tsv: no usable sentence pair; 2 lines skipped, the first: .*bad\.tsv:1: expected at least 7"):
        read_sts(tmp_path / "bad.tsv")


@pytest.mark.skipif(not STSB.is_dir(), reason=f"{STSB} is absent (shared datasets not mounted)")
def test_stsb_test_part_reads_every_pair():
    path = STSB / "sts-test-part.tsv"
    data = read_sts(path)
    # independent parse: the csv module with quoting off, as the STS Benchmark's README says
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert data.issues == [] and len(data.pairs) == len(rows) == 690
    assert [(p.sentence1, p.sentence2, p.score) for p in data.pairs] == [(r[5], r[6], float(r[4])) for r in rows]
    assert any(len(r) > 7 for r in rows) and any('"' in p.sentence1 + p.sentence2 for p in data.pairs)
    assert all(0 <= p.score <= 5 for p in data.pairs)


# -- metrics against independent computations ----------------------------------------------------------


@dataclass
class _Info:
    name: str = "hand-made"


class HandEncoder:
    """Stands in for Encoder: each pooling maps a sentence to a fixed, hand-chosen unit vector."""

    def __init__(self, table):
        self.table = table  # pooling -> sentence -> vector
        self.poolings = tuple(table)
        self.info = _Info()
        self.calls = []

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        return {p: np.array([v[t] for t in texts], dtype=np.float32) for p, v in self.table.items()}


def unit(deg):
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))], dtype=np.float32)


def test_correlations_against_hand_computed_cosines():
    # sentence "s<k>" sits at angle 10*k degrees; pair (s0, s<k>) has cosine cos(10k°)
    angles = {f"s{k}": 10 * k for k in range(8)}
    data = StsData("hand", [StsPair("s0", f"s{k}", gold, k) for k, gold in zip(range(1, 8), [5, 4, 4.5, 3, 2, 1, 0])])
    encoder = HandEncoder({"mean": {s: unit(a) for s, a in angles.items()}, "pooled": {s: unit(-a) for s, a in angles.items()}})
    result = evaluate_sts(data, encoder, "mean", resamples=50, progress=False)
    cosines = [np.cos(np.radians(10 * k)) for k in range(1, 8)]
    gold = [5, 4, 4.5, 3, 2, 1, 0]
    m = result.metrics["mean"]
    assert m["spearman"] == pytest.approx(100 * stats.spearmanr(gold, cosines).statistic)
    # by hand: the cosines fall with k, the gold only breaks that order once (4 < 4.5): rho = 1 - 6*2/(7*48)
    assert m["spearman"] == pytest.approx(100 * (1 - 6 * 2 / (7 * 48)))
    assert m["pearson"] == pytest.approx(100 * stats.pearsonr(gold, cosines).statistic)
    assert result.sentences == 8 and encoder.calls == [[f"s{k}" for k in [0, 1, 2, 3, 4, 5, 6, 7]]]  # each sentence once


@pytest.fixture(scope="module")
def sts_encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls", "pooled+whiten"), batch_size=4)


def test_tiny_bert_correlations_against_scipy(tmp_path, sts_encoder):
    data = read_sts(write_tsv(tmp_path / "p.tsv"))
    result = evaluate_sts(data, sts_encoder, "pooled,mean,cls", resamples=100, progress=False)
    gold = [s for _, _, s in PAIRS]
    for rep in ("pooled", "mean", "cls"):
        left = sts_encoder.encode_texts([a for a, _, _ in PAIRS])[rep]  # per pair, not deduplicated
        right = sts_encoder.encode_texts([b for _, b, _ in PAIRS])[rep]
        cosine = np.sum(left * right, axis=1)
        assert result.metrics[rep]["spearman"] == pytest.approx(100 * stats.spearmanr(gold, cosine).statistic, abs=1e-6)
        assert result.metrics[rep]["pearson"] == pytest.approx(100 * stats.pearsonr(gold, cosine).statistic, abs=1e-4)
    assert result.pairs == len(PAIRS) and result.sentences == len({s for a, b, _ in PAIRS for s in (a, b)})


def test_bootstrap_interval_is_seeded_and_holds_the_estimate(tmp_path, sts_encoder):
    data = read_sts(write_jsonl(tmp_path / "p.jsonl"))
    first = evaluate_sts(data, sts_encoder, "pooled,mean", progress=False).to_dict()
    again = evaluate_sts(data, sts_encoder, "pooled,mean", progress=False).to_dict()
    other = evaluate_sts(data, sts_encoder, "pooled,mean", seed=1, progress=False).to_dict()
    assert first == again
    assert first["metrics"]["mean"]["spearman_ci95"] != other["metrics"]["mean"]["spearman_ci95"]
    for rep, m in first["metrics"].items():
        lo, hi = m["spearman_ci95"]
        assert lo <= m["spearman"] <= hi and lo < hi, rep


def _spearman_resamples(gold, cosine, samples):
    """Bootstrap Spearman per resample, one scipy call at a time (independent of the vectorised code)."""
    return np.array([100 * stats.spearmanr(gold[s], cosine[s]).statistic for s in samples])


def test_paired_bootstrap_p_values_and_holm(tmp_path, sts_encoder):
    data = read_sts(write_tsv(tmp_path / "p.tsv"))
    resamples, seed = 300, 3
    reps = ["pooled", "mean", "cls"]
    result = evaluate_sts(data, sts_encoder, reps, resamples=resamples, seed=seed, progress=False)
    gold = np.array([s for _, _, s in PAIRS])
    samples = np.random.default_rng(seed).integers(0, len(gold), size=(resamples, len(gold)))
    boot = {}
    for rep in reps:
        vectors = sts_encoder.encode_texts([a for a, _, _ in PAIRS])[rep], sts_encoder.encode_texts([b for _, b, _ in PAIRS])[rep]
        boot[rep] = _spearman_resamples(gold, np.sum(vectors[0] * vectors[1], axis=1), samples)
    expected_p = []
    for c, (a, b) in zip(result.comparisons, combinations(reps, 2)):
        diff = boot[a] - boot[b]
        diff = diff[np.isfinite(diff)]
        below, above = (diff <= 0).sum() + 1, (diff >= 0).sum() + 1
        expected_p.append(min(1.0, 2 * min(below, above) / (len(diff) + 1)))
        assert (c["a"], c["b"], c["pair"]) == (a, b, f"{a} vs {b}")
        assert c["delta"] == pytest.approx(result.metrics[a]["spearman"] - result.metrics[b]["spearman"])
        assert c["p"] == pytest.approx(expected_p[-1])
        assert c["delta_ci95"] == pytest.approx(list(np.percentile(diff, [2.5, 97.5])), abs=1e-6)
    # Holm by hand: sorted p times (3, 2, 1), running maximum, capped at 1
    order = np.argsort(expected_p)
    holm, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * expected_p[i]))
        holm[i] = running
    assert [c["p_holm"] for c in result.comparisons] == pytest.approx(holm)

    against = evaluate_sts(data, sts_encoder, reps, baseline="mean", resamples=resamples, seed=seed, progress=False)
    assert [c["pair"] for c in against.comparisons] == ["pooled vs mean", "cls vs mean"]
    one = evaluate_sts(data, sts_encoder, "pooled,mean", resamples=resamples, seed=seed, progress=False)
    assert one.comparisons[0]["p_holm"] == one.comparisons[0]["p"]  # one test: nothing to correct


def test_identical_representations_are_not_different():
    angles = {f"s{k}": 13 * k for k in range(6)}
    same = {s: unit(a) for s, a in angles.items()}
    data = StsData("hand", [StsPair("s0", f"s{k}", 5 - k, k) for k in range(1, 6)])
    result = evaluate_sts(data, HandEncoder({"pooled": same, "mean": same}), "pooled,mean", resamples=200, progress=False)
    [c] = result.comparisons
    assert c["delta"] == 0 and c["p"] == 1.0 and c["delta_ci95"] == [0.0, 0.0]


def test_geometry_is_reported_per_representation(tmp_path, sts_encoder):
    from indexer.explore import geometry

    data = read_sts(write_tsv(tmp_path / "p.tsv"))
    result = evaluate_sts(data, sts_encoder, "mean", resamples=20, progress=False)
    unique = list(dict.fromkeys(s for a, b, _ in PAIRS for s in (a, b)))
    expected = geometry(sts_encoder.encode_texts(unique)["mean"])
    for key, value in expected.items():
        assert result.metrics["mean"][key] == pytest.approx(value, rel=1e-4, abs=1e-6)


# -- transforms: fitted on the sentences, or taken from an index ------------------------------------------


@pytest.fixture(scope="module")
def whiten_index(tmp_path_factory, tiny_bert):
    src = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    words = "bees honey hive bread flour oven star planet river rain bike wheel sea storm fish lake".split()
    rows = [{"_id": f"d{i}", "text": " ".join(words[(i * 3 + j) % len(words)] for j in range(6))} for i in range(60)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "mean+whiten"))
    return build_index(src, tmp_path_factory.mktemp("ix") / "w", encoder, overlap=4, progress=False).index_dir


def test_transform_fitted_on_the_sentences_or_on_an_index(tmp_path, tiny_bert, whiten_index):
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "pooled+whiten", "mean+whiten"), batch_size=4)
    data = read_sts(write_tsv(tmp_path / "p.tsv"))
    reps = "pooled+whiten,mean+whiten"
    own = evaluate_sts(data, encoder, reps, resamples=20, progress=False)
    lent = evaluate_sts(data, encoder, reps, fit_on=whiten_index, resamples=20, progress=False)
    unique = list(dict.fromkeys(s for a, b, _ in PAIRS for s in (a, b)))
    assert own.fits["pooled+whiten"]["description"] == f"fitted on the {len(unique)} evaluation sentences"
    reader = IndexReader(whiten_index)
    try:
        chunks, stored_transform = reader.n_chunks, reader.transforms["mean+whiten"]
        pooled_vectors = reader.vectors("pooled", chunk_ids(reader.db))
    finally:
        reader.close()
    # mean+whiten: the index's own transform; pooled+whiten: fitted on the index's stored pooled vectors
    assert lent.fits["mean+whiten"]["stored_transform"] is True and lent.fits["pooled+whiten"]["stored_transform"] is False
    assert lent.fits["pooled+whiten"]["chunks"] == chunks and f"({chunks} chunks)" in lent.fits["pooled+whiten"]["description"]
    assert "fitted on index" in lent.to_markdown() and "evaluation sentences" in own.to_markdown()
    gold = [s for _, _, s in PAIRS]
    for rep, transform in [("mean+whiten", stored_transform), ("pooled+whiten", fit("pooled+whiten", pooled_vectors))]:
        pooling = rep.split("+")[0]
        left = transform.apply(encoder.encode_texts([a for a, _, _ in PAIRS])[pooling])
        right = transform.apply(encoder.encode_texts([b for _, b, _ in PAIRS])[pooling])
        expected = 100 * stats.spearmanr(gold, np.sum(left * right, axis=1)).statistic
        assert lent.metrics[rep]["spearman"] == pytest.approx(expected, abs=1e-6)
        assert own.metrics[rep]["spearman"] != pytest.approx(expected, abs=1e-6)  # the difference is visible


def test_a_stored_transform_reports_the_chunks_it_was_fitted_on(tmp_path, tiny_bert, whiten_index):
    """`add` keeps a transform fixed: the report names the chunks it was fitted on, not the index's count now."""
    import shutil

    from indexer.pipeline import add_documents
    from indexer.store import read_manifest

    directory = tmp_path / "grown"
    shutil.copytree(whiten_index, directory)
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"_id": f"new{i}", "text": f"the bees and the river {i}"}) + "\n" for i in range(5)), encoding="utf-8")
    index_encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "mean+whiten"))
    add_documents(directory, more, index_encoder, progress=False)
    manifest = read_manifest(directory)
    fitted = manifest.representations["mean+whiten"].transform.fitted_on_chunks
    assert manifest.counts.chunks > fitted
    result = evaluate_sts(read_sts(write_tsv(tmp_path / "p.tsv")), index_encoder, "mean+whiten", fit_on=directory,
                          resamples=10, progress=False)
    assert result.fits["mean+whiten"]["chunks"] == fitted
    assert f"({fitted} chunks): the index's own `mean+whiten` transform" in result.fits["mean+whiten"]["description"]


def test_fit_on_an_index_of_another_model_is_refused(tmp_path, tiny_bert_other, whiten_index):
    encoder = Encoder.load(str(tiny_bert_other), representations=("mean", "mean+whiten"))
    data = read_sts(write_tsv(tmp_path / "p.tsv"))
    with pytest.raises(ValueError, match="cannot fit on index .*built with model .* but this run uses"):
        evaluate_sts(data, encoder, "mean+whiten", fit_on=whiten_index, progress=False)


def test_a_transform_that_cannot_be_fitted_says_why(tmp_path, sts_encoder):
    # two sentences span one direction: all-but-the-top cannot remove it and leave anything
    data = StsData("two", [StsPair("the bees", "the hive", 5.0, 1), StsPair("the hive", "the bees", 1.0, 2)])
    with pytest.raises(TransformError, match=r"`pooled\+abtt1` removes 1 directions, but the 2 `pooled` vectors span only 1 "
                                             r"\(fitted on the 2 evaluation sentences\)"):
        evaluate_sts(data, sts_encoder, "pooled+abtt1", progress=False)


# -- command line --------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_shape(tmp_path, tiny_bert, capsys):
    path = write_tsv(tmp_path / "p.tsv", extra=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("g\tf\ty\tbad\tnot-a-score\ta\tb\n")
    code, out, err = run(capsys, "evaluate", "--sts", path, "--model", tiny_bert, "--representations", "mean,pooled,pooled+whiten",
                         "--json", "--no-progress")
    assert code == 0, err
    report = json.loads(out)
    assert report["pairs"] == len(PAIRS)
    assert list(report["metrics"]) == ["pooled", "pooled+whiten", "mean"]
    for m in report["metrics"].values():
        assert set(m) == {"spearman", "pearson", "spearman_ci95", "anisotropy", "effective_rank", "top3_variance"}
        assert len(m["spearman_ci95"]) == 2
    assert [c["pair"] for c in report["comparisons"]] == ["pooled vs pooled+whiten", "pooled vs mean", "pooled+whiten vs mean"]
    assert all({"delta", "delta_ci95", "p", "p_holm"} <= set(c) for c in report["comparisons"])
    assert report["skipped"] == [{"path": str(path), "line": len(PAIRS) + 1, "reason": "score must be a number, got 'not-a-score'"}]
    assert report["transforms"]["pooled+whiten"]["fitted_on"] == "evaluation"
    assert report["file"] == str(path) and report["model"] == str(tiny_bert)

    code, out, err = run(capsys, "evaluate", "--sts", path, "--model", tiny_bert, "--baseline", "mean", "--no-progress",
                         "--fit-on", tmp_path / "never-read")
    assert code == 0, err
    assert "warning: --fit-on is not used: none of pooled, mean has a transform" in err
    assert "| representation | Spearman | 95% CI | Pearson | anisotropy | effective rank | top-3 variance |" in out
    assert "pooled vs mean" in out and f"p.tsv:{len(PAIRS) + 1}: score must be a number" in out


@pytest.mark.parametrize("case", ["missing", "representation", "baseline", "pooler", "transform", "other-model", "with-index"])
def test_cli_errors_are_one_line(tmp_path, tiny_bert, tiny_bert_other, whiten_index, capsys, case):
    path = write_tsv(tmp_path / "p.tsv")
    args = ["evaluate", "--sts", path, "--model", tiny_bert, "--no-progress"]
    expected = {
        "missing": (["evaluate", "--sts", tmp_path / "nope.tsv"], "nope.tsv: does not exist"),
        "representation": (args + ["--representations", "mean,median"], "unknown representation 'median'"),
        "baseline": (args + ["--baseline", "cls"], "baseline 'cls' is not among the representations evaluated; they are: pooled, mean"),
        "pooler": (["evaluate", "--sts", path, "--model", make_tiny_distilbert(tmp_path / "distil"), "--representations", "pooled", "--no-progress"],
                   "`pooled` needs the model's pooler"),
        "transform": (args + ["--representations", "mean+abtt40"], "`mean+abtt40` removes 40 directions"),
        "other-model": (["evaluate", "--sts", path, "--model", tiny_bert_other, "--representations", "mean+whiten", "--fit-on", whiten_index,
                         "--no-progress"],
                        "cannot fit on index"),  # before any sentence is encoded
        "with-index": (args + ["--index", whiten_index], "--sts evaluates a file of sentence pairs without an index; it does not take --index"),
    }
    argv, message = expected[case]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    if case == "representation":
        assert "POOLING or POOLING+TRANSFORM" in err


# -- fuzzing: any bytes give pairs fit to encode, skips with a reason, or one SourceError ----------------

_PIECES = ["\t", ",", '"', "\n", "\r\n", " ", "3.5", "nan", "-1e3", "the bees", "\u200b", "\\ud800", "{", "}", ":",
           '"sentence1"', '"sentence2"', '"score"', "sentence1,sentence2,score\n", "\x00"]


@settings(max_examples=int(os.environ.get("POOLING_LAB_FUZZ_EXAMPLES", "30")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(suffix=hst.sampled_from([".tsv", ".csv", ".jsonl"]),
       parts=hst.lists(hst.one_of(hst.sampled_from(_PIECES).map(str.encode), hst.binary(max_size=6)), max_size=40))
def test_fuzz_read_sts(tmp_path_factory, suffix, parts):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(b"".join(parts))
    try:
        data = read_sts(path)
    except SourceError as exc:
        assert "\n" not in str(exc)
        return
    assert data.pairs
    for p in data.pairs:
        assert np.isfinite(p.score) and not is_blank(p.sentence1) and not is_blank(p.sentence2)
        p.sentence1.encode("utf-8"), p.sentence2.encode("utf-8")  # valid Unicode text
    assert all(i.line is not None and i.reason for i in data.issues)
