"""Stage schedule of a decode iteration (sub-batch interleaving, concurrency modes) and its metrics."""

from .iteration import IterationResult, Schedule, StageRecord, run_iteration

__all__ = ["IterationResult", "Schedule", "StageRecord", "run_iteration"]
