"""The checks ``librapim sweep`` runs before its first trial: the spec and the options (no optuna needed).

:func:`validate_sweep_file` is what ``librapim presets validate`` can call for a sweep file: the strict
schema (spec.py), every parameter, derived field and base override naming a real spec field, and every
preset the sweep names (its base system, model and workload, the baseline, and each value of a system,
model or workload choice) loading as a preset. A mistyped preset name would otherwise make every trial
that draws it infeasible, silently.
"""

from __future__ import annotations

import os

from ..errors import InputError, SpecError
from ..spec.loading import load
from .space import check_paths
from .spec import ChoiceParam, SweepSpec, load_sweep

PRESET_PATHS = ("system", "model", "workload")
SAMPLERS = ("tpe", "nsga2", "random", "grid")
SAMPLER_ALIASES = {"brute-force": "grid", "bruteforce": "grid", "nsgaii": "nsga2"}
#: seeds are numpy's: 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1
#: --workers is capped at this many processes per CPU (trials are CPU-bound: more only queue for a CPU)
WORKERS_PER_CPU = 4


# ---- options -------------------------------------------------------------------------------------
def sampler_name(name: str) -> str:
    """Canonical sampler name; SpecError for an unknown one."""
    n = SAMPLER_ALIASES.get(name.lower(), name.lower())
    if n not in SAMPLERS:
        raise SpecError(f"--sampler '{name}': choose one of {', '.join(SAMPLERS)} (grid = brute force)")
    return n


def check_seed(seed: int | None) -> None:
    """SpecError unless ``seed`` is None or in numpy's range 0 .. 2**32 - 1."""
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise SpecError(f"--seed {seed}: must be between 0 and {SEED_MAX} (2**32 - 1); give another seed")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers() -> int:
    """The largest --workers: :data:`WORKERS_PER_CPU` x the CPUs of this machine."""
    return WORKERS_PER_CPU * cpu_count()


def check_workers(workers: int, shared: bool) -> None:
    """SpecError for a --workers value out of range, or > 1 without a shared storage."""
    if workers < 1:
        raise SpecError(f"--workers {workers}: must be >= 1")
    limit = max_workers()
    if workers > limit:
        raise SpecError(f"--workers {workers}: at most {limit} ({WORKERS_PER_CPU} per CPU, {cpu_count()} CPUs here); "
                        f"trials are CPU-bound, so more processes only wait for a CPU")
    if workers > 1 and not shared:
        raise SpecError(f"--workers {workers} needs a shared storage: add --storage sqlite:///sweep.db, "
                        f"--storage sweep.journal or --storage postgresql://USER@HOST/DB")


# ---- the spec ------------------------------------------------------------------------------------


def check_presets(spec: SweepSpec) -> None:
    """InputError naming the field or parameter if a preset the sweep uses does not exist or does not load."""
    uses: list[tuple[str, str, str]] = [(k, getattr(spec, k), k) for k in PRESET_PATHS]
    if spec.baseline:
        uses.append(("system", spec.baseline, "baseline"))
    for p in spec.parameters:
        if p.path in PRESET_PATHS and isinstance(p, ChoiceParam):
            uses += [(p.path, str(v), f"parameter {p.path}") for v in p.values]
    for kind, ref, where in uses:
        try:
            load(kind, ref)
        except InputError as exc:
            raise type(exc)(f"sweep '{spec.name}': {where}: {exc}") from None


def validate_sweep(spec: SweepSpec) -> SweepSpec:
    """Every check ``librapim sweep`` makes on a parsed spec before the first trial; returns the spec."""
    check_paths(spec)
    check_presets(spec)
    return spec


def validate_sweep_file(ref: str) -> SweepSpec:
    """Load a sweep spec (bundled name or .toml path) and run :func:`validate_sweep`; one-line InputError."""
    return validate_sweep(load_sweep(ref))
