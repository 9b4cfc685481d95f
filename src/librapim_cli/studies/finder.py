"""The regime finder: search the map's axes (and beyond its grid) for where a target holds.

Given a target such as ``librapim/neupims>=2.1`` (a throughput ratio of two system presets on the same
device) or ``librapim.npu_compute_utilization>=0.77`` (one system's metric), :func:`find_regime` builds a
sweep spec (sweep/spec.py) whose objective is that quantity and whose constraint is the target, runs it
on the sweep engine (Optuna; any storage, several workers, resumable, as ``librapim sweep``), and reports
the region it found: for every parameter the bounds of the trials that meet the target, the share of
trials that meet it per value, and the share overall.

The share is of the *sampled* trials: TPE concentrates its samples where the quantity is high, so its
share overstates the region's size in the whole space; ``--sampler random`` gives an unbiased estimate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..spec.loading import load_system
from .reproduction import AXES, CONTEXTS

#: short names accepted in a target for the map's systems
ALIASES = {"naive": "npu-pim-blocked", "npu": "npu-only", "gemv": "pim-gemv"}
_TARGET = re.compile(r"^\s*([A-Za-z0-9_.+\-/]+?)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(x|%)?\s*$")
_METRIC = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Target:
    """A parsed --target."""

    system: str
    baseline: str | None  # None: a metric of ``system``
    metric: str  # 'speedup' or a simulate metric
    op: str  # '>=' or '<='
    value: float
    text: str

    @property
    def quantity(self) -> str:
        return f"{self.system}/{self.baseline}" if self.baseline else f"{self.system}.{self.metric}"


def parse_target(text: str) -> Target:
    """``SYSTEM/BASELINE>=X`` (throughput ratio) or ``SYSTEM.METRIC>=X`` (or ``<=``); X may end in x or %."""
    m = _TARGET.match(text or "")
    if not m:
        raise InputError(f"--target '{text}': write SYSTEM/BASELINE>=RATIO (e.g. librapim/neupims>=2.1) or "
                         f"SYSTEM.METRIC>=VALUE (e.g. librapim.npu_compute_utilization>=0.77); <= works too")
    lhs, op, num, unit = m.groups()
    value = float(num) / (100.0 if unit == "%" else 1.0)
    if "/" in lhs:
        a, _, b = lhs.partition("/")
        a, b = ALIASES.get(a, a), ALIASES.get(b, b)
        for name in (a, b):
            load_system(name)  # PresetNotFound (exit 2) for an unknown system
        if a == b:
            raise InputError(f"--target '{text}': the system and the baseline are the same preset")
        return Target(a, b, "speedup", op, value, text.strip())
    sys_name, dot, metric = lhs.rpartition(".")
    if not dot or not _METRIC.match(metric):
        raise InputError(f"--target '{text}': name a ratio SYSTEM/BASELINE or a metric SYSTEM.METRIC")
    sys_name = ALIASES.get(sys_name, sys_name)
    load_system(sys_name)
    from ..metrics import registry

    if metric not in registry.keys("iteration"):
        raise InputError(f"--target '{text}': unknown metric '{metric}' (see docs/metrics.md)")
    return Target(sys_name, None, metric, op, value, text.strip())


@dataclass(frozen=True)
class Space:
    """The ranges searched (defaults: the regime map's axes; the batch as an integer range, not only powers
    of two)."""

    models: tuple[str, ...] = AXES.models
    workloads: tuple[str, ...] = AXES.workloads
    batch_min: int = 1
    batch_max: int = 512
    npu_arrays: tuple[int, ...] = AXES.npu_arrays
    registers: tuple[int, ...] = AXES.registers


def sweep_dict(target: Target, space: Space, trials: int) -> dict[str, Any]:
    """The sweep spec (as data) of a search."""
    from .reproduction import _row_bytes

    if space.batch_min > space.batch_max:
        raise InputError(f"--batch-min {space.batch_min} is above --batch-max {space.batch_max}")
    params: list[dict[str, Any]] = [
        {"path": "batch", "type": "int", "low": space.batch_min, "high": space.batch_max,
         "log": space.batch_min >= 1},
        {"path": "model", "type": "choice", "values": list(space.models)},
        {"path": "workload", "type": "choice", "values": list(space.workloads)},
        {"path": "hardware.npu.systolic_arrays", "type": "choice", "values": list(space.npu_arrays)},
        {"path": "hardware.pim.input_registers", "type": "choice", "values": list(space.registers)},
    ]
    row = _row_bytes()
    direction = "maximize" if target.op == ">=" else "minimize"
    bound = {"min": target.value} if target.op == ">=" else {"max": target.value}
    slug = re.sub(r"[^a-z0-9]+", "-", target.text.lower()).strip("-")
    spec: dict[str, Any] = {
        "name": f"regime-{slug}"[:200],
        "source": "librapim regime: the regime map's axes (docs/reproduction.md); registers with a global buffer "
                  "of as many rows (docs/model/overview.md P9)",
        "system": target.system, "model": space.models[0], "workload": space.workloads[0],
        "mode": "iteration", "trials": trials,
        "parameters": params,
        "objectives": [{"metric": target.metric, "direction": direction}],
        "constraints": [{"metric": target.metric, **bound}],
        "derive": [{"parameter": "hardware.pim.input_registers",
                    "description": "a global buffer of R rows, so that R input vectors per open row are usable "
                                   "(docs/model/overview.md P9)",
                    "sets": {str(r): {"hardware.pim.global_buffer_bytes": r * row} for r in space.registers}}],
    }
    if target.baseline:
        spec["baseline"] = target.baseline
        spec["baseline_same_hardware"] = True
    return spec


@dataclass
class ParamRegion:
    """One parameter's part of the region."""

    path: str
    searched: str  # the range searched
    bounds: str  # the bounds of the trials that meet the target ('-' if none)
    shares: list[tuple[Any, int, int]] = field(default_factory=list)  # (value, meeting, ran) for choices


@dataclass
class Region:
    """What a search found."""

    target: Target
    trials: int  # finished trials (COMPLETE + PRUNED)
    ran: int  # trials whose configuration fits
    feasible: int  # trials that meet the target
    params: list[ParamRegion]
    best: dict[str, Any] | None  # the best trial's params and value
    study: str
    storage: str
    sampler: str
    interrupted: bool = False
    exit_code: int = 0

    @property
    def share(self) -> float:
        """Trials meeting the target over the trials that ran."""
        return self.feasible / self.ran if self.ran else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.text, "quantity": self.target.quantity, "trials": self.trials,
                "ran": self.ran, "meeting": self.feasible, "share": self.share, "sampler": self.sampler,
                "study": self.study, "storage": self.storage, "best": self.best,
                "parameters": [{"path": p.path, "searched": p.searched, "bounds": p.bounds,
                                "shares": [{"value": v, "meeting": k, "ran": n} for v, k, n in p.shares]}
                               for p in self.params]}


def _fmt(v: Any) -> str:
    return CONTEXTS.get(v, str(v)) if isinstance(v, str) else str(v)


def region_of(rows: Sequence[dict[str, Any]], spec: dict[str, Any], target: Target) -> tuple[list[ParamRegion], dict | None]:
    """Bounds and per-value shares of the trials that meet the target (rows: sweep.results.study_rows)."""
    ran = [r for r in rows if r["state"] == "COMPLETE"]
    ok = [r for r in ran if r["feasible"]]
    out = []
    for p in spec["parameters"]:
        path = p["path"]
        if p["type"] == "int":
            searched = f"{p['low']}-{p['high']}"
            vals = sorted(r["params"][path] for r in ok if path in r["params"])
            bounds = f"{vals[0]}-{vals[-1]}" if vals else "-"
            pr = ParamRegion(path, searched, bounds)
            edges = [p["low"]]
            while edges[-1] * 2 <= p["high"]:
                edges.append(edges[-1] * 2)
            for lo in edges:  # shares per power-of-two bucket [lo, 2 lo)
                n = sum(1 for r in ran if lo <= r["params"].get(path, -1) < 2 * lo)
                k = sum(1 for r in ok if lo <= r["params"].get(path, -1) < 2 * lo)
                if n:
                    pr.shares.append((f"{lo}-{2 * lo - 1}" if 2 * lo - 1 > lo else str(lo), k, n))
        else:
            searched = ", ".join(_fmt(v) for v in p["values"])
            vals = [v for v in p["values"] if any(r["params"].get(path) == v for r in ok)]
            pr = ParamRegion(path, searched, ", ".join(_fmt(v) for v in vals) if vals else "-")
            for v in p["values"]:
                n = sum(1 for r in ran if r["params"].get(path) == v)
                k = sum(1 for r in ok if r["params"].get(path) == v)
                pr.shares.append((v, k, n))
        out.append(pr)
    best = None
    if ran:
        sign = 1 if target.op == ">=" else -1
        b = max((r for r in ran if r["values"]), key=lambda r: sign * r["values"][0], default=None)
        if b is not None:
            best = {"value": b["values"][0], "params": b["params"], "number": b["number"]}
    return out, best


def find_regime(target: Target, *, space: Space = Space(), trials: int = 100, sampler: str = "tpe",
                seed: int | None = 0, storage: str | None = None, study: str | None = None, workers: int = 1,
                progress: Callable[[Any], None] | None = None, handle_signals: bool = False) -> Region:
    """Search ``space`` for where ``target`` holds (the sweep engine), and the region found."""
    from ..sweep import parse_sweep
    from ..sweep.results import study_rows
    from ..sweep.run import run  # the function: the package attribute is the module once that is loaded

    spec_d = sweep_dict(target, space, trials)
    spec = parse_sweep(spec_d, f"--target {target.text}")
    res = run(spec, trials=trials, sampler=sampler, seed=seed, storage=storage, study_name=study, workers=workers,
              progress=progress, handle_signals=handle_signals)
    rows = study_rows(res.study)
    params, best = region_of(rows, spec_d, target)
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    ran = [r for r in rows if r["state"] == "COMPLETE"]
    return Region(target, len(finished), len(ran), sum(1 for r in ran if r["feasible"]), params, best,
                  res.study_name, res.storage.display, res.sampler, res.interrupted, res.exit_code)
