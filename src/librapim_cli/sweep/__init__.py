"""Optuna search over model, batch and hardware parameters (the only package that imports optuna).

spec.py (the sweep spec) -> validate.py (checks before the first trial) -> space.py (distributions, grid,
overrides) -> objective.py (simulate one point, constraints) -> storage.py (--storage) / workers.py (who runs
a trial, stale trials, the journal lock) -> study.py (samplers, open a study bound to its spec) -> record.py
(write finished trials, keep the counts) -> run.py (exact-N runs, worker processes, signals) -> results.py
(trial rows, best, CSV/JSON; paths.py checks and writes output files) and export.py (best trials as preset
files). docs/sweep.md describes the whole.

The names below load their module on first use, so importing this package (or the CLI) does not import
optuna until a sweep is run or read. ``run`` is also the name of its module: once something has imported
``librapim_cli.sweep.run`` itself (a worker process unpickling its entry point, a tool importing every module),
the package attribute ``run`` is that module, so the package's own code imports the function as
``from .run import run`` (``from librapim_cli.sweep.run import run`` outside).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ExportedConfig": "export", "export_best": "export",
    "Evaluation": "objective", "Evaluator": "objective",
    "best_trials": "results", "study_rows": "results", "trials_table": "results", "write_trials": "results",
    "load_study": "study", "SAMPLERS": "validate",
    "SweepSpec": "spec", "load_sweep": "spec", "parse_sweep": "spec",
    "validate_sweep": "validate", "validate_sweep_file": "validate",
    "StorageError": "storage", "parse_storage": "storage",
    "Progress": "run", "RunResult": "run", "run": "run", "max_workers": "validate",
}

__all__ = [
    "ExportedConfig", "export_best", "Evaluation", "Evaluator", "best_trials", "study_rows", "trials_table",
    "write_trials", "load_study", "SAMPLERS", "SweepSpec", "load_sweep", "parse_sweep", "validate_sweep",
    "validate_sweep_file", "StorageError", "parse_storage", "Progress", "RunResult", "run", "max_workers",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:
    from .export import ExportedConfig, export_best
    from .objective import Evaluation, Evaluator
    from .results import best_trials, study_rows, trials_table, write_trials
    from .run import Progress, RunResult, run
    from .spec import SweepSpec, load_sweep, parse_sweep
    from .storage import StorageError, parse_storage
    from .study import load_study
    from .validate import SAMPLERS, max_workers, validate_sweep, validate_sweep_file


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
