"""One schedule stage: the NPU's FC rows and the attention requests that run side by side, and its time.

A stage is what DBO balances: the NPU runs an FC group over ``rows`` token rows while the PIM runs the
attention of a set of requests. A decision moves ``fc_rows_to_pim`` of those rows to the PIM and the
attention of the requests in ``attn_to_npu`` to the NPU. ``stage_time`` is the cost model's time of the
stage under a decision; DBO's predictor uses the same model (docs/model/dbo.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from librapim_cli.cost.tables import CostTables

from .concurrency_compat import channel_time


@dataclass(frozen=True, slots=True)
class AttentionSet:
    """The attention work of a set of requests, per request and aggregated per channel."""

    pim_s: np.ndarray  # per-request PIM attention time (channel busy), s
    io_s: np.ndarray  # of which on the channel data bus, s
    kv_bytes: np.ndarray
    flops: np.ndarray
    channel: np.ndarray  # int: where each request's KV lives
    pim_energy_j: np.ndarray  # per-request energy if on PIM
    npu_energy_j: np.ndarray  # per-request energy if on the NPU
    pim_c: np.ndarray  # per-channel sum of pim_s
    io_c: np.ndarray  # per-channel sum of io_s
    softmax_flops: float  # vector-unit FLOPs of the softmax (always on the NPU's vector units)
    kv_total: float
    flops_total: float
    pim_energy_total: float
    npu_energy_total: float
    pim_c_max: float
    io_c_max: float
    pim_c_mean: float

    @property
    def size(self) -> int:
        """Number of requests."""
        return int(self.channel.shape[0])


def attention_set(t: CostTables, lens: np.ndarray, channel: np.ndarray) -> AttentionSet:
    """Gather the per-request attention figures from the cost tables and aggregate them per channel."""
    g = t.attn_stacked[:, lens]  # one gather of every per-request column
    sums = g.sum(axis=1)
    C = t.channels
    pim_c = np.bincount(channel, weights=g[0], minlength=C)
    io_c = np.bincount(channel, weights=g[1], minlength=C)
    return AttentionSet(g[0], g[1], g[2], g[3], channel, g[5], g[6], pim_c, io_c, float(sums[4]), float(sums[2]),
                        float(sums[3]), float(sums[5]), float(sums[6]), float(pim_c.max()), float(io_c.max()),
                        float(sums[0]) / C)


def make_attention_set(t: CostTables, pim_s, io_s, kv_bytes, flops, channel, pim_e, npu_e, softmax_flops: float
                       ) -> AttentionSet:
    """An AttentionSet from per-request arrays (aggregates computed here)."""
    C = t.channels
    pim_c = np.bincount(channel, weights=pim_s, minlength=C)
    io_c = np.bincount(channel, weights=io_s, minlength=C)
    return AttentionSet(pim_s, io_s, kv_bytes, flops, channel, pim_e, npu_e, pim_c, io_c, softmax_flops,
                        float(kv_bytes.sum()), float(flops.sum()), float(pim_e.sum()), float(npu_e.sum()),
                        float(pim_c.max()) if C else 0.0, float(io_c.max()) if C else 0.0,
                        float(pim_s.sum()) / C if C else 0.0)


@dataclass(frozen=True, slots=True)
class StageInput:
    """Work of one stage: an FC group over ``rows`` rows on the NPU, and an attention set."""

    group: str | None  # FC group on the NPU ('qkv', 'rest', 'both') or None
    rows: int  # FC token rows
    attn: AttentionSet | None
    attn_on_pim: bool  # the placement's home of this stage's attention
    weights_cached: bool = False  # the FC weights are already in the NPU's SRAM (no DRAM streaming)


@dataclass(frozen=True, slots=True)
class Decision:
    """DBO's choice for one stage."""

    fc_rows_to_pim: int
    attn_to_npu: np.ndarray | None  # bool mask over the stage's requests, None = nothing moves
    predicted_s: float


NO_OFFLOAD = Decision(0, None, float("nan"))


@dataclass(frozen=True, slots=True)
class StageTime:
    """The cost model's figures for one stage under a decision."""

    time_s: float
    npu_s: float  # NPU busy (max of systolic, vector, memory; plus link)
    npu_sa_s: float
    pim_max_s: float  # slowest channel's PIM busy time
    pim_mean_s: float  # mean channel PIM busy time
    channel_max_s: float  # slowest channel's total busy time under the concurrency mode
    npu_flops: float
    pim_flops: float
    energy_j: float
    attn_offloaded_bytes: float
    attn_bytes: float


def no_offload(inp: StageInput) -> Decision:
    """The static decision: nothing moves."""
    return NO_OFFLOAD


def stage_time(t: CostTables, inp: StageInput, dec: Decision) -> StageTime:
    """Time of a stage under ``dec``: max(NPU time, slowest channel under the concurrency mode)."""
    y = dec.fc_rows_to_pim
    nb = inp.rows - y
    a = inp.attn
    if inp.group is not None:
        g = t.npu[inp.group]
        sa, vec, mem, link = float(g.sa_s[nb]), float(g.vec_s[nb]), float(g.mem_s[nb]), float(g.link_s[inp.rows])
        npu_flops, energy = float(g.flops[nb]), float(g.energy_j[nb])
        if inp.weights_cached:
            mem, energy = 0.0, energy - float(g.dram_energy_j[nb])
    else:
        sa = vec = mem = link = npu_flops = energy = 0.0
    if a is None or a.size == 0:
        npu_s = max(sa, vec, mem) + link
        pim_fc = pim_fc_io = 0.0
        if y > 0:
            pf = t.pim_fc[inp.group]
            pim_fc, pim_fc_io = float(pf.time_s[y]), float(pf.io_s[y])
            energy += float(pf.energy_j[y])
            chan = _channel_max_scalar(t, 0.0, 0.0, pim_fc, pim_fc_io, mem)
            time_s = max(npu_s, chan)
            return StageTime(time_s, npu_s, sa, pim_fc, pim_fc, chan, npu_flops, float(pf.flops[y]), energy, 0.0,
                             0.0)
        return StageTime(npu_s, npu_s, sa, 0.0, 0.0, 0.0, npu_flops, 0.0, energy, 0.0, 0.0)
    attn_bytes = a.kv_total
    vec += a.softmax_flops / t.vector_flops
    if y > 0:
        pf = t.pim_fc[inp.group]
        pim_fc, pim_fc_io = float(pf.time_s[y]), float(pf.io_s[y])
        pim_fc_fl = float(pf.flops[y])
        energy += float(pf.energy_j[y])
    else:
        pim_fc = pim_fc_io = pim_fc_fl = 0.0
    if not (inp.attn_on_pim and t.has_pim):
        # attention placed on the NPU: it streams every request's KV and runs the MACs on the vector units;
        # FC rows DBO moved to the PIM still run there
        vec += a.flops_total / t.vector_flops
        kv_s = attn_bytes / t.npu_bw_bytes_per_s
        npu_s = max(sa, vec, mem + kv_s) + link
        energy += a.npu_energy_total
        if y > 0:
            chan = _channel_max_scalar(t, 0.0, 0.0, pim_fc, pim_fc_io, mem + kv_s)
            return StageTime(max(npu_s, chan), npu_s, sa, pim_fc, pim_fc, chan, npu_flops, pim_fc_fl, energy,
                             attn_bytes, attn_bytes)
        return StageTime(npu_s, npu_s, sa, 0.0, 0.0, 0.0, npu_flops, 0.0, energy, attn_bytes, attn_bytes)
    C = t.channels
    off = dec.attn_to_npu
    if off is None:
        npu_s = max(sa, vec, mem) + link
        chan_max = _channel_max_scalar(t, a.pim_c_max, a.io_c_max, pim_fc, pim_fc_io, mem)
        pim_max = a.pim_c_max + pim_fc
        pim_mean = a.pim_c_mean + pim_fc
        return StageTime(max(npu_s, chan_max), npu_s, sa, pim_max, pim_mean, chan_max, npu_flops,
                         a.flops_total + pim_fc_fl, energy + a.pim_energy_total, 0.0, attn_bytes)
    on = ~off
    ch_off = a.channel[off]
    kv_off = float(a.kv_bytes[off].sum())
    fl_off = float(a.flops[off].sum())
    pim_c = a.pim_c - np.bincount(ch_off, weights=a.pim_s[off], minlength=C)
    io_c = a.io_c - np.bincount(ch_off, weights=a.io_s[off], minlength=C)
    npu_kv_c = np.bincount(ch_off, weights=a.kv_bytes[off], minlength=C) / t.ch_bw_bytes_per_s
    vec += fl_off / t.vector_flops
    energy += float(a.pim_energy_j[on].sum()) + float(a.npu_energy_j[off].sum())
    npu_s = max(sa, vec, mem + kv_off / t.npu_bw_bytes_per_s) + link
    chan = channel_time(t.mode.name, pim_c, pim_fc, io_c + pim_fc_io, mem, npu_kv_c, t.mode_params.switch_s, t.mode_params.quantum_s)
    chan_max = float(chan.max())
    pim_max = float(pim_c.max()) + pim_fc
    pim_mean = float(pim_c.sum()) / C + pim_fc
    return StageTime(max(npu_s, chan_max), npu_s, sa, pim_max, pim_mean, chan_max, npu_flops,
                     a.flops_total - fl_off + pim_fc_fl, energy, kv_off, attn_bytes)


def _channel_max_scalar(t: CostTables, pim_c_max: float, io_c_max: float, pf: float, pfio: float,
                        mem: float) -> float:
    """channel_max for scalar pf/pfio/mem with plain-float arithmetic (the hot path)."""
    mode = t.mode.name
    if mode == "time_interleaved":
        return float(channel_time(mode, pim_c_max, pf, 0.0, mem, 0.0, t.mode_params.switch_s, t.mode_params.quantum_s))
    pim = pim_c_max + pf
    if mode == "blocked":
        return pim + mem
    bus = mem + io_c_max + pfio
    if mode == "dual_row_buffer":
        return max(pim, bus)
    return max(pim, bus, pf + mem)  # dex: the KV section term pim_attn + 0 is below pim


def channel_max(t: CostTables, pim_c_max, io_c_max, pf, pfio, mem):
    """Slowest channel's busy time when no attention moved to the NPU (pf, pfio, mem may be arrays over y).

    Blocked, dual-row-buffer and DEX are max/sum of a per-channel term and a shared term, so the maximum
    over channels needs only the per-channel maxima; time interleaving's channel time is non-decreasing
    in the channel's PIM time (a sum plus a switch count that grows with min(PIM, NPU)), so its maximum
    is the value at the busiest channel. So only the per-channel maxima are needed.
    """
    mode = t.mode.name
    if mode == "time_interleaved":
        return channel_time(mode, pim_c_max, pf, 0.0, mem, 0.0, t.mode_params.switch_s, t.mode_params.quantum_s)
    pim = pim_c_max + pf
    if mode == "blocked":
        return pim + mem
    bus = mem + io_c_max + pfio
    if mode == "dual_row_buffer":
        return np.maximum(pim, bus)
    return np.maximum(np.maximum(pim, bus), pf + mem)  # dex: the weight section holds NPU streaming + PIM FC
