"""Output files: checked before any work starts, written so that nothing is damaged or half-written.

What an output path may name, and how it is written:

- a regular file, or a new file in an existing writable folder: written to a temporary file in the same
  folder, then renamed over the target (atomic; the file keeps its permission bits);
- a symbolic link: followed to its final target, which is replaced as above; the link stays a link;
- ``-``, ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, any other character device (``/dev/null``) or a
  FIFO: a stream, written in place once the content is complete (a FIFO that no process reads at that
  moment is refused rather than waited on);
- anything else (a folder, a block device, a socket, a new or regular file under /proc, /sys or /dev) is
  refused.

A command either leaves every output it was asked for, complete, or replaces none of them; a write that
fails (a full disk, a read-only file system) is an ``InputError`` (exit code 2) naming the option and the
fix, never a traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

STDOUT = "-"
#: paths the user names to stream to the process's own descriptors, whatever they point at
_STREAM_NAMES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")
#: kernel file systems: never a place for output files (devices in /dev are streams, checked first)
_KERNEL_FS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Target:
    """Where an output goes: ``real`` is the file to replace (symlinks followed) or the stream to write."""

    option: str
    path: Path
    real: Path
    stream: bool

    @property
    def stdout(self) -> bool:
        """True for ``-`` (the command's standard output)."""
        return str(self.path) == STDOUT


def _is_stream_name(p: str) -> bool:
    return p == STDOUT or p in _STREAM_NAMES[:2] or p.startswith(_STREAM_NAMES[2:])


def _descriptor(p: str) -> int | None:
    """The descriptor a stream name stands for: 1 for ``-`` and /dev/stdout, 2 for /dev/stderr, N for
    /dev/fd/N; None for a device or FIFO opened by its path."""
    if p in (STDOUT, "/dev/stdout"):
        return 1
    if p == "/dev/stderr":
        return 2
    for prefix in _STREAM_NAMES[2:]:
        if p.startswith(prefix):
            rest = p[len(prefix):]
            return int(rest) if rest.isdigit() else -1
    return None


def _under_kernel_fs(p: Path) -> bool:
    if Path("/dev/shm") in p.parents:  # an ordinary tmpfs
        return False
    return any(p == Path(root) or Path(root) in p.parents for root in _KERNEL_FS)


def _what(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_fifo(option: str, path: Path) -> int:
    """A write descriptor on a FIFO that has a reader (InputError if nobody reads it: never block)."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise InputError(f"{option} {path}: is a FIFO that no process is reading; start the reader first "
                             "or give a file path") from None
        raise _write_error(option, path, exc) from None
    os.set_blocking(fd, True)
    return fd


def target(option: str, path: str | os.PathLike) -> Target:
    """Classify an output path (module docstring); InputError naming ``option`` if it cannot be written."""
    p = Path(path)
    text = os.fspath(path)
    if not text:
        raise InputError(f"{option}: the path is empty; give a file path (or {STDOUT} for standard output)")
    if _is_stream_name(text):
        fd = _descriptor(text)
        try:
            if fd is None or fd < 0:
                raise OSError(errno.EBADF, "not a descriptor number")
            os.fstat(fd)
        except OSError:
            raise InputError(f"{option} {p}: is not an open file descriptor of this process; give a file path "
                             f"(or {STDOUT} for standard output)") from None
        return Target(option, p, p, stream=True)
    try:
        st = os.stat(p)  # follows symlinks
    except FileNotFoundError:
        st = None  # a new file (or a link to one)
    except OSError as exc:
        raise InputError(f"{option} {p}: cannot use this path ({exc.strerror}); choose another path") from None
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        # a FIFO's reader is checked when writing: opening it now and closing it would end the reader's input
        return Target(option, p, p, stream=True)
    real = Path(os.path.realpath(p))
    if _under_kernel_fs(real):
        raise InputError(f"{option} {p}: is in /{real.parts[1]}, a kernel file system, not a place for output "
                         "files; choose another path")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{option} {p}: is {_what(st.st_mode)}, not a file; give a file path (or {STDOUT} for "
                         "standard output)")
    parent = real.parent if p.is_symlink() else (p.parent if str(p.parent) else Path("."))
    if not parent.is_dir():
        raise InputError(f"{option} {p}: the folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {p}: the folder {parent} is not writable; choose another path")
    if st is not None and not os.access(real, os.W_OK):
        raise InputError(f"{option} {p}: the file is read-only; make it writable or choose another path")
    return Target(option, p, real, stream=False)


def check_writable(option: str, path: str | os.PathLike) -> Path:
    """The path, if an output can be written there (``target``); otherwise an InputError naming the option."""
    target(option, path)
    return Path(path)


def _identity(t: Target) -> Any:
    fd = _descriptor(str(t.path))
    if fd is not None:
        return ("fd", fd)
    try:
        st = os.stat(t.real)
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(t.real)


def check_distinct(outputs: Iterable[tuple[str, str | os.PathLike | None]]) -> None:
    """InputError if two options name the same output (``-`` and ``/dev/stdout`` count as one)."""
    seen: dict[Any, str] = {}
    for option, path in outputs:
        if path is None:
            continue
        key = _identity(target(option, path))
        if key in seen:
            where = "write to standard output" if key == ("fd", 1) else f"name {path}"
            raise InputError(f"{seen[key]} and {option} both {where}; give each output its own file")
        seen[key] = option


# ---- writing --------------------------------------------------------------------------------------------
def _write_error(option: str, path: Path, exc: OSError) -> InputError:
    why = {errno.ENOSPC: "no space left on the device; free some space or choose another path",
           errno.EDQUOT: "disk quota exceeded; free some space or choose another path",
           errno.EROFS: "the file system is read-only; choose another path",
           errno.EACCES: "permission denied; choose another path",
           errno.EPERM: "operation not permitted; choose another path"}.get(
        exc.errno or 0, f"{exc.strerror or exc}; choose another path")
    return InputError(f"{option} {path}: cannot write: {why}")


def _new_temp(folder: Path, name: str) -> Path:
    """An empty file of our own next to the target (O_EXCL: never an existing file or a planted link)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(folder))


def _open_stream(t: Target) -> int | None:
    """A write descriptor for a stream target (None for the command's own stdout/stderr)."""
    fd = _descriptor(str(t.path))
    if fd in (1, 2):
        return None
    if fd is not None:
        return os.dup(fd)
    if stat.S_ISFIFO(os.stat(t.path).st_mode):
        return _open_fifo(t.option, t.path)
    return os.open(t.path, os.O_WRONLY)


def _copy_to_stream(t: Target, tmp: Path, fd: int | None) -> None:
    if fd is None:  # the command's own stdout/stderr (which a test runner may have replaced)
        stream = sys.stdout if _descriptor(str(t.path)) == 1 else sys.stderr
        stream.flush()
        out = getattr(stream, "buffer", None)
        with tmp.open("rb") as src:
            if out is not None:
                shutil.copyfileobj(src, out)
                out.flush()
            else:
                stream.write(src.read().decode("utf-8", errors="replace"))
        stream.flush()
        return
    with os.fdopen(fd, "wb") as dst, tmp.open("rb") as src:
        shutil.copyfileobj(src, dst)


def _mode_for(t: Target) -> int | None:
    try:
        return stat.S_IMODE(os.stat(t.real).st_mode)
    except OSError:
        return None  # a new file: the umask already applied to the temporary file


Writer = Callable[[Path], Any]
Output = tuple[Path, Writer] | tuple[Path, Writer, str]


def write_atomically(outputs: Sequence[Output]) -> None:
    """Write every output (``(path, write[, option])``; ``write(tmp)`` writes the content to ``tmp``).

    Each content is written to a temporary file first; then every stream is opened (a FIFO without a reader
    fails here), streams are written (the command's own stdout last), and only then files are renamed over
    their targets. On failure no target is replaced and no temporary file is left (a stream written
    before the failure stays written).
    """
    staged: list[tuple[Target, Path]] = []
    try:
        for item in outputs:
            path, write = Path(item[0]), item[1]
            option = item[2] if len(item) > 2 else "output"  # type: ignore[misc]
            t = target(option, path)
            try:
                if t.stream:
                    fd, name = tempfile.mkstemp(prefix="librapim-", suffix=".out")
                    os.close(fd)
                    tmp = Path(name)
                else:
                    tmp = _new_temp(t.real.parent, t.real.name)
                staged.append((t, tmp))
                write(tmp)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise
                raise _write_error(option, path, exc) from None
        # every stream is opened before any is written (a FIFO without reader fails here, before anything is
        # written); the command's own stdout/stderr go last; files are renamed only after all streams
        opened: list[tuple[Target, Path, int | None]] = []
        try:
            for t, tmp in staged:
                if t.stream:
                    try:
                        opened.append((t, tmp, _open_stream(t)))
                    except OSError as exc:
                        raise _write_error(t.option, t.path, exc) from None
            for t, tmp, fd in sorted(opened, key=lambda o: o[2] is None):
                try:
                    _copy_to_stream(t, tmp, fd)
                except OSError as exc:
                    if exc.errno == errno.EPIPE:
                        raise
                    raise _write_error(t.option, t.path, exc) from None
                finally:
                    opened = [o for o in opened if o[0] is not t]
        finally:
            for _, _, fd in opened:
                if fd is not None:
                    os.close(fd)
        for t, tmp in staged:
            if t.stream:
                continue
            try:
                mode = _mode_for(t)
                if mode is not None:
                    os.chmod(tmp, mode)
                os.replace(tmp, t.real)
            except OSError as exc:
                raise _write_error(t.option, t.path, exc) from None
    finally:
        for _, tmp in staged:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


def write_text_atomically(path: str | os.PathLike, text: str, option: str = "output") -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` as ``write_atomically`` does."""
    write_atomically([(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""), option)])
