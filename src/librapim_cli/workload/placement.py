"""KV placement: the HBM channel holding each request's KV cache (docs/model/pim.md, 'Channel placement').

- :func:`snake_channels`: least-loaded placement of a whole batch at once (longest first, snake order);
- :func:`place_channels`: a batch's channels under ``placement.kv_channel_policy``;
- :func:`admit_channels`: channels of requests admitted one by one while serving (greedy in admission order).
"""

from __future__ import annotations

import numpy as np


def snake_channels(lens: np.ndarray, channels: int) -> np.ndarray:
    """Vectorized least-loaded placement for a whole batch: longest first, channels in snake order."""
    n = len(lens)
    order = np.argsort(-np.asarray(lens), kind="stable")
    pos = np.arange(n)
    lap, off = np.divmod(pos, channels)
    ch_sorted = np.where(lap % 2 == 0, off, channels - 1 - off)
    out = np.empty(n, dtype=np.int64)
    out[order] = ch_sorted
    return out


def place_channels(lens: np.ndarray, channels: int, policy: str) -> np.ndarray:
    """Channel of each request's KV for a whole batch: 'round_robin' (request i -> i mod channels) or
    'least_loaded' (the vectorized snake placement)."""
    if policy == "round_robin":
        return np.arange(len(lens), dtype=np.int64) % channels
    if policy == "least_loaded":
        return snake_channels(lens, channels)
    raise ValueError(f"unknown KV channel policy {policy!r}")


def admit_channels(policy: str, need_tokens: np.ndarray, load: np.ndarray, rr_next: int) -> tuple[np.ndarray, int]:
    """Channels for newly admitted requests, in admission order; adds their tokens to ``load`` in place.

    Returns the channels and the next round-robin position.
    """
    k = need_tokens.shape[0]
    C = load.shape[0]
    if policy == "round_robin":
        ch = (rr_next + np.arange(k, dtype=np.int64)) % C
        load += np.bincount(ch, weights=need_tokens, minlength=C)
        return ch, (rr_next + k) % C
    ch = np.empty(k, dtype=np.int64)
    for i in range(k):  # greedy in admission order: once per request, never per iteration
        c = int(load.argmin())
        ch[i] = c
        load[c] += need_tokens[i]
    return ch, rr_next
