"""Metric definitions (docs/metrics.md): one function from iteration results to the metrics dict."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inputs import Setup
    from .schedule.iteration import IterationResult


def iteration_metrics(its: list[IterationResult], s: Setup) -> dict[str, float]:
    """Aggregate iterations: sums of times, tokens, FLOPs, bytes and energy, then ratios of the sums."""
    hw = s.system.hardware
    T = sum(i.time_s for i in its)
    tokens = sum(i.tokens for i in its)
    npu_busy = sum(i.npu_busy_s for i in its)
    pim_busy = sum(i.pim_busy_s for i in its)
    npu_fl = sum(i.npu_flops for i in its)
    pim_fl = sum(i.pim_flops for i in its)
    energy = sum(i.energy_j for i in its)
    attn = sum(i.attn_bytes for i in its)
    attn_off = sum(i.attn_offloaded_bytes for i in its)
    rows = sum(i.fc_rows for i in its)
    rows_off = sum(i.fc_rows_offloaded for i in its)
    uses_pim = s.system.uses_pim
    n = max(len(its), 1)
    return {
        "iteration_time_s": T / n,
        "throughput_tokens_per_s": tokens / T if T > 0 else 0.0,
        "npu_utilization": npu_busy / T if T > 0 else 0.0,
        "pim_utilization": (pim_busy / T if T > 0 else 0.0) if uses_pim else 0.0,
        "npu_compute_utilization": npu_fl / (hw.npu.peak_flops * T) if T > 0 else 0.0,
        "pim_mac_utilization": (pim_fl / (hw.pim_peak_flops * T) if T > 0 and hw.pim_peak_flops > 0 else 0.0)
        if uses_pim else 0.0,
        "npu_idle_s": (T - npu_busy) / n,
        "pim_idle_s": ((T - pim_busy) / n) if uses_pim else 0.0,
        "offload_attention_share": attn_off / attn if (attn > 0 and s.system.placement.attention == "pim") else 0.0,
        "offload_fc_share": rows_off / rows if rows > 0 else 0.0,
        "energy_j_per_token": energy / tokens if tokens else 0.0,
        "area_overhead_fraction": s.system.concurrency.area_overhead_fraction if uses_pim else 0.0,
        "batch": float(s.batch),
        "devices": float(s.tp * s.pp),
    }
