"""Optuna search over model, batch and hardware parameters (the only package that imports optuna).

spec.py (the sweep spec) -> space.py (distributions, grid, overrides) -> objective.py (simulate one point,
constraints) -> study.py (storages, samplers, exact-N runs, workers) -> results.py (trial rows, best,
CSV/JSON) and export.py (best trials as preset files). docs/sweep.md describes the whole.
"""

from .export import ExportedConfig, export_best
from .objective import Evaluation, Evaluator
from .results import best_trials, load_study, study_rows, trials_table, write_trials
from .spec import SweepSpec, load_sweep, parse_sweep
from .study import SAMPLERS, Progress, RunResult, StorageError, parse_storage, run

__all__ = [
    "ExportedConfig", "export_best", "Evaluation", "Evaluator", "best_trials", "load_study", "study_rows", "trials_table",
    "write_trials", "SweepSpec", "load_sweep", "parse_sweep", "SAMPLERS", "Progress", "RunResult", "StorageError",
    "parse_storage", "run",
]
