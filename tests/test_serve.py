"""How the app is served: `pooling-lab app`, `make run` and a bare `streamlit run` of the app listen on loopback only."""

import os
import socket
import subprocess

import pytest

from conftest import ROOT, running_app
from indexer.app.serve import app_argv, streamlit_command
from indexer.cli import build_parser


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, read from the kernel's tables (/proc/net/tcp, tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux's /proc/net/tcp to see listening sockets")
def test_the_app_listens_on_loopback_only_by_default(sample_index, tmp_path, monkeypatch):
    """No --server.address, started from another folder: the .streamlit/config.toml beside the app's script decides
    (what a bare `streamlit run` of an installed app relies on)."""
    monkeypatch.chdir(tmp_path)
    with running_app(sample_index[0], tmp_path / "server.log", address=None) as (_, port):
        assert listening_addresses(port) == {"127.0.0.1"}


def test_make_run_binds_the_host_it_is_given():
    """`make run` passes HOST (default 127.0.0.1) to `python -m indexer app`; checked without starting anything."""
    dry = subprocess.run(["make", "-n", "-o", "indexes/sample/CURRENT", "run"], cwd=ROOT, capture_output=True, text=True)
    assert "-m indexer app" in dry.stdout and "--host 127.0.0.1" in dry.stdout, dry.stdout + dry.stderr
    exposed = subprocess.run(["make", "-n", "-o", "indexes/sample/CURRENT", "run", "HOST=0.0.0.0"], cwd=ROOT, capture_output=True, text=True)
    assert "--host 0.0.0.0" in exposed.stdout


def test_the_app_command_hands_its_host_to_streamlit():
    """`pooling-lab app` gives Streamlit the loopback address unless told otherwise, and the app its own options."""
    args = build_parser().parse_args(["app", "--index", "x", "--allow-build"])
    command = streamlit_command(app_argv(args), address=args.host, port=args.port)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--") + 1:] == ["--index", "x", "--allow-build"]
    args = build_parser().parse_args(["app", "--host", "0.0.0.0", "--model", "m"])
    command = streamlit_command(app_argv(args), address=args.host, port=args.port)
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert command[command.index("--") + 1:] == ["--index", "indexes/sample", "--model", "m"]


@pytest.mark.parametrize("option, value, said", [("--port", "70000", "1 to 65535"), ("--port", "-1", "1 to 65535"),
                                                 ("--port", "http", "1 to 65535"), ("--host", " ", "host is empty")])
def test_the_app_command_refuses_a_port_or_host_it_cannot_listen_on(option, value, said, capsys):
    """One line from the parser, not Streamlit's 50-line traceback from bind()."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["app", option, value])
    assert stopped.value.code == 2 and said in capsys.readouterr().err
