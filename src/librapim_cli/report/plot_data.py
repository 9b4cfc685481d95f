"""Plain data behind the plots, assembled from simulation results (pure functions, no plotting, no simulate).

- :func:`roofline_points`: the NPU and PIM rooflines and one decode layer's ops at (FLOP/byte, FLOP/s);
- :func:`timeline_segments`: an iteration's stage list expanded into NPU/PIM busy segments;
- :func:`compare_table`: throughput, speedup and utilizations of (system, model) results;
- :func:`pareto_points`: a two-objective sweep's trials with the Pareto front marked.

``librapim_cli.report.plots`` draws these; the CLI (``librapim plot ...``) glues the two together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..simulate import SimResult

# ---------------------------------------------------------------------------------------------------------
# roofline


@dataclass(frozen=True)
class Roof:
    """One device's roofline: rate = min(peak, bandwidth * intensity)."""

    device: str  # "npu" | "pim"
    label: str
    peak_flops: float
    bw_bytes_per_s: float

    @property
    def ridge_flop_per_byte(self) -> float:
        """Arithmetic intensity where the bandwidth slope meets the compute peak."""
        return self.peak_flops / self.bw_bytes_per_s

    def rate(self, intensity: float | np.ndarray) -> float | np.ndarray:
        """Attainable FLOP/s at ``intensity`` FLOP/byte."""
        return np.minimum(self.peak_flops, self.bw_bytes_per_s * np.asarray(intensity, dtype=float))


@dataclass(frozen=True)
class RooflinePoint:
    """One op on one device: its FLOPs, DRAM (or in-bank) bytes and modelled time."""

    op: str
    device: str  # "npu" | "pim"
    flops: float
    bytes: float
    time_s: float
    bound: str = ""

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP/byte (x of the point)."""
        return self.flops / self.bytes

    @property
    def rate(self) -> float:
        """Achieved FLOP/s (y of the point)."""
        return self.flops / self.time_s


@dataclass(frozen=True)
class RooflineData:
    """Everything the roofline plot draws."""

    title: str
    roofs: list[Roof]
    points: list[RooflinePoint]
    omitted: list[str] = field(default_factory=list)  # ops without DRAM bytes or FLOPs (vector ops, collectives)


def roofline_points(result: SimResult) -> RooflineData:
    """NPU and PIM rooflines with one decode layer's ops (plus the LM head) placed on them.

    The ops and their costs are the simulation's own (``SimResult.ops``, from ``simulate(...,
    breakdown=True)``): each op as the first micro-batch's first sub-batch ran it (the LM head over the whole
    micro-batch), costed under the static placement: x = flops / bytes (DRAM bytes on the NPU, bytes read
    inside the banks on PIM), y = flops / time_s. Ops moving no bytes (vector ops) or doing no arithmetic
    (all-reduce, pipeline hand-off) cannot be placed; they are listed in ``omitted``.
    """
    if result.ops is None:
        raise InputError("the result holds no per-op costs; simulate with breakdown=True")
    s = result.setup
    hw = s.system.hardware
    first: dict[str, object] = {}
    for r in result.ops:
        if r.micro_batch == 0 and r.sub_batch in (0, -1) and r.weights_in_sram == 0 and r.op not in first:
            first[r.op] = r
    for r in result.ops:  # ops that only ever run on later sub-batches or micro-batches
        first.setdefault(r.op, r)
    points: list[RooflinePoint] = []
    omitted: list[str] = []
    rows = 0
    for r in first.values():
        if r.phase == "qkv" and not rows:
            rows = r.rows
        if r.device not in ("npu", "pim") or r.flops <= 0 or r.bytes <= 0 or r.time_s <= 0:
            omitted.append(r.op)
            continue
        points.append(RooflinePoint(r.op, r.device, r.flops, r.bytes, r.time_s, _bound(r)))
    roofs = [Roof("npu", f"NPU ({hw.name})", hw.npu.peak_flops, hw.memory.bw_bytes_per_s)]
    if s.system.uses_pim:  # PIM hardware the system never uses gets no roof
        roofs.append(Roof("pim", "PIM (all banks)", hw.pim_peak_flops, hw.pim_internal_bw_bytes_per_s))
    title = (f"Roofline: {s.model.name} on {s.system.name}, one layer at batch {rows} "
             f"(of {s.batch}), tp={s.tp}" + (f", pp={s.pp}" if s.pp > 1 else ""))
    return RooflineData(title, roofs, points, omitted)


def _bound(r) -> str:
    terms = {"compute": r.compute_s, "memory": r.memory_s, "bank-timing": r.bank_s, "link": r.link_s}
    return max(terms, key=terms.__getitem__)


# ---------------------------------------------------------------------------------------------------------
# timeline


@dataclass(frozen=True)
class Segment:
    """One executed stage: a slot of ``time_s`` in which the NPU is busy ``npu_s`` and the PIM ``pim_s``."""

    stage: str  # stage name (A..F, Q/M/R, H)
    rep: int  # 1-based repetition of a repeating stage (its layer within the loop), 0 for one-off stages
    start_s: float
    time_s: float
    npu_s: float
    pim_s: float  # slowest channel's PIM busy time
    npu_work: str
    pim_work: str
    fc_rows_to_pim: int = 0
    attn_to_npu: int = 0  # requests whose attention DBO moved to the NPU
    micro_batch: int = 0  # pipeline micro-batch (0 without pipeline parallelism)

    @property
    def label(self) -> str:
        """Stage name with its repetition, e.g. 'C2'."""
        return f"{self.stage}{self.rep}" if self.rep else self.stage


@dataclass(frozen=True)
class Gap:
    """Repetitions of a stage loop left out of the picture, drawn as a break at ``at_s``."""

    at_s: float
    reps: int
    time_s: float
    stages: str  # e.g. 'C,D'


@dataclass(frozen=True)
class Timeline:
    """An iteration's expanded stage list for one system.

    Invariant: ``sum(seg.time_s for seg in segments) + skipped_s == iteration_time_s``.
    """

    system: str
    model: str
    batch: int
    segments: list[Segment]
    gaps: list[Gap]
    iteration_time_s: float
    has_pim: bool
    micro_batches: int = 1

    @property
    def shown_s(self) -> float:
        """Time covered by the segments."""
        return float(sum(seg.time_s for seg in self.segments))

    @property
    def skipped_s(self) -> float:
        """Time of the repetitions left out."""
        return float(sum(g.time_s for g in self.gaps))


def _blocks(stages) -> list[tuple[int, list[int]]]:
    """Group consecutive stages (indices) with the same repeat count > 1 into loops run in alternation."""
    out: list[tuple[int, list[int]]] = []
    for i, reps in enumerate(stages.repeats.tolist()):
        if reps > 1 and out and out[-1][0] == reps:
            out[-1][1].append(i)
        else:
            out.append((reps, [i]))
    return out


def timeline_segments(result: SimResult, layers: int | None = 3, iteration: int = 0) -> Timeline:
    """Expand iteration ``iteration``'s stages in execution order, showing at most ``layers`` loop repetitions.

    Repeating stages run in alternation (C, D, C, D, ... with sub-batch interleaving; Q, M, R, Q, M, R, ...
    without). With pipeline parallelism the micro-batches follow each other, each closed by its LM head.
    Repetitions past ``layers`` are summarised as a :class:`Gap`; ``layers=None`` shows them all.
    Needs a result simulated with ``keep_stages=True``.
    """
    if layers is not None and layers < 1:
        raise InputError(f"--layers {layers}: show at least 1 layer")
    if not result.iterations:
        raise InputError("the result holds no iterations; simulate with mode='iteration'")
    if not 0 <= iteration < len(result.iterations):
        raise InputError(f"iteration {iteration} out of range: the result holds {len(result.iterations)}")
    if result.stages is None:
        raise InputError("the result holds no stage records; simulate with keep_stages=True")
    it = result.stages.rows(iteration)
    segs: list[Segment] = []
    gaps: list[Gap] = []
    t = 0.0
    mbs = sorted(set(it.micro_batch.tolist()))
    for mb in mbs:
        seq = it.rows_where(it.micro_batch == mb)
        for reps, block in _blocks(seq):
            shown = reps if layers is None else min(reps, layers)
            for r in range(shown):
                for i in block:
                    segs.append(Segment(str(seq.name[i]), r + 1 if reps > 1 else 0, t, float(seq.time_s[i]),
                                        float(seq.npu_s[i]), float(seq.pim_max_s[i]), str(seq.npu_work[i]),
                                        str(seq.pim_work[i]), int(seq.fc_rows_to_pim[i]), int(seq.attn_to_npu[i]),
                                        mb))
                    t += float(seq.time_s[i])
            if shown < reps:
                gaps.append(Gap(t, reps - shown, (reps - shown) * float(seq.time_s[block].sum()),
                                ",".join(str(seq.name[i]) for i in block)))
    s = result.setup
    return Timeline(s.system.name, s.model.name, s.batch, segs, gaps, float(result.iterations[iteration].time_s),
                    s.system.uses_pim, len(mbs))


# ---------------------------------------------------------------------------------------------------------
# system comparison


@dataclass(frozen=True)
class CompareRow:
    """One (system, model) result."""

    system: str
    model: str
    throughput_tokens_per_s: float
    npu_utilization: float
    pim_utilization: float
    uses_pim: bool
    speedup: float | None = None  # over the baseline system on the same model
    workload: str = ""
    batch: int = 0


def compare_table(results: Sequence[SimResult], baseline: str | None = None) -> list[CompareRow]:
    """Throughput and utilizations of each result; with ``baseline``, speedup = throughput / baseline's."""
    base: dict[str, float] = {}
    if baseline is not None:
        for r in results:
            if r.setup.system.name == baseline:
                base[r.setup.model.name] = r.metrics["throughput_tokens_per_s"]
        if not base:
            raise InputError(f"--baseline {baseline}: no result for that system; include it in --systems")
    rows = []
    for r in results:
        m = r.metrics
        sp = None
        if baseline is not None:
            b = base.get(r.setup.model.name)
            if b is None:
                raise InputError(f"--baseline {baseline}: no result on model {r.setup.model.name}")
            sp = m["throughput_tokens_per_s"] / b if b > 0 else math.nan
        rows.append(CompareRow(r.setup.system.name, r.setup.model.name, float(m["throughput_tokens_per_s"]),
                               float(m["npu_utilization"]), float(m["pim_utilization"]),
                               r.setup.system.uses_pim, sp, r.setup.workload.name, r.setup.batch))
    return rows


# ---------------------------------------------------------------------------------------------------------
# Pareto front


@dataclass(frozen=True)
class ParetoPoint:
    """One trial of a two-objective study."""

    number: int
    values: tuple[float, float]
    feasible: bool
    on_front: bool
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParetoData:
    """Trials, front and best point of a two-objective study.

    ``best`` is the front point that is best on the first objective (ties: best on the second).
    """

    study: str
    objectives: tuple[str, str]
    directions: tuple[str, str]  # "minimize" | "maximize"
    points: list[ParetoPoint]
    best: ParetoPoint | None
    skipped: int = 0  # trials not drawn: not COMPLETE (pruned = infeasible, failed, running) or without values

    @property
    def front(self) -> list[ParetoPoint]:
        """Front points sorted by the first objective."""
        return sorted((p for p in self.points if p.on_front), key=lambda p: p.values)


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-dominated rows of an (n, 2) array of objective values under ``directions``.

    A point is dominated if another is no worse in both objectives and better in one; identical points
    do not dominate each other.
    """
    v = np.asarray(values, dtype=float).reshape(-1, 2).copy()
    for j, d in enumerate(directions):
        if d == "maximize":
            v[:, j] = -v[:, j]
        elif d != "minimize":
            raise InputError(f"objective direction {d!r}: expected 'minimize' or 'maximize'")
    n = v.shape[0]
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort((v[:, 1], v[:, 0]))
    best2, best2_f1 = math.inf, math.inf
    for i in order:
        f1, f2 = v[i]
        if f2 < best2:
            mask[i] = True
            best2, best2_f1 = f2, f1
        elif f2 == best2 and f1 == best2_f1:
            mask[i] = True  # identical to a front point
    return mask


def _norm_direction(d: Any) -> str:
    s = str(getattr(d, "name", d)).lower()
    return {"minimize": "minimize", "maximize": "maximize"}.get(s, s)


def pareto_points(table: Sequence[Mapping[str, Any]], objectives: Sequence[str] = ("objective 0", "objective 1"),
                  directions: Sequence[str] = ("minimize", "minimize"), study: str = "") -> ParetoData:
    """Points of a trials table (rows with number, state, params, values, feasible) and their Pareto front.

    Only complete trials with two finite values are plotted; the front is taken over the feasible ones.
    """
    if len(objectives) != 2 or len(directions) != 2:
        raise InputError(f"the Pareto plot needs a two-objective study; study '{study}' has "
                         f"{len(objectives)} objective(s) ({', '.join(map(str, objectives))})")
    dirs = tuple(_norm_direction(d) for d in directions)
    kept: list[tuple[int, tuple[float, float], bool, dict]] = []
    for row in table:
        state = str(row.get("state", "COMPLETE")).upper()
        vals = row.get("values")
        if state != "COMPLETE" or vals is None or len(vals) != 2:
            continue
        a, b = (float(x) if x is not None else math.nan for x in vals)
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        kept.append((int(row.get("number", len(kept))), (a, b), bool(row.get("feasible", True)),
                     dict(row.get("params") or {})))
    feas = [i for i, k in enumerate(kept) if k[2]]
    mask = pareto_mask(np.array([kept[i][1] for i in feas]).reshape(-1, 2), dirs) if feas else np.zeros(0, bool)
    on_front = {i for i, m in zip(feas, mask, strict=True) if m}
    pts = [ParetoPoint(n, v, f, i in on_front, p) for i, (n, v, f, p) in enumerate(kept)]
    front = [p for p in pts if p.on_front]
    best = None
    if front:
        sign = [1.0 if d == "minimize" else -1.0 for d in dirs]
        best = min(front, key=lambda p: (sign[0] * p.values[0], sign[1] * p.values[1]))
    return ParetoData(study, (str(objectives[0]), str(objectives[1])), dirs, pts, best,  # type: ignore[arg-type]
                      len(table) - len(kept))


# ---------------------------------------------------------------------------------------------------------
# regime map heatmaps


@dataclass(frozen=True)
class HeatPanel:
    """One heatmap: values[i, j] at (row i, column j); NaN where no point runs."""

    title: str
    row_label: str
    rows: list[str]
    col_label: str
    cols: list[str]
    values: np.ndarray
    threshold: float | None = None  # pct panels: outline cells within the figure's band of this value


@dataclass(frozen=True)
class HeatmapData:
    """Panels side by side with one colour scale.

    ``kind``: 'ratio' (log colour scale centred on 1, cells at or above ``threshold`` outlined) or 'pct'
    (0..1, cells within ``band`` of ``threshold`` outlined)."""

    title: str
    panels: list[HeatPanel]
    kind: str = "ratio"
    value_label: str = ""
    threshold: float | None = None
    band: float = 0.0
    note: str = ""


def _batch_cols(m: Any) -> list[int]:
    return sorted({r.point.batch for r in m.results})


def regime_speedup(m: Any, baseline: str, rows: str = "context", *, system: str = "librapim",
                   npu_arrays: Sequence[int] | None = None, registers: Sequence[int] | None = None,
                   workload: str | None = None, threshold: float | None = None) -> HeatmapData:
    """LibraPIM's speedup over ``baseline`` on the regime map (a ``studies.reproduction.RegimeMap``).

    ``rows='context'``: batch x context, one panel per NPU strength in ``npu_arrays``, at the first of
    ``registers``; ``rows='npu'``: batch x NPU arrays, one panel per register count, on ``workload``
    (default: the map's first). Each cell is the geometric mean over the models that fit.
    """
    from ..studies.reproduction import CONTEXTS, LABELS, heat

    ax = m.axes
    batches = _batch_cols(m)
    npus = list(npu_arrays or ax.npu_arrays)
    regs = list(registers or ax.registers)
    name = LABELS.get(baseline, baseline)

    def ratio(r):
        return r.ratio(system, baseline)

    panels = []
    if rows == "context":
        wls = [w for w in ax.workloads]
        for n in npus:
            vals = heat(m, ratio, ("workload", wls), ("batch", batches), npu=n, registers=regs[0])
            panels.append(HeatPanel(f"{n} systolic array{'s' * (n > 1)}, R {regs[0]}", "context",
                                    [CONTEXTS.get(w, w) for w in wls], "batch", [str(b) for b in batches], vals))
        where = "geometric mean over the models that fit"
    elif rows == "npu":
        wl = workload or ax.workloads[0]
        for r_ in regs:
            vals = heat(m, ratio, ("npu", npus), ("batch", batches), workload=wl, registers=r_)
            panels.append(HeatPanel(f"{CONTEXTS.get(wl, wl)}, R {r_}", "NPU systolic arrays",
                                    [str(n) for n in npus], "batch", [str(b) for b in batches], vals))
        where = "geometric mean over the models that fit"
    else:
        raise InputError(f"--rows '{rows}': choose context or npu")
    return HeatmapData(f"{LABELS.get(system, system)} / {name}: decode throughput ratio ({where})", panels,
                       "ratio", f"{LABELS.get(system, system)} / {name}", threshold,
                       note="outlined: at or above " + (f"{threshold:g}x" if threshold else "-"))


UTIL_PANELS = (("npu_utilization", "NPU busy time"), ("npu_compute_utilization", "NPU compute (of peak)"),
               ("pim_utilization", "PIM busy time"), ("pim_mac_utilization", "PIM MAC (of peak)"))


def regime_utilization(m: Any, npu: int, registers: int, *, system: str = "librapim") -> HeatmapData:
    """LibraPIM's utilizations (both definitions, NPU and PIM) over batch x context at one NPU strength and
    register count; each cell is the mean over the models that fit. Outlined: within 2 points of the
    published 77% (NPU) and 38% (PIM)."""
    from ..studies.reproduction import CONTEXTS, LABELS, PUBLISHED, heat

    ax = m.axes
    batches = _batch_cols(m)
    panels = []
    for metric, label in UTIL_PANELS:
        vals = heat(m, lambda r, k=metric: r.value(system, k), ("workload", list(ax.workloads)),
                    ("batch", batches), geometric=False, npu=npu, registers=registers)
        pub = PUBLISHED["librapim_npu_util" if metric.startswith("npu") else "librapim_pim_util"][0]
        panels.append(HeatPanel(label, "context", [CONTEXTS.get(w, w) for w in ax.workloads], "batch",
                                [str(b) for b in batches], vals, pub))
    return HeatmapData(f"{LABELS.get(system, system)} utilization, {npu} systolic array{'s' * (npu > 1)}, R {registers} "
                       "(mean over the models that fit)", panels, "pct", "utilization",
                       None, band=0.05, note=f"outlined: within 5 points of the published value; published: NPU up to {PUBLISHED['librapim_npu_util'][0]:.0%}, "
                                  f"PIM up to {PUBLISHED['librapim_pim_util'][0]:.0%}")
