"""``dex``: LibraPIM's Dual-Path Execution as this project models it (an inference; docs/model/concurrency.md).

Each bank is two sections with their own paths; the KV cache lives in one section, the weights in the other.
PIM attention (KV section) and NPU weight streaming (weight section) run concurrently, as with a dual row
buffer; work DBO moves across devices lands in the other device's section and serializes with it there.
"""

from __future__ import annotations

import numpy as np

from .base import ConcurrencyMode, ModeParams


class DEX(ConcurrencyMode):
    name = "dex"
    summary = "split banks: KV and weight sections concurrent; moved work serializes in its section"
    rides_weight_stream = True

    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """max(KV section pim_attn + npu_kv, weight section, PIM units pim_attn + pim_fc, data bus).

        Weight section: pim_fc + npu_w, except that FC work riding the NPU's weight stream (partial batch
        offload) proceeds with it: max(npu_w, pim_fc_ride) + (pim_fc - pim_fc_ride)."""
        weight = np.maximum(npu_w, pim_fc_ride) + (pim_fc - pim_fc_ride)
        return np.maximum(np.maximum(pim_attn + npu_kv, weight),
                          np.maximum(pim_attn + pim_fc, npu_w + npu_kv + pim_io))

    def busiest_channel_time(self, p: ModeParams, pim_attn_max, pim_io_max, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """:meth:`channel_time` at the two maxima with no NPU KV reads, without its additions of zero (the same
        values, fewer array operations: the engine calls it on every stage instance)."""
        weight = np.maximum(npu_w, pim_fc_ride) + (pim_fc - pim_fc_ride)
        return np.maximum(np.maximum(pim_attn_max, weight),
                          np.maximum(pim_attn_max + pim_fc, npu_w + (pim_io_max + pim_fc_io)))

    def affine_terms(self, p: ModeParams, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """With no NPU KV reads: max(weight section, a + pim_fc (>= a), io + npu_w + pim_fc_io)."""
        weight = np.maximum(npu_w, pim_fc_ride) + (pim_fc - pim_fc_ride)
        return weight, np.asarray(pim_fc, dtype=float), npu_w + pim_fc_io

    def attention_move_can_help(self, p: ModeParams, pim_s, kv_bytes):
        """With no FC rows moved, a request the NPU reads through its channel no faster than the PIM processes
        it only raises the KV-section term (kv_i / channel_bw - pim_i >= 0) and the data bus (kv_i / bw -
        io_i >= that), so it cannot lower its channel."""
        return kv_bytes < pim_s * p.ch_bw_bytes_per_s
