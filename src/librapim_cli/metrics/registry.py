"""The metric registry: every metric's key, unit, label, formatter, formula and definition, in one table.

Every consumer reads it: the metric computations (``metrics.compute``, ``serving``) produce exactly these
keys, the console labels and formats them, plots label axes with them, sweeps accept them as objectives and
constraints, and ``docs/metrics.md`` is generated from it (``python -m librapim_cli.metrics.docgen``; a
test keeps the page in step). To add a metric: add a :class:`MetricDef` here and compute it where its
``scope`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..units import fmt_si, fmt_time

Scope = Literal["iteration", "serve"]
Format = Literal["time", "pct", "rate", "energy", "count", "number"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric."""

    key: str
    unit: str  # SI unit or count noun, as docs/metrics.md prints it
    label: str  # human label (console, plots)
    fmt: Format  # how to print a value
    formula: str  # markdown formula
    definition: str  # markdown definition
    scope: Scope = "iteration"  # 'iteration': both modes (decode iterations); 'serve': serve mode only
    overrides: bool = False  # a serve metric that replaces the iteration value of the same key

    @property
    def anchor(self) -> str:
        """Anchor of its row in docs/metrics.md."""
        return f"metric-{self.key}"

    def format(self, value: float) -> str:
        """Human text of a value, with its unit."""
        return format_value(self.fmt, value, self.unit)


def fmt_pct(x: float) -> str:
    """A fraction as a percentage (``0.123`` -> ``12.3 %``)."""
    return f"{100.0 * x:.3g} %" if math.isfinite(x) else str(x)


def format_value(fmt: Format, value: float, unit: str = "") -> str:
    """Human text of ``value`` in the given format."""
    v = float(value)
    if fmt == "time":
        return fmt_time(v)
    if fmt == "pct":
        return fmt_pct(v)
    if fmt == "rate":
        return f"{fmt_si(v)} {unit}".strip()
    if fmt == "energy":
        return fmt_si(v, "J")
    if fmt == "count":
        return f"{v:.0f}"
    return f"{v:.4g}"


_I = "iteration"
_S = "serve"

METRICS: tuple[MetricDef, ...] = (
    MetricDef("iteration_time_s", "s", "Iteration time (mean)", "time", "`T / N`",
              "Mean time of one decode iteration: all stages of all pp micro-batches, the LM heads and the pipeline "
              "hand-offs."),
    MetricDef("throughput_tokens_per_s", "tokens/s", "Throughput", "rate", "`tokens / T` (iteration mode)",
              "Whole-system decode throughput. Serve mode overrides it (below)."),
    MetricDef("npu_utilization", "1", "NPU busy", "pct", "`Σ npu_busy / T`",
              "**Busy-time** utilization of the NPU: the fraction of time in which at least one NPU engine is busy "
              "(systolic array, vector units or its weight/KV stream), or it is in an all-reduce. All-reduce time "
              "counts as busy. A memory-bound NPU is \"busy\" by this definition."),
    MetricDef("pim_utilization", "1", "PIM busy (mean channel)", "pct", "`Σ pim_busy / T`",
              "**Busy-time** utilization of the PIM: mean channel busy time over iteration time. Every channel's "
              "time counts, the idle ones included. GWRITE/READRES count as busy. 0 if the system uses no PIM "
              "(`uses_pim` false)."),
    MetricDef("npu_compute_utilization", "1", "NPU compute utilization (of peak FLOP/s)", "pct",
              "`Σ npu_flops / (peak_flops · T)`",
              "**Compute** utilization: systolic-array FLOPs (FC GEMMs and LM head) over the arrays' peak. "
              "Vector-unit FLOPs (norms, softmax, NPU attention) are **not** in the numerator."),
    MetricDef("pim_mac_utilization", "1", "PIM MAC utilization (of peak FLOP/s)", "pct",
              "`Σ pim_flops / (pim_peak_flops · T)`",
              "Compute utilization of the PIM MAC lanes (attention + offloaded FC FLOPs over "
              "`pim_units · lanes · 2 / t_mac`). 0 without PIM."),
    MetricDef("npu_idle_s", "s", "NPU idle per iteration", "time", "`(T − Σ npu_busy) / N`",
              "Mean NPU idle time per iteration."),
    MetricDef("pim_idle_s", "s", "PIM idle per iteration", "time", "`(T − Σ pim_busy) / N`",
              "Mean PIM idle time per iteration (mean over channels). 0 without PIM."),
    MetricDef("offload_attention_share", "1", "Attention moved PIM -> NPU (DBO)", "pct",
              "`Σ attn_offloaded_bytes / Σ attn_bytes`",
              "Share of the attention KV bytes whose attention DBO moved from PIM to the NPU. It is 0 when "
              "`placement.attention = \"npu\"`: attention placed on the NPU is not an offload."),
    MetricDef("offload_fc_share", "1", "FC work moved NPU -> PIM (DBO)", "pct",
              "`Σ fc_flops_offloaded / Σ fc_flops`",
              "Share of the FC FLOPs DBO moved to the PIM, as token rows or output-column tiles. Only the "
              "**DBO-balanced** stages (C, D or Q, R) and the LM heads count. It is 0 when `placement.fc = \"pim\"`: "
              "FC work placed on the PIM is not an offload."),
    MetricDef("energy_j_per_token", "J/token", "Energy per token", "energy", "`Σ energy_j / tokens`",
              "Whole-system **decode** energy per generated token: dynamic energy only, all tp·pp devices. Prefill "
              "is excluded (see `prefill_energy_j`). See [model/energy.md](model/energy.md)."),
    MetricDef("area_overhead_fraction", "1", "DRAM area overhead", "pct",
              "`system.concurrency.area_overhead_fraction`",
              "DRAM area added by the concurrency mode (DEX 0.00032, dual row buffer 0.5, …). 0 if the system uses "
              "no PIM. See [model/concurrency.md](model/concurrency.md#area-overhead-per-mode)."),
    MetricDef("batch", "requests", "Batch (serve: the maximum)", "count", "`setup.batch`",
              "The batch: the full batch in iteration mode; the maximum batch (admission limit) in serve mode."),
    MetricDef("devices", "devices", "Devices (tp x pp)", "count", "`tp · pp`", "Devices in the system."),
    # ---- serve mode
    MetricDef("throughput_tokens_per_s", "tokens/s", "Throughput", "rate", "`output_tokens / total_time_s`",
              "**Overrides** the iteration value: all output tokens, including the first token produced by "
              "prefill, over the whole wall time (prefill and idle included).", _S, overrides=True),
    MetricDef("iterations", "iterations", "Decode iterations", "count", "count", "Decode iterations run.", _S),
    MetricDef("prefill_steps", "steps", "Prefill steps", "count", "count",
              "Prefill steps run (one per admission event, recomputations of preempted requests included).", _S),
    MetricDef("preemptions", "requests", "Preemptions (recompute)", "count", "count",
              "Requests the admission policy preempted to free KV blocks (0 under `reserve`); each is prefilled "
              "again over its prompt and the tokens it had generated.", _S),
    MetricDef("peak_batch", "requests", "Peak batch", "count", "`max` over decode steps of the batch",
              "Largest number of requests decoded together.", _S),
    MetricDef("mean_batch", "requests", "Mean batch", "number", "mean over decode steps of the batch",
              "Mean batch per decode iteration (unweighted by time).", _S),
    MetricDef("peak_kv_occupancy", "1", "Peak KV-cache occupancy", "pct",
              "`max KV tokens held · KV bytes per token / KV capacity`",
              "Peak fraction of the KV capacity (capacity − weights, per device) held by admitted requests: "
              "reserved input + output tokens under `reserve`, allocated blocks under `paged`.", _S),
    MetricDef("prefill_time_s", "s", "Prefill time (total)", "time", "`Σ` prefill step times",
              "Wall time spent in prefill.", _S),
    MetricDef("prefill_energy_j", "J", "Prefill energy (total)", "energy", "`Σ` prefill step energies",
              "Whole-system prefill energy. It is not in `energy_j_per_token`.", _S),
    MetricDef("idle_time_s", "s", "Idle time (waiting for arrivals)", "time", "`Σ` clock jumps",
              "Time with nothing to run (waiting for arrivals).", _S),
    MetricDef("total_time_s", "s", "Wall time", "time", "end of the last step", "Wall time of the whole run.", _S),
    MetricDef("requests_finished", "requests", "Requests finished", "count", "count",
              "Requests with a finish time. It equals the request count when the run completes.", _S),
    MetricDef("output_tokens", "tokens", "Output tokens", "count", "`Σ output_len`",
              "Output tokens of all requests.", _S),
)

#: serve-mode latency statistics: SimResult.latency[name][stat]; sweeps and flat exports use latency.<name>.<stat>
LATENCIES: tuple[tuple[str, str, str], ...] = (
    ("ttft_s", "Time to first token",
     "time to first token = end of the request's (first) prefill − arrival (queueing included); over all requests"),
    ("tpot_s", "Time per output token",
     "time per output token = (finish − first token) / (output_len − 1); over requests with output_len > 1"),
    ("e2e_s", "End-to-end", "end-to-end latency = finish − arrival; over all requests"),
)
LATENCY_STATS = ("p50", "p90", "p99", "mean")


def keys(scope: Scope) -> tuple[str, ...]:
    """Metric keys a simulation of this mode returns, in display order."""
    out: list[str] = []
    for m in METRICS:
        if (m.scope == "iteration" or scope == "serve") and m.key not in out:
            out.append(m.key)
    return tuple(out)


def get(key: str, scope: Scope = "serve") -> MetricDef | None:
    """The definition of ``key`` (the serve-mode override where one exists and ``scope`` is serve)."""
    found = None
    for m in METRICS:
        if m.key == key and (m.scope == "iteration" or scope == "serve"):
            found = m
    return found


def latency_keys() -> tuple[str, ...]:
    """Flat names of the latency statistics (``latency.ttft_s.p50`` ...)."""
    return tuple(f"latency.{name}.{st}" for name, _, _ in LATENCIES for st in LATENCY_STATS)


def label(key: str) -> str:
    """Human label of a metric key (latency keys included)."""
    m = get(key)
    if m is not None:
        return m.label
    if key.startswith("latency."):
        parts = key.split(".")
        names = {n: lab for n, lab, _ in LATENCIES}
        if len(parts) == 3 and parts[1] in names:
            return f"{names[parts[1]]} ({parts[2]})"
    return key.replace("_", " ")


def format_metric(key: str, value: float | None) -> str:
    """Human text of one metric value (registry formatter; latency keys as times; others by key suffix)."""
    if value is None:
        return "-"
    m = get(key)
    if m is not None:
        return m.format(value)
    if key.startswith("latency."):
        return fmt_time(float(value))
    if key.endswith(("_utilization", "_share", "_fraction")):
        return fmt_pct(float(value))
    if key.endswith("_s"):
        return fmt_time(float(value))
    return f"{float(value):.6g}"
