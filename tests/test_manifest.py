"""The manifest as one typed record (store.Manifest): read from and written to the very same JSON, old layouts still
read, other format versions and malformed records refused with a message naming what is wrong."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from conftest import random_corpus
from indexer.cli import main
from indexer.compat import compatibility_problems
from indexer.config import ModelInfo
from indexer.encoder import Encoder
from indexer.integrity import verify
from indexer.pipeline import add_documents, build_index, delete_documents
from indexer.search import Searcher
from indexer.store import CURRENT, MANIFEST, IndexReader, Manifest, StoreError, read_manifest
from indexer.vector_index import IndexSpec


def manifest_bytes(directory):
    return (directory / json.loads((directory / CURRENT).read_text())["generation"] / MANIFEST).read_bytes()


def resign(directory, edit) -> None:
    """Apply `edit(manifest)` to the published manifest.json and re-sign it in CURRENT, as an older writer (or a
    crafted index) would have written it."""
    pointer = json.loads((directory / CURRENT).read_text())
    path = directory / pointer["generation"] / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    path.write_bytes(data)
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=("pooled", "mean", "mean+whiten4"), max_tokens=16, batch_size=8)


@pytest.fixture
def beir(tmp_path):
    """A BEIR folder (corpus, queries, a qrels split): its index keeps a labelled set."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    random_corpus(root / "corpus.jsonl", 30)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "bees and honey"}\n', encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    return root


def test_every_generation_reads_back_to_the_bytes_written(tmp_path, encoder, beir):
    """build, add, delete, refit and convert all write through Manifest.to_dict; reading each gives the same record,
    which writes the same bytes again (keys, order and layout: the JSON is what it always was)."""
    directory = tmp_path / "ix"
    build_index(beir, directory, encoder, overlap=2, progress=False, vector_index=IndexSpec(type="hnsw", m=8))
    seen = []

    def check():
        data = manifest_bytes(directory)
        manifest = read_manifest(directory)
        assert (json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n").encode() == data
        assert Manifest.from_dict(json.loads(data)) == manifest
        seen.append(manifest)

    check()
    add_documents(directory, random_corpus(tmp_path / "more.jsonl", 5, seed=1, prefix="n"), encoder, progress=False)
    check()
    delete_documents(directory, ["n0"])
    check()
    assert main(["refit", str(directory), "--representations", "mean,mean+whiten4,pooled+abtt1"]) == 0
    check()
    assert main(["convert", str(directory), "--index-type", "flat"]) == 0
    check()
    first, last = seen[0], seen[-1]
    assert first.labels is not None and first.labels.qrels == {"test": "labels.qrels.test.tsv"} and last.labels == first.labels
    assert first.model == encoder.info and first.chunking.max_tokens == 16 and first.content_tokens_per_chunk == encoder.window
    assert [u["op"] for u in last.updates] == ["add", "delete", "refit", "convert"]
    assert first.representations["mean+whiten4"].transform.kind == "whiten"
    assert last.vector_index == IndexSpec() and set(last.poolings) == {"pooled", "mean"}
    assert verify(directory)[0] == []


def test_a_manifest_of_the_dict_writer_reads_back_to_its_bytes():
    """data/manifest-format2.json was written by the code before Manifest (a BEIR build of pooled, mean and
    mean+whiten4 with the bundled model): the record holds all of it, and writes it again byte for byte."""
    data = (Path(__file__).parent / "data" / "manifest-format2.json").read_bytes()
    manifest = Manifest.from_dict(json.loads(data))
    assert (json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n").encode() == data
    assert manifest.representations["mean+whiten4"].transform.dim_in == manifest.poolings["mean"] == manifest.model.dim == 384
    assert manifest.labels.qrels == {"test": "labels.qrels.test.tsv"} and manifest.build.command_sha256 is not None


def oldest_layout(manifest: dict) -> None:
    """A manifest as the first writer of format 2 wrote it: no vector index settings, no poolings table, no model
    fingerprint, no build command checksum, representations without their pooling or build time."""
    del manifest["vector_index"], manifest["poolings"], manifest["model"]["fingerprint"], manifest["model"]["files"]
    del manifest["build"]["command_sha256"]
    for spec in manifest["representations"].values():
        del spec["pooling"], spec["build_seconds"]


def test_an_index_in_the_oldest_layout_is_read_verified_and_searched(tmp_path, tiny_bert, small_jsonl, caplog, capsys):
    plain = Encoder.load(str(tiny_bert), representations=("pooled", "mean"), max_tokens=16)
    directory = tmp_path / "old"
    build_index(small_jsonl, directory, plain, overlap=2, progress=False)
    expected = Searcher(directory, plain).search("bees and honey", k=3).to_dict()["results"]
    resign(directory, oldest_layout)
    before = manifest_bytes(directory)

    manifest = read_manifest(directory)
    assert manifest.vector_index == IndexSpec() and manifest.poolings == {"pooled": 32, "mean": 32}
    assert manifest.model.fingerprint is None and manifest.model.files is None and manifest.build.command_sha256 is None
    assert {r: (s.pooling, s.build_seconds) for r, s in manifest.representations.items()} == {
        "pooled": ("pooled", None), "mean": ("mean", None)}
    assert verify(directory)[0] == []
    assert Searcher(directory, plain).search("bees and honey", k=3).to_dict()["results"] == expected
    assert [p for p in compatibility_problems(manifest, plain, "add") if "predates model fingerprints" in p]
    assert main(["info", str(directory)]) == 0
    assert "fingerprint:    none (built before fingerprints" in capsys.readouterr().out
    assert manifest_bytes(directory) == before  # reading never rewrites it: CURRENT's checksum still holds


@pytest.mark.parametrize("version, says", [
    (3, "format version 3; this indexer (0.1.0) reads format version 2. The index was written by a newer indexer"),
    (1, "format version 1; this indexer (0.1.0) reads format version 2. Rebuild the index"),
    ("2", "format version '2'; this indexer (0.1.0) reads format version 2"),
    (None, "format version None; this indexer (0.1.0) reads format version 2"),
])
def test_another_format_version_is_refused_naming_it_and_the_one_read(tmp_path, tiny_bert, small_jsonl, capsys, version, says):
    directory = tmp_path / "ix"
    build_index(small_jsonl, directory, Encoder.load(str(tiny_bert), max_tokens=16), overlap=2, progress=False)
    resign(directory, lambda manifest: manifest.update(format_version=version))
    for read in (read_manifest, IndexReader):
        with pytest.raises(StoreError, match=re.escape(f"manifest.json has {says}")):
            read(directory)
    assert says in verify(directory)[0][0]
    capsys.readouterr()  # what loading the model printed
    for command in (["info", str(directory)], ["search", str(directory), "bees"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err


def model_record(**changes) -> dict:
    return ModelInfo(name="m", source="hub", location="/m", weights_sha256="0" * 64, pooler="loaded", pooler_note="",
                     tokenizer="m", max_tokens=16, dim=32, architecture="BertModel").to_dict() | changes


@pytest.mark.parametrize("edit, says", [
    (lambda m: m["counts"].update(chunks="7"), r"'counts' is corrupted: 'chunks' is '7', not of type int"),
    (lambda m: m["counts"].update(chunks=True), r"'counts' is corrupted: 'chunks' is True, not of type int"),
    (lambda m: m.pop("next_chunk_id"), r"is corrupted: it has no 'next_chunk_id'"),
    (lambda m: m["model"].pop("name"), r"'model' is corrupted: it has no 'name'"),
    (lambda m: m.update(model=model_record(source="ftp")), r"'model' is corrupted: 'source' is 'ftp', not of type"),
    (lambda m: m.update(model=model_record(files={"a": 1})), r"'model' is corrupted: 'files' is \{'a': 1\}"),
    (lambda m: m.update(model=[]), r"'model' is corrupted: expected a JSON object, got list"),
    (lambda m: m.update(updates={}), r"'updates' must be a list of objects"),
    (lambda m: m["chunking"].update(overlap=9), r"invalid chunking settings: overlap must be between 0 and half"),
    (lambda m: m["files"]["metadata.sqlite"].pop("sha256"), r"the checksum of metadata\.sqlite is corrupted: it has no 'sha256'"),
    (lambda m: m["source"].update(path=None), r"'source' is corrupted: 'path' is None, not of type str"),
])
def test_a_malformed_record_is_refused_naming_the_field(tmp_path, tiny_bert, small_jsonl, capsys, edit, says):
    directory = tmp_path / "ix"
    build_index(small_jsonl, directory, Encoder.load(str(tiny_bert), max_tokens=16), overlap=2, progress=False)
    resign(directory, edit)
    with pytest.raises(StoreError, match=says):
        IndexReader(directory)
    capsys.readouterr()
    assert main(["info", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
