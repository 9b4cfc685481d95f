"""DBO: Dynamic Batch Offloading, the offload decision of every balanced stage instance (docs/model/dbo.md).

The discrete problem for one stage. Decision variables:

- ``y``: FC token rows moved from the NPU to the PIM, 0..rows;
- per channel c, ``k_c``: how many of that channel's requests move their attention to the NPU, taken in
  a fixed per-channel order (highest PIM-seconds saved per KV byte the NPU must stream first), so the
  offload set of a channel is a prefix of that order.

A decision moves work in one direction only, from the stage's bottleneck device to the other: either
``y > 0`` with no attention moved, or some ``k_c > 0`` with ``y = 0``. The objective is the stage time of
``optimize.stage``. Each direction is solved exactly and the better is taken:

- FC rows: every y of every instance is scored at once (``stage.fc_grid``; with nothing moved to the NPU
  every mode's slowest channel follows from the per-channel maxima).
- Attention: only instances whose PIM side bounds the stage and that hold a request whose move can lower
  its channel (``ConcurrencyMode.attention_move_can_help``) enter :func:`attention_sweep`. Each channel's
  level as a function of k_c is tabulated; only record-breaking k (level below every smaller k) can be
  optimal. Each record is an event "lower channel c from level a to b for d extra NPU bytes". Sorted by a
  (descending), the first m events leave a PIM-side maximum equal to the (m+1)-th threshold (a terminal
  event per channel carries its final level) and an NPU time from the prefix sum of d, so all m are
  scored in one pass: sort, prefix sums, argmin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.tables import CostTables
from .stage import channel_times, npu_time


@dataclass(frozen=True, slots=True)
class StageProblem:
    """The stage instances the attention direction considers (arrays over those instances, the predictor's
    view), each with FC rows already moved to the PIM (``pf``...; zeros for none): ``vec`` includes the
    softmax, ``mem`` the NPU's DRAM stream (weights and KV writes; every channel's ``npu_w``), ``npu_s`` /
    ``time_s`` the NPU and stage times with no attention moved, ``fpb`` the attention FLOPs per KV byte
    (vector work per byte the NPU takes over), ``pf`` / ``pfio`` / ``ride`` the PIM FC time, its data-bus
    part and its part riding the NPU's stream on every channel, ``floor`` any other lower bound of the stage
    (the offloaded FC chain)."""

    sa: np.ndarray
    vec: np.ndarray
    mem: np.ndarray
    link: np.ndarray
    npu_s: np.ndarray
    time_s: np.ndarray
    fpb: np.ndarray
    pf: np.ndarray
    pfio: np.ndarray
    ride: np.ndarray
    floor: np.ndarray


@dataclass(frozen=True, slots=True)
class Requests:
    """The attention units of the stages (predictor's view), concatenated: a unit is a request's attention, or
    with head granularity one of its KV heads (an equal share of the request's figures)."""

    inst: np.ndarray  # stage (index into the StageProblem arrays) of each unit, -1 if none
    channel: np.ndarray
    pim_s: np.ndarray
    io_s: np.ndarray
    kv_bytes: np.ndarray
    movable: np.ndarray  # bool: its move can lower its channel (the mode's filter)
    pim_c: np.ndarray  # (instances, C): per-channel sums of every request (base before moves)
    io_c: np.ndarray


@dataclass(frozen=True, slots=True)
class Decisions:
    """DBO's choice per instance: FC rows moved (``y``), and which instances moved attention (``attn``,
    with ``moved`` the mask over the requests)."""

    y: np.ndarray  # (instances,) int
    attn: np.ndarray  # (instances,) bool
    moved: np.ndarray | None  # (requests,) bool, or None if no attention moved anywhere
    predicted_s: np.ndarray  # (instances,) the predictor's stage time under the decision


def best_fc(grid: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Exact best y of every instance from ``stage.fc_grid``'s (stage time, NPU time) over y: the first
    minimum, so y > 0 only when strictly shorter than moving nothing. Returns (y, predicted stage time)."""
    total = grid[0]
    yb = np.argmin(total, axis=1)
    return yb, total[np.arange(yb.shape[0]), yb]


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
    active, act_of = np.unique(comb, return_inverse=True)
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


def best_attention(t: CostTables, p: StageProblem, r: Requests, sel: np.ndarray):
    """Exact best per-channel prefixes for the instances ``sel`` (each holds a movable request).

    Returns (predicted stage time, events taken, mask over r's requests) with the mask True only for
    requests of ``sel`` instances that the sweep moves.
    """
    Q = sel.shape[0]
    q_of_inst = np.full(p.sa.shape[0], -1, dtype=np.int64)
    q_of_inst[sel] = np.arange(Q)
    q_req = np.where(r.inst >= 0, q_of_inst[np.maximum(r.inst, 0)], -1)
    req = (q_req >= 0) & r.movable
    pred, mask, m = attention_sweep(t, q_req[req], r.channel[req], r.pim_s[req], r.io_s[req], r.kv_bytes[req], Q,
                                    p.sa[sel], p.vec[sel], p.mem[sel], p.link[sel], p.fpb[sel],
                                    r.pim_c[sel].reshape(-1), r.io_c[sel].reshape(-1), p.pf[sel], p.pfio[sel],
                                    p.ride[sel], p.floor[sel])
    full = np.zeros(r.inst.shape[0], dtype=bool)
    full[np.flatnonzero(req)] = mask
    return pred, m, full, q_req


def busiest_can_drop(t: CostTables, p: StageProblem, r: Requests, sel: np.ndarray, best: np.ndarray) -> np.ndarray:
    """For each instance of ``sel``: can moving a prefix of its busiest channel's movable units (in the
    sweep's order) bring both that channel and the NPU (which takes at least those units' bytes and FLOPs)
    below ``best``? If not, no decision of the sweep's family can make the stage shorter than ``best`` (the
    stage lasts at least as long as that channel, whose level depends only on its own moves, and as the NPU),
    so the sweep is skipped: an exact pre-test, at a fraction of the sweep's cost."""
    Q = sel.shape[0]
    pc, ic, mem = r.pim_c[sel], r.io_c[sel], p.mem[sel]
    pf, pfio, ride = p.pf[sel], p.pfio[sel], p.ride[sel]
    c_star = np.argmax(channel_times(t, pc, pf[:, None], ic + pfio[:, None], mem[:, None], 0.0, ride[:, None]),
                       axis=1)
    q_of_inst = np.full(p.sa.shape[0], -1, dtype=np.int64)
    q_of_inst[sel] = np.arange(Q)
    q_req = np.where(r.inst >= 0, q_of_inst[np.maximum(r.inst, 0)], -1)
    pick = (q_req >= 0) & r.movable
    pick &= r.channel == c_star[np.maximum(q_req, 0)]
    out = np.zeros(Q, dtype=bool)
    if not pick.any():
        return out
    qq = q_req[pick]
    order, groups, counts, _ = _order(qq, r.pim_s[pick], r.kv_bytes[pick], Q)
    cum = np.cumsum(np.stack((r.pim_s[pick], r.io_s[pick], r.kv_bytes[pick]))[:, order], axis=1)
    starts = np.cumsum(counts) - counts
    base = np.where(starts > 0, cum[:, np.maximum(starts - 1, 0)], 0.0)[:, groups]  # group-local prefix sums
    cs = cum - base
    idx = (groups, c_star[groups])
    level = channel_times(t, pc[idx] - cs[0], pf[groups], ic[idx] - cs[1] + pfio[groups], mem[groups],
                          cs[2] / t.ch_bw_bytes_per_s, ride[groups])
    # the NPU takes the moved bytes (at least those of this channel's prefix): the stage is at least that long
    q = sel[groups]
    npu = npu_time(p.sa[q], p.vec[q] + cs[2] * p.fpb[q] / t.vector_flops, p.mem[q] + cs[2] / t.npu_bw_bytes_per_s,
                   p.link[q])
    ok = (np.maximum(level, npu) < best[q]).astype(np.int64)
    has = counts > 0
    out[np.flatnonzero(has)] = np.add.reduceat(ok, starts[has]) > 0
    return out


def decide_attention(t: CostTables, p: StageProblem, r: Requests, best: np.ndarray) -> Decisions:
    """The attention direction for every instance of ``p``: the exact prefix sweep for the instances whose
    PIM side bounds the stage and that hold a movable request; a sweep result is taken where it moves at
    least one request and its predicted stage is strictly shorter than ``best`` (the best so far, e.g. of
    the FC direction)."""
    n = p.sa.shape[0]
    best = best.copy()
    attn = np.zeros(n, dtype=bool)
    y = np.zeros(n, dtype=np.int64)
    moved = None
    holds = np.bincount(r.inst[r.movable & (r.inst >= 0)], minlength=n) > 0
    sel = np.flatnonzero((p.time_s > np.maximum(p.npu_s, p.floor)) & holds)
    if sel.size:
        sel = sel[busiest_can_drop(t, p, r, sel, best)]
    if sel.size:
        pred, m, full, q_req = best_attention(t, p, r, sel)
        win = (m > 0) & (pred < best[sel])
        if win.any():
            keep = np.zeros(sel.shape[0] + 1, dtype=bool)
            keep[:-1] = win
            moved = full & keep[q_req]  # q_req = -1 hits the trailing False
            attn[sel[win]] = True
            best[sel[win]] = pred[win]
    return Decisions(y, attn, moved, best)
