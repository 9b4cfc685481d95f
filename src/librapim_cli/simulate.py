"""The whole pipeline: presets -> specs -> cost tables -> schedule (+DBO) -> metrics."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .cost.pim import place_channels
from .errors import InfeasibleDesign
from .inputs import (
    Setup,
    kv_bytes_per_token_per_device,
    kv_capacity_bytes,
    make_schedule,
    setup,
    weight_bytes_per_device,
)
from .metrics import iteration_metrics
from .result import SCHEMA_VERSION, SimResult
from .schedule.batched import run_iterations
from .schedule.batched import supports as batched_supports
from .schedule.iteration import run_iteration
from .serving.lengths import make_requests
from .spec.model import ModelSpec
from .spec.system import SystemSpec
from .spec.workload import WorkloadSpec

Mode = Literal["serve", "iteration"]
__all__ = ["SCHEMA_VERSION", "Mode", "Setup", "SimResult", "kv_bytes_per_token_per_device", "kv_capacity_bytes",
           "make_schedule", "setup", "simulate", "steady_state_batch", "weight_bytes_per_device"]


def steady_state_batch(s: Setup, rng: np.random.Generator) -> np.ndarray:
    """Context lengths of a full batch in steady-state continuous batching.

    A slot holds a request picked with probability proportional to its output length (long requests
    occupy slots longer) at a uniformly random point of its decode: context = input + U * output.
    """
    reqs = make_requests(s.workload, max(s.requests, s.batch))
    w = reqs.output_len / reqs.output_len.sum()
    pick = rng.choice(len(reqs), size=s.batch, replace=True, p=w)
    u = rng.random(s.batch)
    return reqs.input_len[pick] + np.floor(u * reqs.output_len[pick]).astype(np.int64) + 1


def simulate(system: str | SystemSpec = "librapim", model: str | ModelSpec = "gpt3-7b",
             workload: str | WorkloadSpec = "sharegpt", *, batch: int | None = None, requests: int | None = None,
             sets: list[str] | tuple[str, ...] = (), mode: Mode = "iteration", samples: int = 8,
             keep_stages: bool = False, progress=None) -> SimResult:
    """Simulate a system on a model and workload.

    mode='iteration': ``samples`` steady-state decode iterations at the full batch, averaged.
    mode='serve': the whole request trace through continuous batching (librapim_cli.serving).
    """
    s = setup(system, model, workload, batch=batch, requests=requests, sets=sets)
    if mode == "serve":
        from .serving.loop import serve

        return serve(s, keep_stages=keep_stages, progress=progress)
    rng = np.random.default_rng(s.workload.seed)
    batches = [steady_state_batch(s, rng) for _ in range(samples)]
    max_len = int(max(b.max() for b in batches))
    kv_need = max(float(b.sum()) for b in batches) * kv_bytes_per_token_per_device(s.model, s.tp, s.pp)
    kv_cap = kv_capacity_bytes(s)
    if kv_need > kv_cap:
        raise InfeasibleDesign(
            f"the KV cache of a batch of {s.batch} ({kv_need / 2**30:.1f} GiB per device) does not fit the "
            f"{kv_cap / 2**30:.1f} GiB left after weights; lower --batch or raise tp/pp")
    sched = make_schedule(s, s.batch, max_len)
    channels = sched.tables.channels
    dbo_rng = np.random.default_rng(s.system.dbo.seed)
    policy = s.system.placement.kv_channel_policy
    placed = [place_channels(b, channels, policy) for b in batches]
    if batched_supports(sched, keep_stages):
        many = run_iterations(sched, batches, placed)
        its = many.results()
    else:
        its = [run_iteration(sched, b, c, dbo_rng, keep_stages=keep_stages) for b, c in zip(batches, placed, strict=True)]
    metrics = iteration_metrics(its, s)
    return SimResult(s, metrics, its, mode="iteration")
