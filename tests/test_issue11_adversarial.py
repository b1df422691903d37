"""Regression tests from an adversarial pass over issue 11 (transforms, refit, STS, Holm): each failed before its fix."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest

from conftest import build_random, random_corpus
from indexer.app.serve import APP as APP_SCRIPT
from indexer.encoder import Encoder
from indexer.evaluation import holm
from indexer.integrity import refit, verify
from indexer.pipeline import build_index, delete_documents
from indexer.store import CURRENT, IndexReader, StoreError, load_manifest, transform_file
from indexer.sts import read_sts

REPS = ("mean", "mean+whiten", "pooled+whiten4", "max+abtt2")


corpus = random_corpus


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=REPS, max_tokens=16, batch_size=16)


@pytest.fixture
def built(tmp_path, encoder):
    return build_random(tmp_path / "ix", encoder, 60)


def rewrite_manifest(directory, edit) -> None:
    """Apply `edit(manifest, gen_dir)` to the published manifest and re-sign it in CURRENT (a consistent, crafted index)."""
    pointer = json.loads((directory / CURRENT).read_text())
    gen_dir = directory / pointer["generation"]
    manifest = json.loads((gen_dir / "manifest.json").read_text())
    edit(manifest, gen_dir)
    data = json.dumps(manifest).encode()
    (gen_dir / "manifest.json").write_bytes(data)
    pointer["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (directory / CURRENT).write_text(json.dumps(pointer))


# ---- verify of an emptied index ----------------------------------------------------------------------


def test_verify_passes_an_index_whose_documents_were_all_deleted(built):
    """`pooled+whiten4` has 4 dimensions while `pooled` has 32: an empty index must not read as a mismatch."""
    doc_ids = sorted(IndexReader(built).doc_ids())
    delete_documents(built, doc_ids)
    reader = IndexReader(built)
    assert reader.n_chunks == 0 and reader.manifest.representations["pooled+whiten4"].dim == 4
    assert verify(built)[0] == []


# ---- STS: a file whose gold scores cannot be correlated -----------------------------------------------


@pytest.mark.parametrize("rows", [
    ["3.5\tbees make honey\tthe bees"],  # a single pair
    ["3.0\tbees make honey\tthe bees", "3.0\tthe river\ta bike", "3\tbake bread\tbread in the oven"],  # all equal
], ids=["single-pair", "equal-gold"])
def test_sts_with_constant_gold_scores_is_one_clear_error_before_encoding(tmp_path, rows):
    from indexer.sts import evaluate_sts

    path = tmp_path / "flat.tsv"
    path.write_text("".join(f"main\tf\t2012\t{i}\t{r}\n" for i, r in enumerate(rows)), encoding="utf-8")
    data = read_sts(path)
    assert len(data.pairs) == len(rows)

    class NoEncoder:  # any encoding would be wasted: the run must stop before it
        poolings = ("mean",)

        def encode_texts(self, texts):
            raise AssertionError("encoded although no correlation can be computed")

    with pytest.raises(ValueError, match=r"flat\.tsv: its \d usable pair\(s\) all have gold score 3(\.5)?; Spearman and Pearson need"):
        evaluate_sts(data, NoEncoder(), "mean", progress=False)


# ---- Holm with an undefined p-value ------------------------------------------------------------------


def test_holm_leaves_an_undefined_p_undefined_and_corrects_only_over_the_tests_made():
    nan = float("nan")
    # two defined tests: Holm by hand over m = 2 -> 0.01 * 2 = 0.02, then max(0.02, 0.03 * 1) = 0.03
    for p, expected in (([nan, 0.01, 0.03], [nan, 0.02, 0.03]), ([0.01, nan, 0.03], [0.02, nan, 0.03])):
        got = holm(p)
        assert [math.isnan(g) for g in got] == [math.isnan(e) for e in expected]
        assert [g for g in got if not math.isnan(g)] == pytest.approx([e for e in expected if not math.isnan(e)])
    assert holm([]) == []


# ---- crafted manifests and transform files (checksums made to match) ----------------------------------


def test_an_oversized_transform_file_is_refused_before_it_is_read(built, monkeypatch):
    from safetensors.numpy import save

    from indexer import store

    big = save({"center": np.zeros(32, np.float32), "matrix": np.zeros((32, 20_000), np.float32)})  # 2.5 MB for a 32 -> 31 map

    def swap(manifest, gen_dir):
        (gen_dir / transform_file("mean+whiten")).write_bytes(big)
        manifest["files"][transform_file("mean+whiten")] = {"bytes": len(big), "sha256": hashlib.sha256(big).hexdigest()}

    rewrite_manifest(built, swap)
    read = []
    original = store.verified_bytes
    monkeypatch.setattr(store, "verified_bytes", lambda gen_dir, name, files: read.append(name) or original(gen_dir, name, files))
    with pytest.raises(StoreError, match=r"mean\+whiten\.transform\.safetensors is \d+ bytes; a transform from `mean` \(32 dims\) "
                                         r"to `mean\+whiten` \(31 dims\) takes at most 8192"):
        IndexReader(built)
    assert transform_file("mean+whiten") not in read  # refused from its size, not after loading it
    assert any("takes at most" in p for p in verify(built)[0])


def test_a_transform_record_without_a_poolings_table_is_refused_at_the_manifest(built):
    rewrite_manifest(built, lambda manifest, gen_dir: manifest.pop("poolings"))
    gen_dir = built / json.loads((built / CURRENT).read_text())["generation"]
    with pytest.raises(StoreError, match=r"`pooled\+whiten4` has a transform, but the manifest has no 'poolings' table"):
        load_manifest(gen_dir, None)


@pytest.mark.parametrize("name, param", [("max+abtt2", 2.0), ("pooled+whiten4", "4"), ("max+abtt2", [2])])
def test_a_transform_param_of_another_type_is_refused(built, name, param):
    def edit(manifest, gen_dir):
        manifest["representations"][name]["transform"]["param"] = param

    rewrite_manifest(built, edit)
    gen_dir = built / json.loads((built / CURRENT).read_text())["generation"]
    with pytest.raises(StoreError, match="expected kind"):
        load_manifest(gen_dir, None)


def test_abtt1_param_true_is_refused(tmp_path, encoder, tiny_bert):
    """JSON `true` equals 1 in Python: `abtt1` must not accept it as its D."""
    enc = Encoder.load(str(tiny_bert), representations=("cls", "cls+abtt1"), max_tokens=16, batch_size=16)
    directory = tmp_path / "ab"
    build_index(corpus(tmp_path / "d.jsonl", 20), directory, enc, overlap=2, progress=False)

    def edit(manifest, gen_dir):
        manifest["representations"]["cls+abtt1"]["transform"]["param"] = True

    rewrite_manifest(directory, edit)
    gen_dir = directory / json.loads((directory / CURRENT).read_text())["generation"]
    with pytest.raises(StoreError, match="expected kind 'abtt', param 1"):
        load_manifest(gen_dir, None)


# ---- a transform wider than the model: refused before any embedding ----------------------------------


@pytest.mark.parametrize("name, message", [
    ("mean+whiten99999", r"`mean\+whiten99999` keeps 99999 dimensions, but `mean` has only 32"),
    ("cls+abtt32", r"`cls\+abtt32` removes 32 directions, but `cls` has only 32 dimensions"),
])
def test_build_with_a_transform_wider_than_the_model_stops_before_embedding(tmp_path, tiny_bert, capsys, name, message):
    from indexer.cli import main

    directory = tmp_path / "ix"
    rc = main(["build", str(corpus(tmp_path / "d.jsonl", 5)), "--index", str(directory), "--model", str(tiny_bert),
               "--representations", f"mean,{name}", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err)
    assert not directory.exists()  # nothing staged: the documents were never embedded


def test_refit_to_a_transform_wider_than_its_pooling_leaves_no_staging_area(built):
    before = json.loads((built / CURRENT).read_text())
    with pytest.raises(StoreError, match=r"cannot refit .*`mean\+whiten33` keeps 33 dimensions, but `mean` has only 32"):
        refit(built, ["mean", "mean+whiten33"])
    assert json.loads((built / CURRENT).read_text()) == before
    assert not (built / "staging").exists() and verify(built) == ([], verify(built)[1])


def test_sts_markdown_names_its_two_p_columns_apart():
    """With one comparison the corrected column equals p; it must still not be headed `p` twice."""
    from indexer.sts import StsData, StsPair, evaluate_sts

    class Hand:
        poolings = ("mean", "cls")

        def encode_texts(self, texts):
            rng = np.random.default_rng(len(texts))
            return {p: rng.normal(size=(len(texts), 4)).astype(np.float32) for p in self.poolings}

        class info:  # noqa: N801 - stands for ModelInfo
            name = "hand"

    data = StsData("hand.tsv", [StsPair(f"a{k}", f"b{k}", float(k), k) for k in range(6)])
    header = [line for line in evaluate_sts(data, Hand(), "mean,cls", resamples=20, progress=False).to_markdown().splitlines()
              if line.startswith("| comparison")][0]
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert len(cells) == len(set(cells)), header


# ---- evaluate --index takes --representations ----------------------------------------------------------


def test_evaluate_index_evaluates_the_representations_named_and_refuses_one_it_lacks(built, tmp_path, capsys):
    from indexer.cli import main

    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(["bees honey", "bread oven"])))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td2\t1\n")
    args = ["evaluate", "--index", str(built), "--queries", str(queries), "--qrels", str(qrels), "--no-progress",
            "--json", "--out", str(tmp_path / "out")]
    assert main(args + ["--representations", "max+abtt2,mean"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["metrics"]) == {"mean", "max+abtt2", "bm25"}  # the two named (and BM25), not the index's four

    assert main(args + ["--representations", "mean,cls+whiten"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`cls+whiten`" in err and "Traceback" not in err


def test_sts_whose_pairs_hold_one_sentence_is_one_clear_error(tmp_path):
    from indexer.sts import evaluate_sts

    path = tmp_path / "same.tsv"
    path.write_text("main\tf\t2012\t1\t1.0\tbees\tbees\nmain\tf\t2012\t2\t3.0\tbees\tbees\n", encoding="utf-8")

    class NoEncoder:
        poolings = ("mean",)

        def encode_texts(self, texts):
            raise AssertionError("encoded although every cosine is 1")

    with pytest.raises(ValueError, match=r"same\.tsv: its 2 pairs compare one sentence with itself"):
        evaluate_sts(read_sts(path), NoEncoder(), "mean", progress=False)


def test_refit_of_an_emptied_index_is_refused_before_staging_and_keeps_the_index(built):
    delete_documents(built, sorted(IndexReader(built).doc_ids()))
    before = (built / CURRENT).read_text()
    with pytest.raises(StoreError, match=r"holds 0 chunk\(s\), and `pooled\+whiten4` is fitted on at least 2"):
        refit(built)
    assert (built / CURRENT).read_text() == before and not (built / "staging").exists()
    refit(built, ["mean", "max"])  # the plain representations can still be rebuilt
    assert IndexReader(built).representations == ("mean", "max")


@pytest.mark.parametrize("field, value, message", [
    ("pooling", "max", r"`mean\+whiten` records pooling 'max'; its name says 'mean'"),
    ("dim_in", 7, r"`mean\+whiten` records dim_in 7; `mean` has 32"),
])
def test_a_representation_record_that_contradicts_its_name_is_refused(built, field, value, message):
    """`info` prints these records: a crafted one must not describe another pooling or width than the one served."""
    def edit(manifest, gen_dir):
        spec = manifest["representations"]["mean+whiten"]
        (spec if field == "pooling" else spec["transform"])[field] = value

    rewrite_manifest(built, edit)
    gen_dir = built / json.loads((built / CURRENT).read_text())["generation"]
    with pytest.raises(StoreError, match=message):
        load_manifest(gen_dir, None)


# ---- the app shows a crafted manifest's text literally -------------------------------------------------


def test_app_error_about_a_crafted_manifest_renders_no_link(built):
    from streamlit.testing.v1 import AppTest


    def rename(manifest, gen_dir):
        manifest["representations"]["[evil](http://e.x)"] = manifest["representations"].pop("max+abtt2")

    rewrite_manifest(built, rename)
    for page in ("search", "index"):
        at = AppTest.from_file(str(APP_SCRIPT), default_timeout=120)
        at.session_state["index_dir"] = str(built)
        at.run()
        if page == "index":
            at.switch_page("views/index.py").run()
        shown = [e.value for e in list(at.error) + list(at.warning) if "evil" in e.value]
        assert shown, page
        assert all("[evil](" not in v and r"\[evil\]\(http" in v for v in shown), shown  # escaped: no link
