"""``blocked``: one row buffer per bank; PIM compute and normal accesses block each other, so everything on a
channel serializes (NeuPIMs' ``npu+pim`` branch, Newton- and AiM-style controllers; docs/sources.md#s2.1, #s4.2)."""

from __future__ import annotations

import numpy as np

from .base import ConcurrencyMode, ModeParams


class Blocked(ConcurrencyMode):
    name = "blocked"
    summary = "single row buffer: PIM + NPU serialize on every channel"

    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """pim_attn + pim_fc + npu_w + npu_kv."""
        return (pim_attn + pim_fc) + (npu_w + npu_kv)

    def affine_terms(self, p: ModeParams, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """With no NPU KV reads: a + (pim_fc + npu_w); the data bus never binds separately."""
        fa = pim_fc + npu_w
        return np.full(np.shape(fa), -np.inf), fa, np.full(np.shape(fa), -np.inf)

    def attention_move_can_help(self, p: ModeParams, pim_s, kv_bytes):
        """Moving request i changes its channel by kv_i / channel_bw - pim_i: it helps only if that is < 0."""
        return kv_bytes < pim_s * p.ch_bw_bytes_per_s
