"""Resolved inputs of a simulation: presets loaded, overrides applied, parallelism chosen, capacity checked.

The bottom of the pipeline above the specs: everything after it (workload, graph, cost, schedule, serving)
takes a :class:`Setup`, and nothing here depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InfeasibleDesign, SpecError
from .spec.loading import apply_overrides, load, load_bundled, looks_like_path, split_overrides, validate
from .spec.model import ModelSpec
from .spec.system import SystemSpec
from .spec.workload import WorkloadSpec


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


def _resolve(kind: str, ref: Any, sets) -> Any:
    if isinstance(ref, str):
        if not sets and not looks_like_path(ref):
            return load_bundled(kind, ref)  # bundled presets are read-only: parsed once per process
        return load(kind, ref, sets)
    if sets:
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
