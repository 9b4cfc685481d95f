"""The regime map: where LibraPIM wins over each baseline, by how much, and through which mechanism.

``librapim reproduce`` runs this study and renders docs/reproduction.md from it (report/reproduction_md.py).

The map is the cross product of five axes (:class:`Axes`): GPT-3 7B/13B/30B/175B (NeuPIMs' TP/PP degrees,
docs/sources.md#s2.6) x ShareGPT, Alpaca and fixed 2k/4k/8k-token contexts x batch 1..512 (powers of two)
x NPU strength (1 systolic array as the released NeuPIMs simulator codes it, 2, 4, and 8 as its JSON
declares) x PIM input registers R (with a global buffer of R rows, so that the effective count
min(R, global_buffer_bytes // row_bytes) is R, docs/model/overview.md P9). Every point runs every system of
:data:`SYSTEMS` on the same device in steady-state decode (mode 'iteration') and keeps each system's
throughput, both utilization definitions, what DBO moved, and LibraPIM's per-stage detail. A point whose KV
cache does not fit is recorded as infeasible with the reason.

Nothing is fitted: the only things that move a number are the axes above and the presets' named,
sourced or openly stated ([I]) parameters. :func:`locate` reads the map for each published number.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..simulate import simulate
from ..spec.loading import load_hardware, presets_root

PUBLISHED: dict[str, tuple[float, str]] = {
    "librapim_over_baseline": (6.2, "LibraPIM (PACT 2025) lab page: 6.2x average over \"baseline PIM-assisted "
                                    "systems\" (docs/sources.md#s1.1)"),
    "librapim_over_neupims": (2.1, "LibraPIM lab page: 2.1x average over \"the state-of-the-art heterogeneous "
                                   "approach\" (docs/sources.md#s1.1)"),
    "librapim_npu_util": (0.77, "LibraPIM lab page: NPU utilization up to 77% (docs/sources.md#s1.1)"),
    "librapim_pim_util": (0.38, "LibraPIM lab page: PIM utilization up to 38% (docs/sources.md#s1.1)"),
    "neupims_over_npu_only": (2.4, "NeuPIMs (ASPLOS 2024) abstract: 2.4x over NPU-only (docs/sources.md#s2.1)"),
    "neupims_over_naive": (1.6, "NeuPIMs abstract: 1.6x over naive NPU+PIM (docs/sources.md#s2.1)"),
}

#: the systems every point runs: name -> (system preset, extra overrides). ``neupims+dbo`` is NeuPIMs' dual
#: row buffer with LibraPIM's DBO and runtime scheduler: it splits LibraPIM / NeuPIMs into a DBO factor
#: (neupims+dbo / neupims) and a DEX-versus-dual-row-buffer factor (librapim / neupims+dbo).
SYSTEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "npu-only": ("npu-only", ()),
    "npu-pim-blocked": ("npu-pim-blocked", ()),
    "pim-gemv": ("pim-gemv", ()),
    "neupims": ("neupims", ()),
    "neupims+dbo": ("neupims", ("system.dbo.enabled=true", "system.scheduler=runtime")),
    "librapim-dex-only": ("librapim-dex-only", ()),
    "librapim-dbo-only": ("librapim-dbo-only", ()),
    "librapim": ("librapim", ()),
}
LABELS = {
    "npu-only": "NPU-only", "npu-pim-blocked": "naive NPU+PIM", "pim-gemv": "PIM-for-GEMV",
    "neupims": "NeuPIMs", "neupims+dbo": "NeuPIMs + DBO", "librapim-dex-only": "LibraPIM DEX only",
    "librapim-dbo-only": "LibraPIM DBO only", "librapim": "LibraPIM",
}
#: the metrics kept per system and point
KEEP = ("throughput_tokens_per_s", "npu_utilization", "pim_utilization", "npu_compute_utilization",
        "pim_mac_utilization", "offload_fc_share", "offload_attention_share")
CONTEXTS = {"sharegpt": "ShareGPT", "alpaca": "Alpaca", "fixed-2048-128": "2k", "fixed-4096-128": "4k",
            "fixed-8192-128": "8k"}


@dataclass(frozen=True)
class Axes:
    """What the map spans."""

    models: tuple[str, ...] = ("gpt3-7b", "gpt3-13b", "gpt3-30b", "gpt3-175b")
    workloads: tuple[str, ...] = ("sharegpt", "alpaca", "fixed-2048-128", "fixed-4096-128", "fixed-8192-128")
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    npu_arrays: tuple[int, ...] = (1, 2, 4, 8)
    registers: tuple[int, ...] = (1, 2, 4, 8)
    samples: int = 8

    def points(self) -> list[Point]:
        """Every point, in a fixed order."""
        return [Point(m, w, b, n, r) for n in self.npu_arrays for r in self.registers for m in self.models
                for w in self.workloads for b in self.batches]

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"models": list(self.models), "workloads": list(self.workloads), "batches": list(self.batches),
                "npu_arrays": list(self.npu_arrays), "registers": list(self.registers), "samples": self.samples}


AXES = Axes()
#: the subset of the map the golden test recomputes (tests/golden/reproduction.json): a few seconds
GOLDEN_AXES = Axes(models=("gpt3-7b",), workloads=("sharegpt", "fixed-2048-128"), batches=(1, 16, 256),
                   npu_arrays=(1, 8), registers=(1, 8))


@dataclass(frozen=True, order=True)
class Point:
    """One point of the map."""

    model: str
    workload: str
    batch: int
    npu: int  # systolic arrays
    registers: int  # PIM input registers R (and a global buffer of R rows)

    @property
    def key(self) -> str:
        """The point's name in the storage."""
        return f"{self.model}|{self.workload}|{self.batch}|{self.npu}|{self.registers}"

    @classmethod
    def from_key(cls, key: str) -> Point:
        """The point a key names."""
        m, w, b, n, r = key.split("|")
        return cls(m, w, int(b), int(n), int(r))

    def sets(self) -> tuple[str, ...]:
        """The overrides that place every system of the point on its device."""
        return (f"hardware.npu.systolic_arrays={self.npu}", f"hardware.pim.input_registers={self.registers}",
                f"hardware.pim.global_buffer_bytes={self.registers * _row_bytes()}")

    @property
    def context(self) -> str:
        """The workload's short label."""
        return CONTEXTS.get(self.workload, self.workload)

    def label(self) -> str:
        """A one-line description."""
        return (f"{self.model}, {self.context}, batch {self.batch}, {self.npu} array{'s' * (self.npu > 1)}, "
                f"R {self.registers}")


_ROW: dict[str, int] = {}


def _row_bytes() -> int:
    """Row size of the map's device (the NeuPIMs-class HBM2-PIM every system of the map uses)."""
    if "row" not in _ROW:
        _ROW["row"] = load_hardware("neupims-npu-hbm2pim").memory.row_bytes
    return _ROW["row"]


# ---------------------------------------------------------------------------------------------------------
# one point


def stage_detail(result) -> dict[str, float]:
    """What DBO moved and which schedule ran, from a result simulated with ``keep_stages=True``.

    - ``fc_rows_share``: FC token rows moved to the PIM, over all FC token rows (repeats counted);
    - ``fc_cols_share``: FC output-column tiles moved to the PIM, over all column tiles of FC stages;
    - ``interleaved_share``: iterations whose schedule split the batch into sub-batches.
    """
    from ..cost.tables import COLUMN_STEPS

    st = result.stages
    rep = st.repeats.astype(float)
    fc = st.fc_rows > 0
    rows = float((st.fc_rows * rep)[fc].sum())
    cols = float((COLUMN_STEPS * rep)[fc].sum())
    per_iter = {}
    for it, cand in zip(st.iteration.tolist(), st.candidate.tolist(), strict=True):
        per_iter[it] = cand
    return {
        "fc_rows_share": float((st.fc_rows_to_pim * rep)[fc].sum()) / rows if rows else 0.0,
        "fc_cols_share": float((st.fc_cols_to_pim * rep)[fc].sum()) / cols if cols else 0.0,
        "interleaved_share": sum(1 for c in per_iter.values() if c != 0) / len(per_iter) if per_iter else 0.0,
    }


def evaluate_point(point: Point, samples: int = AXES.samples) -> dict[str, Any]:
    """Every system at one point: ``{"systems": {name: {metric: value}}, "detail": {...}, "infeasible": None}``,
    or ``{"infeasible": reason}`` when the point cannot run (the same memory limits hold for every system)."""
    systems: dict[str, dict[str, float]] = {}
    detail: dict[str, float] = {}
    for name, (preset, extra) in SYSTEMS.items():
        try:
            r = simulate(preset, point.model, point.workload, batch=point.batch, sets=(*point.sets(), *extra),
                         samples=samples, keep_stages=name == "librapim")
        except InputError as exc:
            return {"infeasible": str(exc).split(";")[0], "systems": {}, "detail": {}}
        systems[name] = {k: float(r.metrics[k]) for k in KEEP}
        if name == "librapim":
            detail = stage_detail(r)
    return {"infeasible": None, "systems": systems, "detail": detail}


def evaluate_key(key: str, samples: int = AXES.samples) -> dict[str, Any]:
    """:func:`evaluate_point` by storage key (module level, so worker processes can run it)."""
    return evaluate_point(Point.from_key(key), samples)


# ---------------------------------------------------------------------------------------------------------
# the whole map


@dataclass
class PointResult:
    """One point's stored result."""

    point: Point
    systems: dict[str, dict[str, float]]
    detail: dict[str, float]
    infeasible: str | None = None

    def value(self, name: str, metric: str = "throughput_tokens_per_s") -> float:
        """One system's metric."""
        return self.systems[name][metric]

    def ratio(self, num: str, den: str) -> float:
        """Throughput of ``num`` over ``den``."""
        return self.value(num) / self.value(den)

    def to_json(self) -> dict[str, Any]:
        """Plain data (the stored form plus the point)."""
        p = self.point
        return {"model": p.model, "workload": p.workload, "batch": p.batch, "npu_arrays": p.npu,
                "registers": p.registers, "infeasible": self.infeasible, "systems": self.systems,
                "detail": self.detail}


@dataclass
class RegimeMap:
    """All points of a map."""

    axes: Axes
    results: list[PointResult]
    wall_seconds: float = 0.0
    evaluated: int = 0
    reused: int = 0
    workers: int = 1

    def feasible(self) -> list[PointResult]:
        """Points that ran."""
        return [r for r in self.results if r.infeasible is None]

    def select(self, **fixed: Any) -> list[PointResult]:
        """Feasible points whose fields equal ``fixed`` (a value, or a collection of allowed values)."""
        out = []
        for r in self.feasible():
            ok = True
            for k, v in fixed.items():
                have = getattr(r.point, k)
                if isinstance(v, (tuple, list, set, frozenset)):
                    ok = ok and have in v
                else:
                    ok = ok and have == v
            if ok:
                out.append(r)
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data: the axes and every point."""
        return {"axes": self.axes.to_json(), "systems": {k: [p, list(s)] for k, (p, s) in SYSTEMS.items()},
                "points": [r.to_json() for r in self.results]}


def fingerprint(axes: Axes) -> str:
    """A hash of everything that shapes the map's numbers: the axes, the systems, the model's code and the
    bundled presets. Stored results are reused only under the same fingerprint."""
    h = hashlib.sha256()
    h.update(json.dumps([axes.samples, {k: [p, list(s)] for k, (p, s) in SYSTEMS.items()}, KEEP]).encode())
    for fn in (evaluate_point, stage_detail, Point.sets):
        h.update(inspect.getsource(fn).encode())
    pkg = Path(__file__).resolve().parents[1]
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg)
        if rel.parts[0] in ("cli", "report", "sweep", "studies"):
            continue  # renders and runs; this study's own evaluation is hashed above
        h.update(str(rel).encode())
        h.update(path.read_bytes())
    root = presets_root()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def study_name(axes: Axes) -> str:
    """The map's study in a storage: one per fingerprint (points of different axes share it)."""
    return f"librapim-regime-map-{fingerprint(axes)}"


def run_map(axes: Axes = AXES, *, storage: str | None = None, workers: int = 1,
            progress: Callable[[int, int], None] | None = None, handle_signals: bool = False) -> RegimeMap:
    """Evaluate every point of ``axes`` not stored yet (``storage``: as sweeps take it; None = in memory) on
    ``workers`` local processes, and return the map. Raises ``sweep.points.Interrupted`` when stopped."""
    from ..sweep.points import run_points

    points = axes.points()
    run = run_points([p.key for p in points], partial(evaluate_key, samples=axes.samples), storage=storage,
                     study_name=study_name(axes), workers=workers, progress=progress,
                     handle_signals=handle_signals)
    results = [PointResult(p, run.results[p.key].get("systems") or {}, run.results[p.key].get("detail") or {},
                           run.results[p.key].get("infeasible")) for p in points]
    return RegimeMap(axes, results, run.wall_seconds, run.evaluated, run.reused, workers)


def compute_map(axes: Axes) -> RegimeMap:
    """The map in this process, nothing stored (tests, the golden subset)."""
    results = []
    for p in axes.points():
        d = evaluate_point(p, axes.samples)
        results.append(PointResult(p, d["systems"], d["detail"], d["infeasible"]))
    return RegimeMap(axes, results)


# ---------------------------------------------------------------------------------------------------------
# locating the published numbers


@dataclass(frozen=True)
class Target:
    """A published number and how to read it off the map."""

    key: str  # PUBLISHED key
    label: str
    kind: str  # "ratio": num/den throughput >= value; "util": a LibraPIM utilization near value
    num: str = "librapim"
    den: str = ""
    metric: str = ""  # util: the metric
    baseline_note: str = ""

    @property
    def value(self) -> float:
        return PUBLISHED[self.key][0]

    @property
    def source(self) -> str:
        return PUBLISHED[self.key][1]

    def of(self, r: PointResult) -> float:
        """The quantity at a point."""
        return r.ratio(self.num, self.den) if self.kind == "ratio" else r.value(self.num, self.metric)

    def reached(self, v: float) -> bool:
        """Ratios: at least the published average. Utilizations ("up to X"): within UTIL_BAND of X."""
        return v >= self.value if self.kind == "ratio" else abs(v - self.value) <= UTIL_BAND

    def shown(self, v: float | None = None) -> str:
        """A value as the document shows it (the published one as published)."""
        if v is None:
            return f"{self.value:g}x" if self.kind == "ratio" else f"{self.value:.0%}"
        return f"{v:.2f}x" if self.kind == "ratio" else f"{v:.0%}"


#: a utilization counts as "reached" within +/- this many points (absolute)
UTIL_BAND = 0.02

BASELINE_NAIVE = ("naive NPU+PIM (`npu-pim-blocked`: attention GEMVs on the PIM, FC on the NPU, blocked banks, "
                  "no sub-batch interleaving; NeuPIMs' `npu+pim` branch)")
BASELINE_GEMV = ("PIM-for-GEMV (`pim-gemv`: every FC GEMV, the LM head and attention on the PIM, blocked banks; "
                 "Samsung HBM-PIM / SK hynix AiM style)")

TARGETS: tuple[Target, ...] = (
    Target("librapim_over_baseline", "6.2x over \"baseline PIM-assisted\", read as naive NPU+PIM", "ratio",
           den="npu-pim-blocked", baseline_note=BASELINE_NAIVE),
    Target("librapim_over_baseline", "6.2x over \"baseline PIM-assisted\", read as PIM-for-GEMV", "ratio",
           den="pim-gemv", baseline_note=BASELINE_GEMV),
    Target("librapim_over_neupims", "2.1x over NeuPIMs", "ratio", den="neupims"),
    Target("librapim_npu_util", "NPU utilization up to 77%, as busy time", "util", metric="npu_utilization"),
    Target("librapim_npu_util", "NPU utilization up to 77%, as compute (of peak FLOP/s)", "util",
           metric="npu_compute_utilization"),
    Target("librapim_pim_util", "PIM utilization up to 38%, as busy time", "util", metric="pim_utilization"),
    Target("librapim_pim_util", "PIM utilization up to 38%, as MAC utilization (of peak FLOP/s)", "util",
           metric="pim_mac_utilization"),
    Target("neupims_over_npu_only", "NeuPIMs 2.4x over NPU-only", "ratio", num="neupims", den="npu-only"),
    Target("neupims_over_naive", "NeuPIMs 1.6x over naive NPU+PIM", "ratio", num="neupims", den="npu-pim-blocked"),
)

#: the factors a ratio splits into (each a ratio of two systems of the point; their product is the ratio)
FACTORS: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {
    ("librapim", "npu-pim-blocked"): (("overlap", "neupims", "npu-pim-blocked"), ("dbo", "neupims+dbo", "neupims"),
                                      ("dex", "librapim", "neupims+dbo")),
    ("librapim", "pim-gemv"): (("gemm", "npu-pim-blocked", "pim-gemv"), ("overlap", "neupims", "npu-pim-blocked"),
                               ("dbo", "neupims+dbo", "neupims"), ("dex", "librapim", "neupims+dbo")),
    ("librapim", "neupims"): (("dbo", "neupims+dbo", "neupims"), ("dex", "librapim", "neupims+dbo")),
    ("neupims", "npu-only"): (("attn", "npu-pim-blocked", "npu-only"), ("overlap", "neupims", "npu-pim-blocked")),
    ("neupims", "npu-pim-blocked"): (("overlap", "neupims", "npu-pim-blocked"),),
}
FACTOR_LABELS = {
    "gemm": "FC as NPU GEMMs instead of PIM GEMVs (weights read once per batch, not once per token)",
    "attn": "attention GEMVs on the PIM instead of the NPU",
    "overlap": "overlap: dual row buffer + NeuPIMs' sub-batch interleaving (from batch 256)",
    "dbo": "DBO + runtime scheduler",
    "dex": "DEX (+ partial batch offload) instead of the dual row buffer",
}


def dbo_moves(r: PointResult) -> str:
    """What LibraPIM's DBO moved at a point, in words."""
    d = r.detail
    parts = []
    if d.get("fc_cols_share", 0) >= 0.005:
        parts.append(f"FC column tiles to the PIM {d['fc_cols_share']:.0%}")
    if d.get("fc_rows_share", 0) >= 0.005:
        parts.append(f"FC token rows to the PIM {d['fc_rows_share']:.0%}")
    att = r.systems.get("librapim", {}).get("offload_attention_share", 0.0)
    if att >= 0.005:
        parts.append(f"attention to the NPU {att:.0%}")
    moved = ", ".join(parts) if parts else "nothing"
    if d.get("interleaved_share", 0) > 0:
        moved += f"; sub-batches interleaved in {d['interleaved_share']:.0%} of iterations"
    return moved


def factors(r: PointResult, num: str, den: str) -> list[tuple[str, float]]:
    """(factor name, value) whose product is num/den at the point."""
    return [(name, r.ratio(a, b)) for name, a, b in FACTORS.get((num, den), ())]


def dominant_move(r: PointResult) -> str:
    """The largest thing DBO moved at a point: 'FC columns', 'FC rows', 'attention' or 'nothing'."""
    d = r.detail
    cands = [("FC columns to the PIM", d.get("fc_cols_share", 0.0)), ("FC rows to the PIM", d.get("fc_rows_share", 0.0)),
             ("attention to the NPU", r.systems.get("librapim", {}).get("offload_attention_share", 0.0))]
    name, v = max(cands, key=lambda x: x[1])
    return name if v >= 0.005 else "nothing moved"


def mechanism(r: PointResult, t: Target) -> str:
    """The mechanism behind ``t``'s quantity at a point: the largest factor, and for DBO what it moved."""
    if t.kind == "util":
        return f"DBO: {dominant_move(r)}"
    fs = factors(r, t.num, t.den)
    if not fs:
        return ""
    name, _ = max(fs, key=lambda f: abs(math.log(f[1])))
    if name == "dbo":
        return f"DBO: {dominant_move(r)}"
    return {"gemm": "FC GEMMs on the NPU", "attn": "attention on the PIM", "overlap": "overlap (DRB + interleaving)",
            "dex": "DEX vs dual row buffer"}[name]


@dataclass
class Location:
    """Where the map reaches one published number."""

    target: Target
    n_feasible: int
    hits: list[PointResult]
    best: PointResult | None
    best_value: float
    mean: float  # over the feasible map (geometric for ratios)
    mechanisms: list[tuple[str, int]]  # (mechanism, hits) most common first
    region: list[str]  # one line per NPU strength
    trend: tuple[str, list[tuple[int, float]], float] | None = None  # not reached: see axis_trend
    approx: bool = False  # utilization: no point within the band, the nearest ones are shown
    best_regs_all: tuple[int, ...] = ()  # the map's register counts
    best_factors: list[tuple[str, float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return bool(self.hits)


def _ranges(values: Iterable[int]) -> str:
    """'1-16' for powers of two in a row, else a list."""
    v = sorted(set(values))
    if not v:
        return "-"
    if len(v) == 1:
        return str(v[0])
    return f"{v[0]}-{v[-1]}"


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    s = set(values)
    return [x for x in order if x in s]


def region_lines(hits: Sequence[PointResult], axes: Axes, feasible: Sequence[PointResult] = ()) -> list[str]:
    """The hits, grouped by NPU strength: batch range, contexts, models and registers present (their union:
    the count says how much of it reaches the number), and how many of that strength's points they are."""
    lines = []
    for n in axes.npu_arrays:
        hs = [h for h in hits if h.point.npu == n]
        of = sum(1 for r in feasible if r.point.npu == n)
        if not hs:
            continue
        ctx = _ordered((h.point.workload for h in hs), axes.workloads)
        models = _ordered((h.point.model for h in hs), axes.models)
        regs = sorted({h.point.registers for h in hs})
        batches = sorted({h.point.batch for h in hs})
        gaps = [b for b in axes.batches if batches[0] <= b <= batches[-1] and b not in batches]
        btxt = _ranges(batches) if not gaps else ", ".join(str(b) for b in batches)
        lines.append(
            f"{n} array{'s' * (n > 1)}: batch {btxt}; "
            f"{'all contexts' if len(ctx) == len(axes.workloads) else ', '.join(CONTEXTS.get(c, c) for c in ctx)}; "
            f"{'all models' if len(models) == len(axes.models) else ', '.join(models)}; "
            f"R {'any' if len(regs) == len(axes.registers) else ', '.join(map(str, regs))} "
            f"({len(hs)} point{'s' * (len(hs) > 1)}" + (f" of {of})" if of else ")"))
    return lines


AXIS_NAMES = {"batch": "batch", "npu": "NPU systolic arrays", "registers": "PIM input registers R"}


def axis_trend(m: RegimeMap, t: Target, best: PointResult) -> tuple[str, list[tuple[int, float]], float]:
    """Holding the best point's other axes, how the quantity moves along batch, NPU strength and registers:
    (axis, [(value, quantity)], gain at the end the best point sits on) of the axis whose end moves it most
    toward the target. A gain above 1 names the single assumption that would have to go further."""
    p = best.point
    by_key = {r.point: r for r in m.feasible()}
    out = []
    for f, values in (("batch", m.axes.batches), ("npu", m.axes.npu_arrays), ("registers", m.axes.registers)):
        row = []
        for v in values:
            q = Point(p.model, p.workload, v if f == "batch" else p.batch, v if f == "npu" else p.npu,
                      v if f == "registers" else p.registers)
            if q in by_key:
                row.append((v, t.of(by_key[q])))
        if len(row) >= 2:
            vals = [x for _, x in row]
            gain = max(vals[-1] / vals[-2], vals[0] / vals[1]) if min(vals) > 0 else 1.0
            out.append((f, row, gain))
    if not out:
        return "", [], 1.0
    return max(out, key=lambda o: o[2])


def locate(m: RegimeMap, t: Target) -> Location:
    """Read one published number off the map."""
    feas = m.feasible()
    vals = [(r, t.of(r)) for r in feas]
    hits = [r for r, v in vals if t.reached(v)]
    approx = False
    if not hits and t.kind == "util" and vals and max(v for _, v in vals) >= t.value:
        gap = min(abs(v - t.value) for _, v in vals)  # the map steps over the band: the nearest points
        hits, approx = [r for r, v in vals if abs(v - t.value) <= gap + 0.01], True
    best, best_v = max(vals, key=lambda x: x[1]) if vals else (None, float("nan"))
    if t.kind == "ratio":
        mean = math.exp(sum(math.log(v) for _, v in vals) / len(vals)) if vals else float("nan")
    else:
        mean = sum(v for _, v in vals) / len(vals) if vals else float("nan")
    mech = Counter(mechanism(r, t) for r in hits).most_common()
    loc = Location(t, len(feas), hits, best, best_v, mean, mech, region_lines(hits, m.axes, feas), approx=approx,
                   best_regs_all=m.axes.registers)
    if best is not None and t.kind == "ratio":
        loc.best_factors = factors(best, t.num, t.den)
    if not hits and best is not None:
        loc.trend = axis_trend(m, t, best)
    return loc


def locate_all(m: RegimeMap) -> list[Location]:
    """Every target of :data:`TARGETS`."""
    return [locate(m, t) for t in TARGETS]


def joint_utilization(m: RegimeMap, npu_metric: str, pim_metric: str) -> list[PointResult]:
    """Points where LibraPIM's NPU is near 77% and its PIM near 38% at once (one utilization definition)."""
    npu_v, pim_v = PUBLISHED["librapim_npu_util"][0], PUBLISHED["librapim_pim_util"][0]
    return [r for r in m.feasible() if abs(r.value("librapim", npu_metric) - npu_v) <= UTIL_BAND * 2
            and abs(r.value("librapim", pim_metric) - pim_v) <= UTIL_BAND * 2]


def golden_json(m: RegimeMap) -> dict[str, Any]:
    """The golden file: the points of :data:`GOLDEN_AXES` (every metric), nothing aggregated."""
    return {"axes": m.axes.to_json(), "points": [r.to_json() for r in m.results]}


def heat(m: RegimeMap, value: Callable[[PointResult], float], rows: tuple[str, Sequence[Any]],
         cols: tuple[str, Sequence[Any]], geometric: bool = True, **fixed: Any) -> np.ndarray:
    """A (rows x cols) array of the mean (geometric for ratios) of ``value`` over the feasible points of each
    cell (other axes fixed by ``fixed`` or, where free, aggregated); NaN where no point runs."""
    rname, rvals = rows
    cname, cvals = cols
    out = np.full((len(rvals), len(cvals)), np.nan)
    pts = m.select(**fixed)
    for i, rv in enumerate(rvals):
        for j, cv in enumerate(cvals):
            vs = [value(r) for r in pts if getattr(r.point, rname) == rv and getattr(r.point, cname) == cv]
            vs = [v for v in vs if math.isfinite(v) and (v > 0 or not geometric)]
            if vs:
                out[i, j] = math.exp(sum(math.log(v) for v in vs) / len(vs)) if geometric else sum(vs) / len(vs)
    return out
