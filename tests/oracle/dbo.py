"""DBO: Dynamic Batch Offloading, the per-stage offload decision (docs/model/dbo.md).

The discrete problem for one stage. Decision variables:

- ``y``: FC token rows moved from the NPU to the PIM, 0..rows;
- per channel c, ``k_c``: how many of that channel's requests move their attention to the NPU, taken in
  a fixed per-channel order (highest PIM-seconds saved per KV byte the NPU must stream first), so the
  offload set of a channel is a prefix of that order.

A decision moves work in one direction only, from the stage's bottleneck device to the other (LibraPIM's
description of DBO: "offloads a fine-grained part of the work from the bottleneck device to the idle
one"): either ``y > 0`` with no attention moved, or some ``k_c > 0`` with ``y = 0``.

Objective: the stage time of :func:`librapim_cli.optimize.stage.stage_time` (max of NPU time and slowest
channel under the concurrency mode). Each direction is solved exactly and the better is taken, which is
the exact optimum of this one-direction problem:

- FC rows: every y is scored at once (vectorized over y; with nothing moved to the NPU every mode's
  slowest channel is the busiest one, so no per-channel work is needed).
- Attention: skipped when the NPU is already the bottleneck (moving work to it cannot help). Otherwise
  each channel's level as a function of k_c is tabulated; only record-breaking k (level below every
  smaller k) can be optimal. Each record is an event "lower channel c from level a to b for d extra NPU
  bytes". Sorted by a (descending), the first m events leave a PIM-side maximum equal to the (m+1)-th
  threshold (a terminal event per channel carries its final level) and an NPU time from the prefix sum of
  d, so all m are scored in one pass: sort, prefix sums, argmin.
"""

from __future__ import annotations

import numpy as np

from librapim_cli.cost.tables import CostTables
from librapim_cli.spec.system import DBOSpec

from .concurrency_compat import channel_time
from .stage import NO_OFFLOAD, Decision, StageInput, StageTime, channel_max, stage_time


def _npu_terms(t: CostTables, inp: StageInput, nb):
    if inp.group is None:
        z = np.zeros_like(np.asarray(nb, dtype=float))
        return z, z, z, 0.0
    g = t.npu[inp.group]
    mem = np.zeros_like(g.mem_s[nb]) if inp.weights_cached else g.mem_s[nb]
    return g.sa_s[nb], g.vec_s[nb], mem, g.link_s[inp.rows]


def best_fc_offload(t: CostTables, inp: StageInput) -> Decision:
    """Exact best number of FC rows to move to the PIM (attention stays where it is)."""
    if inp.group is None or inp.rows == 0 or not t.has_pim:
        return NO_OFFLOAD
    ys = np.arange(inp.rows + 1)
    nb = inp.rows - ys
    sa, vec, mem, link = _npu_terms(t, inp, nb)
    a = inp.attn
    pf = t.pim_fc[inp.group]
    if a is not None and a.size and inp.attn_on_pim:
        vec = vec + a.softmax_flops / t.vector_flops
        chan = channel_max(t, a.pim_c_max, a.io_c_max, pf.time_s[ys], pf.io_s[ys], mem)
        npu = np.maximum(np.maximum(sa, vec), mem) + link
    else:
        extra_mem = 0.0
        if a is not None and a.size:  # attention on the NPU in the same stage
            vec = vec + (a.softmax_flops + float(a.flops.sum())) / t.vector_flops
            extra_mem = float(a.kv_bytes.sum()) / t.npu_bw_bytes_per_s
        chan = channel_max(t, 0.0, 0.0, pf.time_s[ys], pf.io_s[ys], mem + extra_mem)
        npu = np.maximum(np.maximum(sa, vec), mem + extra_mem) + link
    total = np.maximum(npu, chan)
    y = int(np.argmin(total))
    return Decision(y, None, float(total[y]))


def attention_order(inp: StageInput, channels: int):
    """Per-channel offload order: channel, then PIM seconds saved per KV byte (descending)."""
    a = inp.attn
    order, chs, counts, pos = _order(a.channel, a.pim_s, a.kv_bytes, channels)
    return order, chs, counts, pos


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


def movable(t: CostTables, pim_s: np.ndarray, kv_bytes: np.ndarray) -> np.ndarray:
    """Requests whose move to the NPU can lower their channel's level (all of them, except under blocked
    and dex: there a request whose KV the NPU reads through its channel no faster than the PIM processes
    it only raises every binding term, so it is never part of an optimal prefix; see _attention_can_help)."""
    if t.mode.name in ("blocked", "dex"):
        return kv_bytes < pim_s * t.ch_bw_bytes_per_s
    return np.ones(pim_s.shape[0], dtype=bool)


def attention_sweep(t: CostTables, stage: np.ndarray, chan: np.ndarray, pim_s: np.ndarray, io_s: np.ndarray,
                    kvb: np.ndarray, Q: int, sa, vec, mem, link, fpb, base_pim=None, base_io=None):
    """The exact attention-offload sweep for Q independent stages at once (module docstring).

    Request r belongs to stage ``stage[r]`` and channel ``chan[r]``; stage q's NPU terms are ``sa[q]``,
    ``vec[q]`` (softmax included), ``mem[q]``, ``link[q]`` and its FLOPs per KV byte ``fpb[q]``. Stage q's
    channel c becomes the combined channel q*C + c; the threshold sweep runs per stage on contiguous
    segments of the sorted event list. Returns (predicted stage times (Q,), offload mask over the
    requests, events taken per stage (Q,)). ``base_pim`` / ``base_io`` (Q*C,) are the channels' PIM and
    data-bus times before any move, when the requests given are only the candidates (see
    ``movable``); by default they are the given requests' own sums.
    """
    C = t.channels
    order, chs, counts, pos = _order(stage * C + chan, pim_s, kvb, Q * C)
    M = int(counts.max()) if counts.size else 0
    stacked = np.zeros((3, Q * C, M + 1))
    stacked[:, chs, pos + 1] = np.stack((pim_s, io_s, kvb))[:, order]
    np.cumsum(stacked, axis=2, out=stacked)
    cg, cio, ckv = stacked
    bp = cg[:, -1:] if base_pim is None else np.asarray(base_pim)[:, None]
    bi = cio[:, -1:] if base_io is None else np.asarray(base_io)[:, None]
    mem_row = np.repeat(mem, C)[:, None]
    level = channel_time(t.mode.name, bp - cg, 0.0, bi - cio, mem_row, ckv / t.ch_bw_bytes_per_s, t.mode_params.switch_s,
                         t.mode_params.quantum_s)
    # beyond a channel's request count the cumulative sums stay flat, so those k are never records
    prev_min = np.empty_like(level)
    prev_min[:, 0] = np.inf
    np.minimum.accumulate(level[:, :-1], axis=1, out=prev_min[:, 1:])
    rc, rk = np.nonzero(level < prev_min)
    idx = np.nonzero(rk > 0)[0]
    ev_c, ev_k, kprev = rc[idx], rk[idx], rk[idx - 1]
    n_ev = ev_c.shape[0]
    all_thr = np.concatenate([prev_min[ev_c, ev_k], np.min(level, axis=1)])
    all_kv = np.concatenate([ckv[ev_c, ev_k] - ckv[ev_c, kprev], np.zeros(Q * C)])
    all_c = np.concatenate([ev_c, np.arange(Q * C)])
    all_k = np.concatenate([ev_k, np.zeros(Q * C, dtype=ev_k.dtype)])
    terminal = np.arange(all_c.shape[0]) >= n_ev
    seg = all_c // C
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
    npu = np.maximum(np.maximum(sa[seg_s], vec[seg_s] + kv_before * fpb[seg_s] / t.vector_flops),
                     mem[seg_s] + kv_before / t.npu_bw_bytes_per_s) + link[seg_s]
    total = np.where(t_before > 0, np.inf, np.maximum(npu, thr_s))
    seg_min = np.minimum.reduceat(total, seg_start)
    first = np.flatnonzero(total == seg_min[seg_s])
    best_pos = first[np.searchsorted(seg_s[first], np.arange(Q))]  # each stage's first argmin in sorted order
    m = best_pos - seg_start  # events taken per stage
    rank = np.arange(srt.shape[0]) - seg_start[seg_s]
    taken = (rank < m[seg_s]) & ~term_s
    kmax = np.zeros(Q * C, dtype=np.int64)
    np.maximum.at(kmax, all_c[srt][taken], all_k[srt][taken])
    mask = np.empty(order.shape[0], dtype=bool)
    mask[order] = pos < kmax[chs]
    return seg_min, mask, m


def best_attention_offload(t: CostTables, inp: StageInput) -> Decision:
    """Exact best per-channel prefixes of requests whose attention moves to the NPU."""
    return best_attention_offload_many(t, [inp])[0]


def best_attention_offload_many(t: CostTables, inps: list[StageInput]) -> list[Decision]:
    """best_attention_offload for several independent stages (pipeline micro-batches) in one vectorized pass.

    Stage p's channel c becomes the combined channel p*C + c; the threshold sweep runs per stage on
    contiguous segments of the sorted event list.
    """
    P = len(inps)
    live = [i for i, inp in enumerate(inps) if inp.attn is not None and inp.attn.size and t.has_pim
            and inp.attn_on_pim]
    out = [NO_OFFLOAD] * P
    if not live:
        return out
    sets = [inps[i].attn for i in live]
    Q = len(live)
    sizes = np.array([a.size for a in sets])
    stage = np.repeat(np.arange(Q), sizes)
    chan = np.concatenate([a.channel for a in sets])
    pim_s = np.concatenate([a.pim_s for a in sets])
    io_s = np.concatenate([a.io_s for a in sets])
    kvb = np.concatenate([a.kv_bytes for a in sets])
    base_pim = np.concatenate([a.pim_c for a in sets])
    base_io = np.concatenate([a.io_c for a in sets])
    keep = movable(t, pim_s, kvb)
    terms = [_npu_terms(t, inps[i], inps[i].rows) for i in live]
    sa = np.array([float(x[0]) for x in terms])
    vec = np.array([float(x[1]) + a.softmax_flops / t.vector_flops for x, a in zip(terms, sets, strict=True)])
    mem = np.array([float(x[2]) for x in terms])
    link = np.array([float(x[3]) for x in terms])
    fpb = np.array([a.flops_total / a.kv_total if a.kv_total > 0 else 0.0 for a in sets])  # FLOPs per KV byte
    seg_min, mask_kept, m = attention_sweep(t, stage[keep], chan[keep], pim_s[keep], io_s[keep], kvb[keep], Q, sa,
                                            vec, mem, link, fpb, base_pim, base_io)
    mask_all = np.zeros(chan.shape[0], dtype=bool)
    mask_all[keep] = mask_kept
    offs = np.concatenate([[0], np.cumsum(sizes)])
    for j, i in enumerate(live):
        if m[j] == 0:
            out[i] = Decision(0, None, float(seg_min[j]))
        else:
            out[i] = Decision(0, mask_all[offs[j]:offs[j + 1]], float(seg_min[j]))
    return out


def _attention_can_help(t: CostTables, inp: StageInput) -> bool:
    """False when no attention offload can shorten the stage, so the sweep can be skipped exactly.

    Under ``blocked`` every channel serializes PIM and NPU work; under ``dex`` (with no FC rows moved) the
    NPU's KV reads share the KV section with the PIM, and the data bus with GWRITE/READRES. Moving request
    i off the PIM then changes its channel's binding terms by kv_i / channel_bw - pim_i (or - io_i <= that),
    so if the NPU reads every request's KV no faster than the PIM processes it, no channel gets shorter.
    """
    a = inp.attn
    if a is None:
        return True
    return bool(np.any(movable(t, a.pim_s, a.kv_bytes)))


def decide(t: CostTables, inp: StageInput, dbo: DBOSpec, base: StageTime | None = None) -> Decision:
    """DBO's decision for one stage: the better of the exact FC-row and attention offloads, or none.

    ``base`` is the stage's no-offload time if the caller already has it.
    """
    base = base or stage_time(t, inp, NO_OFFLOAD)
    return decide_many(t, [inp], dbo, [base])[0]


def decide_many(t: CostTables, inps: list[StageInput], dbo: DBOSpec, bases: list[StageTime]) -> list[Decision]:
    """DBO's decisions for independent stages (e.g. one per pipeline micro-batch), vectorized where it pays.

    Moving attention to the NPU only helps a stage whose PIM side is the bottleneck, so only those stages
    enter the attention sweep.
    """
    best = [Decision(0, None, b.time_s) for b in bases]
    if dbo.fc_to_pim:
        for i, inp in enumerate(inps):
            d = best_fc_offload(t, inp)
            if d.predicted_s < best[i].predicted_s:
                best[i] = d
    if dbo.attention_to_npu:
        pim_bound = [i for i, b in enumerate(bases) if b.channel_max_s > b.npu_s and _attention_can_help(t, inps[i])]
        if pim_bound:
            ds = best_attention_offload_many(t, [inps[i] for i in pim_bound])
            for i, d in zip(pim_bound, ds, strict=True):
                if d.attn_to_npu is not None and d.predicted_s < best[i].predicted_s:
                    best[i] = d
    return best
