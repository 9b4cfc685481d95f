"""The whole pipeline: presets -> specs -> cost tables -> schedule (+DBO) -> metrics, in one call."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import InfeasibleDesign
from .inputs import Setup, check_batch_fits, kv_bytes_per_token_per_device, kv_capacity_bytes, setup
from .metrics import iteration_metrics
from .metrics.finite import finite_results
from .result import SCHEMA_VERSION, SimResult
from .schedule.breakdown import op_records
from .schedule.context import schedule_for
from .schedule.engine import run_iterations
from .spec.model import ModelSpec
from .spec.system import SystemSpec
from .spec.workload import WorkloadSpec
from .workload import place_channels, steady_state_batch

Mode = Literal["serve", "iteration"]
__all__ = ["SCHEMA_VERSION", "Mode", "Setup", "SimResult", "setup", "simulate"]


@finite_results  # a NaN or infinite figure is a ModelError, never a result
def simulate(system: str | SystemSpec = "librapim", model: str | ModelSpec = "gpt3-7b",
             workload: str | WorkloadSpec = "sharegpt", *, batch: int | None = None, requests: int | None = None,
             sets: list[str] | tuple[str, ...] = (), mode: Mode = "iteration", samples: int = 8,
             keep_stages: bool = False, breakdown: bool = False, policy: str | None = None,
             progress=None) -> SimResult:
    """Simulate a system on a model and workload.

    mode='iteration': ``samples`` steady-state decode iterations at the full batch, averaged.
    mode='serve': the whole request trace through continuous batching (librapim_cli.serving), admitted by
    ``policy`` (default: the system's ``serving.admission``).
    ``keep_stages``: keep every iteration's executed stages (``SimResult.stages``).
    ``breakdown``: cost every op of the first steady-state batch as the schedule ran it (``SimResult.ops``).
    """
    s = setup(system, model, workload, batch=batch, requests=requests, sets=sets)
    if mode == "serve":
        from .serving.loop import serve

        result = serve(s, keep_stages=keep_stages, progress=progress, policy=policy)
        if breakdown:
            _attach_breakdown(result)
        return result
    check_batch_fits(s)  # before sampling: a batch that cannot fit at the shortest context fails at once
    rng = np.random.default_rng(s.workload.seed)
    batches = [steady_state_batch(s, rng) for _ in range(samples)]
    max_len = int(max(b.max() for b in batches))
    kv_need = max(float(b.sum()) for b in batches) * kv_bytes_per_token_per_device(s.model, s.tp, s.pp)
    kv_cap = kv_capacity_bytes(s)
    if kv_need > kv_cap:
        raise InfeasibleDesign(
            f"the KV cache of a batch of {s.batch} ({kv_need / 2**30:.1f} GiB per device) does not fit the "
            f"{kv_cap / 2**30:.1f} GiB left after weights; lower --batch or raise tp/pp")
    sched = schedule_for(s, s.batch, max_len)
    policy_ = s.system.placement.kv_channel_policy
    placed = [place_channels(b, sched.tables.channels, policy_, sched.tables.kv_spread) for b in batches]
    many = run_iterations(sched, batches, placed, keep_stages=keep_stages or breakdown)
    result = SimResult(s, iteration_metrics(many.totals(), len(many), s),
                       many.results(), mode="iteration", stages=many.stages if keep_stages else None)
    if breakdown:
        lens, ch = np.concatenate(batches), np.concatenate(placed)
        result.ops = op_records(sched, lens, ch, many, 0)
        result.breakdown_iteration_s = float(many.time_s[0])
    return result


def _attach_breakdown(result: SimResult) -> None:
    """Serve mode: the per-op breakdown of one steady-state batch (the first iteration mode would sample)."""
    s = result.setup
    lens = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    sched = schedule_for(s, s.batch, int(lens.max()))
    ch = place_channels(lens, sched.tables.channels, s.system.placement.kv_channel_policy, sched.tables.kv_spread)
    one = run_iterations(sched, [lens], [ch], keep_stages=True)
    result.ops = op_records(sched, lens, ch, one, 0)
    result.breakdown_iteration_s = float(one.time_s[0])
