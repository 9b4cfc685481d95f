"""Output files: checked before any work starts, written through a temporary file and a rename.

A command either leaves every output it was asked for, complete, or none of them (nothing half-written).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError


def check_writable(option: str, path: str | os.PathLike) -> Path:
    """The path, if a file can be written there; otherwise an InputError naming the option."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p}: is a folder; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {p}: the folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {p}: the folder {parent} is not writable; choose another path")
    return p


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_atomically(outputs: list[tuple[Path, Callable[[Path], Any]]]) -> None:
    """Write every output to a temporary file next to it, then rename all; on failure nothing is left."""
    done: list[tuple[Path, Path]] = []
    try:
        for path, write in outputs:
            path = Path(path)
            tmp = _tmp_path(path)
            done.append((tmp, path))
            write(tmp)
        for tmp, path in done:
            os.replace(tmp, path)
    finally:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file and a rename."""
    write_atomically([(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))])
