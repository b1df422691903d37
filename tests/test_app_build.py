"""Issue 12, items 2, 3, 6 and 18 on the Index page: building only with --allow-build, never replacing an index,
limits stated and enforced, failed builds leave nothing behind, stages on the bar, the page switching to the new
index, and local paths shown only on a loopback-bound app."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
from streamlit import config

from conftest import ROOT
from indexer.app import build, ui
from indexer.encoder import Encoder
from indexer.loaders import format_bytes
from indexer.store import is_index, read_manifest
from test_app import app, texts, unescape


@pytest.fixture
def allow_build(monkeypatch):
    """The app started with `--allow-build` (AppTest runs the router in this process: it reads this sys.argv)."""
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--allow-build"])


@pytest.fixture
def address():
    """Set server.address for one test; the previous value comes back afterwards."""
    before = config.get_option("server.address")
    yield lambda value: config.set_option("server.address", value)
    config.set_option("server.address", before)


def index_page(index_dir, root, **state):
    at = app(index_dir, index_root=str(root), **state)
    return at.switch_page("views/index.py").run()


def build_button(at):
    return next(b for b in at.button if b.label == "Build")


def upload_and_build(at, files: dict[str, bytes], name: str, model) -> None:
    for file_name, data in files.items():
        at.file_uploader[0].upload(file_name, data, "text/plain")
    at.text_input(key="build_name").input(name)
    at.session_state["model"] = str(model)
    at.run()
    build_button(at).click().run()


def entries(root) -> list[str]:
    """Everything in the index root, hidden entries included."""
    return sorted(p.name for p in root.iterdir())


# -- item 2: off unless --allow-build; never replaces; unique names ---------------------------------------------

def test_building_is_off_without_allow_build_even_if_the_session_says_otherwise(tiny_index, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    at = index_page(tiny_index, tmp_path, allow_build=True)  # a session cannot turn it on: the router resets it
    assert not at.exception and not at.error
    assert any("tiny" in e.label for e in at.expander)  # the indexes are still listed
    assert not at.file_uploader and not [b for b in at.button if b.label == "Build"]
    assert "make run APP_ARGS=--allow-build" in at.info[-1].value
    assert at.session_state["allow_build"] is False


def test_make_run_passes_app_args_to_the_app():
    shown = subprocess.run(["make", "-n", "-W", "indexes/sample/CURRENT", "run", "APP_ARGS=--allow-build"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    line = next(line for line in shown.splitlines() if "-m indexer app" in line).split()
    assert line[line.index("app") + 1:] == ["--index", "indexes/sample", "--host", "127.0.0.1", "--port", "8501", "--allow-build"]


def test_the_form_states_its_limits_and_offers_no_replace(tiny_index, tmp_path, allow_build):
    at = index_page(tiny_index, tmp_path)
    assert not at.exception and at.file_uploader and not at.checkbox  # "Replace an index" is gone
    caption = " ".join(texts(at.caption))
    for limit in (f"{ui.BUILD_MAX_FILES} files", f"{ui.UPLOAD_LIMIT_MB} MB per file", f"{ui.BUILD_MAX_TOTAL_MB} MB in all",
                  f"{ui.BUILD_MAX_SECONDS // 60} minutes", f"{ui.BUILD_MAX_CONCURRENT} build at a time"):
        assert limit in caption


def test_an_existing_name_is_refused_with_a_free_one_and_left_untouched(tiny_index, tmp_path, allow_build):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "note.txt").write_text("mine")
    (tmp_path / "taken-2").write_text("a file")
    at = index_page(tiny_index, tmp_path)
    at.file_uploader[0].upload("a.txt", b"the bees make honey", "text/plain")
    at.text_input(key="build_name").input("taken").run()
    assert "“taken” already exists" in at.error[0].value.replace("\\", "") and "“taken-3”" in at.error[0].value.replace("\\", "")
    assert build_button(at).disabled
    assert entries(tmp_path) == ["taken", "taken-2"] and (tmp_path / "taken" / "note.txt").read_text() == "mine"


def test_a_name_claimed_between_the_check_and_the_build_is_refused(tmp_path):
    """Of two sessions choosing one name at once, the second finds the folder made by the first (mkdir is atomic)."""
    upload = Upload("a.txt", b"the bees")
    (tmp_path / "x").mkdir()
    original = build.name_problem
    try:
        build.name_problem = lambda root, name: None  # as if the check ran before the other session's mkdir
        with pytest.raises(build.Refused, match="already exists"):
            build.build([upload], tmp_path, "x", lambda: pytest.fail("no model is loaded"), lambda *a: None)
    finally:
        build.name_problem = original
    assert entries(tmp_path) == ["x"] and not list((tmp_path / "x").iterdir())


# -- item 3: limits -------------------------------------------------------------------------------------------

@dataclass
class Upload:
    """What build.py uses of Streamlit's UploadedFile."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


def test_upload_checks_name_each_limit(monkeypatch):
    monkeypatch.setattr(ui, "BUILD_MAX_FILES", 2)
    assert build.upload_problem([Upload(f"{i}.txt", b"x") for i in range(3)]) == "3 files were uploaded; a build takes at most 2."
    big = Upload("big.txt", b"x" * (ui.UPLOAD_LIMIT_MB * 1_000_000 + 1))
    assert build.upload_problem([big]) == f"“big.txt” holds {format_bytes(big.size)}; a file may hold at most {ui.UPLOAD_LIMIT_MB} MB."
    monkeypatch.setattr(ui, "BUILD_MAX_TOTAL_MB", 1)
    halves = [Upload("a.txt", b"x" * 600_000), Upload("b.txt", b"x" * 600_000)]
    assert build.upload_problem(halves) == "The files hold 1.2 MB together; a build takes at most 1 MB."
    assert build.upload_problem([Upload("a.txt", b"x"), Upload("a.txt", b"y")]) == (
        "Two uploaded files are named “a.txt”; rename one, so that neither replaces the other.")
    assert build.upload_problem([Upload("..", b"x")]) == "“..” is not a plain file name."
    assert "not both" in build.upload_problem([Upload("a.jsonl", b"{}"), Upload("b.txt", b"x")])
    assert build.upload_problem([Upload("a.txt", b"x"), Upload("b.md", b"y")]) is None


def test_too_many_files_and_same_named_files_are_refused_on_the_page(tiny_index, tmp_path, allow_build, monkeypatch):
    monkeypatch.setattr(ui, "BUILD_MAX_FILES", 2)
    at = index_page(tiny_index, tmp_path)
    for name in ("a.txt", "b.txt", "c.txt"):
        at.file_uploader[0].upload(name, b"the bees", "text/plain")
    at.run()
    assert at.error[0].value.replace("\\", "") == "3 files were uploaded; a build takes at most 2."
    assert build_button(at).disabled
    at = index_page(tiny_index, tmp_path)
    at.file_uploader[0].upload("a.txt", b"the bees", "text/plain")
    at.file_uploader[0].upload("a.txt", b"the bread", "text/plain")
    at.run()
    assert "Two uploaded files are named “a.txt”" in at.error[0].value.replace("\\", "") and build_button(at).disabled
    assert entries(tmp_path) == []


def test_builds_beyond_the_concurrent_limit_are_refused(tiny_index, tiny_bert, tmp_path, allow_build):
    slots = build.build_slots()  # the same object every session of this server gets
    held = [slots.acquire(blocking=False) for _ in range(ui.BUILD_MAX_CONCURRENT)]
    try:
        assert all(held)
        at = index_page(tiny_index, tmp_path)
        upload_and_build(at, {"a.txt": b"the bees make honey"}, "busy", tiny_bert)
        assert "already running on this server" in at.error[0].value.replace("\\", "")
        assert entries(tmp_path) == []
    finally:
        for _ in held:
            slots.release()
    build_button(at).click().run()  # once the other build is done
    assert not at.error and is_index(tmp_path / "busy")


class Clock:
    """A monotonic clock that moves one second each time it is read: the time limit passes at a known step."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("failure", ["time limit", "bad files only", "model error"])
def test_a_failed_build_leaves_nothing_and_the_name_builds_right_after(failure, tiny_index, tiny_bert, tmp_path,
                                                                      allow_build, monkeypatch):
    files, model = {"a.txt": b"the bees make honey"}, tiny_bert
    if failure == "time limit":
        # read at the deadline (t=1), "loading the model" (t=2), "reading" (t=3), then "embedding" (t=4):
        # a limit of 2.5 s runs out inside the pipeline, after the writer lock and the staging area were made
        monkeypatch.setattr(build, "time", Clock())
        monkeypatch.setattr(ui, "BUILD_MAX_SECONDS", 2.5)
    elif failure == "bad files only":
        files = {"a.txt": b"\x00\x01 binary"}
    else:
        model = tmp_path.parent / "no-such-model"
    at = index_page(tiny_index, tmp_path)
    upload_and_build(at, files, "again", model)
    assert not at.exception
    expected = {"time limit": "ran past the limit of 2.5 s", "bad files only": "no document could be indexed",
                "model error": "no-such-model"}[failure]
    assert expected in at.error[0].value.replace("\\", "")
    assert entries(tmp_path) == []  # no folder, hidden or not, holds the name
    monkeypatch.undo()
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--allow-build"])
    at = index_page(tiny_index, tmp_path)
    upload_and_build(at, {"a.txt": b"the bees make honey"}, "again", tiny_bert)
    assert not at.exception and not at.error, texts(at.error)
    assert is_index(tmp_path / "again") and read_manifest(tmp_path / "again").counts.documents == 1


# -- item 18: stages on the bar; the page and sidebar switch to the new index -----------------------------------

def test_the_build_reports_its_stages_in_order(tiny_bert, tmp_path):
    encoder = Encoder.load(str(tiny_bert))
    seen = []
    uploads = [Upload(f"{i}.txt", f"the bees make honey {i}".encode()) for i in range(3)]
    build.build(uploads, tmp_path, "staged", lambda: encoder, lambda *args: seen.append(args))
    steps = [s for s, _, _ in seen]
    assert steps[:2] == ["loading the model", "reading"] and steps[-1] == "publishing"
    assert set(steps[2:-1]) == {"embedding"}
    assert seen[-2] == ("embedding", 3, 3) and seen[-1] == ("publishing", 3, 3)
    assert build.stage_text("embedding", 1, 4) == (0.25, "embedding: 1 of 4 documents")
    assert build.stage_text("reading", 0, 4) == (0.0, "reading the files")
    assert build.stage_text("publishing", 3, 3) == (1.0, "publishing the index")


def test_after_a_build_the_sidebar_and_the_page_switch_to_the_new_index(tiny_index, tiny_bert, tmp_path, allow_build):
    at = index_page(tiny_index, tmp_path)
    upload_and_build(at, {"a.txt": b"the bees make honey"}, "fresh", tiny_bert)
    assert not at.exception and not at.error
    assert "Indexed 1 documents" in at.success[0].value  # kept across the rerun
    assert at.session_state["index_dir"] == str(tmp_path / "fresh")
    assert at.sidebar.caption[0].value == "Index: fresh"
    current = [e for e in at.expander if e.label.startswith("● ")]
    assert len(current) == 1 and current[0].label.startswith("● fresh")
    assert at.query_params["index"] == "fresh"
    assert at.text_input(key="build_name").value == "fresh-2"  # the next free name
    at.run()
    assert not at.success  # said once


# -- item 6: local paths only on a loopback-bound app ------------------------------------------------------------

@pytest.mark.parametrize("bound, shown", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_local_paths_are_shown_only_on_loopback(bound, shown, tiny_index, tiny_bert, tmp_path, allow_build, address):
    address(bound)
    source = read_manifest(tiny_index).source.path
    at = index_page(tiny_index, tmp_path)
    assert not at.exception
    assert unescape(at.table[0].value.loc["source", "value"]) == (source if shown else "docs.jsonl")
    upload_and_build(at, {"a.txt": b"the bees make honey"}, "where", tiny_bert)
    assert (str(tmp_path) in at.success[0].value) is shown and "where" in at.success[0].value
    # a message quoting a path: the index root is a file, so nothing can be built in it
    root = tmp_path / "a-file"
    root.write_text("x")
    at = index_page(tiny_index, root)
    upload_and_build(at, {"b.txt": b"the bread"}, "nowhere", tiny_bert)
    message = at.error[0].value.replace("\\", "")
    assert "a-file" in message and (str(tmp_path) in message) is shown
    # a page that finds no index at the current path
    at = app(tmp_path / "missing")
    assert "missing" in at.error[0].value and (str(tmp_path) in at.error[0].value.replace("\\", "")) is shown


def test_shown_text_cuts_every_absolute_path_when_paths_are_hidden(address):
    address("0.0.0.0")
    text = "/srv/ix/gen-000001/manifest.json is corrupted; see /home/u/data/x.tsv and `python -m indexer repair /srv/ix`"
    assert ui.shown_text(text, "/srv/ix") == "ix/gen-000001/manifest.json is corrupted; see x.tsv and `python -m indexer repair ix`"
    address("127.0.0.1")
    assert ui.shown_text(text, "/srv/ix") == text


# -- in a real browser (the "Done when") ------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("app_args", [(), ("--allow-build",)], ids=["default", "allow-build"])
def test_in_a_browser_building_is_absent_unless_allowed(app_args, tiny_index, tmp_path):
    from conftest import running_app
    from test_browser import CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with running_app(tiny_index, tmp_path / "server.log", app_args=app_args) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{url}/index", wait_until="domcontentloaded")
            page.get_by_text("Build a new index").wait_for(timeout=90_000)
            if app_args:
                page.locator("[data-testid=stFileUploader]").wait_for(timeout=30_000)
                page.get_by_role("button", name="Build", exact=True).wait_for(timeout=30_000)
            else:
                page.get_by_text("Building from the browser is off").wait_for(timeout=30_000)
                assert page.locator("[data-testid=stFileUploader]").count() == 0
                assert page.locator("input[type=file]").count() == 0 and page.get_by_role("button", name="Build", exact=True).count() == 0
        finally:
            browser.close()
