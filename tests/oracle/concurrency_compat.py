"""Old string-dispatch channel_time over the registered modes."""

from __future__ import annotations


def channel_time(mode, pim_attn, pim_fc, pim_io, npu_w, npu_kv, switch_s=0.0, quantum_s=1.0):
    """channel_time of the named registered mode (the old string-dispatch signature)."""
    from librapim_cli import concurrency
    from librapim_cli.concurrency import ModeParams

    return concurrency.get(mode).channel_time(ModeParams(switch_s, quantum_s, 1.0), pim_attn, pim_fc, pim_io,
                                              npu_w, npu_kv)
