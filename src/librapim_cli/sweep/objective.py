"""Evaluating one point of the space: simulate, collect metrics, check constraints.

:class:`Evaluator` is plain Python (usable without optuna, e.g. to brute-force a grid); :meth:`Evaluator.objective`
is the optuna objective built on it. A point whose configuration cannot run (any :class:`InputError` from
``simulate``: weights or KV cache that do not fit, a tp that does not divide the heads, a field out of
range) is *infeasible*: its trial is PRUNED with the constraint ``fits`` = 1 and the reason in the user
attribute ``reason``. A point that runs but breaks a spec constraint is COMPLETE with a positive constraint
value. Optuna never returns either as best (``study.best_trial(s)`` filter on constraints <= 0).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..errors import InputError, SpecError
from ..simulate import SimResult, simulate
from .space import Point, point, suggest
from .spec import SPEEDUP, SweepSpec

#: constraint key of "the configuration runs at all"
FITS = "fits"
#: evaluations remembered per process (a point is a few hundred bytes of metrics)
CACHE_SIZE = 4096


def flat_metrics(result: SimResult) -> dict[str, float]:
    """A result's metrics plus its latency percentiles as ``latency.<name>.<stat>``, all plain floats."""
    out = {k: float(v) for k, v in result.metrics.items()}
    for name, stats in (result.latency or {}).items():
        for stat, v in stats.items():
            out[f"latency.{name}.{stat}"] = float(v)
    return out


@dataclass
class Evaluation:
    """Outcome of one point: metrics (if it ran), constraint values (> 0 = violated), feasibility."""

    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # set when the configuration cannot run

    @property
    def ran(self) -> bool:
        """True if the simulation ran (the point fits)."""
        return self.reason is None

    @property
    def feasible(self) -> bool:
        """Ran and meets every constraint."""
        return self.ran and all(v <= 0 for v in self.constraints.values())


class Evaluator:
    """Evaluates points of a sweep spec; counts the time spent inside ``simulate``."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.sim_seconds = 0.0
        self.sim_calls = 0
        self._baseline: dict[tuple, float | str] = {}
        self._cache: dict[tuple, Evaluation] = {}

    def _simulate(self, p: Point) -> SimResult:
        t0 = time.perf_counter()
        try:
            return simulate(p.system, p.model, p.workload, batch=p.batch, requests=self.spec.requests,
                            sets=list(p.sets), mode=self.spec.mode)
        finally:
            self.sim_seconds += time.perf_counter() - t0
            self.sim_calls += 1

    def _baseline_throughput(self, params: dict[str, Any]) -> float | str:
        """Throughput of the baseline system at the same non-system parameters (cached), or why it cannot run."""
        assert self.spec.baseline is not None
        bp = point(self.spec, params, system_params=False, system=self.spec.baseline,
                   keep_hardware=self.spec.baseline_same_hardware)
        key = bp.key()
        if key not in self._baseline:
            try:
                self._baseline[key] = float(self._simulate(bp).metrics["throughput_tokens_per_s"])
            except InputError as exc:
                self._baseline[key] = f"baseline {self.spec.baseline}: {exc}"
        return self._baseline[key]

    def evaluate(self, params: dict[str, Any]) -> Evaluation:
        """Simulate one parameter assignment; InputErrors make it infeasible, other errors propagate.

        simulate() is deterministic, so a point evaluated before (samplers revisit points of small discrete
        spaces) is answered from a cache.
        """
        p = point(self.spec, params)
        key = p.key()
        hit = self._cache.get(key)
        if hit is None:
            hit = self._evaluate(params, p)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return Evaluation(dict(params), dict(hit.metrics), dict(hit.constraints), hit.reason)

    def _evaluate(self, params: dict[str, Any], p: Point) -> Evaluation:
        ev = Evaluation(dict(params))
        try:
            result = self._simulate(p)
        except InputError as exc:
            ev.reason = str(exc)
            ev.constraints = {FITS: 1.0}
            return ev
        metrics = flat_metrics(result)
        if self.spec.baseline is not None:
            base = self._baseline_throughput(params)
            if isinstance(base, str):
                ev.reason = base
                ev.constraints = {FITS: 1.0}
                return ev
            metrics["baseline_throughput_tokens_per_s"] = base
            metrics[SPEEDUP] = metrics["throughput_tokens_per_s"] / base if base > 0 else math.inf
        ev.metrics = metrics
        ev.constraints = {FITS: 0.0}
        for c in self.spec.constraints:
            value = self.metric(metrics, c.metric)
            for label, bound, sign in c.bounds():
                ev.constraints[label] = sign * (value - bound) / max(abs(bound), 1e-12)
        return ev

    def metric(self, metrics: dict[str, float], name: str) -> float:
        """A metric by name; SpecError (a spec mistake, not an infeasible design) if it does not exist."""
        if name not in metrics:
            avail = ", ".join(sorted(metrics))
            raise SpecError(f"sweep '{self.spec.name}': metric '{name}' is not produced by mode={self.spec.mode}; "
                            f"available: {avail}")
        return metrics[name]

    def values(self, ev: Evaluation) -> list[float]:
        """Objective values of a point that ran, in spec order."""
        return [self.metric(ev.metrics, o.metric) for o in self.spec.objectives]

    # ---- optuna ------------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> list[float]:
        """Optuna objective: suggest, evaluate, record metrics/constraints in the trial, return the values."""
        ev = self.evaluate(suggest(trial, self.spec))
        for key, value in ev.constraints.items():
            trial.set_constraint(key, value)
        trial.set_user_attr("feasible", ev.feasible)
        if not ev.ran:
            trial.set_user_attr("reason", ev.reason)
            raise optuna.TrialPruned(ev.reason)
        values = self.values(ev)
        trial.set_user_attr("metrics", ev.metrics)
        return values
