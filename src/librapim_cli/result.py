"""What a simulation returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .inputs import Setup
from .schedule.iteration import IterationResult

SCHEMA_VERSION = 1


@dataclass
class SimResult:
    """What a simulation produced: the resolved inputs, metrics, and the details behind them."""

    setup: Setup
    metrics: dict[str, float]
    iterations: Sequence[IterationResult] = field(default_factory=list)  # a list, or built on access
    latency: dict[str, dict[str, float]] | None = None
    per_iteration: dict[str, np.ndarray] | None = None
    mode: str = "iteration"

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
