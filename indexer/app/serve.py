"""How the app is started: its command-line arguments, the `streamlit run` command line (`pooling-lab app`,
`make run`), and `serving`, which starts it on a free localhost port and stops it (the browser tests and
`python -m indexer.app.latency`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from indexer.config import SAMPLE_INDEX

#: The router; its folder's .streamlit/config.toml (loopback bind, upload cap, no usage statistics, errors
#: without tracebacks) applies from whichever folder the app is started.
APP = Path(__file__).resolve().parent / "streamlit_app.py"
LOOPBACK = "127.0.0.1"
#: Addresses that reach this machine only: no warning when the app listens on one.
LOOPBACK_NAMES = frozenset({LOOPBACK, "localhost", "::1"})
DEFAULT_PORT = 8501


class ServeError(RuntimeError):
    """The app did not start: the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def add_app_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The app's own options (after `--` on a `streamlit run` line; `pooling-lab app` takes them directly)."""
    parser.add_argument("--index", type=Path, default=SAMPLE_INDEX, help=f"index directory to open first (default {SAMPLE_INDEX})")
    parser.add_argument("--indexes", type=Path, default=None,
                        help="folder of indexes to list and build into (default: the index's parent)")
    parser.add_argument("--model", default=None, help="search every index with this model (default: each index's own)")
    parser.add_argument("--allow-build", action="store_true",
                        help="let visitors build new indexes from uploaded files on the Index page (off by default)")
    return parser


def app_argv(args: argparse.Namespace) -> list[str]:
    """The app's options of parsed `args` as a command line again, for the `streamlit run` it starts."""
    argv = ["--index", str(args.index)]
    if args.indexes is not None:
        argv += ["--indexes", str(args.indexes)]
    if args.model is not None:
        argv += ["--model", args.model]
    return argv + (["--allow-build"] if args.allow_build else [])


def streamlit_command(app_args: Sequence[str], *, address: str | None = LOOPBACK, port: int = DEFAULT_PORT,
                      headless: bool = False) -> list[str]:
    """`streamlit run` of the app. `address=None` leaves the listening address to the app's config.toml
    (loopback too); anything else is the user's explicit choice."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), *(["--server.headless", "true"] if headless else []),
            *(["--server.address", address] if address else []), "--server.port", str(port), "--", *app_args]


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path, *, timeout: float = 120) -> None:
    """Return once the server at `url` answers its own health check; ServeError with its log if the process
    ends or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServeError(f"streamlit did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


@contextlib.contextmanager
def serving(index_dir: Path, log: Path, *, address: str | None = LOOPBACK, app_args: Sequence[str] = (),
            timeout: float = 120) -> Iterator[tuple[str, int]]:
    """`streamlit run` of the app on `index_dir`; yields (URL, port) once the server's health check answers.

    `address=None` leaves the listening address to the app's .streamlit/config.toml; `app_args` go to the
    app after `--` (e.g. `--allow-build`).
    """
    port = free_port()
    cmd = streamlit_command(["--index", str(index_dir), *app_args], address=address, port=port, headless=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1")))
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_until_serving(url, proc, log, timeout=timeout)
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
