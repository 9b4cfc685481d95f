"""The run-constant part of a schedule: cost tables over every row count and context length, and the
pipeline constants (docs/model/schedule.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ..cost.tables import CostTables, build_tables
from ..inputs import Setup
from ..spec.model import ModelSpec
from ..spec.system import SystemSpec


@dataclass(frozen=True)
class Schedule:
    """Cost tables and the constants every iteration of one configuration shares."""

    tables: CostTables
    system: SystemSpec
    model: ModelSpec
    tp: int
    pp: int
    layers_per_stage: int
    p2p_s_per_row: float  # activation hand-off between pipeline stages, per token row
    p2p_latency_s: float
    #: stage layouts by requests-per-iteration (a layout depends on nothing else); bounded, exact
    layouts: dict = field(default_factory=dict, compare=False, repr=False)
    #: what the engine derives from the tables once (FC curve stores, LM-head tables; schedule.engine); exact
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def on_pim(self) -> bool:
        """Decode attention's home is the PIM (placement 'pim' on hardware with PIM)."""
        return self.system.placement.attention == "pim" and self.tables.has_pim

    @property
    def dbo_on(self) -> bool:
        """DBO runs (enabled, on hardware with PIM)."""
        return self.system.dbo.enabled and self.tables.has_pim


@lru_cache(maxsize=32)
def build_schedule(model: ModelSpec, system: SystemSpec, tp: int, pp: int, max_rows: int, max_len: int) -> Schedule:
    """Cost tables over rows 0..max_rows and contexts 0..max_len, and the schedule's run constants.

    A pure function of frozen specs, so it is cached: repeated runs of one configuration (sweeps,
    comparisons, benchmarks) share the tables.
    """
    tables = build_tables(model, system, tp, max_rows, max_len)
    link = system.link
    row_bytes = model.d_model * model.dtype_bytes
    return Schedule(tables, system, model, tp, pp, model.layers // pp, row_bytes / link.bw_bytes_per_s,
                    link.latency_s)


def schedule_for(s: Setup, max_rows: int, max_len: int) -> Schedule:
    """The schedule of a resolved setup, with tables up to ``max_rows`` rows and ``max_len`` tokens."""
    return build_schedule(s.model, s.system, s.tp, s.pp, max_rows, max_len)
