"""``dual_row_buffer``: two open rows per bank (NeuPIMs); PIM units and the data bus run concurrently, and only
the data bus is shared by NPU traffic and the PIM's GWRITE/READRES (docs/sources.md#s2.3)."""

from __future__ import annotations

import numpy as np

from .base import ConcurrencyMode, ModeParams


class DualRowBuffer(ConcurrencyMode):
    name = "dual_row_buffer"
    summary = "two row buffers per bank: max(PIM, NPU traffic + PIM data-bus transfers)"

    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """max(pim_attn + pim_fc, npu_w + npu_kv + pim_io)."""
        return np.maximum(pim_attn + pim_fc, npu_w + npu_kv + pim_io)

    def affine_terms(self, p: ModeParams, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """With no NPU KV reads: max(a + pim_fc, io + npu_w + pim_fc_io)."""
        pf = np.asarray(pim_fc, dtype=float)
        return np.full(np.broadcast(pf, npu_w).shape, -np.inf), pf + 0 * npu_w, npu_w + pim_fc_io
