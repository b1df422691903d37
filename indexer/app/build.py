"""Building an index from the browser: the checks of an upload and of a name, and a build that stays within the
limits of ui.py and leaves nothing behind when it fails.

The app only ever writes into a folder it has just created for the build (claimed with an exclusive mkdir), so it
never replaces or deletes an index it did not create; a build that fails for any reason removes that folder, so
the name is free again at once.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import streamlit as st

from indexer.app import ui
from indexer.encoder import Encoder
from indexer.loaders import FOLDER_SUFFIXES, format_bytes
from indexer.pipeline import BuildSummary, build_index

#: An index name: one plain folder name.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Files read as one collection of records (one such file per build); any other upload is one document.
RECORD_SUFFIXES = (".jsonl", ".csv", ".tsv")
#: What the uploader takes: the files a folder source reads, and the record files.
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in FOLDER_SUFFIXES.union(RECORD_SUFFIXES))
MB = 1_000_000  # the limits of ui.py are in decimal megabytes, as format_bytes shows sizes


class Refused(Exception):
    """A build the app does not start: the one-line message says why."""


class TimeLimit(Exception):
    """A build stopped because it ran past ui.BUILD_MAX_SECONDS."""


@st.cache_resource
def build_slots() -> threading.BoundedSemaphore:
    """Shared by every session of this server: at most ui.BUILD_MAX_CONCURRENT builds run at once."""
    return threading.BoundedSemaphore(ui.BUILD_MAX_CONCURRENT)


def free_name(root: Path, name: str) -> str:
    """`name-2`, `name-3`, …: the first that no file or folder in `root` has."""
    stem = name[:60]
    i = 2
    while (root / f"{stem}-{i}").exists() or (root / f"{stem}-{i}").is_symlink():
        i += 1
    return f"{stem}-{i}"


def name_problem(root: Path, name: str) -> str | None:
    """Why `name` cannot be the new index's name (None: it can)."""
    if not NAME.fullmatch(name):
        return "Index names use letters, digits, '.', '_' and '-' (up to 64 characters, starting with a letter or digit)."
    if (root / name).exists() or (root / name).is_symlink():
        return (f"An index named “{name}” already exists, and the app never replaces an index: "
                f"choose another name, e.g. “{free_name(root, name)}”.")
    return None


def upload_problem(uploads: Sequence) -> str | None:
    """Why these uploaded files cannot be built (None: they can): the limits, names used twice, mixed kinds."""
    if len(uploads) > ui.BUILD_MAX_FILES:
        return f"{len(uploads)} files were uploaded; a build takes at most {ui.BUILD_MAX_FILES}."
    seen = set()
    for upload in uploads:
        name = upload.name
        if Path(name).name != name or name in ("", ".", ".."):
            return f"“{name}” is not a plain file name."
        if name.startswith("."):  # loaders.read_folder skips hidden files: the document would be missing unsaid
            return f"“{name}” is a hidden file name, which a build would skip; rename it."
        if name in seen:
            return f"Two uploaded files are named “{name}”; rename one, so that neither replaces the other."
        seen.add(name)
        if upload.size > ui.UPLOAD_LIMIT_MB * MB:
            return f"“{name}” holds {format_bytes(upload.size)}; a file may hold at most {format_bytes(ui.UPLOAD_LIMIT_MB * MB)}."
    total = sum(u.size for u in uploads)
    if total > ui.BUILD_MAX_TOTAL_MB * MB:
        return f"The files hold {format_bytes(total)} together; a build takes at most {format_bytes(ui.BUILD_MAX_TOTAL_MB * MB)}."
    records = [u for u in uploads if Path(u.name).suffix.lower() in RECORD_SUFFIXES]
    if records and len(uploads) > 1:
        return "Upload either one JSONL / CSV / TSV file, or any number of text, Markdown, HTML, PDF and Word files — not both."
    return None


#: What the progress bar says at each step that has no count.
STAGES = {"loading the model": "loading the model", "reading": "reading the files", "publishing": "publishing the index"}


def stage_text(step: str, done: int, total: int | None) -> tuple[float, str]:
    """(share done, text) of the progress bar at one step of a build (pipeline.StageCallback's arguments)."""
    if step == "embedding":
        return (min(done / total, 1.0) if total else 0.0), f"embedding: {done} of {total if total is not None else '?'} documents"
    return (1.0 if step == "publishing" else 0.0), STAGES.get(step, step)


def build(
    uploads: Sequence,
    root: Path,
    name: str,
    load_encoder: Callable[[], Encoder],
    on_stage: Callable[[str, int, int | None], None],
) -> BuildSummary:
    """Index the uploads into a new folder `root/name`, within the limits; on any failure that folder is removed.

    `on_stage(stage, done, total)` follows pipeline.StageCallback, with the stage "loading the model" first.
    Raises Refused when a limit or the name stops it before it starts, TimeLimit past ui.BUILD_MAX_SECONDS, and the
    pipeline's errors otherwise.
    """
    if (problem := upload_problem(uploads) or name_problem(root, name)) is not None:
        raise Refused(problem)
    slots = build_slots()
    if not slots.acquire(blocking=False):
        raise Refused(f"{ui.BUILD_MAX_CONCURRENT} build(s) already running on this server, the most at once; try again when done.")
    try:
        limit = ui.BUILD_MAX_SECONDS
        deadline = time.monotonic() + limit

        def stage(step: str, done: int, total: int | None) -> None:
            if time.monotonic() > deadline:
                raise TimeLimit(f"The build ran past the limit of {limit} s and was stopped; nothing was kept. "
                                "Upload fewer or smaller files.")
            on_stage(step, done, total)

        target = root / name
        root.mkdir(parents=True, exist_ok=True)
        try:
            target.mkdir()  # the claim: of two sessions choosing one name at once, only one gets it
        except FileExistsError:
            raise Refused(name_problem(root, name) or f"An index named “{name}” already exists.") from None
        try:
            with tempfile.TemporaryDirectory(prefix="pooling-lab-upload-") as tmp:
                for upload in uploads:
                    (Path(tmp) / upload.name).write_bytes(upload.getvalue())
                records = Path(uploads[0].name).suffix.lower() in RECORD_SUFFIXES
                source = Path(tmp) / uploads[0].name if records else Path(tmp)
                stage("loading the model", 0, None)
                encoder = load_encoder()
                return build_index(source, target, encoder, progress=False, on_stage=stage)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # ours: created above for this build
            raise
    finally:
        slots.release()
