"""The whole pipeline: presets -> specs -> cost tables -> schedule (+DBO) -> metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .cost.pim import place_channels
from .cost.tables import CostTables, build_tables
from .errors import InfeasibleDesign, SpecError
from .metrics import iteration_metrics
from .schedule.iteration import IterationResult, Schedule, run_iteration
from .serving.lengths import make_requests
from .spec.loading import load, split_overrides
from .spec.model import ModelSpec
from .spec.system import SystemSpec
from .spec.workload import WorkloadSpec

SCHEMA_VERSION = 1
Mode = Literal["serve", "iteration"]


@dataclass(frozen=True)
class Setup:
    """Resolved inputs of one simulation."""

    system: SystemSpec
    model: ModelSpec
    workload: WorkloadSpec
    tp: int
    pp: int
    batch: int
    requests: int


@dataclass
class SimResult:
    """What a simulation produced: the resolved inputs, metrics, and the details behind them."""

    setup: Setup
    metrics: dict[str, float]
    iterations: list[IterationResult] = field(default_factory=list)
    latency: dict[str, dict[str, float]] | None = None
    per_iteration: dict[str, np.ndarray] | None = None
    mode: str = "iteration"

    @property
    def inputs(self) -> dict[str, Any]:
        """The resolved specs as plain data."""
        s = self.setup
        return {
            "system": s.system.model_dump(mode="json"),
            "model": s.model.model_dump(mode="json"),
            "workload": s.workload.model_dump(mode="json"),
            "tp": s.tp, "pp": s.pp, "batch": s.batch, "requests": s.requests, "mode": self.mode,
        }


def _resolve(kind: str, ref: Any, sets) -> Any:
    if isinstance(ref, str):
        return load(kind, ref, sets)
    if sets:
        from .spec.loading import apply_overrides, validate

        return validate(kind, apply_overrides(kind, ref.model_dump(), sets), ref.name)
    return ref


def setup(system: str | SystemSpec = "librapim", model: str | ModelSpec = "gpt3-7b",
          workload: str | WorkloadSpec = "sharegpt", *, batch: int | None = None, requests: int | None = None,
          sets: list[str] | tuple[str, ...] = ()) -> Setup:
    """Load, override and cross-check the inputs; raise InputError subclasses on anything impossible."""
    groups = split_overrides(list(sets), ("system", "model", "workload"))
    sys_ = _resolve("system", system, groups["system"])
    mdl = _resolve("model", model, groups["model"])
    wl = _resolve("workload", workload, groups["workload"])
    tp = sys_.tp or mdl.default_tp
    pp = sys_.pp or mdl.default_pp
    if batch is not None and batch < 1:
        raise SpecError(f"--batch {batch}: the batch must be >= 1")
    if requests is not None and requests < 1:
        raise SpecError(f"--requests {requests}: the request count must be >= 1")
    b = batch or wl.max_batch
    n = requests or wl.num_requests
    if mdl.heads % tp:
        raise InfeasibleDesign(f"tp={tp} does not divide the {mdl.heads} heads of {mdl.name}; "
                               f"choose a tp that divides {mdl.heads} (--set system.tp=...)")
    if mdl.layers % pp:
        raise InfeasibleDesign(f"pp={pp} does not divide the {mdl.layers} layers of {mdl.name}; "
                               f"choose a pp that divides {mdl.layers} (--set system.pp=...)")
    cap = sys_.hardware.memory.capacity_bytes
    w_dev = weight_bytes_per_device(mdl, tp, pp)
    if w_dev >= cap:
        raise InfeasibleDesign(
            f"{mdl.name} needs {w_dev / 2**30:.1f} GiB of weights per device but {sys_.hardware.name} has "
            f"{cap / 2**30:.1f} GiB; raise tp/pp (--set system.tp=... system.pp=...) or use larger memory")
    return Setup(sys_, mdl, wl, tp, pp, b, n)


def weight_bytes_per_device(model: ModelSpec, tp: int, pp: int) -> float:
    """Weights one device holds: layers/pp layers of 1/tp-sharded weights, plus the embedding shard."""
    return (model.layers // pp) * model.params_per_layer * model.dtype_bytes / tp \
        + model.embedding_params * model.dtype_bytes / tp


def kv_bytes_per_token_per_device(model: ModelSpec, tp: int, pp: int) -> float:
    """KV bytes one token adds on one device (KV heads replicated when tp > kv_heads)."""
    kv_shard = max(1, model.kv_heads // tp)
    return 2.0 * kv_shard * model.head_dim * model.dtype_bytes * (model.layers // pp)


def kv_capacity_bytes(s: Setup) -> float:
    """Memory left for the KV cache on one device after its weights."""
    return s.system.hardware.memory.capacity_bytes - weight_bytes_per_device(s.model, s.tp, s.pp)


def make_schedule(s: Setup, max_rows: int, max_len: int) -> Schedule:
    """Cost tables and schedule constants for this setup."""
    t: CostTables = build_tables(s.model, s.system, s.tp, max_rows, max_len)
    link = s.system.link
    row_bytes = s.model.d_model * s.model.dtype_bytes
    return Schedule(t, s.system, s.tp, s.pp, s.model.layers // s.pp, row_bytes / link.bw_bytes_per_s, link.latency_s)


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
    its = [run_iteration(sched, b, place_channels(b, channels, policy), dbo_rng, keep_stages=keep_stages)
           for b in batches]
    metrics = iteration_metrics(its, s)
    return SimResult(s, metrics, its, mode="iteration")
