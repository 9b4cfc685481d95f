"""``time_interleaved``: PIM and normal accesses alternate in slots; every overlapping slot pays two mode
switches of precharge + activate (docs/sources.md#s9.4)."""

from __future__ import annotations

import numpy as np

from .base import ConcurrencyMode, ModeParams


class TimeInterleaved(ConcurrencyMode):
    name = "time_interleaved"
    summary = "PIM and NPU alternate in slots, paying tRP + tRCD per switch"

    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """PIM + NPU + n_switch (tRP + tRCD), n_switch = 2 ceil(min(PIM, NPU) / quantum)."""
        pim = pim_attn + pim_fc
        npu = npu_w + npu_kv
        switches = 2.0 * np.ceil(np.minimum(pim, npu) / p.quantum_s)
        return pim + npu + switches * p.switch_s
