"""How NPU memory traffic and PIM compute share a channel, per concurrency mode (docs/model/concurrency.md).

All arguments are per-channel busy times in seconds (numpy-broadcastable):

- ``pim_attn``: PIM units busy with attention on this channel (banks + GWRITE/READRES);
- ``pim_fc``: PIM units busy with offloaded FC rows;
- ``pim_io``: the part of the PIM work that uses the channel data bus (GWRITE + READRES);
- ``npu_w``: NPU weight streaming through this channel;
- ``npu_kv``: NPU reads of KV cache held in this channel (attention moved to the NPU).

Returns the channel's busy time for the stage; the stage lasts at least the slowest channel.
"""

from __future__ import annotations

import numpy as np

from ..spec.hardware import HardwareSpec
from ..spec.system import ConcurrencySpec

NS = 1e-9


def channel_time(mode: str, pim_attn, pim_fc, pim_io, npu_w, npu_kv, switch_s: float = 0.0,
                 quantum_s: float = 1.0):
    """Busy time of one channel in one stage under ``mode``.

    blocked          : pim_attn + pim_fc + npu_w + npu_kv            (everything serializes)
    time_interleaved : blocked + n_switch * (tRP + tRCD), n_switch = 2 ceil(min(PIM, NPU) / quantum)
    dual_row_buffer  : max(PIM units, data bus)                      (two open rows per bank)
                       PIM units = pim_attn + pim_fc; bus = npu_w + npu_kv + pim_io
    dex              : max(PIM units, data bus, (PIM units + NPU traffic) / 2)
                       each bank is two sections with their own paths; rows of every stream are
                       interleaved over both sections, so the two sections serve at most twice the stage
                       time of PIM and NPU work together, and a stream never uses both at once
    """
    pim = pim_attn + pim_fc
    npu = npu_w + npu_kv
    if mode == "blocked":
        return pim + npu
    if mode == "time_interleaved":
        overlap = np.minimum(pim, npu)
        switches = 2.0 * np.ceil(overlap / quantum_s)
        return pim + npu + switches * switch_s
    bus = npu + pim_io
    if mode == "dual_row_buffer":
        return np.maximum(pim, bus)
    if mode == "dex":
        return np.maximum(np.maximum(pim, bus), 0.5 * (pim + npu))
    raise ValueError(f"unknown concurrency mode {mode!r}")


def switch_penalty_s(hw: HardwareSpec) -> float:
    """Mode-switch penalty of time interleaving: precharge + activate (tRP + tRCD)."""
    return (hw.memory.tRP_ns + hw.memory.tRCD_ns) * NS


def quantum_s(spec: ConcurrencySpec) -> float:
    """Slot length between PIM/normal mode switches, seconds."""
    return spec.switch_quantum_ns * NS
