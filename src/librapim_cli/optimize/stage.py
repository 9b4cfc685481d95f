"""The time of stage instances under a decision: the one formula the engine and DBO's predictor share.

A stage instance is one row of the stage arrays (docs/model/schedule.md): the NPU runs an FC group (index
``gi`` into ``cost.tables.STACK_GROUPS``) over ``rows`` token rows, beside the attention of a set of
requests. A decision moves ``y`` of those rows to the PIM and/or some requests' attention to the NPU.

    stage time = max( NPU,  slowest channel under the concurrency mode )
    NPU        = max( systolic[rows - y],  vector[rows - y] + vec_extra,  stream[rows - y] + mem_extra ) + link[rows]

``vec_extra`` holds the softmax (and, with attention on the NPU, its MACs) on the vector units;
``mem_extra`` the KV the NPU streams for attention it runs. Weights already in SRAM (``cached``) stream no
bytes. Every function here takes arrays of instances (or instances x offload sizes) and returns arrays.
"""

from __future__ import annotations

import numpy as np

from ..cost.tables import CostTables

# columns of CostTables.npu_stack
SA, VEC, MEM, LINK, FLOPS, ENERGY, DRAM_ENERGY, BYTES = range(8)
# columns of CostTables.pim_fc_stack
PF_TIME, PF_IO, PF_FLOPS, PF_ENERGY = range(4)


def npu_time(sa, vec, mem, link):
    """NPU busy time of a stage: its three engines overlap, the all-reduce follows."""
    return np.maximum(np.maximum(sa, vec), mem) + link


def busiest_channel(t: CostTables, pim_attn_max, pim_io_max, pf, pfio, mem):
    """The slowest channel's busy time when no attention moved to the NPU (``ConcurrencyMode``)."""
    return t.mode.busiest_channel_time(t.mode_params, pim_attn_max, pim_io_max, pf, pfio, mem)


def channel_times(t: CostTables, pim_attn, pim_fc, pim_io, npu_w, npu_kv):
    """Every channel's busy time (arrays over channels)."""
    return t.mode.channel_time(t.mode_params, pim_attn, pim_fc, pim_io, npu_w, npu_kv)


# rows of fc_curves (per instance, per y)
C_SA, C_VEC, C_MEM, C_LINK, C_FLOPS, C_ENERGY, C_PF, C_PFIO, C_PF_FLOPS, C_PF_ENERGY = range(10)


def fc_curves(t: CostTables, gi, rows, cached):
    """NPU figures at rows - y and PIM-FC figures at y, for y = 0..max(rows): (n, 10, Y); y > rows gives
    an infinite systolic time (never chosen)."""
    Y = int(rows.max()) + 1 if rows.size else 1
    ys = np.arange(Y)
    nb = rows[:, None] - ys[None, :]
    valid = nb >= 0
    g = gi[:, None]
    n = t.npu_stack[g, :, np.maximum(nb, 0)]  # (n, Y, 8)
    p = t.pim_fc_stack[g, :, ys[None, :]]  # (n, Y, 4)
    out = np.empty((rows.shape[0], 10, Y))
    out[:, C_SA] = np.where(valid, n[..., SA], np.inf)
    out[:, C_VEC] = n[..., VEC]
    out[:, C_MEM] = np.where(cached[:, None], 0.0, n[..., MEM])
    out[:, C_LINK] = t.npu_stack[g, LINK, rows[:, None]]
    out[:, C_FLOPS] = n[..., FLOPS]
    out[:, C_ENERGY] = n[..., ENERGY] - np.where(cached[:, None], n[..., DRAM_ENERGY], 0.0)
    out[:, C_PF] = p[..., PF_TIME]
    out[:, C_PFIO] = p[..., PF_IO]
    out[:, C_PF_FLOPS] = p[..., PF_FLOPS]
    out[:, C_PF_ENERGY] = p[..., PF_ENERGY]
    return out


def fc_grid(t: CostTables, c: np.ndarray, vec_x, mem_x, pmax, iomax):
    """Stage time (and NPU time) of every instance for every y over its FC-offload curves ``c`` (n, 10, Y),
    with per-instance NPU extras and per-channel attention maxima (arrays over instances)."""
    mem = c[:, C_MEM] + mem_x[:, None]
    npu = npu_time(c[:, C_SA], c[:, C_VEC] + vec_x[:, None], mem, c[:, C_LINK])
    chan = busiest_channel(t, pmax[:, None], iomax[:, None], c[:, C_PF], c[:, C_PFIO], mem)
    return np.maximum(npu, chan), npu


