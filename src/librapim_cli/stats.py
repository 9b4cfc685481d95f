"""Order statistics equal to numpy's, bit for bit, without numpy's masked-array import.

``np.median``, ``np.percentile``, ``np.quantile`` and ``np.unique`` (without ``return_inverse``) import
``numpy.ma`` on first use (~15-20 ms, paid by every process that calls them once). These do the same
arithmetic on the same order statistics (``np.partition`` at the same positions) and return the same
figures; tests compare them with numpy over many random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def median(x: np.ndarray) -> float:
    """``np.median(x)`` of a non-empty 1-D array: the middle element, or the mean of the two middle ones
    ((a + b) / 2, as ``np.mean`` of two); NaN if ``x`` holds a NaN."""
    a = np.asarray(x)
    n = a.shape[0]
    if a.ndim != 1 or n == 0:
        raise ValueError("median: a non-empty 1-D array")
    h = n // 2
    kth = [h - 1, h] if n % 2 == 0 else [h]
    nan = a.dtype.kind in "fc"
    part = np.partition(a, kth + [-1] if nan else kth)
    if nan and np.isnan(part[-1]):
        return float("nan")
    mid = part[h - 1:h + 1] if n % 2 == 0 else part[h:h + 1]
    return float(np.mean(mid))


def percentiles(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(x, q)`` (method 'linear') of a non-empty 1-D array at a sequence of percentiles in
    [0, 100]: the order statistics around the virtual index (n - 1) q / 100, blended by numpy's ``_lerp``
    (a + (b - a) t below t = 0.5, b - (b - a)(1 - t) from it); all NaN if ``x`` holds a NaN."""
    a = np.asarray(x)
    n = a.shape[0]
    if a.ndim != 1 or n == 0:
        raise ValueError("percentiles: a non-empty 1-D array")
    qs = np.true_divide(np.asarray(q), 100)
    if qs.ndim != 1 or not ((qs >= 0) & (qs <= 1)).all():
        raise ValueError("percentiles: a sequence of percentiles in [0, 100]")
    vi = (n - 1) * qs
    prev = np.floor(vi)
    nxt = prev + 1
    top = vi >= n - 1  # at the largest element: both neighbours are it (index -1)
    prev[top] = -1
    nxt[top] = -1
    prev, nxt = prev.astype(np.intp), nxt.astype(np.intp)
    part = np.partition(a, distinct(np.concatenate(([0, n - 1], prev % n, nxt % n))))
    lo, hi = part[prev], part[nxt]
    t = vi - prev
    diff = hi - lo
    out = np.add(lo, diff * t)
    np.subtract(hi, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=type(out.dtype))
    if a.dtype.kind in "fc" and np.isnan(part[-1]):
        out[:] = part[-1]
    return out


def distinct(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` of a 1-D integer array, or of floats without NaN: its distinct values, sorted."""
    s = np.sort(np.asarray(x))
    if s.shape[0] < 2:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]
