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
    dex              : max(KV section, weight section, PIM units, data bus)
                       KV section = pim_attn + npu_kv; weight section = pim_fc + npu_w
                       each bank is two sections with their own paths; the KV cache lives in one, the
                       weights in the other, so the normal pair (PIM attention, NPU weight streaming) runs
                       concurrently, while work DBO moves across (NPU reading KV, PIM reading weights)
                       shares a section with the other device's work there and serializes with it
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
        return np.maximum(np.maximum(pim_attn + npu_kv, pim_fc + npu_w), np.maximum(pim, bus))
    raise ValueError(f"unknown concurrency mode {mode!r}")


def switch_penalty_s(hw: HardwareSpec) -> float:
    """Mode-switch penalty of time interleaving: precharge + activate (tRP + tRCD)."""
    return (hw.memory.tRP_ns + hw.memory.tRCD_ns) * NS


def quantum_s(spec: ConcurrencySpec) -> float:
    """Slot length between PIM/normal mode switches, seconds."""
    return spec.switch_quantum_ns * NS
