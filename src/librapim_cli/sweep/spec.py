"""The sweep spec: what to vary, what to optimize, what must hold (a strict pydantic model, loaded from TOML).

A sweep spec is a TOML file (bundled under ``presets/sweeps/`` or given by path). docs/sweep.md describes
the format; every field below carries its own description.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from ..errors import SpecError
from ..spec.base import Spec
from ..spec.loading import _describe_error, load_raw, parse_set

Scalar = bool | int | float | str
Direction = Literal["maximize", "minimize"]

#: parameter paths that are not spec fields: the batch size and the preset choices
SPECIAL_PATHS = ("batch", "system", "model", "workload")
#: first element of a dotted spec-field path (the same roots ``--set`` accepts)
ROOTS = ("system", "model", "workload", "hardware")
#: the objective/constraint that divides throughput by the baseline system's throughput
SPEEDUP = "speedup"

_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def _check_field_path(path: str, what: str) -> None:
    parts = path.split(".")
    if len(parts) < 2 or parts[0] not in ROOTS or not all(parts):
        raise ValueError(f"{what} '{path}' is not a spec field path: write <root>.<field>[.<field>...] with root "
                         f"one of {', '.join(ROOTS)} (as for --set), or one of {', '.join(SPECIAL_PATHS)}")


class _Strict(Spec):
    """Strict types (pydantic strict mode, as every ``Spec``): no coercion, so `low = true` or `high = "8"` is an
    error, not 1 or 8. A float field still takes an integer (TOML's 1 for 1.0)."""


class _Param(_Strict):
    path: str = Field(description="What the parameter sets: a dotted spec-field path as for --set "
                                  "(system.*, hardware.*, model.*, workload.*) or batch, system, model, workload.")

    @model_validator(mode="after")
    def _check_path(self) -> _Param:
        if self.path not in SPECIAL_PATHS:
            _check_field_path(self.path, "parameter path")
        return self


class IntParam(_Param):
    """An integer range: low, low + step, ..., up to high (inclusive)."""

    type: Literal["int"] = Field(description="'int': an integer range.")
    low: int = Field(description="Smallest value (inclusive).")
    high: int = Field(description="Largest value (inclusive).")
    step: int = Field(default=1, ge=1, description="Distance between values (must be 1 when log = true).")
    log: bool = Field(default=False, description="Sample on a log scale (low must be >= 1).")

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"parameter {self.path}: low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError(f"parameter {self.path}: log = true needs low >= 1 and step = 1")
        return self

    def grid(self) -> list[int]:
        """Every value of the range."""
        return list(range(self.low, self.high + 1, self.step))


class FloatParam(_Param):
    """A real interval [low, high], optionally log-scaled or discretized by a step."""

    type: Literal["float"] = Field(description="'float': a real interval.")
    low: float = Field(description="Smallest value (inclusive).")
    high: float = Field(description="Largest value (inclusive).")
    log: bool = Field(default=False, description="Sample on a log scale (low must be > 0; no step).")
    step: float | None = Field(default=None, gt=0, description="Discretize to low + k * step (needed by --sampler grid).")

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"parameter {self.path}: need finite low <= high, got [{self.low}, {self.high}]")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"parameter {self.path}: log = true needs low > 0 and no step")
        return self

    def grid(self) -> list[float]:
        """Every value low + k * step <= high; SpecError if there is no step (a continuous interval)."""
        if self.step is None:
            raise SpecError(f"--sampler grid: parameter {self.path} is a continuous float; give it a `step` "
                            f"or make it a choice")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + k * self.step, 12) for k in range(n)]


class ChoiceParam(_Param):
    """A list of values to choose from (numbers, booleans or strings, e.g. preset names or modes)."""

    type: Literal["choice"] = Field(description="'choice': one of a list of values.")
    values: list[Scalar] = Field(min_length=1, description="The values (numbers, booleans or strings), no repeats.")

    @model_validator(mode="after")
    def _check(self) -> ChoiceParam:
        keys = [repr(v) for v in self.values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"parameter {self.path}: values repeat ({self.values})")
        return self

    def grid(self) -> list[Scalar]:
        """The values themselves."""
        return list(self.values)


Parameter = Annotated[IntParam | FloatParam | ChoiceParam, Field(discriminator="type")]


class Objective(_Strict):
    """One metric to optimize."""

    metric: str = Field(description="Metric name: a simulate metric (throughput_tokens_per_s, energy_j_per_token, "
                                    "area_overhead_fraction, ...), latency.<name>.<quantile> (mode = 'serve'), "
                                    "or 'speedup' (throughput over the `baseline` system).")
    direction: Direction = Field(description="'maximize' or 'minimize'.")


class Constraint(_Strict):
    """A bound a feasible design must meet: min <= metric <= max."""

    metric: str = Field(description="Metric name, as for objectives.")
    max: float | None = Field(default=None, description="Upper bound (metric <= max).")
    min: float | None = Field(default=None, description="Lower bound (metric >= min).")

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError(f"constraint on {self.metric}: give max and/or min")
        return self

    def bounds(self) -> list[tuple[str, float, float]]:
        """(label, bound, sign) per bound; violation = sign * (value - bound) / scale > 0."""
        out = []
        if self.max is not None:
            out.append((f"{self.metric}<={self.max:g}", self.max, 1.0))
        if self.min is not None:
            out.append((f"{self.metric}>={self.min:g}", self.min, -1.0))
        return out


class Derive(_Strict):
    """Fields that follow from a choice parameter: a lookup table applied with each value."""

    parameter: str = Field(description="Path of a choice parameter of this sweep.")
    description: str = Field(description="Why these fields follow from the parameter, and where the numbers come from.")
    sets: dict[str, dict[str, Scalar]] = Field(
        description="For each value of the parameter (as a string), the field paths and values it implies.")


class SweepSpec(_Strict):
    """A design-space sweep: a base simulation, parameters to vary, objectives and constraints."""

    name: str = Field(description="Preset name; also the default study name.")
    source: str = Field(description="Where the parameter ranges come from (papers, presets, assumptions).")
    description: str = Field(default="", description="One-line human summary.")
    system: str = Field(default="librapim", description="Base system preset (name or .toml path).")
    model: str = Field(default="gpt3-7b", description="Base model preset (name or .toml path).")
    workload: str = Field(default="sharegpt", description="Base workload preset (name or .toml path).")
    set: list[str] = Field(default_factory=list, description="Overrides applied to every trial, as --set path=value.")
    mode: Literal["iteration", "serve"] = Field(default="iteration", description="simulate mode of every trial.")
    batch: int | None = Field(default=None, ge=1, description="Batch size (unset: the workload's max_batch).")
    requests: int | None = Field(default=None, ge=1, description="Request count (unset: the workload's).")
    trials: int = Field(default=50, ge=1, description="Default of --trials: finished trials the study ends with.")
    baseline: str | None = Field(default=None, description="System preset that 'speedup' is measured against "
                                                           "(same model, workload, batch and non-system parameters).")
    baseline_same_hardware: bool = Field(
        default=False, description="Give the baseline the trial's hardware.* parameters and overrides too (the "
                                   "same device), not only the non-system ones.")
    parameters: list[Parameter] = Field(min_length=1, description="The search space.")
    objectives: list[Objective] = Field(min_length=1, description="Metrics to optimize (several = Pareto front).")
    constraints: list[Constraint] = Field(default_factory=list, description="Bounds a feasible design must meet; "
                                          "a design that cannot run (does not fit) is always infeasible.")
    derive: list[Derive] = Field(default_factory=list, description="Lookup tables of fields implied by a choice.")

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        for item in self.set:
            path, _ = parse_set(item)
            _check_field_path(".".join(path), "set entry")
        paths = [p.path for p in self.parameters]
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"parameter path(s) {', '.join(dup)} appear more than once")
        for p in self.parameters:
            if p.path in ("system", "model", "workload") and not (
                    isinstance(p, ChoiceParam) and all(isinstance(v, str) for v in p.values)):
                raise ValueError(f"parameter {p.path}: must be a choice of preset names (strings)")
            if p.path == "batch":
                ok = isinstance(p, IntParam) and p.low >= 1 or isinstance(p, ChoiceParam) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in p.values)
                if not ok:
                    raise ValueError("parameter batch: must be an int range with low >= 1 or a choice of integers >= 1")
        metrics = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        for m in metrics:
            if not _METRIC_RE.match(m):
                raise ValueError(f"metric '{m}' is not a metric name (letters, digits, _ and dots)")
            if m.startswith("latency.") and self.mode != "serve":
                raise ValueError(f"metric '{m}' exists only with mode = 'serve' (latencies need the request trace)")
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a metric ({', '.join(names)})")
        if SPEEDUP in metrics and not self.baseline:
            raise ValueError("metric 'speedup' needs `baseline = \"<system preset>\"`")
        if self.baseline and SPEEDUP not in metrics:
            raise ValueError("`baseline` is set but no objective or constraint uses 'speedup'; remove it")
        by_path = {p.path: p for p in self.parameters}
        for d in self.derive:
            p = by_path.get(d.parameter)
            if not isinstance(p, ChoiceParam):
                raise ValueError(f"derive.parameter '{d.parameter}' must be the path of a choice parameter")
            want = {str(v) for v in p.values}
            if set(d.sets) != want:
                raise ValueError(f"derive for {d.parameter}: sets must have exactly one entry per value "
                                 f"({', '.join(sorted(want))}), got {', '.join(sorted(d.sets))}")
            for fields in d.sets.values():
                for path in fields:
                    _check_field_path(path, "derived field")
                    if path in by_path:
                        raise ValueError(f"derived field {path} is also a parameter; keep one")
        return self

    # ---- derived ---------------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        """Optuna directions, one per objective."""
        return [o.direction for o in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        """Metric names of the objectives, in order."""
        return [o.metric for o in self.objectives]

    def search_fingerprint(self) -> dict:
        """Everything that shapes the study's trials (not name/source/description/trials)."""
        out = self.model_dump(mode="json", exclude={"name", "source", "description", "trials"})
        if not self.baseline_same_hardware:  # studies made before the field existed keep their fingerprint
            out.pop("baseline_same_hardware")
        return out


def parse_sweep(data: dict, label: str) -> SweepSpec:
    """Validate a dict into a SweepSpec; one-line SpecError naming the first bad field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise SpecError(f"invalid sweep '{label}': {_describe_error(errs[0])}{more}") from None
    except SpecError as exc:  # raised by parse_set inside a validator
        raise SpecError(f"invalid sweep '{label}': {exc}") from None


def load_sweep(ref: str) -> SweepSpec:
    """Load a sweep spec by bundled name (presets/sweeps/) or .toml path."""
    return parse_sweep(load_raw("sweep", ref), ref)
