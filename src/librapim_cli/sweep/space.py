"""The search space: optuna distributions of a spec's parameters, the full grid, and the overrides one
point of the space turns into (the ``--set`` items and preset choices ``simulate`` takes)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..spec.loading import apply_overrides, split_overrides
from .spec import ChoiceParam, FloatParam, IntParam, SweepSpec

if TYPE_CHECKING:
    import optuna

#: refuse to enumerate grids larger than this (a typo in a step, not a sweep)
MAX_GRID = 100_000


def suggest(trial: optuna.trial.BaseTrial, spec: SweepSpec) -> dict[str, Any]:
    """Ask the trial for a value of every parameter, keyed by the parameter's path."""
    out: dict[str, Any] = {}
    for p in spec.parameters:
        if isinstance(p, IntParam):
            out[p.path] = trial.suggest_int(p.path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            out[p.path] = trial.suggest_float(p.path, p.low, p.high, step=p.step, log=p.log)
        else:
            out[p.path] = trial.suggest_categorical(p.path, p.values)
    return out


def grid(spec: SweepSpec) -> dict[str, list[Any]]:
    """Every value of every parameter (for optuna's GridSampler); SpecError for continuous or huge spaces."""
    space = {p.path: p.grid() for p in spec.parameters}
    n = grid_size(space)
    if n > MAX_GRID:
        raise SpecError(f"--sampler grid: the grid has {n} points (> {MAX_GRID}); coarsen the steps or use "
                        f"--sampler tpe")
    return space


def grid_size(space: dict[str, list[Any]]) -> int:
    """Number of points of a grid."""
    return math.prod(len(v) for v in space.values())


def literal(value: Any) -> str:
    """A value as the TOML literal ``--set`` parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                        ("inf" if value > 0 else "-inf"))
    return json.dumps(str(value))


@dataclass(frozen=True)
class Point:
    """One point of the space, as simulate() arguments."""

    system: str
    model: str
    workload: str
    batch: int | None
    sets: tuple[str, ...]

    def key(self) -> tuple:
        """Hashable identity (for caches)."""
        return (self.system, self.model, self.workload, self.batch, self.sets)


def _is_system_path(path: str) -> bool:
    return path.split(".", 1)[0] in ("system", "hardware")


def point(spec: SweepSpec, params: dict[str, Any], *, system_params: bool = True,
          system: str | None = None, keep_hardware: bool = False) -> Point:
    """The simulate() arguments of a parameter assignment.

    ``system_params=False`` drops the system/hardware fields and the system choice (for the baseline of
    'speedup', which keeps the model, workload, batch and the other non-system parameters);
    ``keep_hardware`` then keeps the hardware.* fields (the spec's ``baseline_same_hardware``).
    """

    def dropped(path: str) -> bool:
        return not system_params and _is_system_path(path) and not (keep_hardware and path.startswith("hardware."))

    derived: dict[str, Any] = {}
    for d in spec.derive:
        if d.parameter in params:
            derived.update(d.sets[str(params[d.parameter])])
    sets = [s for s in spec.set if not dropped(s.split("=", 1)[0].strip())]
    for path, value in [*params.items(), *derived.items()]:
        if path in ("batch", "system", "model", "workload"):
            continue
        if dropped(path):
            continue
        sets.append(f"{path}={literal(value)}")
    sys_ref = system if system is not None else str(params.get("system", spec.system))
    batch = params.get("batch", spec.batch)
    return Point(sys_ref, str(params.get("model", spec.model)), str(params.get("workload", spec.workload)),
                 None if batch is None else int(batch), tuple(sets))


def check_paths(spec: SweepSpec) -> None:
    """SpecError if a parameter, derived field or base override names no field of its spec."""
    placeholder: list[str] = []
    for p in spec.parameters:
        if p.path in ("batch", "system", "model", "workload"):
            continue
        first = p.values[0] if isinstance(p, ChoiceParam) else p.low
        placeholder.append(f"{p.path}={literal(first)}")
    for d in spec.derive:
        for fields in d.sets.values():
            placeholder += [f"{path}={literal(v)}" for path, v in fields.items()]
    groups = split_overrides([*spec.set, *placeholder], ("system", "model", "workload"))
    for kind, items in groups.items():
        try:
            apply_overrides(kind, {}, items)
        except SpecError as exc:
            raise SpecError(f"sweep '{spec.name}': {str(exc).removeprefix('--set ')}") from None
