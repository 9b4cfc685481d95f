"""DBO's exact attention sweep: the best per-channel prefixes of movable attention units for many stages at
once (docs/model/dbo.md, "The search"). The FC direction, the bounds and the choice among directions live in
``schedule.engine._dbo``, which calls :func:`attention_sweep` on the pseudo-stages that survive its bounds.

Per stage, per channel c, ``k_c`` units move to the NPU, taken in a fixed per-channel order (highest
PIM-seconds saved per KV byte the NPU must stream first), so a channel's moved set is a prefix of that order.
Each channel's level as a function of k_c is tabulated; only record-breaking k (level below every smaller k)
can be optimal. Each record is an event "lower channel c from level a to b for d extra NPU bytes". Sorted by a
(descending), the first m events leave a PIM-side maximum equal to the (m+1)-th threshold (a terminal event
per channel carries its final level) and an NPU time from the prefix sum of d, so all m are scored in one
pass: sort, prefix sums, argmin.
"""

from __future__ import annotations

import numpy as np

from ..cost.tables import CostTables
from .stage import npu_time


def remaining(total, moved):
    """``total - moved`` of busy times, with the rounding residue of moving everything set to exactly 0 (a mode
    such as time interleaving charges switches to any PIM time above 0)."""
    left = total - moved
    return np.where(left <= 1e-12 * np.abs(total), 0.0, left)


def _order(channel, pim_s, kv_bytes, channels: int):
    ratio = pim_s / np.maximum(kv_bytes, 1.0)
    top = float(ratio.max()) if ratio.size else 1.0
    # channel first, then ratio descending: one sort on channel + (1 - ratio/top) scaled into [0, 0.5]
    key = channel + 0.5 * (1.0 - ratio / (top if top > 0 else 1.0))
    order = np.argsort(key, kind="stable")
    chs = channel[order]
    counts = np.bincount(chs, minlength=channels)
    starts = np.cumsum(counts) - counts
    pos = np.arange(order.shape[0]) - starts[chs]
    return order, chs, counts, pos


def attention_sweep(t: CostTables, stage: np.ndarray, chan: np.ndarray, pim_s: np.ndarray, io_s: np.ndarray,
                    kvb: np.ndarray, Q: int, sa, vec, mem, link, fpb, base_pim=None, base_io=None, pf=None,
                    pfio=None, ride=None, floor=None):
    """The exact attention-offload sweep for Q independent stages at once (module docstring).

    Request r belongs to stage ``stage[r]`` and channel ``chan[r]``; stage q's NPU terms are ``sa[q]``,
    ``vec[q]`` (softmax included), ``mem[q]``, ``link[q]`` and its FLOPs per KV byte ``fpb[q]``. Stage q's
    channel c becomes the combined channel q*C + c; the threshold sweep runs per stage on contiguous
    segments of the sorted event list. Returns (predicted stage times (Q,), offload mask over the
    requests, events taken per stage (Q,)). ``base_pim`` / ``base_io`` (Q*C,) are the channels' PIM and
    data-bus times before any move, when the requests given are only the candidates; by default they
    are the given requests' own sums. ``pf`` / ``pfio`` / ``ride`` (Q,) are FC work already moved to the
    PIM (every channel), ``floor`` (Q,) a lower bound of each stage (default zeros).
    """
    C = t.channels
    z = np.zeros(Q)
    pf, pfio, ride = (z if v is None else v for v in (pf, pfio, ride))
    floor = z if floor is None else floor
    # only channels holding units change level; every other channel keeps its level with nothing moved,
    # which bounds its stage from below like the floor
    comb = stage * C + chan
    present = np.bincount(comb, minlength=Q * C) > 0
    active = np.flatnonzero(present)  # the (stage, channel) pairs holding units, in order
    act_of = (np.cumsum(present) - 1)[comb]
    A = active.shape[0]
    order, chs, counts, pos = _order(act_of.reshape(-1), pim_s, kvb, A)
    M = int(counts.max()) if counts.size else 0
    stacked = np.zeros((3, A, M + 1))
    stacked[:, chs, pos + 1] = np.stack((pim_s, io_s, kvb))[:, order]
    np.cumsum(stacked, axis=2, out=stacked)
    cg, cio, ckv = stacked
    a_q = active // C
    if base_pim is None:
        bp, bi = cg[:, -1:], cio[:, -1:]
    else:
        base_pim, base_io = np.asarray(base_pim), np.asarray(base_io)
        rest = t.mode.channel_time(t.mode_params, base_pim, np.repeat(pf, C), base_io + np.repeat(pfio, C),
                                   np.repeat(mem, C), 0.0, np.repeat(ride, C))
        rest[active] = 0.0
        floor = np.maximum(floor, rest.reshape(Q, C).max(axis=1))
        bp, bi = base_pim[active][:, None], base_io[active][:, None]
    level = t.mode.channel_time(t.mode_params, remaining(bp, cg), pf[a_q][:, None],
                                remaining(bi, cio) + pfio[a_q][:, None], mem[a_q][:, None],
                                ckv / t.ch_bw_bytes_per_s, ride[a_q][:, None])
    # beyond a channel's request count the cumulative sums stay flat, so those k are never records
    prev_min = np.empty_like(level)
    prev_min[:, 0] = np.inf
    np.minimum.accumulate(level[:, :-1], axis=1, out=prev_min[:, 1:])
    rc, rk = np.nonzero(level < prev_min)
    idx = np.nonzero(rk > 0)[0]
    ev_c, ev_k, kprev = rc[idx], rk[idx], rk[idx - 1]
    n_ev = ev_c.shape[0]
    all_thr = np.concatenate([prev_min[ev_c, ev_k], np.min(level, axis=1)])
    all_kv = np.concatenate([ckv[ev_c, ev_k] - ckv[ev_c, kprev], np.zeros(A)])
    all_c = np.concatenate([ev_c, np.arange(A)])
    all_k = np.concatenate([ev_k, np.zeros(A, dtype=ev_k.dtype)])
    terminal = np.arange(all_c.shape[0]) >= n_ev
    seg = a_q[all_c]
    empty = np.flatnonzero(np.bincount(a_q, minlength=Q) == 0)
    if empty.size:  # a stage without units: one terminal event at level 0 (its floor and NPU decide)
        all_thr = np.concatenate([all_thr, np.zeros(empty.size)])
        all_kv = np.concatenate([all_kv, np.zeros(empty.size)])
        all_c = np.concatenate([all_c, np.full(empty.size, A)])
        all_k = np.concatenate([all_k, np.zeros(empty.size, dtype=all_k.dtype)])
        terminal = np.concatenate([terminal, np.ones(empty.size, dtype=bool)])
        seg = np.concatenate([seg, empty])
    top = float(all_thr.max())
    # one sort: stage ascending, then threshold descending (thresholds scaled into [0, 0.5])
    srt = np.argsort(seg + 0.5 * (1.0 - all_thr / (top * (1 + 1e-12) if top > 0 else 1.0)), kind="stable")
    seg_s, thr_s, kv_s, term_s = seg[srt], all_thr[srt], all_kv[srt], terminal[srt]
    seg_start = np.searchsorted(seg_s, np.arange(Q))
    cum = np.cumsum(kv_s)
    base = np.where(seg_start > 0, cum[seg_start - 1], 0.0)
    kv_before = cum - kv_s - base[seg_s]  # bytes moved before taking this event
    tcum = np.cumsum(term_s)
    t_before = tcum - term_s - np.where(seg_start > 0, tcum[seg_start - 1], 0)[seg_s]
    npu = npu_time(sa[seg_s], vec[seg_s] + kv_before * fpb[seg_s] / t.vector_flops,
                   mem[seg_s] + kv_before / t.npu_bw_bytes_per_s, link[seg_s])
    total = np.where(t_before > 0, np.inf, np.maximum(np.maximum(npu, thr_s), floor[seg_s]))
    seg_min = np.minimum.reduceat(total, seg_start)
    first = np.flatnonzero(total == seg_min[seg_s])
    best_pos = first[np.searchsorted(seg_s[first], np.arange(Q))]  # each stage's first argmin in sorted order
    m = best_pos - seg_start  # events taken per stage
    rank = np.arange(srt.shape[0]) - seg_start[seg_s]
    taken = (rank < m[seg_s]) & ~term_s
    kmax = np.zeros(A + 1, dtype=np.int64)
    np.maximum.at(kmax, all_c[srt][taken], all_k[srt][taken])
    mask = np.empty(order.shape[0], dtype=bool)
    mask[order] = pos < kmax[chs]
    return seg_min, mask, m
