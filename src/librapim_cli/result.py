"""What a simulation returns: the resolved inputs, the metrics, and every detail a report or plot needs.

Reports and plots read these fields; they never re-run a part of the model (docs/model/overview.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .inputs import Setup
from .schedule.breakdown import OpRecord, breakdown_rows
from .schedule.engine import IterationResult, StageTable

SCHEMA_VERSION = 1


@dataclass
class SimResult:
    """What a simulation produced: the resolved inputs, metrics, and the details behind them.

    - ``iterations``: every decode iteration's figures (a list, or a sequence built on access);
    - ``latency``: serve mode's TTFT / TPOT / end-to-end statistics;
    - ``per_iteration``: serve mode's per-step columns (decode iterations and prefill steps);
    - ``stages``: the executed stages of every decode iteration (``keep_stages=True``);
    - ``ops``: the per-op costs of the breakdown iteration (``breakdown=True``), one record per op per
      (micro-batch, sub-batch) as the schedule ran it; ``breakdown_iteration_s`` is that iteration's
      simulated time.
    """

    setup: Setup
    metrics: dict[str, float]
    iterations: Sequence[IterationResult] = field(default_factory=list)
    latency: dict[str, dict[str, float]] | None = None
    per_iteration: dict[str, np.ndarray] | None = None
    mode: str = "iteration"
    stages: StageTable | None = None
    ops: list[OpRecord] | None = None
    breakdown_iteration_s: float = 0.0

    @property
    def breakdown(self) -> list[dict[str, Any]] | None:
        """The per-op breakdown rows (``schedule.breakdown.breakdown_rows``), when simulated with breakdown."""
        if self.ops is None:
            return None
        return breakdown_rows(self.ops, self.breakdown_iteration_s, self.setup.tp, self.setup.pp)

    @property
    def inputs(self) -> dict[str, Any]:
        """The resolved specs as plain data."""
        s = self.setup
        return {
            "system": s.system.model_dump(mode="json"),
            "model": s.model.model_dump(mode="json"),
            "workload": s.workload.model_dump(mode="json"),
            "tp": s.tp, "pp": s.pp, "batch": s.batch, "requests": s.requests, "mode": self.mode,
        }
