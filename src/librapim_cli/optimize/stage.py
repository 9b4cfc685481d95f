"""One schedule stage: the NPU's FC rows and the attention requests that run side by side, and its time.

A stage is what DBO balances: the NPU runs an FC group over ``rows`` token rows while the PIM runs the
attention of a set of requests. A decision moves ``fc_rows_to_pim`` of those rows to the PIM and the
attention of the requests in ``attn_to_npu`` to the NPU. ``stage_time`` is the cost model's time of the
stage under a decision; DBO's predictor uses the same function (docs/model/dbo.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.concurrency import channel_time
from ..cost.tables import CostTables


@dataclass(frozen=True, slots=True)
class StageInput:
    """Work of one stage. Request arrays are aligned; ``channel`` is where each request's KV lives."""

    group: str | None  # FC group on the NPU ('qkv', 'rest', 'both') or None
    rows: int  # FC token rows
    pim_s: np.ndarray  # per-request PIM attention time (channel busy), s
    io_s: np.ndarray  # of which on the data bus, s
    kv_bytes: np.ndarray
    flops: np.ndarray
    softmax_flops: np.ndarray
    channel: np.ndarray  # int
    pim_energy_j: np.ndarray  # per-request energy if on PIM
    npu_energy_j: np.ndarray  # per-request energy if on the NPU
    attn_on_pim: bool  # the placement's home of this stage's attention


@dataclass(frozen=True, slots=True)
class Decision:
    """DBO's choice for one stage."""

    fc_rows_to_pim: int
    attn_to_npu: np.ndarray  # bool mask over the stage's requests
    predicted_s: float


@dataclass(frozen=True, slots=True)
class StageTime:
    """The cost model's figures for one stage under a decision."""

    time_s: float
    npu_s: float  # NPU busy (systolic / vector / memory, plus link)
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
    return Decision(0, np.zeros(inp.channel.shape[0], dtype=bool), float("nan"))


def stage_time(t: CostTables, inp: StageInput, dec: Decision) -> StageTime:
    """Time of a stage under ``dec``: max(NPU time, slowest channel under the concurrency mode)."""
    C = t.channels
    y = dec.fc_rows_to_pim
    nb = inp.rows - y
    off = dec.attn_to_npu if inp.attn_on_pim else np.ones(inp.channel.shape[0], dtype=bool)
    on = ~off
    kv_off = float(inp.kv_bytes[off].sum())
    fl_off = float(inp.flops[off].sum())
    soft = float(inp.softmax_flops.sum())
    if inp.group is not None:
        g = t.npu[inp.group]
        sa, vec, mem, link = g.sa_s[nb], g.vec_s[nb], g.mem_s[nb], g.link_s[inp.rows]
        npu_flops, npu_e = g.flops[nb], g.energy_j[nb] + 0.0
    else:
        sa = vec = mem = link = npu_flops = npu_e = 0.0
    vec = vec + (soft + fl_off) / t.vector_flops
    npu_s = max(sa, vec, mem + kv_off / t.npu_bw_bytes_per_s) + link
    if t.has_pim:
        pim_attn_c = np.bincount(inp.channel[on], weights=inp.pim_s[on], minlength=C)
        pim_io_c = np.bincount(inp.channel[on], weights=inp.io_s[on], minlength=C)
        npu_kv_c = np.bincount(inp.channel[off], weights=inp.kv_bytes[off], minlength=C) / t.ch_bw_bytes_per_s
        if y > 0 and inp.group is not None:
            pf = t.pim_fc[inp.group]
            pim_fc, pim_fc_io, pim_fc_fl, pim_fc_e = pf.time_s[y], pf.io_s[y], pf.flops[y], pf.energy_j[y]
        else:
            pim_fc = pim_fc_io = pim_fc_fl = pim_fc_e = 0.0
        chan = channel_time(t.mode, pim_attn_c, pim_fc, pim_io_c + pim_fc_io, mem, npu_kv_c, t.switch_s,
                            t.quantum_s)
        chan_max = float(chan.max())
        pim_busy = pim_attn_c + pim_fc
        pim_max, pim_mean = float(pim_busy.max()), float(pim_busy.mean())
        pim_flops = float(inp.flops[on].sum()) + pim_fc_fl
    else:
        chan_max = pim_max = pim_mean = pim_flops = 0.0
        pim_fc_e = 0.0
    energy = (float(npu_e) + float(pim_fc_e) + float(inp.pim_energy_j[on].sum())
              + float(inp.npu_energy_j[off].sum()))
    time_s = max(npu_s, chan_max)
    return StageTime(time_s, npu_s, float(sa), pim_max, pim_mean, chan_max, float(npu_flops), pim_flops,
                     energy, kv_off, float(inp.kv_bytes.sum()))
