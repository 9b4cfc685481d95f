"""``separate``: the PIM stacks are memories of their own beside the xPU's HBM (AttAcc, docs/sources.md#s12): the
xPU streams its weights from its own memory (``hardware.xpu_memory``), so only PIM work and the xPU's reads of KV
held in a stack (attention moved to it) use a stack channel, and those two serialize."""

from __future__ import annotations

import numpy as np

from .base import ConcurrencyMode, ModeParams


class Separate(ConcurrencyMode):
    name = "separate"
    summary = "PIM stacks beside the xPU's own HBM: max(PIM + NPU KV reads, NPU stream); the weights never touch them"

    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """max(pim_attn + pim_fc + npu_kv, npu_w + npu_kv).

        The weight stream ``npu_w`` flows through the xPU's own memory, not this channel; it appears only as a
        lower bound that the stage time (max of the NPU's time, which includes that stream, and the channels)
        already carries, so it never changes a stage."""
        return np.maximum(pim_attn + pim_fc + npu_kv, npu_w + npu_kv)

    def affine_terms(self, p: ModeParams, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """With no NPU KV reads: max(npu_w, a + pim_fc); the data bus never binds separately."""
        pf = np.asarray(pim_fc, dtype=float)
        shape = np.broadcast(pf, npu_w).shape
        return npu_w + 0 * pf, pf + 0 * npu_w, np.full(shape, -np.inf)

    def attention_move_can_help(self, p: ModeParams, pim_s, kv_bytes):
        """Moving request i changes its channel by kv_i / channel_bw - pim_i: it helps only if that is < 0."""
        return kv_bytes < pim_s * p.ch_bw_bytes_per_s
