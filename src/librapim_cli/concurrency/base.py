"""The interface every concurrency mode implements (docs/model/concurrency.md).

A concurrency mode says how NPU memory traffic and PIM compute share one DRAM channel within a stage. The
engine, the breakdown and DBO only ever call these three methods; none of them compares mode names.

Arguments are per-channel busy times in seconds (numpy-broadcastable):

- ``pim_attn``: PIM units busy with attention on this channel (banks + GWRITE/READRES);
- ``pim_fc``: PIM units busy with offloaded FC rows (the same on every channel);
- ``pim_io``: the part of the PIM work that uses the channel data bus (GWRITE + READRES), <= pim_attn + pim_fc;
- ``npu_w``: NPU weight streaming through this channel (the same on every channel);
- ``npu_kv``: NPU reads of KV cache held in this channel (attention moved to the NPU);
- ``pim_fc_ride``: the part of ``pim_fc`` that rides the rows the NPU's weight stream opens (partial batch
  offload, modes with ``rides_weight_stream``); other modes count it as ordinary PIM FC work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ModeParams:
    """Run constants a mode may need, taken from the hardware and system specs by the cost tables."""

    switch_s: float = 0.0  # one PIM <-> normal mode switch (precharge + activate), s
    quantum_s: float = 1.0  # time_interleaved: length of one slot between switches, s
    ch_bw_bytes_per_s: float = 1.0  # sustained bandwidth of NPU reads through one channel, bytes/s


class ConcurrencyMode(ABC):
    """One way of sharing a channel between NPU traffic and PIM compute."""

    #: the name presets use (``system.concurrency.mode``)
    name: str = ""
    #: one line for docs and ``--help``
    summary: str = ""
    #: the PIM can compute on the rows the NPU streams (a Bank-Split-style alternate I/O path)
    rides_weight_stream: bool = False

    @abstractmethod
    def channel_time(self, p: ModeParams, pim_attn, pim_fc, pim_io, npu_w, npu_kv, pim_fc_ride=0.0):
        """Busy time of one channel in one stage (arrays broadcast)."""

    def busiest_channel_time(self, p: ModeParams, pim_attn_max, pim_io_max, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """The slowest channel's time when no channel carries NPU KV reads (``npu_kv = 0`` everywhere).

        Only the per-channel maxima of ``pim_attn`` and ``pim_io`` are given; ``pim_fc``, ``pim_fc_io`` and
        ``npu_w`` are the same on every channel. The default evaluates ``channel_time`` at the two maxima,
        which is the per-channel maximum whenever ``channel_time`` is non-decreasing in each argument and
        is a sum or maximum of terms none of which depends on both ``pim_attn`` and ``pim_io`` (true of
        every built-in mode; the conformance suite checks it against the channel-by-channel maximum).
        """
        return self.channel_time(p, pim_attn_max, pim_fc, pim_io_max + pim_fc_io, npu_w, 0.0, pim_fc_ride)

    def affine_terms(self, p: ModeParams, pim_fc, pim_fc_io, npu_w, pim_fc_ride=0.0):
        """Optional fast path for DBO's FC search: arrays ``(F0, Fa, Fio)`` of the shared arguments such that

            busiest_channel_time(p, a, io, pim_fc, pim_fc_io, npu_w, pim_fc_ride) = max(F0, a + Fa, io + Fio)

        for every busiest-channel attention time ``a >= 0`` and data-bus time ``0 <= io <= a`` (use -inf for a
        term a mode lacks). A mode whose busiest channel is a maximum of such sums returns them, so the engine
        precomputes them once per FC curve and scores every offload size with three operations per entry; the
        default (None) makes the engine call :meth:`busiest_channel_time` instead. The conformance suite checks
        the identity."""
        return None

    def attention_move_can_help(self, p: ModeParams, pim_s: np.ndarray, kv_bytes: np.ndarray) -> np.ndarray:
        """Per request: can moving its attention to the NPU lower its channel's time (with no FC rows moved)?

        A request for which this is False is never part of an optimal offload set, so DBO leaves it out of
        its search (and skips the search when no request passes). The default keeps every request.
        """
        return np.ones(np.shape(pim_s), dtype=bool)
