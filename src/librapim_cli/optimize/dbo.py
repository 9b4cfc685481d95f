"""DBO: Dynamic Batch Offloading, the per-stage offload decision (docs/model/dbo.md).

The discrete problem for one stage. Decision variables:

- ``y``: FC token rows moved from the NPU to the PIM, 0..rows;
- per channel c, ``k_c``: how many of that channel's requests move their attention to the NPU, taken in
  a fixed per-channel order (highest PIM-seconds saved per KV byte the NPU must stream first), so the
  offload set of a channel is a prefix of that order.

Objective: the stage time of :func:`librapim_cli.optimize.stage.stage_time` (max of NPU time and slowest
channel under the concurrency mode). Each direction is solved exactly and the better is taken:

- FC rows: every y is scored at once (vectorized over y; over y x channels only for time interleaving,
  whose switch count is not separable over channels).
- Attention: skipped when the NPU is already the bottleneck (moving work to it cannot help). Otherwise
  each channel's level as a function of k_c is tabulated; only record-breaking k (level below every
  smaller k) can be optimal. Each record is an event "lower channel c from level a to b for d extra NPU
  bytes". Sorted by a (descending), the first m events leave a PIM-side maximum equal to the (m+1)-th
  threshold (a terminal event per channel carries its final level) and an NPU time from the prefix sum of
  d, so all m are scored in one pass: sort, prefix sums, argmin.
"""

from __future__ import annotations

import numpy as np

from ..cost.concurrency import channel_time
from ..cost.tables import CostTables
from ..spec.system import DBOSpec
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
        chan = channel_max(t, a.pim_c, a.io_c, a.pim_c_max, a.io_c_max, pf.time_s[ys], pf.io_s[ys], mem)
        npu = np.maximum(np.maximum(sa, vec), mem) + link
    else:
        extra_mem = 0.0
        if a is not None and a.size:  # attention on the NPU in the same stage
            vec = vec + (a.softmax_flops + float(a.flops.sum())) / t.vector_flops
            extra_mem = float(a.kv_bytes.sum()) / t.npu_bw_bytes_per_s
        z = np.zeros(t.channels)
        chan = channel_max(t, z, z, 0.0, 0.0, pf.time_s[ys], pf.io_s[ys], mem)
        npu = np.maximum(np.maximum(sa, vec), mem + extra_mem) + link
    total = np.maximum(npu, chan)
    y = int(np.argmin(total))
    return Decision(y, None, float(total[y]))


def attention_order(inp: StageInput, channels: int):
    """Per-channel offload order: channel, then PIM seconds saved per KV byte (descending)."""
    a = inp.attn
    ratio = a.pim_s / np.maximum(a.kv_bytes, 1.0)
    top = float(ratio.max()) if ratio.size else 1.0
    # channel first, then ratio descending: one sort on channel + (1 - ratio/top) scaled into [0, 0.5]
    key = a.channel + 0.5 * (1.0 - ratio / (top if top > 0 else 1.0))
    order = np.argsort(key, kind="stable")
    chs = a.channel[order]
    counts = np.bincount(chs, minlength=channels)
    starts = np.cumsum(counts) - counts
    pos = np.arange(order.shape[0]) - starts[chs]
    return order, chs, counts, pos


def best_attention_offload(t: CostTables, inp: StageInput) -> Decision:
    """Exact best per-channel prefixes of requests whose attention moves to the NPU."""
    a = inp.attn
    if a is None or a.size == 0 or not t.has_pim or not inp.attn_on_pim:
        return NO_OFFLOAD
    n = a.size
    C = t.channels
    order, chs, counts, pos = attention_order(inp, C)
    M = int(counts.max())
    cols = pos + 1
    stacked = np.zeros((3, C, M + 1))
    stacked[:, chs, cols] = np.stack((a.pim_s, a.io_s, a.kv_bytes))[:, order]
    np.cumsum(stacked, axis=2, out=stacked)
    cg, cio, ckv = stacked
    fl_per_byte = a.flops_total / a.kv_total if a.kv_total > 0 else 0.0  # FLOPs are proportional to KV bytes
    sa, vec, mem, link = _npu_terms(t, inp, inp.rows)
    vec = vec + a.softmax_flops / t.vector_flops
    level = channel_time(t.mode, cg[:, -1:] - cg, 0.0, cio[:, -1:] - cio, mem, ckv / t.ch_bw_bytes_per_s,
                         t.switch_s, t.quantum_s)
    # beyond a channel's request count the cumulative sums stay flat, so those k are never records
    prev_min = np.empty_like(level)
    prev_min[:, 0] = np.inf
    np.minimum.accumulate(level[:, :-1], axis=1, out=prev_min[:, 1:])
    rc, rk = np.nonzero(level < prev_min)
    idx = np.nonzero(rk > 0)[0]
    ev_c, ev_k, kprev = rc[idx], rk[idx], rk[idx - 1]
    all_thr = np.concatenate([prev_min[ev_c, ev_k], np.min(level, axis=1)])
    all_kv = np.concatenate([ckv[ev_c, ev_k] - ckv[ev_c, kprev], np.full(C, np.inf)])
    all_c = np.concatenate([ev_c, np.arange(C)])
    all_k = np.concatenate([ev_k, np.zeros(C, dtype=ev_k.dtype)])
    srt = np.argsort(-all_thr, kind="stable")
    kv_cum = np.concatenate(([0.0], np.cumsum(all_kv[srt])[:-1]))  # bytes moved before event m
    npu = np.maximum(np.maximum(sa, vec + kv_cum * fl_per_byte / t.vector_flops),
                     mem + kv_cum / t.npu_bw_bytes_per_s) + link
    total = np.maximum(npu, all_thr[srt])
    m = int(np.argmin(total))
    if m == 0:
        return Decision(0, None, float(total[0]))
    kmax = np.zeros(C, dtype=np.int64)
    np.maximum.at(kmax, all_c[srt[:m]], all_k[srt[:m]])
    mask = np.empty(n, dtype=bool)
    mask[order] = pos < kmax[chs]
    return Decision(0, mask, float(total[m]))


def decide(t: CostTables, inp: StageInput, dbo: DBOSpec, base: StageTime | None = None) -> Decision:
    """DBO's decision for one stage: the better of the exact FC-row and attention offloads, or none.

    ``base`` is the stage's no-offload time if the caller already has it.
    """
    base = base or stage_time(t, inp, NO_OFFLOAD)
    best = Decision(0, None, base.time_s)
    if dbo.fc_to_pim:
        d = best_fc_offload(t, inp)
        if d.predicted_s < best.predicted_s:
            best = d
    # moving attention to the NPU only helps when the PIM side is the bottleneck
    if dbo.attention_to_npu and base.channel_max_s > base.npu_s:
        d = best_attention_offload(t, inp)
        if d.predicted_s < best.predicted_s:
            best = d
    return best
