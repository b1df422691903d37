"""Small file helpers shared by the model loader and the store: checksums and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a rename or file creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data) -> None:
    """Write bytes (or any buffer, e.g. a numpy array) to a temporary name, flush and fsync, then rename into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def copy_file(source: str | Path, target: str | Path) -> None:
    """Copy a regular file's bytes (in blocks) and fsync the copy; OSError if `source` is not a regular file."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not a regular file")
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(_BLOCK):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


def unwritable_dir(path: str | Path) -> str | None:
    """Why files cannot be created in folder `path` (one line naming it), or None; nothing is created.

    The folder, or its nearest existing ancestor when it does not exist yet (it would be created),
    must be a folder this process may write into.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if existing is None:
        return None  # nothing of the path exists; even its root does not: left to the write itself
    if not existing.is_dir():
        what = "is not a folder" if existing.exists() else "is a broken symbolic link"
        return f"{path}: {existing} {what}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: {existing} is not writable" if existing == path else f"{path}: cannot create it in {existing} (not writable)"
    return None
