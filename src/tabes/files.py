"""Safe file output: atomic replacement and early checks of output paths.

Every file the package writes whole (reports, JSON, plots, checkpoints) goes through
:func:`atomic_path`: it is written to a temporary file in the same folder and renamed over the
target, so a kill never leaves a half-written file where a good one was. Append-only logs
(``results.jsonl``, ``solve --out``) are appended and flushed record by record instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that infer the format
    from it still work); on success it is renamed to ``path``, on an error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _probe_dir(folder: Path, what: str) -> None:
    """Raise ``ValueError`` unless a file can be created in ``folder``."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: no permission to write in {folder}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tabes-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"{what}: cannot write in {folder} ({err.strerror})") from None


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """Check before any work that ``path`` can be written as a file; returns it as a Path.

    Raises ``ValueError`` (one clear line) when it is a directory, its folder is missing, or
    there is no permission to write it.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a directory; give a file path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{what}: folder {folder} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what}: no permission to write {path}")
    _probe_dir(folder, what)
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check before any work that ``path`` is (or can be made as) a writable folder; creates it.

    Raises ``ValueError`` when it is a file, its parent is missing, or it is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what}: {path} is a file, not a folder")
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise ValueError(f"{what}: parent folder {parent} does not exist")
        try:
            path.mkdir(exist_ok=True)  # several ranks may create it at once
        except OSError as err:
            raise ValueError(f"{what}: cannot create {path} ({err.strerror})") from None
    _probe_dir(path, what)
    return path
