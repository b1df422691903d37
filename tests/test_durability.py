"""Durable index store: kills at any moment, corruption, concurrent readers, disk full, one writer at a time.

Figures quoted in the README come from these tests; run them alone with
`.venv/bin/python -m pytest tests/test_durability.py -v -s` to see them printed.
"""

import errno
import itertools
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from conftest import ROOT
from indexer.cli import main
from indexer.config import parse_representation
from indexer.encoder import Encoder
from indexer.integrity import repair, verify
from indexer.pipeline import add_documents, build_index, delete_documents
from indexer.search import Searcher
from indexer.staging import COMMIT_STEPS, LOCK, LockedError, WriterLock
from indexer.store import CURRENT, METADATA, IndexReader, StoreError, read_manifest

WORDS = ("the a of and to in is bees honey hive queen wax flower pollen bread flour yeast dough oven bake "
         "star planet moon sun orbit comet river sea rain cloud storm bike wheel chain brake").split()
# a transformed representation too: its transform is fitted at publish time, so kills there must leave it intact
BUILD_FLAGS = ["--max-tokens", "32", "--overlap", "4", "--batch-size", "4", "--no-progress",
               "--representations", "pooled,mean,mean+whiten"]


def write_jsonl(path: Path, n: int, *, seed: int = 0, prefix: str = "d") -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            length = rng.choice([6, 10, 20, 45, 90])
            f.write(json.dumps({"_id": f"{prefix}{i:05d}", "title": rng.choice(["", "bees", "bread"]),
                                "text": " ".join(rng.choice(WORDS) for _ in range(length))}) + "\n")
    return path


def snapshot(directory: Path) -> dict:
    """Everything that must survive: documents, chunks (ids, owners, positions, text) and vectors."""
    reader = IndexReader(directory)
    docs = reader.db.execute("SELECT doc_id, title, text, content_sha256, n_chunks FROM documents ORDER BY doc_id").fetchall()
    chunks = reader.db.execute("SELECT chunk_id, doc_id, position, char_start, char_end, n_tokens, text FROM chunks ORDER BY chunk_id").fetchall()
    ids = [c[0] for c in chunks]
    vectors = {r: reader.vectors(r, ids) for r in reader.representations}
    reader.close()
    return {"docs": docs, "chunks": chunks, "vectors": vectors}


def assert_same(a: dict, b: dict) -> None:
    assert a["docs"] == b["docs"]
    assert a["chunks"] == b["chunks"]
    assert list(a["vectors"]) == list(b["vectors"])
    for r in a["vectors"]:
        if parse_representation(r).transform:  # fitted again from the same stored vectors: equal up to float32 rounding of the fit
            np.testing.assert_allclose(a["vectors"][r], b["vectors"][r], atol=1e-6)
        else:
            np.testing.assert_array_equal(a["vectors"][r], b["vectors"][r])


def cli(*args, env=None, max_file_size=None) -> subprocess.Popen:
    """The CLI in a subprocess; `max_file_size` (RLIMIT_FSIZE) makes every write past it fail for real, with EFBIG."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    return subprocess.Popen([sys.executable, "-m", "indexer", *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if max_file_size is not None else None)


# -- crashes ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("kills")
    source = write_jsonl(root / "src.jsonl", 2500)
    reference = root / "reference"
    started = time.monotonic()
    proc = cli("build", source, "--index", reference, "--model", tiny_bert, *BUILD_FLAGS)
    staging_seen = None
    while proc.poll() is None:
        if staging_seen is None and (reference / "staging").exists():
            staging_seen = time.monotonic() - started
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read().decode()
    total = time.monotonic() - started
    return {"source": source, "reference": snapshot(reference), "model": tiny_bert, "root": root,
            "window": (staging_seen or total / 2, total)}


def test_build_survives_twenty_random_kills(kill_setup):
    """SIGKILL at random moments; each time the same command resumes; the result equals an uninterrupted build."""
    rng = random.Random(42)
    source, model, root = kill_setup["source"], kill_setup["model"], kill_setup["root"]
    low, high = kill_setup["window"]
    kills, completed, runs = 0, 0, 0
    while kills < 20:
        target = root / f"kill-{completed}"
        while True:  # one build, killed until it finishes
            runs += 1
            assert runs < 120, f"only {kills} kills landed in {runs} runs"
            proc = cli("build", source, "--index", target, "--model", model, *BUILD_FLAGS)
            started = time.monotonic()
            deadline = started + rng.uniform(low, high)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None and kills < 20:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            if proc.poll() is not None and kills < 20:
                # it finished before its kill (the machine got faster): aim earlier from now on
                high = max(0.9 * (time.monotonic() - started), 0.2)
                low = min(low, 0.5 * high)
            out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            break
        assert_same(snapshot(target), kill_setup["reference"])
        assert verify(target)[0] == []
        completed += 1
    print(f"\nbuild: {kills} SIGKILLs over {completed} builds ({runs} runs), every one resumed to the uninterrupted "
          "result (documents lost: 0, duplicated: 0)")


@pytest.mark.parametrize("step", COMMIT_STEPS)
def test_build_killed_at_each_commit_step_resumes(kill_setup, step):
    target = kill_setup["root"] / f"step-{step}"
    proc = cli("build", kill_setup["source"], "--index", target, "--model", kill_setup["model"], *BUILD_FLAGS,
               env={"POOLING_LAB_CRASH_AT": step})
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    proc = cli("build", kill_setup["source"], "--index", target, "--model", kill_setup["model"], *BUILD_FLAGS)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert_same(snapshot(target), kill_setup["reference"])
    assert verify(target)[0] == []
    assert not (target / "staging").exists()


def kill_after_first_batch(proc: subprocess.Popen, directory: Path) -> int:
    """SIGKILL `proc` as soon as its staging area has committed a batch (its own signal, not a delay); returns the count."""
    work = directory / "staging" / "work.sqlite"
    while proc.poll() is None:
        if work.is_file():
            try:
                db = sqlite3.connect(f"{work.as_uri()}?mode=ro", uri=True, timeout=0.1)
                try:
                    consumed = int(db.execute("SELECT value FROM meta WHERE key = 'consumed'").fetchone()[0])
                finally:
                    db.close()
            except sqlite3.Error:  # being created or written: look again
                consumed = 0
            if consumed:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return consumed
        time.sleep(0.01)
    raise AssertionError(f"the run ended (code {proc.returncode}) before a committed batch was seen: {proc.communicate()}")


@pytest.mark.parametrize("step", ["first-batch-committed", *COMMIT_STEPS[:5]])
def test_add_killed_resumes_to_the_uninterrupted_update(tiny_bert, step, tmp_path):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32, batch_size=4)
    base_src = write_jsonl(tmp_path / "base.jsonl", 300)
    more = write_jsonl(tmp_path / "more.jsonl", 1200, seed=7)  # same ids d00000..d00299 changed, 900 new: 3 batches
    reference = tmp_path / "reference"
    build_index(base_src, reference, encoder, overlap=4, progress=False)
    add_documents(reference, more, encoder, progress=False)
    target = tmp_path / "target"
    build_index(base_src, target, encoder, overlap=4, progress=False)
    if step == "first-batch-committed":
        proc = cli("add", target, more, "--batch-size", "4", "--no-progress")
        consumed = kill_after_first_batch(proc, target)
        assert 0 < consumed < 1200
    else:
        proc = cli("add", target, more, "--batch-size", "4", "--no-progress", env={"POOLING_LAB_CRASH_AT": step})
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        consumed = 1200  # every batch was staged before publishing began
    proc = cli("add", target, more, "--batch-size", "4", "--no-progress")
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    if step != "current-switched":  # (after CURRENT switched, the update is done: a re-run changes nothing)
        assert f"resumed an interrupted run after {consumed} source records" in out.decode(), out.decode()
    assert_same(snapshot(target), snapshot(reference))


# -- corruption -------------------------------------------------------------------------------------------

def corruptions(size: int):
    for offset in sorted({0, 1, size // 2, size - 1}):
        yield f"truncated at {offset}", lambda data, o=offset: data[:o]
    for offset in sorted({0, size // 2, size - 1}):
        yield f"byte {offset} flipped", lambda data, o=offset: data[:o] + bytes([data[o] ^ 0xFF]) + data[o + 1:]
    for offset in sorted({0, max(size // 2 - 2048, 0)}):
        yield f"4 KiB zeroed at {offset}", lambda data, o=offset: data[:o] + bytes(min(4096, size - o)) + data[o + 4096:]


def test_corruption_matrix_is_always_refused(tmp_path, tiny_bert, small_jsonl, capsys):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    pristine = tmp_path / "pristine"
    build_index(small_jsonl, pristine, encoder, overlap=4, progress=False)
    gen = read_manifest(pristine).generation
    targets = [CURRENT] + [f"{gen}/{name}" for name in ("manifest.json", "pooled.faiss", "mean.faiss", METADATA)]
    refused = cases = 0
    for name in targets:
        data = (pristine / name).read_bytes()
        for label, corrupt in corruptions(len(data)):
            damaged = corrupt(data)
            if damaged == data:
                continue  # e.g. zeroing bytes that were already zero: not a corruption
            cases += 1
            case = tmp_path / f"case-{cases}"
            shutil.copytree(pristine, case)
            (case / name).write_bytes(damaged)
            problems, _ = verify(case)
            assert problems, f"verify missed {name} {label}"
            with pytest.raises(StoreError):
                IndexReader(case)
            assert main(["search", str(case), "bees", "--json"]) == 2, f"search served {name} {label}"
            refused += 1
    capsys.readouterr()
    assert cases == refused >= 40
    print(f"\ncorruption matrix: {refused} of {cases} corrupted indexes refused by verify, by loading and by search")


def test_flipped_faiss_byte_is_refused_then_repaired(tmp_path, tiny_bert, small_jsonl, capsys):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    before = snapshot(tmp_path / "ix")
    path = tmp_path / "ix" / read_manifest(tmp_path / "ix").generation / "mean.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path / "ix")]) == 1
    assert "mean.faiss is corrupted" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "ix"), "bees"]) == 2
    assert "mean.faiss is corrupted" in capsys.readouterr().err
    assert main(["repair", str(tmp_path / "ix")]) == 0
    assert "verify: ok" in capsys.readouterr().out
    assert_same(snapshot(tmp_path / "ix"), before)
    assert main(["verify", str(tmp_path / "ix")]) == 0


def test_repair_refuses_when_the_metadata_store_is_damaged(tmp_path, tiny_bert, small_jsonl):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    path = tmp_path / "ix" / read_manifest(tmp_path / "ix").generation / METADATA
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StoreError, match="metadata store, the source of the vectors, is damaged.*--overwrite"):
        repair(tmp_path / "ix")


# -- writers and readers ------------------------------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(tmp_path, small_jsonl, tiny_bert, capsys):
    with WriterLock(tmp_path / "ix", "build something", create=True):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}, since .*`build something`"):
            WriterLock(tmp_path / "ix", "other", create=True).__enter__()
        code = main(["build", str(small_jsonl), "--index", str(tmp_path / "ix"), "--model", str(tiny_bert), *BUILD_FLAGS])
        assert code == 2 and f"pid {os.getpid()}" in capsys.readouterr().err


def test_a_stale_lock_of_a_dead_process_is_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "ix").mkdir()
    (tmp_path / "ix" / LOCK).write_text(json.dumps({"pid": int(dead.stdout), "since": "earlier", "command": "build"}))
    with WriterLock(tmp_path / "ix", "next", create=True) as lock:
        assert lock.cleared["pid"] == int(dead.stdout)


def test_update_and_delete_change_every_representation_together(tmp_path, tiny_bert):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    src = tmp_path / "a.jsonl"
    src.write_text('{"_id": "a", "text": "the bees"}\n{"_id": "b", "text": "bread dough"}\n', encoding="utf-8")
    build_index(src, tmp_path / "ix", encoder, overlap=4, progress=False)
    old_ids = snapshot(tmp_path / "ix")["chunks"]
    src.write_text('{"_id": "a", "text": "the bees make honey"}\n{"_id": "b", "text": "bread dough"}\n{"_id": "c", "text": "a comet"}\n', encoding="utf-8")
    summary = add_documents(tmp_path / "ix", src, encoder, progress=False)
    assert (summary.added, summary.updated, summary.unchanged) == (1, 1, 1)
    after = snapshot(tmp_path / "ix")
    new_a = [c for c in after["chunks"] if c[1] == "a"]
    assert new_a[0][0] > max(c[0] for c in old_ids)  # chunk ids are never reused
    assert [c for c in after["chunks"] if c[1] == "b"] == [c for c in old_ids if c[1] == "b"]
    result = delete_documents(tmp_path / "ix", ["a", "zz"])
    assert result.removed == ["a"] and result.missing == ["zz"]
    final = IndexReader(tmp_path / "ix")
    assert final.doc_ids() == {"b", "c"}
    assert {i.ntotal for i in final.indexes.values()} == {final.n_chunks}
    assert verify(tmp_path / "ix")[0] == []


def test_cli_add_and_delete(tmp_path, tiny_bert, small_jsonl, capsys):
    assert main(["build", str(small_jsonl), "--index", str(tmp_path / "ix"), "--model", str(tiny_bert), *BUILD_FLAGS]) == 0
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "new-1", "text": "a storm at sea"}\n', encoding="utf-8")
    assert main(["add", str(tmp_path / "ix"), str(more), "--no-progress"]) == 0
    assert "added 1, re-embedded 0 changed, left 0 unchanged" in capsys.readouterr().out
    ids = tmp_path / "ids.txt"
    ids.write_text("new-1\nbee-1\n", encoding="utf-8")
    assert main(["delete", str(tmp_path / "ix"), "--ids-file", str(ids)]) == 0
    assert "deleted 2 documents; the index now holds 7" in capsys.readouterr().out


def test_a_running_searcher_picks_up_a_new_generation(tmp_path, tiny_bert, small_jsonl):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    searcher = Searcher(tmp_path / "ix", encoder)
    first = searcher.search("bees", k=20)
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "fresh", "text": "bees bees bees"}\n', encoding="utf-8")
    add_documents(tmp_path / "ix", more, encoder, progress=False)
    second = searcher.search("bees", k=20)
    assert first.generation == "gen-000001" and second.generation == "gen-000002"
    assert "fresh" in [h.doc_id for h in second.results["mean"]]


def test_concurrent_searches_while_generations_are_published(tmp_path, tiny_bert):
    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    src = tmp_path / "g0.jsonl"
    src.write_text('{"_id": "g0-a", "text": "the bees"}\n{"_id": "g0-b", "text": "bread dough oven"}\n', encoding="utf-8")
    build_index(src, tmp_path / "ix", encoder, overlap=4, progress=False)
    searcher = Searcher(tmp_path / "ix", encoder)
    docs_of = {"gen-000001": {"g0-a", "g0-b"}}
    served, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                result = searcher.search("bees bread", k=5)
                served.append((result.generation, {h.doc_id for hits in result.results.values() for h in hits}))
            except Exception as exc:  # any failure is a finding
                errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for g in range(1, 9):  # each generation replaces every document, so a stale hit would show
        src = tmp_path / f"g{g}.jsonl"
        src.write_text(f'{{"_id": "g{g}-a", "text": "bees honey"}}\n{{"_id": "g{g}-b", "text": "bread yeast"}}\n', encoding="utf-8")
        previous = read_manifest(tmp_path / "ix").generation
        add_documents(tmp_path / "ix", src, encoder, progress=False)
        delete_documents(tmp_path / "ix", [f"g{g - 1}-a", f"g{g - 1}-b"])
        current = read_manifest(tmp_path / "ix").generation
        docs_of[current] = {f"g{g}-a", f"g{g}-b"}
        docs_of.setdefault(f"gen-{int(previous[4:]) + 1:06d}", {f"g{g - 1}-a", f"g{g - 1}-b", f"g{g}-a", f"g{g}-b"})
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(served) > 50 and len({g for g, _ in served}) > 3
    for generation, hits in served:
        assert hits <= docs_of[generation], (generation, hits)
    print(f"\nconcurrency: {len(served)} queries from 6 threads over {len({g for g, _ in served})} generations, 0 errors")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_write_error_leaves_the_previous_generation_serving(tmp_path, tiny_bert, small_jsonl, monkeypatch, code):
    import indexer.staging

    encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    build_index(small_jsonl, tmp_path / "ix", encoder, overlap=4, progress=False)
    before = snapshot(tmp_path / "ix")

    def failing_write(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(indexer.staging, "atomic_write_bytes", failing_write)
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "new", "text": "the moon"}\n', encoding="utf-8")
    reason = "the disk is full" if code == errno.ENOSPC else "Permission denied"
    with pytest.raises(StoreError, match=f"{reason}; the previous generation \\(gen-000001\\) is still published and intact"):
        add_documents(tmp_path / "ix", more, encoder, progress=False)
    monkeypatch.undo()
    assert_same(snapshot(tmp_path / "ix"), before)
    assert verify(tmp_path / "ix")[0] == []
    assert [p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith(".gen-")] == []


# -- a property-based model of add / update / delete / reload ---------------------------------------------------

class IndexModel(RuleBasedStateMachine):
    """The index must always hold exactly what a plain dictionary of the same operations holds."""

    encoder = None
    root = None
    instances = itertools.count()

    def __init__(self):
        super().__init__()
        self.dir = Path(self.root) / f"m{next(self.instances)}"  # a fresh index for every example
        self.model: dict[str, str] = {}
        self.max_chunk_id = -1
        self.reader = None
        self.counter = 0

    def _write(self, docs: dict[str, str]) -> Path:
        self.counter += 1
        path = self.dir.with_name(self.dir.name + f"-{self.counter}.jsonl")
        path.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()), encoding="utf-8")
        return path

    @rule(docs=st.dictionaries(st.sampled_from([f"doc{i}" for i in range(8)]),
                               st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join), min_size=1, max_size=4))
    def add_or_update(self, docs):
        if self.dir.exists():  # (an index whose documents were all deleted is still an index)
            add_documents(self.dir, self._write(docs), self.encoder, progress=False)
        else:
            build_index(self._write(docs), self.dir, self.encoder, overlap=4, progress=False)
        before = self.max_chunk_id
        self.model.update(docs)
        new = [c for c in snapshot(self.dir)["chunks"] if c[0] > before]
        changed = {d for d in docs}
        assert {c[1] for c in new} <= changed  # only new or changed documents got new chunks
        self.max_chunk_id = max([self.max_chunk_id] + [c[0] for c in new])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model) + ["missing"]), min_size=1, max_size=3, unique=True))
        delete_documents(self.dir, ids)
        for i in ids:
            self.model.pop(i, None)

    @precondition(lambda self: self.dir.exists())
    @rule()
    def reload(self):
        self.reader = IndexReader(self.dir)

    @invariant()
    def matches_the_dictionary(self):
        if not self.model and not self.dir.exists():
            return
        snap = snapshot(self.dir)
        assert {d[0]: d[2] for d in snap["docs"]} == self.model
        ids = [c[0] for c in snap["chunks"]]
        assert len(ids) == len(set(ids)) and all(len(v) == len(ids) for v in snap["vectors"].values())
        if self.reader is not None:  # an older reader still answers from its own generation
            assert self.reader.n_chunks == self.reader.indexes["mean"].ntotal


def test_state_machine_against_a_dictionary(tmp_path, tiny_bert):
    IndexModel.encoder = Encoder.load(str(tiny_bert), max_tokens=32)
    IndexModel.root = str(tmp_path)
    run_state_machine_as_test(IndexModel, settings=settings(
        max_examples=12, stateful_step_count=8, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    ))


# -- real write failures: a file size limit and a full file system (issue 10, item 9) ----------------------------

def small_index(directory: Path) -> Path:
    from test_store import write_index

    write_index(directory)  # 50 documents of random vectors: no model needed to delete from it
    return directory


def generation_sizes(directory: Path) -> dict:
    gen_dir = directory / read_manifest(directory).generation
    return {p.name: p.stat().st_size for p in gen_dir.iterdir()}


def assert_failed_cleanly(proc: subprocess.Popen, directory: Path, before: dict, reason: str) -> None:
    out, err = proc.communicate()
    err = err.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert f"{reason}; the previous generation (gen-000001) is still published and intact" in err, err
    assert [p.name for p in directory.iterdir() if p.name.startswith(".gen-")] == []
    assert not (directory / "staging" / "work.sqlite.tmp").exists()
    assert_same(snapshot(directory), before)
    assert verify(directory)[0] == []


def test_a_file_size_limit_while_delete_copies_the_metadata(tmp_path):
    directory = small_index(tmp_path / "ix")
    before = snapshot(directory)
    limit = generation_sizes(directory)[METADATA] // 2  # the copy into staging fails half-way
    proc = cli("delete", directory, "--ids", "doc-1", max_file_size=limit)
    assert_failed_cleanly(proc, directory, before, f"could not create the staging area in {directory}: File too large")
    assert not (directory / "staging").exists()
    proc = cli("delete", directory, "--ids", "doc-1")  # the same command without the limit
    assert proc.communicate() and proc.returncode == 0
    assert "doc-1" not in IndexReader(directory).doc_ids()


def test_a_file_size_limit_during_vacuum_into(tmp_path):
    directory = small_index(tmp_path / "ix")
    before = snapshot(directory)
    proc = cli("delete", directory, "--ids", "doc-1", env={"POOLING_LAB_CRASH_AT": "faiss-written"})
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # the staging area is complete: a resumed run goes straight to publishing
    sizes = generation_sizes(directory)
    limit = max(sizes["mean.faiss"], sizes["pooled.faiss"]) + 4096  # FAISS files fit, the metadata copy does not
    assert limit < 0.8 * sizes[METADATA]
    proc = cli("delete", directory, "--ids", "doc-1", max_file_size=limit)
    assert_failed_cleanly(proc, directory, before, f"could not write a new generation in {directory}: SQLite: disk I/O error")
    proc = cli("delete", directory, "--ids", "doc-1")
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "doc-1" not in IndexReader(directory).doc_ids() and verify(directory)[0] == []


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (skipped where mounting is not permitted); `fill(free)` leaves `free` bytes on it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")

    def fill(free: int) -> None:
        stat = os.statvfs(mount)
        (mount / "filler").write_bytes(bytes(max(stat.f_bavail * stat.f_frsize - free, 0)))

    try:
        yield mount, fill
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("where", ["staging copy", "vacuum into"])
def test_a_full_disk_is_reported_and_leaves_nothing_behind(tmp_path, small_disk, where, capsys):
    mount, fill = small_disk
    directory = small_index(tmp_path / "ix")
    if where == "vacuum into":
        proc = cli("delete", directory, "--ids", "doc-1", env={"POOLING_LAB_CRASH_AT": "faiss-written"})
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        shutil.rmtree(next(directory.glob(".gen-*.tmp")))
    shutil.copytree(directory, mount / "ix")
    directory = mount / "ix"
    before = snapshot(directory)
    sizes = generation_sizes(directory)
    # room for the FAISS files (and SQLite's small journal), not for a copy of the metadata store
    fill(2 * max(sizes["mean.faiss"], sizes["pooled.faiss"]) + 3 * 4096 if where == "vacuum into" else sizes[METADATA] // 2)
    assert main(["delete", str(directory), "--ids", "doc-1"]) == 2
    err = capsys.readouterr().err
    what = "create the staging area" if where == "staging copy" else "write a new generation"
    assert f"could not {what} in {directory}: the disk is full; the previous generation (gen-000001) is still published and intact" in err, err
    assert [p.name for p in directory.iterdir() if p.name.startswith(".gen-")] == []
    assert not (directory / "staging" / "work.sqlite.tmp").exists()
    assert_same(snapshot(directory), before)
    (mount / "filler").unlink()
    assert main(["delete", str(directory), "--ids", "doc-1"]) == 0
    assert "doc-1" not in IndexReader(directory).doc_ids()
