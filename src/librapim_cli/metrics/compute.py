"""Metric values from the decode iterations' summed figures (definitions: ``metrics.registry``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..inputs import Setup

#: the per-iteration figures the metrics sum (fields of the engine's IterationBatch)
SUMMED = ("time_s", "tokens", "npu_busy_s", "pim_busy_s", "npu_flops", "pim_flops", "energy_j", "attn_bytes",
          "attn_offloaded_bytes", "fc_flops", "fc_flops_offloaded")


def iteration_metrics(totals: Mapping[str, float], n_iterations: int, s: Setup) -> dict[str, float]:
    """The iteration metrics (registry scope 'iteration') of ``n_iterations`` decode iterations whose summed
    figures are ``totals`` (ratios of sums, never means of ratios)."""
    hw = s.system.hardware
    T = totals["time_s"]
    tokens = totals["tokens"]
    npu_busy, pim_busy = totals["npu_busy_s"], totals["pim_busy_s"]
    attn, attn_off = totals["attn_bytes"], totals["attn_offloaded_bytes"]
    fc, fc_off = totals["fc_flops"], totals["fc_flops_offloaded"]
    uses_pim = s.system.uses_pim
    n = max(n_iterations, 1)
    pos = T > 0
    return {
        "iteration_time_s": T / n,
        "throughput_tokens_per_s": tokens / T if pos else 0.0,
        "npu_utilization": npu_busy / T if pos else 0.0,
        "pim_utilization": (pim_busy / T if pos else 0.0) if uses_pim else 0.0,
        "npu_compute_utilization": totals["npu_flops"] / (hw.npu.peak_flops * T) if pos else 0.0,
        "pim_mac_utilization": (totals["pim_flops"] / (hw.pim_peak_flops * T)
                                if pos and hw.pim_peak_flops > 0 else 0.0) if uses_pim else 0.0,
        "npu_idle_s": (T - npu_busy) / n,
        "pim_idle_s": ((T - pim_busy) / n) if uses_pim else 0.0,
        "offload_attention_share": attn_off / attn if (attn > 0 and s.system.placement.attention == "pim") else 0.0,
        "offload_fc_share": fc_off / fc if fc > 0 else 0.0,
        "energy_j_per_token": totals["energy_j"] / tokens if tokens else 0.0,
        "area_overhead_fraction": s.system.concurrency.area_overhead_fraction if uses_pim else 0.0,
        "batch": float(s.batch),
        "devices": float(s.tp * s.pp),
    }
