"""Reproduction of the published LibraPIM / NeuPIMs results (docs/reproduction.md).

The grid follows the issue: GPT-3 7B/13B/30B/175B (NeuPIMs' TP/PP degrees, docs/sources.md#s2.6) x ShareGPT and
Alpaca (docs/sources.md#s8) x batch 64..512, on the NeuPIMs-class hardware, decode throughput in steady state
(mode 'iteration'). Two hardware variants are reported, both sourced and the same for every case: the
NPU as the released simulator codes it (1 systolic array, src/Common.cc) and as its JSON declares it
(systolic_array_count 8). No per-case factor exists anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import exp, log

from ..errors import InputError
from ..simulate import simulate

PUBLISHED: dict[str, tuple[float, str]] = {
    "librapim_over_naive": (6.2, "LibraPIM (PACT 2025) lab page: 6.2x average over baseline PIM-assisted systems (docs/sources.md#s1.1)"),
    "librapim_over_neupims": (2.1, "LibraPIM lab page: 2.1x average over the state-of-the-art heterogeneous system (docs/sources.md#s1.1)"),
    "neupims_over_npu_only": (2.4, "NeuPIMs (ASPLOS 2024) abstract: 2.4x over NPU-only (docs/sources.md#s2.1)"),
    "neupims_over_naive": (1.6, "NeuPIMs abstract: 1.6x over naive NPU+PIM (docs/sources.md#s2.1)"),
    "librapim_npu_util_max": (0.77, "LibraPIM lab page: NPU utilization up to 77% (docs/sources.md#s1.1)"),
    "librapim_pim_util_max": (0.38, "LibraPIM lab page: PIM utilization up to 38% (docs/sources.md#s1.1)"),
}

RATIOS = {
    "librapim_over_naive": ("librapim", "npu-pim-blocked"),
    "librapim_over_neupims": ("librapim", "neupims"),
    "neupims_over_npu_only": ("neupims", "npu-only"),
    "neupims_over_naive": ("neupims", "npu-pim-blocked"),
}


@dataclass(frozen=True)
class Grid:
    """What the reproduction runs."""

    models: tuple[str, ...] = ("gpt3-7b", "gpt3-13b", "gpt3-30b", "gpt3-175b")
    workloads: tuple[str, ...] = ("sharegpt", "alpaca")
    batches: tuple[int, ...] = (64, 128, 256, 512)
    systems: tuple[str, ...] = ("npu-only", "npu-pim-blocked", "neupims", "librapim-dex-only",
                                "librapim-dbo-only", "librapim")
    variants: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("NPU as coded (1 array, 32.8 TFLOPS)", ()),
        ("NPU as declared (8 arrays, 262 TFLOPS)", ("hardware.npu.systolic_arrays=8",)),
    )
    samples: int = 8


GRID = Grid()


@dataclass
class Cell:
    """One (model, workload, batch) point: per-system metrics, or why it cannot run."""

    model: str
    workload: str
    batch: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    infeasible: str | None = None

    def ratio(self, num: str, den: str) -> float:
        """Throughput of ``num`` over ``den``."""
        return self.metrics[num]["throughput_tokens_per_s"] / self.metrics[den]["throughput_tokens_per_s"]


@dataclass
class VariantResult:
    """All cells of one hardware variant and their summary."""

    name: str
    sets: tuple[str, ...]
    cells: list[Cell]

    def feasible(self) -> list[Cell]:
        """Cells that ran."""
        return [c for c in self.cells if c.infeasible is None]

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, geometric mean, min and max of each published ratio; max utilizations of LibraPIM."""
        out: dict[str, dict[str, float]] = {}
        cells = self.feasible()
        for key, (num, den) in RATIOS.items():
            r = [c.ratio(num, den) for c in cells]
            out[key] = {"mean": sum(r) / len(r), "geomean": exp(sum(log(x) for x in r) / len(r)),
                        "min": min(r), "max": max(r)} if r else {}
        out["librapim_npu_util_max"] = {"max": max((c.metrics["librapim"]["npu_utilization"] for c in cells),
                                                   default=0.0)}
        out["librapim_pim_util_max"] = {"max": max((c.metrics["librapim"]["pim_utilization"] for c in cells),
                                                   default=0.0)}
        return out


@dataclass
class ReproductionResult:
    """The whole reproduction."""

    grid: Grid
    variants: list[VariantResult]

    def to_json(self) -> dict:
        """Plain data for the golden file: throughputs, utilizations and the summary of every variant."""
        keep = ("throughput_tokens_per_s", "npu_utilization", "pim_utilization", "offload_attention_share",
                "offload_fc_share")
        return {
            "variants": [
                {"name": v.name, "sets": list(v.sets), "summary": v.summary(),
                 "cells": [{"model": c.model, "workload": c.workload, "batch": c.batch, "infeasible": c.infeasible,
                            "systems": {s: {k: m[k] for k in keep} for s, m in c.metrics.items()}}
                           for c in v.cells]}
                for v in self.variants
            ]
        }


def run_reproduction(grid: Grid = GRID, progress=None) -> ReproductionResult:
    """Simulate every cell of the grid for every hardware variant."""
    variants: list[VariantResult] = []
    total = len(grid.variants) * len(grid.models) * len(grid.workloads) * len(grid.batches)
    done = 0
    for vname, sets in grid.variants:
        cells: list[Cell] = []
        for m in grid.models:
            for w in grid.workloads:
                for b in grid.batches:
                    cell = Cell(m, w, b)
                    try:
                        for s in grid.systems:
                            cell.metrics[s] = simulate(s, m, w, batch=b, sets=sets, samples=grid.samples).metrics
                    except InputError as exc:
                        cell.metrics = {}
                        cell.infeasible = str(exc)
                    cells.append(cell)
                    done += 1
                    if progress is not None:
                        progress(done, total)
        variants.append(VariantResult(vname, tuple(sets), cells))
    return ReproductionResult(grid, variants)
