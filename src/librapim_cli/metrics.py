"""Metric definitions (docs/metrics.md): one function from iteration results to the metrics dict."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inputs import Setup
    from .schedule.iteration import IterationResult


SUMMED = ("time_s", "tokens", "npu_busy_s", "pim_busy_s", "npu_flops", "pim_flops", "energy_j", "attn_bytes",
          "attn_offloaded_bytes", "fc_rows", "fc_rows_offloaded")


def iteration_metrics(its: list[IterationResult], s: Setup) -> dict[str, float]:
    """Aggregate iterations: sums of times, tokens, FLOPs, bytes and energy, then ratios of the sums."""
    # IterationResult is a named tuple: transpose once, then sum each column in iteration order
    cols = dict(zip(its[0]._fields, zip(*its, strict=True), strict=True)) if its else {}
    return metrics_from_totals({f: sum(cols[f]) if cols else 0 for f in SUMMED}, len(its), s)


def metrics_from_totals(totals: dict[str, float], n_iterations: int, s: Setup) -> dict[str, float]:
    """The metrics of ``n_iterations`` iterations whose SUMMED fields add up to ``totals``."""
    hw = s.system.hardware

    def total(name: str) -> float:
        return totals[name]

    T = total("time_s")
    tokens = total("tokens")
    npu_busy = total("npu_busy_s")
    pim_busy = total("pim_busy_s")
    npu_fl = total("npu_flops")
    pim_fl = total("pim_flops")
    energy = total("energy_j")
    attn = total("attn_bytes")
    attn_off = total("attn_offloaded_bytes")
    rows = total("fc_rows")
    rows_off = total("fc_rows_offloaded")
    uses_pim = s.system.uses_pim
    n = max(n_iterations, 1)
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
