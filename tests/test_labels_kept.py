"""Issue 12, item 12 (indexer part): an index built from a BEIR folder keeps its labelled set, checksummed like
every file, so evaluation needs no source folder; every later generation keeps it; a damaged copy is reported."""

import hashlib
import json
import shutil

import pytest

from indexer import pipeline
from indexer.cli import main
from indexer.encoder import Encoder
from indexer.evaluation import labelled_sets, load_labels
from indexer.integrity import convert, refit, repair, verify
from indexer.pipeline import add_documents, build_index, delete_documents
from indexer.store import FileRecord, StoreError, generation_id, read_manifest
from indexer.vector_index import IndexSpec

DOCS = {
    "bee-1": "the bees make honey from nectar and pollen in the hive",
    "bee-2": "a queen and her colony swarm from the hive in spring",
    "bread-1": "bake bread with flour water salt and yeast in a hot oven",
    "star-1": "a comet and a planet orbit the sun in the sky",
    "bike-1": "repair the chain brake and tire of the bike",
}
QUERIES = {"qa": "bees and honey", "qb": "bread in the oven"}
QRELS = {"test": {"qa": {"bee-1": 2, "bee-2": 1}, "qb": {"bread-1": 1}}, "dev": {"qa": {"bee-2": 1}}}


def beir_folder(root):
    """A small BEIR folder with two splits; returns (root, {relative path: bytes}) of its labelled files."""
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in DOCS.items()), encoding="utf-8")
    labels = {"queries.jsonl": "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()).encode()}
    for split, judged in QRELS.items():
        labels[f"qrels/{split}.tsv"] = ("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{g}\n" for q, j in judged.items() for d, g in j.items())).encode()
    for rel, data in labels.items():
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(data)
    return root, labels


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=("mean", "mean+whiten"))


@pytest.fixture
def built(tmp_path, encoder):
    """An index of a BEIR folder whose source folder is deleted afterwards: (index dir, original label bytes)."""
    source, labels = beir_folder(tmp_path / "beir-src")
    build_index(source, tmp_path / "ix", encoder, overlap=4, progress=False)
    shutil.rmtree(source)
    return tmp_path / "ix", labels


def kept_bytes(directory) -> dict[str, bytes]:
    """{split: (queries bytes, qrels bytes)} as labelled_sets of the index finds them."""
    return {s.split: (s.queries.read_bytes(), s.qrels.read_bytes()) for s in labelled_sets(read_manifest(directory), directory)}


def expected(labels) -> dict[str, tuple[bytes, bytes]]:
    return {split: (labels["queries.jsonl"], labels[f"qrels/{split}.tsv"]) for split in QRELS}


def test_the_build_copies_the_labelled_set_with_size_and_sha256_in_the_manifest(built):
    directory, labels = built
    manifest = read_manifest(directory)
    files = manifest.files
    copies = {"labels.queries.jsonl": labels["queries.jsonl"], "labels.qrels.test.tsv": labels["qrels/test.tsv"],
              "labels.qrels.dev.tsv": labels["qrels/dev.tsv"]}
    for name, data in copies.items():
        assert files[name] == FileRecord(len(data), hashlib.sha256(data).hexdigest())
        assert (directory / manifest.generation / name).read_bytes() == data
    assert manifest.labels.name == "beir-src"


def test_a_deleted_source_folder_still_gives_the_labelled_queries(built):
    directory, labels = built
    sets = labelled_sets(read_manifest(directory), directory)
    assert sorted(s.name for s in sets) == ["beir-src · dev", "beir-src · test"]
    assert kept_bytes(directory) == expected(labels)
    test = next(s for s in sets if s.split == "test")
    queries, qrels, issues = load_labels(test.queries, test.qrels, set(DOCS))
    assert queries == QUERIES and qrels == QRELS["test"] and not issues


def test_cli_evaluate_with_the_index_alone_uses_the_kept_labels(built, tmp_path, capsys):
    directory, labels = built
    files = tmp_path / "elsewhere"  # the same labels, named explicitly: the independent way to evaluate
    (files / "qrels").mkdir(parents=True)
    for rel, data in labels.items():
        (files / rel).write_bytes(data)
    assert main(["evaluate", "--index", str(directory), "--json", "--no-progress", "--out", str(tmp_path / "a")]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--index", str(directory), "--queries", str(files / "queries.jsonl"), "--qrels",
                 str(files / "qrels" / "test.tsv"), "--json", "--no-progress", "--out", str(tmp_path / "b")]) == 0
    named = json.loads(capsys.readouterr().out)
    assert kept["metrics"] == named["metrics"] and kept["per_query"] == named["per_query"]
    assert kept["queries_evaluated"] == 2 and kept["dataset"] == "beir-src" and not kept["issues"]
    assert main(["evaluate", "--index", str(directory), "--split", "train", "--no-progress", "--out", str(tmp_path / "c")]) == 2
    assert "keeps no labelled queries of split 'train' (splits kept: dev, test)" in capsys.readouterr().err


def test_every_later_generation_keeps_the_labels(built, tmp_path, encoder):
    directory, labels = built
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "sea-1", "text": "a storm at sea"}) + "\n", encoding="utf-8")
    steps = [
        ("add", lambda: add_documents(directory, more, encoder, progress=False)),
        ("delete", lambda: delete_documents(directory, ["sea-1"])),
        ("refit", lambda: refit(directory)),
        ("convert", lambda: convert(directory, IndexSpec("hnsw"))),
        ("repair", lambda: repair(directory)),
    ]
    for op, step in steps:
        before = generation_id(directory)
        step()
        assert generation_id(directory) != before, op
        assert kept_bytes(directory) == expected(labels), op
        assert verify(directory)[0] == [], op


def test_a_corrupted_copy_is_reported_by_verify_and_refused(built):
    directory, _ = built
    manifest = read_manifest(directory)
    copy = directory / manifest.generation / "labels.qrels.test.tsv"
    copy.write_bytes(copy.read_bytes().replace(b"\t2\n", b"\t3\n"))  # same size, other grade
    problems, _ = verify(directory)
    assert len(problems) == 1 and f"{copy} is corrupted" in problems[0]
    with pytest.raises(StoreError, match="labels.qrels.test.tsv is corrupted"):
        labelled_sets(manifest, directory)
    repaired = repair(directory)  # repair drops the damaged set rather than serving it
    assert "labelled set was damaged and is no longer kept" in repaired.note
    assert read_manifest(directory).labels is None and verify(directory)[0] == []


def test_an_index_without_a_kept_copy_reads_the_source_folder(tmp_path, encoder, monkeypatch):
    source, labels = beir_folder(tmp_path / "old-src")
    monkeypatch.setattr(pipeline, "beir_labels", lambda _: None)  # as indexes built before copies were kept
    build_index(source, tmp_path / "ix", encoder, overlap=4, progress=False)
    manifest = read_manifest(tmp_path / "ix")
    assert manifest.labels is None and not any(f.startswith("labels.") for f in manifest.files)
    sets = labelled_sets(manifest, tmp_path / "ix")
    assert sorted(s.qrels for s in sets) == sorted(source / "qrels" / f"{s}.tsv" for s in QRELS)


def test_other_sources_keep_no_labels(tmp_path, encoder, small_jsonl):
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    manifest = read_manifest(tmp_path / "ix")
    assert manifest.labels is None and labelled_sets(manifest, tmp_path / "ix") == []


# -- the app's Evaluate page on an index whose source folder is gone ------------------------------------------

def evaluate_page(directory):
    from test_app import app

    return app(directory).switch_page("views/evaluate.py").run()


def test_the_evaluate_page_works_after_the_source_folder_is_deleted(built):
    directory, _ = built
    at = evaluate_page(directory)
    assert not at.exception and not at.error
    sets, upload = at.selectbox[0].options[:-1], at.selectbox[0].options[-1]
    assert sets == ["beir-src · dev", "beir-src · test"] and upload.startswith("Upload")  # or labels for this session
    at.selectbox[0].select("beir-src · test").run()
    judgements = sum(len(j) for j in QRELS["test"].values())
    assert f"{len(QUERIES)} queries, {judgements} judgements" in [c.value for c in at.caption]
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert not at.exception and not at.error and at.dataframe


def test_the_evaluate_page_reports_a_corrupted_copy(built):
    directory, _ = built
    copy = directory / read_manifest(directory).generation / "labels.queries.jsonl"
    copy.write_bytes(copy.read_bytes()[:-1])
    at = evaluate_page(directory)
    assert not at.exception
    assert "labels.queries.jsonl is corrupted" in at.error[0].value.replace("\\", "")


def test_the_index_page_says_which_labels_the_index_keeps(built):
    from test_app import app, unescape

    directory, _ = built
    at = app(directory).switch_page("views/index.py").run()
    assert unescape(at.table[0].value.loc["labelled queries", "value"]) == "kept with the index: dev, test"  # cells are escaped


@pytest.mark.parametrize("bound, shown", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_skipped_label_lines_name_their_file_without_its_local_path_on_a_shared_app(bound, shown, tmp_path, encoder):
    from streamlit import config

    source, _ = beir_folder(tmp_path / "src")
    with open(source / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("qa\tno-such-doc\t1\n")
    build_index(source, tmp_path / "ix", encoder, overlap=4, progress=False)
    before = config.get_option("server.address")
    config.set_option("server.address", bound)
    try:
        at = evaluate_page(tmp_path / "ix")
        at.selectbox[0].select("src · test").run()
    finally:
        config.set_option("server.address", before)
    skipped = at.text[0].value
    assert "labels.qrels.test.tsv:5: unknown document id 'no-such-doc'" in skipped
    assert (str(tmp_path) in skipped) is shown
