"""Request lengths: a seeded log-normal fit to published dataset statistics, fixed lengths, or a CSV trace.

Fit (docs/model/workload.md): a log-normal with mu = ln(median) and sigma = sqrt(2 ln(mean / median)), so
its median and mean equal the statistics; samples are rounded and clipped to [min, max]. Clipping at max
removes tail mass, so the samples above the sample median are then stretched away from it (by the factor
that restores the target mean) and clipped again; the median is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..spec.trace import read_trace as _read_trace
from ..spec.workload import LengthStats, WorkloadSpec
from ..stats import median


@dataclass(frozen=True)
class Requests:
    """A request set: prompt and output lengths (tokens) and arrival times (seconds)."""

    input_len: np.ndarray
    output_len: np.ndarray
    arrival_s: np.ndarray

    def __len__(self) -> int:
        return int(self.input_len.shape[0])


def lognormal_params(stats: LengthStats) -> tuple[float, float]:
    """(mu, sigma) of the log-normal whose median and mean equal the statistics'."""
    mu = float(np.log(stats.median))
    ratio = max(stats.mean / stats.median, 1.0 + 1e-9)
    sigma = float(np.sqrt(2.0 * np.log(ratio)))
    return mu, sigma


def sample_lengths(stats: LengthStats, n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths with the statistics' median and (clipped) mean, within [min, max]."""
    mu, sigma = lognormal_params(stats)
    x = rng.lognormal(mu, sigma, size=n)
    lo, hi = stats.min, stats.max
    out = np.clip(np.rint(x), lo, hi)
    # clipping at max removes tail mass: rescale the part above the median to restore the mean
    if n > 1:
        med = median(out)  # np.median's figure, without its numpy.ma import
        above = out > med
        deficit = stats.mean * n - out.sum()
        tail = (out[above] - med).sum()
        if tail > 0:
            scale = max(1.0 + deficit / tail, 0.0)
            out[above] = np.clip(np.rint(med + (out[above] - med) * scale), lo, hi)
    return out.astype(np.int64)


def read_trace(path: str | Path) -> Requests:
    """Read a CSV trace with columns input_len, output_len and optional arrival_s (``spec.trace``: every row
    checked, cached per file version), in arrival order."""
    tr = _read_trace(path)
    return Requests(tr.input_len.copy(), tr.output_len.copy(), tr.arrival_s.copy())


def make_requests(w: WorkloadSpec, num_requests: int | None = None) -> Requests:
    """The workload's requests: sampled (seeded), fixed, or read from its trace; arrivals per its process.

    A sampled or fixed request set is a pure function of the (frozen) workload spec and the count, so it is
    built once per process and shared read-only; a trace is re-read when its file changes
    (``spec.trace.read_trace``)."""
    if w.lengths == "trace":
        return _make_requests(w, num_requests)
    return _shared_requests(w, num_requests)


@lru_cache(maxsize=64)
def _shared_requests(w: WorkloadSpec, num_requests: int | None) -> Requests:
    r = _make_requests(w, num_requests)
    for a in (r.input_len, r.output_len, r.arrival_s):
        a.setflags(write=False)
    return r


def _make_requests(w: WorkloadSpec, num_requests: int | None) -> Requests:
    rng = np.random.default_rng(w.seed)
    n = num_requests or w.num_requests
    if w.lengths == "trace":
        tr = read_trace(w.trace_path or "")
        if num_requests is not None and num_requests < len(tr):
            tr = Requests(tr.input_len[:n], tr.output_len[:n], tr.arrival_s[:n])
        ins, outs = tr.input_len, tr.output_len
        n = len(tr)
    elif w.lengths == "fixed":
        ins = np.full(n, w.input_len, dtype=np.int64)
        outs = np.full(n, w.output_len, dtype=np.int64)
    else:
        assert w.input_stats is not None and w.output_stats is not None
        ins = sample_lengths(w.input_stats, n, rng)
        outs = sample_lengths(w.output_stats, n, rng)
    if w.arrival == "trace":
        arr = tr.arrival_s
    elif w.arrival == "poisson":
        assert w.rate_per_s is not None
        arr = np.cumsum(rng.exponential(1.0 / w.rate_per_s, size=n))
    else:
        arr = np.zeros(n)
    # cap total length at max_seq_len (NeuPIMs caps seq_len at 2048): trim the prompt first, keep >= 1 token out
    cap = w.max_seq_len
    outs = np.minimum(outs, cap - 1)
    ins = np.minimum(ins, cap - outs)
    return Requests(ins.astype(np.int64), outs.astype(np.int64), np.asarray(arr, dtype=float))
