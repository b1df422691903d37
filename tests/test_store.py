"""Index directory: FAISS against numpy brute force, generations, checksums checked before anything is read."""

import json
import re
import sqlite3

import numpy as np
import pytest

from indexer.chunking import Chunk
from indexer.config import ChunkingConfig, ModelInfo
from indexer.loaders import Document
from indexer.pipeline import delete_documents
from indexer.staging import Staging, WriterLock, publish
from indexer.store import (
    CURRENT,
    MANIFEST,
    METADATA,
    SQL_VARIABLES,
    BuildRecord,
    Counts,
    FileRecord,
    IndexReader,
    Manifest,
    SourceRecord,
    StoreError,
    generation_id,
    read_manifest,
)
from indexer.vector_index import IndexSpec


def unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def described(d=16, vector_index=None) -> Manifest:
    """What a build records, for an index of random vectors written without a model."""
    model = ModelInfo(name="test", source="local", location="/nowhere", weights_sha256="0" * 64, fingerprint="1" * 64,
                      files={}, pooler="loaded", pooler_note="", tokenizer="test", max_tokens=16, dim=d, architecture="none")
    return Manifest(indexer_version="test", model=model, chunking=ChunkingConfig(16), content_tokens_per_chunk=14,
                    vector_index=vector_index or IndexSpec(), source=SourceRecord("random", "test", ""), build=BuildRecord(0.0, 0, 0))


def write_index(directory, n_docs=50, chunks_per_doc=3, d=16, seed=0, vector_index=None, ids=None):
    """Publish one generation of random vectors through the real writer path (no model needed)."""
    rng = np.random.default_rng(seed)
    ids = ids or [f"doc-{i}" for i in range(n_docs)]
    n_docs = len(ids)
    docs = [Document(doc_id, f"text {i}", title=f"T{i}") for i, doc_id in enumerate(ids)]
    chunks = [Chunk(d_.doc_id, p, f"chunk {p} of {d_.doc_id}", 0, 4, (1, 2)) for d_ in docs for p in range(chunks_per_doc)]
    vectors = {"pooled": unit(rng, len(chunks), d), "mean": unit(rng, len(chunks), d)}
    with WriterLock(directory, "test", create=True):
        staging = Staging(directory, {"op": "test", "seed": seed})
        half = len(docs) // 2
        split = half * chunks_per_doc
        staging.apply(documents=docs[:half], chunks=chunks[:split], vectors={r: v[:split] for r, v in vectors.items()}, consumed=half)
        staging.apply(documents=docs[half:], chunks=chunks[split:], vectors={r: v[split:] for r, v in vectors.items()}, consumed=n_docs)
        publish(directory, staging, described(d, vector_index), {"pooled": d, "mean": d})
    return docs, chunks, vectors


def test_search_equals_numpy_brute_force(tmp_path):
    _, chunks, vectors = write_index(tmp_path / "ix")
    reader = IndexReader(tmp_path / "ix")
    queries = unit(np.random.default_rng(7), 5, 16)
    for r in ("pooled", "mean"):
        scores, ids = reader.search(r, queries, 10)
        brute = queries @ vectors[r].T
        expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), atol=1e-5)


def test_same_chunk_ids_and_metadata_in_every_representation(tmp_path):
    _, chunks, vectors = write_index(tmp_path / "ix")
    reader = IndexReader(tmp_path / "ix")
    rows = reader.chunks(range(len(chunks)))
    assert [(rows[i].doc_id, rows[i].position, rows[i].text) for i in range(len(chunks))] == [
        (c.doc_id, c.position, c.text) for c in chunks
    ]
    assert rows[4].title == "T1"
    assert reader.manifest.counts == Counts(documents=50, chunks=150)
    for r in ("pooled", "mean"):
        np.testing.assert_array_equal(reader.vectors(r, range(len(chunks))), vectors[r])


def test_lists_of_ids_longer_than_sqlites_variable_limit_are_bound_in_parts(tmp_path, monkeypatch):
    """Every `IN (…)` over a list of ids goes through store.in_batches (issue 13, item 4): with SQLite's limit on
    bound parameters lowered to SQL_VARIABLES on every connection, the reader's lookups and a delete (which checks,
    hashes and removes the ids) still handle twice as many ids."""
    connect = sqlite3.connect

    def limited(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQL_VARIABLES)
        return db

    monkeypatch.setattr(sqlite3, "connect", limited)
    n = 2 * SQL_VARIABLES + 1
    docs, _, _ = write_index(tmp_path / "ix", n_docs=n, chunks_per_doc=1, d=4)
    reader = IndexReader(tmp_path / "ix")
    assert reader.chunk_docs(range(n)) == {i: d.doc_id for i, d in enumerate(docs)}
    assert reader.titles([d.doc_id for d in docs]) == {d.doc_id: d.title for d in docs}
    reader.close()
    summary = delete_documents(tmp_path / "ix", [d.doc_id for d in docs[1:]] + ["not-there"])
    assert (len(summary.removed), summary.missing, summary.documents) == (n - 1, ["not-there"], 1)


def test_layout_pointer_and_manifest(tmp_path):
    write_index(tmp_path / "ix")
    directory = tmp_path / "ix"
    pointer = json.loads((directory / CURRENT).read_text())
    assert pointer["generation"] == "gen-000001" == generation_id(directory)
    manifest = json.loads((directory / "gen-000001" / MANIFEST).read_text())
    assert set(manifest["files"]) == {"pooled.faiss", "mean.faiss", METADATA}
    assert manifest["representations"]["mean"] == {"dim": 16, "file": "mean.faiss", "index_type": "flat-ip", "pooling": "mean",
                                                   "build_seconds": manifest["representations"]["mean"]["build_seconds"]}
    assert manifest["poolings"] == {"pooled": {"dim": 16}, "mean": {"dim": 16}}
    assert manifest["vector_index"] == {"type": "flat"}
    assert manifest["format_version"] == 2 and manifest["next_chunk_id"] == 150
    assert read_manifest(directory) == Manifest.from_dict(manifest)
    assert sorted(p.name for p in directory.iterdir()) == [CURRENT, "gen-000001", "writer.lock"]  # staging removed


def test_the_metadata_store_uses_large_pages_and_a_delete_keeps_them(tmp_path):
    """8 KiB pages (store.PAGE_SIZE): a vector row of 1.5 kB leaves less of each page unused than in 4 KiB pages."""
    from indexer.store import PAGE_SIZE

    def page_size(directory):
        db = sqlite3.connect(directory / generation_id(directory) / METADATA)
        try:
            return db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()

    write_index(tmp_path / "ix", d=384)
    assert PAGE_SIZE == 8192 and page_size(tmp_path / "ix") == PAGE_SIZE
    delete_documents(tmp_path / "ix", ["doc-1"])  # a copy of the published store, exported again
    assert generation_id(tmp_path / "ix") == "gen-000002" and page_size(tmp_path / "ix") == PAGE_SIZE


@pytest.mark.parametrize("name", ["pooled.faiss", "mean.faiss", METADATA, MANIFEST])
def test_a_flipped_byte_is_refused(tmp_path, name):
    write_index(tmp_path / "ix")
    path = tmp_path / "ix" / "gen-000001" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{name} is corrupted"):
        IndexReader(tmp_path / "ix")


def test_a_corrupted_pointer_is_refused(tmp_path):
    write_index(tmp_path / "ix")
    (tmp_path / "ix" / CURRENT).write_text('{"generation": "gen-000001"}')
    with pytest.raises(StoreError, match="CURRENT is corrupted"):
        IndexReader(tmp_path / "ix")


def test_missing_directory_and_non_index(tmp_path):
    with pytest.raises(StoreError, match="does not exist.*indexer build"):
        IndexReader(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="CURRENT is missing"):
        IndexReader(tmp_path / "empty")


def test_mismatched_vector_count_is_refused(tmp_path):
    with WriterLock(tmp_path / "ix", "test", create=True):
        staging = Staging(tmp_path / "ix", {"op": "test"})
        with pytest.raises(ValueError, match="1 `mean` vectors for 2 chunks"):
            staging.apply(documents=[Document("a", "x")], chunks=[Chunk("a", 0, "x", 0, 1, (1,)), Chunk("a", 1, "x", 0, 1, (1,))],
                          vectors={"mean": np.zeros((1, 16), np.float32)})
        staging.remove()


def _resign(directory, gen_dir):
    """Recompute the manifest's checksum of metadata.sqlite and CURRENT's of the manifest, as a faulty writer would."""
    import hashlib

    from indexer.files import sha256_file

    manifest = json.loads((gen_dir / MANIFEST).read_text())
    manifest["files"][METADATA] = {"bytes": (gen_dir / METADATA).stat().st_size, "sha256": sha256_file(gen_dir / METADATA)}
    data = json.dumps(manifest).encode()
    (gen_dir / MANIFEST).write_bytes(data)
    pointer = json.loads((directory / CURRENT).read_text())
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))


@pytest.mark.parametrize("damage, problem", [
    ("UPDATE vectors SET vector = substr(vector, 1, 8) WHERE chunk_id = 3 AND representation = 'mean'",
     "chunk 3 has a `mean` vector of 2 dimensions, expected 16"),
    ("DELETE FROM vectors WHERE chunk_id IN (5, 6) AND representation = 'pooled'",
     "2 chunks (e.g. 5) have no `pooled` vector"),
    ("INSERT INTO vectors VALUES (999, 'mean', zeroblob(64))",
     "the metadata store holds 1 `mean` vectors of no chunk"),
])
def test_verify_names_stored_vectors_that_do_not_match_the_chunks(tmp_path, damage, problem):
    import sqlite3

    from indexer.integrity import verify

    write_index(tmp_path / "ix")
    gen_dir = tmp_path / "ix" / "gen-000001"
    db = sqlite3.connect(gen_dir / METADATA)
    with db:
        db.execute(damage)
    db.close()
    _resign(tmp_path / "ix", gen_dir)
    problems, _ = verify(tmp_path / "ix")
    assert any(problem in p for p in problems), problems


# -- an index directory is not trusted beyond its checksums (issue 10, item 10) ----------------------------------

def _rewrite_manifest(directory, change):
    """Edit the published manifest with `change(manifest, gen_dir)` and re-sign it in CURRENT, as a crafted index would."""
    import hashlib

    gen_dir = directory / json.loads((directory / CURRENT).read_text())["generation"]
    manifest = json.loads((gen_dir / MANIFEST).read_text())
    change(manifest, gen_dir)
    data = json.dumps(manifest).encode()
    (gen_dir / MANIFEST).write_bytes(data)
    (directory / CURRENT).write_text(json.dumps({"generation": gen_dir.name, "manifest_sha256": hashlib.sha256(data).hexdigest()}))


def _replace_faiss(manifest, gen_dir, index, name="mean.faiss"):
    import faiss

    from indexer.files import sha256_file

    (gen_dir / name).write_bytes(faiss.serialize_index(index).tobytes())
    manifest["files"][name] = {"bytes": (gen_dir / name).stat().st_size, "sha256": sha256_file(gen_dir / name)}


def test_representation_name_pattern():
    from indexer.config import REPRESENTATION_NAME, REPRESENTATIONS

    for name in [*REPRESENTATIONS, "pooled+whiten128", "mean+abtt3", "first_last", "cls2"]:
        assert REPRESENTATION_NAME.fullmatch(name), name
    for name in ["", "../evil", "a/b", "a\\\\b", "Mean", "mean.faiss", ".mean", "mean+", "+mean", "me an", "mean\n", "x" * 80]:
        assert not REPRESENTATION_NAME.fullmatch(name), name


def _evil_name(manifest, gen_dir):
    manifest["representations"]["../../evil"] = dict(manifest["representations"]["mean"], file="../../evil.faiss")
    manifest["files"]["../../evil.faiss"] = manifest["files"]["mean.faiss"]


def _outside_file(manifest, gen_dir):
    import shutil

    shutil.copyfile(gen_dir / "mean.faiss", gen_dir.parent.parent / "outside.faiss")  # a valid file, with its checksum
    manifest["representations"]["mean"]["file"] = "../../outside.faiss"
    manifest["files"]["../../outside.faiss"] = manifest["files"].pop("mean.faiss")


def _no_representations(manifest, gen_dir):
    manifest["representations"] = {}


def _bare_flat(manifest, gen_dir):
    import faiss

    flat = faiss.IndexFlatIP(16)
    flat.add(unit(np.random.default_rng(0), 150, 16))
    _replace_faiss(manifest, gen_dir, flat)


def _shifted_ids(manifest, gen_dir):
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(16))
    index.add_with_ids(unit(np.random.default_rng(0), 150, 16), np.arange(1000, 1150, dtype=np.int64))  # same count, other ids
    _replace_faiss(manifest, gen_dir, index)


@pytest.mark.parametrize("craft, problem", [
    (_evil_name, "representation name '../../evil' is not valid"),
    (_outside_file, "representation `mean` has file '../../outside.faiss'; expected 'mean.faiss'"),
    (_no_representations, "lists no representations"),
    (_bare_flat, "is a bare IndexFlatIP without the id map"),
    (_shifted_ids, "mean.faiss holds chunk ids that differ from those of metadata.sqlite"),
])
def test_a_crafted_index_is_refused_by_loading_verify_and_repair(tmp_path, craft, problem):
    from indexer.cli import main
    from indexer.integrity import verify

    directory = tmp_path / "store" / "ix"
    write_index(directory)
    _rewrite_manifest(directory, craft)
    with pytest.raises(StoreError, match=re.escape(problem)):
        IndexReader(directory)
    problems, _ = verify(directory)
    if craft is _shifted_ids:  # verify's own wording for the same finding
        problem = "`mean` holds 150 vectors whose ids differ from the 150 chunk ids of the metadata store"
    assert any(problem in p for p in problems), problems
    code = main(["repair", str(directory)])
    everything = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert not any("evil" in p for p in everything), everything  # nothing was written outside the index
    if craft in (_bare_flat, _shifted_ids):  # CURRENT and the manifest are sound: repair rebuilds the FAISS files from the metadata
        assert code == 0 and verify(directory)[0] == []
        assert IndexReader(directory).search("mean", unit(np.random.default_rng(1), 1, 16), 5)[1].max() < 150
    else:  # the crafted generation is the only one: nothing intact to publish
        assert code == 2


def test_a_manifest_file_name_outside_the_generation_is_never_joined(tmp_path):
    from indexer.store import verified_bytes

    write_index(tmp_path / "ix")
    gen_dir = tmp_path / "ix" / "gen-000001"
    (tmp_path / "outside.faiss").write_bytes(b"x")
    for name in ["../../outside.faiss", "../outside.faiss", "/etc/passwd", "..", "sub/mean.faiss", ".hidden"]:
        with pytest.raises(StoreError, match="is not a plain file name inside the generation"):
            verified_bytes(gen_dir, name, {name: FileRecord(1, "0" * 64)})


# -- a damaged CURRENT (issue 10, item 8) ------------------------------------------------------------------

def two_generations(directory):
    """gen-000001 (seed 0) and gen-000002 (seed 1, other vectors), gen-000002 published."""
    write_index(directory, seed=0)
    _, _, vectors = write_index(directory, seed=1)
    assert generation_id(directory) == "gen-000002"
    return vectors


DAMAGES = {
    "garbage": lambda d: (d / CURRENT).write_bytes(b"\xff\xfe not json"),
    "truncated": lambda d: (d / CURRENT).write_bytes((d / CURRENT).read_bytes()[:20]),
    "empty": lambda d: (d / CURRENT).write_bytes(b""),
    "missing": lambda d: (d / CURRENT).unlink(),
    "names a missing generation": lambda d: (d / CURRENT).write_text(json.dumps({"generation": "gen-000009", "manifest_sha256": "0" * 64})),
    "wrong manifest checksum": lambda d: (d / CURRENT).write_text(json.dumps({"generation": "gen-000002", "manifest_sha256": "0" * 64})),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_repair_publishes_the_newest_intact_generation_after_current_is_damaged(tmp_path, damage, capsys):
    from indexer.cli import main

    directory = tmp_path / "ix"
    vectors = two_generations(directory)
    DAMAGES[damage](directory)
    # every other writer refuses with one line that points to `repair`, and leaves the lock free
    for argv in (["delete", str(directory), "--ids", "doc-1"], ["convert", str(directory), "--index-type", "hnsw"],
                 ["add", str(directory), str(tmp_path / "any.jsonl")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("indexer repair" in err or "CURRENT is missing" in err), err
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith("gen-")) == ["gen-000001", "gen-000002"]
    assert main(["repair", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "published gen-000002" in out and "the newest intact generation" in out and "verify: ok" in out
    reader = IndexReader(directory)
    assert reader.generation == "gen-000002"
    np.testing.assert_array_equal(reader.vectors("mean", range(150)), vectors["mean"])


def test_repair_skips_a_damaged_newer_generation_and_says_what_is_lost(tmp_path, capsys):
    from indexer.cli import main

    directory = tmp_path / "ix"
    write_index(directory, seed=0)
    first = IndexReader(directory).vectors("mean", range(150))
    two_generations_dir = directory / "gen-000002"
    write_index(directory, seed=1)
    data = bytearray((two_generations_dir / MANIFEST).read_bytes())
    data[len(data) // 2] ^= 0x01  # CURRENT no longer matches gen-000002's manifest, which is damaged too
    (two_generations_dir / MANIFEST).write_bytes(bytes(data))
    assert main(["repair", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "published gen-000001" in out and "gen-000002, which CURRENT named, was damaged" in out
    np.testing.assert_array_equal(IndexReader(directory).vectors("mean", range(150)), first)
    assert not two_generations_dir.exists()


def test_repair_without_any_intact_generation_fails_with_one_line(tmp_path, capsys):
    from indexer.cli import main

    write_index(tmp_path / "ix")
    (tmp_path / "ix" / CURRENT).write_bytes(b"{")
    (tmp_path / "ix" / "gen-000001" / METADATA).write_bytes(b"not sqlite")
    assert main(["repair", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no generation is intact" in err and "--overwrite" in err


def test_the_writer_lock_is_released_when_entering_fails(tmp_path, monkeypatch):
    import os

    import indexer.staging

    write_index(tmp_path / "ix")
    fds = len(os.listdir("/proc/self/fd"))

    def failing_recover(directory):
        raise StoreError("recovery failed")

    monkeypatch.setattr(indexer.staging, "recover", failing_recover)
    with pytest.raises(StoreError, match="recovery failed"):
        WriterLock(tmp_path / "ix", "first").__enter__()
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == fds  # the descriptor was closed
    with WriterLock(tmp_path / "ix", "second"):  # and the flock released
        pass


# -- writers other than build create nothing (issue 10, item 12) ------------------------------------------------

@pytest.mark.parametrize("argv", [["delete", "{}", "--ids", "a"], ["repair", "{}"], ["convert", "{}", "--index-type", "hnsw"]])
def test_writers_on_a_mistyped_path_create_nothing(tmp_path, argv, capsys):
    from indexer.cli import main

    missing = tmp_path / "typo" / "ix"
    assert main([a.format(missing) for a in argv]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    assert main([a.format(tmp_path / "docs") for a in argv]) == 2
    assert "CURRENT is missing" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["notes.txt"]


def test_deleting_ids_that_are_not_there_publishes_nothing(tmp_path, capsys):
    from indexer.cli import main

    write_index(tmp_path / "ix")
    before = sorted(p.name for p in (tmp_path / "ix").iterdir()), (tmp_path / "ix" / CURRENT).read_bytes()
    assert main(["delete", str(tmp_path / "ix"), "--ids", "nope", "doc-1 "]) == 0
    assert "none of the 2 ids is in the index; nothing was deleted and nothing published (still gen-000001, 50 documents)" in capsys.readouterr().out
    assert (sorted(p.name for p in (tmp_path / "ix").iterdir()), (tmp_path / "ix" / CURRENT).read_bytes()) == before


def test_ids_file_keeps_spaces_and_removes_only_the_line_end(tmp_path, capsys):
    from indexer.cli import main

    ids = ["a b", " lead", "trail ", "tab\tin", "plain"]
    write_index(tmp_path / "ix", ids=ids + ["lead", "trail", "a"])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(b"a b\r\n lead\n\n   \ntrail \r\ntab\tin\nplain")  # CRLF and LF, blank lines, no final newline
    assert main(["delete", str(tmp_path / "ix"), "--ids-file", str(ids_file)]) == 0
    assert "deleted 5 documents; the index now holds 3" in capsys.readouterr().out
    assert IndexReader(tmp_path / "ix").doc_ids() == {"lead", "trail", "a"}
