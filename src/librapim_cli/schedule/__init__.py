"""The schedule of decode iterations: the stage plan, the engine that evaluates it, and the per-op breakdown."""

from .context import Schedule, build_schedule, schedule_for
from .engine import IterationBatch, IterationResult, StageTable, run_iteration, run_iterations

__all__ = ["IterationBatch", "IterationResult", "Schedule", "StageTable", "build_schedule", "run_iteration",
           "run_iterations", "schedule_for"]
