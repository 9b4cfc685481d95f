"""Small numeric helpers shared by the pipeline's stages."""

from __future__ import annotations

import numpy as np


def median(x) -> float:
    """``np.median`` of a 1-D array, the same value, without the ``numpy.ma`` import ``np.median`` triggers
    (~8 ms of every serving run's start-up): the middle element, or the mean of the two middle elements, of a
    partition; NaN if any element is NaN (empty: NaN)."""
    a = np.asarray(x, dtype=float).reshape(-1)
    n = a.shape[0]
    if n == 0:
        return float("nan")
    k = n // 2
    kth = [k, -1] if n % 2 else [k - 1, k, -1]
    part = np.partition(a, kth)
    if np.isnan(part[-1]):
        return float("nan")
    return float(part[k]) if n % 2 else float(np.mean(part[k - 1:k + 1]))
