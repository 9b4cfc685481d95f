"""Request-trace CSV files: read and checked in full before any work starts (docs/model/workload.md).

A trace is a UTF-8 CSV with a header naming ``input_len`` and ``output_len`` (integers, tokens) and
optionally ``arrival_s`` (a finite number of seconds, >= 0). Every row is checked; the first bad one is
named by its line. Reading is cached per file version (path, size, modification time), so a setup check,
the serving loop and the steady-state sampler read a trace once.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import TraceError
from .limits import MAX_REQUESTS, MAX_SECONDS, MAX_TOKENS, MAX_TRACE_BYTES

COLUMNS = "input_len,output_len[,arrival_s]"
_SECONDS = f"{MAX_SECONDS:g}".replace("e+0", "e").replace("e+", "e")


@dataclass(frozen=True)
class Trace:
    """The rows of a trace in arrival order (stable), as read-only arrays."""

    input_len: np.ndarray
    output_len: np.ndarray
    arrival_s: np.ndarray

    def __len__(self) -> int:
        return int(self.input_len.shape[0])


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_trace(path: str | os.PathLike) -> Trace:
    """Read and check a trace CSV; TraceError (exit code 2) naming the file, the line and the fix."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        if not p.exists():
            raise TraceError(f"trace '{path}' does not exist; give a CSV with columns {COLUMNS}") from None
        raise TraceError(f"trace '{path}': cannot read ({exc.strerror}); check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"trace '{path}' is {_kind_of(st.st_mode)}, not a CSV file; give a CSV with columns {COLUMNS}")
    if st.st_size > MAX_TRACE_BYTES:
        raise TraceError(f"trace '{path}' is {st.st_size / 2**20:.0f} MiB, more than the {MAX_TRACE_BYTES // 2**20} MiB "
                         f"limit ({MAX_REQUESTS} requests); shorten it")
    return _read_cached(str(p), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=16)
def _read_cached(path: str, size: int, mtime_ns: int, ino: int) -> Trace:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TraceError(f"{p}: cannot read ({exc.strerror}); check the path and its permissions") from None
    if b"\x00" in data:
        raise TraceError(f"{p}: contains NUL bytes, so it is binary or UTF-16, not a CSV text file; save it as "
                         f"UTF-8 CSV with columns {COLUMNS}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{p}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8 CSV "
                         f"with columns {COLUMNS}") from None
    return _parse(p, text)


def _number(text: str | None, kind: type) -> int | float:
    if text is None:
        raise ValueError("missing")
    return kind(text.strip())


def _parse(p: Path, text: str) -> Trace:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    ins: list[int] = []
    outs: list[int] = []
    arr: list[float] = []
    try:
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        missing = [c for c in ("input_len", "output_len") if c not in cols]
        if missing:
            raise TraceError(f"{p}: missing column(s) {', '.join(missing)}; the header must have "
                             f"{COLUMNS} (found: {', '.join(cols) or 'nothing'})")
        has_arr = "arrival_s" in cols
        for row in reader:
            lineno = reader.line_num
            if len(ins) >= MAX_REQUESTS:
                raise TraceError(f"{p}: more than {MAX_REQUESTS} rows (the request limit); shorten the trace")
            try:
                i, o = _number(row.get("input_len"), int), _number(row.get("output_len"), int)
                raw_a = row.get("arrival_s") if has_arr else None
                a = _number(raw_a, float) if raw_a not in (None, "") else 0.0
            except (TypeError, ValueError):
                raise TraceError(f"{p}:{lineno}: input_len and output_len must be integers and arrival_s a number, "
                                 f"got {dict(row)}; fix that line") from None
            if not math.isfinite(a):
                raise TraceError(f"{p}:{lineno}: arrival_s must be a finite number of seconds, got {raw_a!r}; "
                                 "fix that line")
            if not (1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS and 0 <= a <= MAX_SECONDS):
                raise TraceError(f"{p}:{lineno}: lengths must be 1 to {MAX_TOKENS} tokens and arrival_s 0 to "
                                 f"{_SECONDS} s, got input_len={i}, output_len={o}, arrival_s={a:g}; "
                                 "fix that line")
            ins.append(i)
            outs.append(o)
            arr.append(a)
    except csv.Error as exc:
        raise TraceError(f"{p}:{reader.line_num}: not valid CSV ({exc}); fix that line") from None
    if not ins:
        raise TraceError(f"{p}: no requests; add rows of {COLUMNS}")
    a_np = np.asarray(arr, dtype=float)
    order = np.argsort(a_np, kind="stable")
    out = Trace(np.asarray(ins, dtype=np.int64)[order], np.asarray(outs, dtype=np.int64)[order], a_np[order])
    for x in (out.input_len, out.output_len, out.arrival_s):
        x.setflags(write=False)  # shared by every caller of the cache
    return out
