"""Regression tests from an adversarial pass over issue 11 (transforms, refit, STS, Holm): each failed before its fix."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from conftest import WORDS
from indexer.encoder import Encoder
from indexer.evaluation import holm
from indexer.integrity import refit, verify
from indexer.loaders import SourceError
from indexer.pipeline import build_index, delete_documents
from indexer.store import CURRENT, IndexReader, StoreError, load_manifest, transform_file
from indexer.sts import read_sts
from indexer.transforms import Transform, TransformError

REPS = ("mean", "mean+whiten", "pooled+whiten4", "max+abtt2")


def corpus(path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [w for w in WORDS if not w.startswith("#")]
    rows = [{"_id": f"d{i}", "text": " ".join(rng.choice(words, size=int(rng.integers(6, 12))))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=REPS, max_tokens=16, batch_size=16)


@pytest.fixture
def built(tmp_path, encoder):
    directory = tmp_path / "ix"
    build_index(corpus(tmp_path / "docs.jsonl", 60), directory, encoder, overlap=2, progress=False)
    return directory


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
    assert reader.n_chunks == 0 and reader.manifest["representations"]["pooled+whiten4"]["dim"] == 4
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
