"""DBO: Dynamic Batch Offloading, the per-stage offload decision (docs/model/dbo.md).

The discrete problem for one stage. Decision variables:

- ``y``: FC token rows moved from the NPU to the PIM, 0..rows;
- per channel c, ``k_c``: how many of that channel's requests move their attention to the NPU, taken in
  a fixed per-channel order (highest PIM-seconds saved per KV byte the NPU must stream first), so the
  offload set of a channel is a prefix of that order.

Objective: the stage time of :func:`librapim_cli.optimize.stage.stage_time` (max of NPU time and slowest
channel under the concurrency mode). Both directions are solved exactly and the better is taken:

- FC rows: every y is evaluated at once (vectorized over y x channels).
- Attention: each channel's level as a function of k_c is tabulated; only record-breaking k (level
  below every smaller k) can be optimal. Each record is an event "lower channel c from level a to b at
  extra NPU bytes d". Sorted by a (descending), the first m events give a PIM-side maximum equal to the
  (m+1)-th threshold (a terminal event per channel carries its final level) and an NPU time from the
  prefix sum of d, so all m are scored in one pass: sort, prefix sums, argmin.
"""

from __future__ import annotations

import numpy as np

from ..cost.concurrency import channel_time
from ..cost.tables import CostTables
from ..spec.system import DBOSpec
from .stage import Decision, StageInput, no_offload, stage_time


def _npu_base(t: CostTables, inp: StageInput, nb):
    if inp.group is None:
        z = np.zeros_like(np.asarray(nb, dtype=float))
        return z, z, z, 0.0
    g = t.npu[inp.group]
    return g.sa_s[nb], g.vec_s[nb], g.mem_s[nb], g.link_s[inp.rows]


def best_fc_offload(t: CostTables, inp: StageInput) -> Decision:
    """Exact best number of FC rows to move to the PIM (attention stays where it is)."""
    if inp.group is None or inp.rows == 0 or not t.has_pim:
        return no_offload(inp)
    C = t.channels
    ys = np.arange(inp.rows + 1)
    nb = inp.rows - ys
    sa, vec, mem, link = _npu_base(t, inp, nb)
    vec = vec + float(inp.softmax_flops.sum()) / t.vector_flops
    npu = np.maximum(np.maximum(sa, vec), mem) + link
    pim_attn_c = np.bincount(inp.channel, weights=inp.pim_s, minlength=C)
    pim_io_c = np.bincount(inp.channel, weights=inp.io_s, minlength=C)
    pf = t.pim_fc[inp.group]
    chan = channel_time(t.mode, pim_attn_c[None, :], pf.time_s[ys][:, None],
                        pim_io_c[None, :] + pf.io_s[ys][:, None], mem[:, None], 0.0, t.switch_s, t.quantum_s)
    total = np.maximum(npu, chan.max(axis=1))
    y = int(np.argmin(total))
    return Decision(y, np.zeros(inp.channel.shape[0], dtype=bool), float(total[y]))


def attention_order(inp: StageInput, channels: int):
    """Per-channel offload order: channel, then PIM seconds saved per KV byte (descending)."""
    key = -inp.pim_s / np.maximum(inp.kv_bytes, 1.0)
    order = np.lexsort((key, inp.channel))
    chs = inp.channel[order]
    counts = np.bincount(chs, minlength=channels)
    starts = np.cumsum(counts) - counts
    pos = np.arange(order.shape[0]) - starts[chs]
    return order, chs, counts, pos


def best_attention_offload(t: CostTables, inp: StageInput) -> Decision:
    """Exact best per-channel prefixes of requests whose attention moves to the NPU."""
    n = inp.channel.shape[0]
    if n == 0 or not t.has_pim or not inp.attn_on_pim:
        return no_offload(inp)
    C = t.channels
    order, chs, counts, pos = attention_order(inp, C)
    M = int(counts.max())
    cols = pos + 1

    def cum(v):
        a = np.zeros((C, M + 1))
        a[chs, cols] = v[order]
        return np.cumsum(a, axis=1)

    cg, cio, ckv, cfl = cum(inp.pim_s), cum(inp.io_s), cum(inp.kv_bytes), cum(inp.flops)
    sa, vec, mem, link = _npu_base(t, inp, inp.rows)
    vec = vec + float(inp.softmax_flops.sum()) / t.vector_flops
    pim_attn = cg[:, -1:]
    pim_io = cio[:, -1:]
    level = channel_time(t.mode, pim_attn - cg, 0.0, pim_io - cio, mem, ckv / t.ch_bw_bytes_per_s,
                         t.switch_s, t.quantum_s)
    ks = np.arange(M + 1)
    level = np.where(ks[None, :] <= counts[:, None], level, np.inf)
    prev_min = np.empty_like(level)
    prev_min[:, 0] = np.inf
    np.minimum.accumulate(level[:, :-1], axis=1, out=prev_min[:, 1:])
    rec = level < prev_min
    rc, rk = np.nonzero(rec)
    real = rk > 0
    idx = np.nonzero(real)[0]
    ev_c, ev_k, kprev = rc[idx], rk[idx], rk[idx - 1]
    thr = prev_min[ev_c, ev_k]
    dkv = ckv[ev_c, ev_k] - ckv[ev_c, kprev]
    dfl = cfl[ev_c, ev_k] - cfl[ev_c, kprev]
    final = np.min(level, axis=1)
    all_thr = np.concatenate([thr, final])
    all_kv = np.concatenate([dkv, np.full(C, np.inf)])
    all_fl = np.concatenate([dfl, np.zeros(C)])
    all_c = np.concatenate([ev_c, np.arange(C)])
    all_k = np.concatenate([ev_k, np.zeros(C, dtype=ev_k.dtype)])
    srt = np.argsort(-all_thr, kind="stable")
    thr_s = all_thr[srt]
    kv_cum = np.concatenate([[0.0], np.cumsum(all_kv[srt])])[:-1]
    fl_cum = np.concatenate([[0.0], np.cumsum(all_fl[srt])])[:-1]
    npu = np.maximum(np.maximum(sa, vec + fl_cum / t.vector_flops), mem + kv_cum / t.npu_bw_bytes_per_s) + link
    total = np.maximum(npu, thr_s)
    m = int(np.argmin(total))
    kmax = np.zeros(C, dtype=np.int64)
    np.maximum.at(kmax, all_c[srt[:m]], all_k[srt[:m]])
    mask_sorted = pos < kmax[chs]
    mask = np.empty(n, dtype=bool)
    mask[order] = mask_sorted
    return Decision(0, mask, float(total[m]))


def decide(t: CostTables, inp: StageInput, dbo: DBOSpec) -> Decision:
    """DBO's decision for one stage: the better of the exact FC-row and attention offloads (or none)."""
    best = no_offload(inp)
    best_t = stage_time(t, inp, best).time_s
    best = Decision(0, best.attn_to_npu, best_t)
    if dbo.fc_to_pim:
        d = best_fc_offload(t, inp)
        if d.predicted_s < best.predicted_s:
            best = d
    if dbo.attention_to_npu:
        d = best_attention_offload(t, inp)
        if d.predicted_s < best.predicted_s:
            best = d
    return best
