"""Output files and folders (``--out``, ``--export-best``): checked before the first trial, written whole.

A check refuses what could only fail after a long sweep: a wrong suffix, a missing folder, a folder that
cannot be written (read-only, permissions: probed by creating a file there, which also holds for root), a
path that is a folder, a device or a FIFO. Files are written to a temporary file beside the target and
renamed over it, so a full disk leaves either the old file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..errors import SpecError


class OutputError(SpecError):
    """An output path that cannot be written (exit code 2; a SpecError, as --out mistakes always were)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _probe_folder(folder: Path, option: str, path: Path | str) -> None:
    """OutputError unless a file can be created in ``folder``."""
    try:
        fd, name = tempfile.mkstemp(prefix=".librapim-probe-", dir=folder)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write to the folder {folder} ({_reason(exc)}); choose a "
                          f"writable folder") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _not_special(p: Path, option: str, what: str) -> None:
    try:
        mode = p.stat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{option} {p}: is a device, FIFO or socket, not a {what}; give a {what} path")


def check_out_file(path: str | Path, option: str = "--out", suffixes: tuple[str, ...] = (".csv", ".json")) -> Path:
    """The path of an output file, checked: allowed suffix, not a folder/device/FIFO, writable folder."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {path}: the file must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name ending in {' or '.join(suffixes)}")
    _not_special(p, option, "file")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: the folder {p.parent} does not exist; create it or choose another path")
    _probe_folder(folder, option, path)
    return p


def check_out_dir(path: str | Path, option: str = "--export-best") -> Path:
    """The path of an output folder (created later if missing), checked: not a file/device, writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        _not_special(p, option, "folder")
        raise OutputError(f"{option} {path}: exists and is not a folder; give a folder path")
    existing = p
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is not a folder; give a folder path")
    _probe_folder(existing, option, path)
    return p


def write_text(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` whole (a temporary file renamed over it); OutputError on failure."""
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write ({_reason(exc)}); nothing was written: free space or "
                          f"choose another folder") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def make_dir(path: Path, option: str) -> None:
    """Create an output folder (and its parents); OutputError on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot create the folder ({_reason(exc)}); choose another path") from None
