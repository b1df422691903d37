"""The Evaluate page's STS section through AppTest: upload, representations, baseline, tables; no index needed."""

import numpy as np
import pytest
from scipy import stats

from test_app import app, texts
from test_sts import PAIRS, write_csv

EVIL = "**bold** [link](http://x) <b>tag</b> $x$"


def sts_page(at, reps, baseline=None, upload=None):
    at.switch_page("views/evaluate.py").run()
    at.radio(key="evaluate_kind").set_value("Sentence pairs (STS)").run()
    name, data = upload
    at.file_uploader(key="sts_file").upload(name, data, "text/plain")
    at.multiselect(key="sts_representations").set_value(reps).run()
    if baseline:
        at.selectbox(key="sts_baseline").set_value(baseline).run()
    return at.button(key="sts_run").click().run()


def test_sts_section_shows_metrics_geometry_comparisons_and_skips(tmp_path, tiny_bert):
    pairs = PAIRS + [(EVIL, "the bees", 1.5)]
    path = write_csv(tmp_path / "pairs.csv", pairs)
    with open(path, "a", encoding="utf-8") as f:
        f.write("99,not-a-score,the bees,the hive\n")
    # no index at all: the STS section needs none
    at = sts_page(app(tmp_path / "no-index", model=str(tiny_bert)), ["mean", "cls", "mean+whiten"], baseline="mean",
                  upload=("pairs.csv", path.read_bytes()))
    assert not at.exception and not at.error, texts(at.error)
    metrics = at.dataframe[0].value
    assert list(metrics.index) == ["mean", "mean+whiten", "cls"]
    assert list(metrics.columns) == ["Spearman", "95% CI", "Pearson", "anisotropy", "effective rank", "top-3 variance"]
    # against scipy on the cosines of an independently loaded encoder
    from indexer.encoder import Encoder

    encoder = Encoder.load(str(tiny_bert), representations=("cls",))
    left = encoder.encode_texts([a for a, _, _ in pairs])["cls"]
    right = encoder.encode_texts([b for _, b, _ in pairs])["cls"]
    expected = 100 * stats.spearmanr([s for _, _, s in pairs], np.sum(left * right, axis=1)).statistic
    assert metrics.loc["cls", "Spearman"] == pytest.approx(expected, abs=1e-6)
    assert texts(at.subheader) == [f"{len(pairs)} sentence pairs", "Paired bootstrap of the Spearman difference (each against mean)"]
    comparisons = at.dataframe[1].value
    assert list(comparisons.index) == ["mean+whiten vs mean", "cls vs mean"] and "Holm p" in comparisons.columns
    assert any("mean+whiten: fitted on the" in t and "evaluation sentences" in t for t in texts(at.text))
    skipped = at.dataframe[2].value
    assert skipped.to_dict("records") == [{"line": len(pairs) + 2, "reason": "score must be a number, got 'not-a-score'"}]
    rendered = "\n".join(texts(at.markdown) + texts(at.caption) + texts(at.text))
    assert "bold" not in rendered and "http://x" not in rendered  # text of the file is never rendered


def test_sts_section_explains_a_bad_file_and_a_bad_name(tmp_path, tiny_bert):
    at = sts_page(app(tmp_path / "no-index", model=str(tiny_bert)), ["mean"], upload=("bad.tsv", b"a\tb\n"))
    assert not at.exception
    shown = at.error[0].value.replace("\\", "")  # the message is escaped Markdown: shown literally
    assert shown.startswith("bad.tsv: no usable sentence pair; 1 lines skipped, the first: bad.tsv:1: expected at least 7")
    assert "pooling-lab-sts" not in shown  # the upload's name, not the temporary file's
    at.multiselect(key="sts_representations").set_value(["mean", "**median**"]).run()
    assert not at.exception and "unknown representation \\'\\*\\*median\\*\\*\\'" in at.error[0].value  # escaped


def test_sts_section_can_fit_transforms_on_the_current_index(tmp_path, tiny_bert, tiny_index):
    path = write_csv(tmp_path / "pairs.csv")
    at = app(tiny_index, model=str(tiny_bert))
    at.switch_page("views/evaluate.py").run()
    at.radio(key="evaluate_kind").set_value("Sentence pairs (STS)").run()
    at.file_uploader(key="sts_file").upload("pairs.csv", path.read_bytes(), "text/csv")
    at.multiselect(key="sts_representations").set_value(["mean", "mean+whiten"]).run()
    at.checkbox(key="sts_fit_on").check().run()
    at.button(key="sts_run").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert texts(at.text) == [f"mean+whiten: fitted on index {tiny_index.resolve()} (3 chunks), on its stored `mean` vectors"]
