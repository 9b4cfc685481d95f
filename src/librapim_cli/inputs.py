"""Resolved inputs of a simulation: presets loaded, overrides applied, parallelism chosen, capacity checked.

The bottom of the pipeline above the specs: everything after it (workload, graph, cost, schedule, serving)
takes a :class:`Setup`, and nothing here depends on them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import concurrency
from .errors import InfeasibleDesign, SpecError
from .spec.limits import MAX_BATCH, MAX_REQUESTS
from .spec.loading import apply_overrides, load, load_bundled, looks_like_path, split_overrides, validate
from .spec.model import ModelSpec
from .spec.system import SystemSpec
from .spec.trace import read_trace
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
    #: what the run will do differently from what was asked, or what has no effect (``setup_notes``)
    notes: tuple[str, ...] = ()


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
    batch_ = _count("--batch", batch, "the batch", MAX_BATCH)
    requests_ = _count("--requests", requests, "the request count", MAX_REQUESTS)
    groups = split_overrides(list(sets), ("system", "model", "workload"))
    sys_ = _resolve("system", system, groups["system"])
    mdl = _resolve("model", model, groups["model"])
    wl = _resolve("workload", workload, groups["workload"])
    tp = sys_.tp or mdl.default_tp
    pp = sys_.pp or mdl.default_pp
    b = batch_ or wl.max_batch
    asked = requests_ or wl.num_requests
    n = min(asked, trace_rows(wl) or asked)  # a trace serves at most its rows (checked here, before any work)
    if mdl.heads % tp:
        raise InfeasibleDesign(f"tp={tp} does not divide the {mdl.heads} heads of {mdl.name}; "
                               f"choose a tp that divides {mdl.heads} (--set system.tp=...)")
    if mdl.layers % pp:
        raise InfeasibleDesign(f"pp={pp} does not divide the {mdl.layers} layers of {mdl.name}; "
                               f"choose a pp that divides {mdl.layers} (--set system.pp=...)")
    cap = sys_.hardware.npu_memory.capacity_bytes  # the memory that holds the weights
    w_dev = weight_bytes_per_device(mdl, tp, pp)
    if w_dev >= cap:
        raise InfeasibleDesign(
            f"{mdl.name} needs {w_dev / 2**30:.1f} GiB of weights per device but {sys_.hardware.name} has "
            f"{cap / 2**30:.1f} GiB; raise tp/pp (--set system.tp=... system.pp=...) or use larger memory")
    s = Setup(sys_, mdl, wl, tp, pp, b, n)
    overridden = [".".join([kind, *path]) for kind, items in groups.items() for path, _ in items]
    return replace(s, notes=tuple(setup_notes(s, requests_asked=asked, overridden=overridden)))


def _count(option: str, value: Any, what: str, limit: int) -> int | None:
    """A size given to setup(): None (use the workload's) or an integer from 1 to ``limit``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{option} {value!r}: {what} must be an integer from 1 to {limit}")
    if not 1 <= value <= limit:
        raise SpecError(f"{option} {value}: {what} must be from 1 to {limit} (the limit keeps a typo from "
                        f"exhausting memory); give a value in that range")
    return int(value)


def trace_rows(w: WorkloadSpec) -> int | None:
    """Rows of the workload's trace, read and checked in full (TraceError otherwise); None without a trace."""
    if w.lengths != "trace":
        return None
    return len(read_trace(w.trace_path or ""))


def check_spec(kind: str, spec: Any) -> None:
    """The checks a command runs on one spec beyond its validation (``presets validate`` runs them too).

    A workload's trace is read and every row checked. Specs of the other kinds have none beyond their
    validators: the checks that need a model and a system together (tp/pp divide heads/layers, weights
    and KV cache fit) run in ``setup``.
    """
    if kind == "workload":
        trace_rows(spec)


# ---- notes: settings that are clamped or have no effect ------------------------------------------------
def setup_notes(s: Setup, requests_asked: int | None = None, overridden: Sequence[str] = ()) -> list[str]:
    """What the run does differently from what was asked, or settings that have no effect, one line each.

    ``requests_asked``: the request count asked for (``--requests`` or the workload's), before a trace
    capped it; ``overridden``: the dotted paths given with ``--set`` (``system.hardware.pim.clock_hz``).

    - a PIM clock set above the rate the MAC command interval allows (the new clock changes nothing; the
      bundled PIM presets give the DRAM clock, which the MAC interval always caps, so only an override is
      worth a note);
    - partial batch offload asked of a concurrency mode whose PIM cannot ride the NPU's stream;
    - sub-batch interleaving enabled under the rule scheduler but ``sub_batch_min_batch`` above the largest
      micro-batch (it never runs);
    - more requests asked than a trace has rows (the run serves the trace's rows);
    - fixed lengths trimmed by ``max_seq_len``;
    - the ``separate`` concurrency mode on hardware with one memory (the weights and the KV cache then share
      the channels the mode treats as PIM-only), or a separate xPU memory under another mode (which then
      counts a weight stream the PIM channels do not carry).
    (DBO on hardware without PIM is rejected by the system spec.)
    """
    out: list[str] = []
    hw, sys_, w = s.system.hardware, s.system, s.workload
    pim = hw.pim
    if pim is not None and sys_.uses_pim and "system.hardware.pim.clock_hz" in overridden:
        base = pim.mac_interval_power_limited_ns if pim.power_limited else pim.mac_interval_ns
        if 1e9 / pim.clock_hz < base:
            which = "mac_interval_power_limited_ns" if pim.power_limited else "mac_interval_ns"
            out.append(f"hardware.pim.clock_hz = {_hz(pim.clock_hz)} has no effect: the MAC command interval "
                       f"({which} = {base:g} ns) caps the PIM at {_hz(1e9 / base)}; lower hardware.pim.{which} "
                       "to make the PIM faster")
    if sys_.concurrency.partial_batch_offload and pim is not None and \
            not concurrency.get(sys_.concurrency.mode).rides_weight_stream:
        out.append(f"system.concurrency.partial_batch_offload has no effect: the {sys_.concurrency.mode} mode's PIM "
                   "cannot compute on the rows the NPU streams (only dex can)")
    if pim is not None and sys_.uses_pim and (sys_.concurrency.mode == "separate") != (hw.xpu_memory is not None):
        if hw.xpu_memory is None:
            out.append("system.concurrency.mode = 'separate' on hardware with one memory: the weights and the KV "
                       "cache share its channels, but the mode lets the NPU's weight stream pass them by; give the "
                       "xPU its own memory (hardware.xpu_memory) or choose another mode")
        else:
            out.append(f"hardware.xpu_memory holds the weights, but the {sys_.concurrency.mode} mode charges the "
                       "NPU's weight stream to the PIM channels too; system.concurrency.mode = 'separate' keeps them "
                       "apart")
    if sys_.sub_batch_interleaving and sys_.scheduler == "rule":
        # the rule tests the smallest micro-batch; at the full batch it is batch // pp (>= 1)
        smallest = max(s.batch // s.pp, 1)
        if smallest < sys_.sub_batch_min_batch:
            mb = f"batch {s.batch}" if s.pp == 1 else f"micro-batch {smallest} (batch {s.batch} / pp {s.pp})"
            out.append(f"sub-batch interleaving never runs: system.sub_batch_min_batch = {sys_.sub_batch_min_batch}"
                       f" is above the {mb}; lower system.sub_batch_min_batch or raise --batch to use it")
    if w.lengths == "trace" and requests_asked is not None and requests_asked > s.requests:
        out.append(f"{requests_asked} requests asked but the trace {Path(w.trace_path or '').name} has {s.requests}"
                   f" rows: the run uses its {s.requests} requests")
    if w.lengths == "fixed" and w.input_len is not None and w.output_len is not None \
            and w.input_len + w.output_len > w.max_seq_len:
        o = min(w.output_len, w.max_seq_len - 1)
        i = min(w.input_len, w.max_seq_len - o)
        out.append(f"input_len + output_len = {w.input_len + w.output_len} is above workload.max_seq_len = "
                   f"{w.max_seq_len}: each request is trimmed to {i} + {o} tokens")
    return out


def _hz(f: float) -> str:
    for scale, unit in ((1e9, "GHz"), (1e6, "MHz"), (1e3, "kHz")):
        if f >= scale:
            return f"{f / scale:.4g} {unit}"
    return f"{f:.4g} Hz"


def weight_bytes_per_device(model: ModelSpec, tp: int, pp: int) -> float:
    """Weights one device holds: layers/pp layers of 1/tp-sharded weights, plus the embedding shard."""
    return (model.layers // pp) * model.params_per_layer * model.dtype_bytes / tp \
        + model.embedding_params * model.dtype_bytes / tp


def kv_bytes_per_token_per_device(model: ModelSpec, tp: int, pp: int) -> float:
    """KV bytes one token adds on one device (KV heads replicated when tp > kv_heads)."""
    kv_shard = max(1, model.kv_heads // tp)
    return 2.0 * kv_shard * model.head_dim * model.dtype_bytes * (model.layers // pp)


def kv_capacity_bytes(s: Setup) -> float:
    """Memory left for the KV cache on one device after its weights (all of `memory` when the weights sit in a
    separate xPU memory)."""
    hw = s.system.hardware
    weights = 0.0 if hw.xpu_memory is not None else weight_bytes_per_device(s.model, s.tp, s.pp)
    return hw.memory.capacity_bytes - weights


# ---- capacity before any sampling --------------------------------------------------------------------
def min_context_tokens(s: Setup) -> int:
    """The fewest KV tokens a request in a decode batch can hold: its shortest prompt (after the max_seq_len
    trim) plus the token being decoded. A lower bound for every steady-state batch of ``s``."""
    w = s.workload
    cap = w.max_seq_len
    if w.lengths == "fixed":
        assert w.input_len is not None and w.output_len is not None
        out = min(w.output_len, cap - 1)
        shortest = min(w.input_len, cap - out)
    elif w.lengths == "dataset":
        assert w.input_stats is not None and w.output_stats is not None
        shortest = max(1, min(w.input_stats.min, cap - min(w.output_stats.max, cap - 1)))
    else:
        tr = read_trace(w.trace_path or "")
        outs = np.minimum(tr.output_len, cap - 1)
        shortest = int(np.minimum(tr.input_len, cap - outs).min())
    return int(shortest) + 1


def check_batch_fits(s: Setup) -> None:
    """InfeasibleDesign if the KV cache of a full batch cannot fit even at the shortest possible context.

    Runs before any sampling, so an impossible batch fails at once; the exact check on sampled batches
    follows in ``simulate``.
    """
    ctx = min_context_tokens(s)
    per_req = ctx * kv_bytes_per_token_per_device(s.model, s.tp, s.pp)
    cap = kv_capacity_bytes(s)
    if s.batch * per_req > cap:
        fit = int(cap // per_req)
        raise InfeasibleDesign(
            f"the KV cache of a batch of {s.batch} does not fit even at the shortest context ({ctx} tokens per "
            f"request): it needs at least {s.batch * per_req / 2**30:.1f} GiB per device but {cap / 2**30:.1f} GiB "
            f"are left after weights; lower --batch (at most {fit} fit) or raise tp/pp")
