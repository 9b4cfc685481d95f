"""Chrome trace (Trace Event Format, JSON) of a simulation's timeline; opens in Perfetto or chrome://tracing.

Process "system" with threads "steps" (one event per decode iteration or prefill step, its wall time),
"NPU" and "PIM". With stages kept (``keep_stages=True``) each decode iteration becomes one event per
schedule stage on each unit: the stage spans repeats x stage time; the NPU event lasts repeats x NPU busy
time and the PIM event repeats x the slowest channel's busy time. Without stages, one event per iteration
per unit with its busy time (PIM: mean over channels). Prefill steps appear on the NPU. Times in µs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import write_text_atomically
from .timeline import step_table

if TYPE_CHECKING:
    from ..simulate import SimResult

PID = 1
TID_STEPS, TID_NPU, TID_PIM = 1, 2, 3
US = 1e6


def _event(name: str, cat: str, tid: int, start_s: float, dur_s: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "cat": cat, "ph": "X", "pid": PID, "tid": tid, "ts": round(start_s * US, 3),
            "dur": round(dur_s * US, 3), "args": args}


def _meta(name: str, tid: int | None, value: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"name": name, "ph": "M", "pid": PID, "args": {"name": value}}
    if tid is not None:
        ev["tid"] = tid
    return ev


def trace_events(result: SimResult) -> list[dict[str, Any]]:
    """The trace's events: metadata first, then per step its span, NPU and PIM events, in time order."""
    t = step_table(result)
    events = [_meta("process_name", None, "system"), _meta("thread_name", TID_STEPS, "steps"),
              _meta("thread_name", TID_NPU, "NPU"), _meta("thread_name", TID_PIM, "PIM")]
    for i, tid in enumerate((TID_STEPS, TID_NPU, TID_PIM)):
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": i}})
    n_its = len(result.iterations)
    kinds, starts, times = t["kind"].tolist(), t["start_s"].tolist(), t["time_s"].tolist()
    batch, npu, pim = t["batch"].tolist(), t["npu_busy_s"].tolist(), t["pim_busy_s"].tolist()
    d = 0  # index of the next decode iteration in result.iterations
    pipelined = result.setup.pp > 1  # stage names carry their pipeline micro-batch
    for i, kind in enumerate(kinds):
        start, args = starts[i], {"step": i, "batch": batch[i]}
        if kind == "prefill":
            events.append(_event(f"prefill x{batch[i]}", "prefill", TID_STEPS, start, times[i], args))
            events.append(_event("prefill", "prefill", TID_NPU, start, npu[i], args))
            continue
        events.append(_event(f"decode #{d} (batch {batch[i]})", "decode", TID_STEPS, start, times[i], args))
        stages = result.stages.rows(d) if result.stages is not None and d < n_its else None
        d += 1
        if stages is None or not len(stages):
            events.append(_event("decode", "decode", TID_NPU, start, npu[i], args))
            if pim[i] > 0:
                events.append(_event("decode", "decode", TID_PIM, start, pim[i], args))
            continue
        s0 = start
        for j in range(len(stages)):
            reps, name, mb = int(stages.repeats[j]), str(stages.name[j]), int(stages.micro_batch[j])
            npu_s, pim_s = float(stages.npu_s[j]), float(stages.pim_max_s[j])
            sargs = {**args, "stage": name, "repeats": reps, "micro_batch": mb}
            label = f"mb{mb} {name}" if pipelined else name
            if npu_s > 0:
                events.append(_event(f"{label} {stages.npu_work[j]}", "stage", TID_NPU, s0, reps * npu_s, sargs))
            if pim_s > 0:
                events.append(_event(f"{label} {stages.pim_work[j]}", "stage", TID_PIM, s0, reps * pim_s,
                                     {**sargs, "pim_mean_s": float(stages.pim_mean_s[j])}))
            s0 += reps * float(stages.time_s[j])
    return events


def write_chrome_trace(result: SimResult, path: str | Path) -> None:
    """Write ``{"traceEvents": [...], "displayTimeUnit": "ms"}`` to ``path`` atomically."""
    doc = {"traceEvents": trace_events(result), "displayTimeUnit": "ms"}
    write_text_atomically(path, json.dumps(doc, separators=(",", ":"), allow_nan=False))
