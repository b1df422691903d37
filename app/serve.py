"""Start the app as `make run` does, on a free localhost port, and stop it: one launcher for the browser
tests and the latency measurement (`python -m app.latency`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app" / "streamlit_app.py"


class ServeError(RuntimeError):
    """The app did not start: the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(index_dir: Path, log: Path, *, address: str | None = "127.0.0.1", app_args: Sequence[str] = (),
            timeout: float = 120) -> Iterator[tuple[str, int]]:
    """`streamlit run` of the app on `index_dir`; yields (URL, port) once the server's health check answers.

    `address=None` leaves the listening address to the project's .streamlit/config.toml; `app_args` go to the
    app after `--` (e.g. `--allow-build`).
    """
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           *(["--server.address", address] if address else []), "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--", "--index", str(index_dir), *app_args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1")))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:  # wait for the server's own health signal
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ServeError(f"streamlit did not start:\n{log.read_text(errors='replace')}") from None
                time.sleep(0.2)
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
