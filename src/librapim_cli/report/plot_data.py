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

from ..cost.npu import npu_cost
from ..cost.pim import snake_channels
from ..errors import InputError
from ..graph.decode import lm_head_op
from ..schedule.breakdown import op_breakdown
from ..simulate import Setup, SimResult, steady_state_batch

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


def _setup_of(x: SimResult | Setup) -> Setup:
    return x.setup if isinstance(x, SimResult) else x


def representative_batch(s: Setup, lens: np.ndarray | None = None,
                         sub_batch: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The context lengths one layer's ops see, and the channels holding their KV.

    Default lengths: the first steady-state batch of iteration mode (the same draw ``simulate`` makes first).
    With pipeline parallelism the batch splits into ``pp`` micro-batches (the first is taken); with sub-batch
    interleaving (and ``sub_batch``) each FC / attention op runs on half a micro-batch (the first half is
    taken), as in ``schedule.iteration``.
    """
    if lens is None:
        lens = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    lens = np.asarray(lens, dtype=np.int64)
    channels = snake_channels(lens, s.system.hardware.memory.channels)
    if s.pp > 1:
        lens, channels = lens[0::s.pp], channels[0::s.pp]
    if sub_batch and s.system.sub_batch_interleaving and lens.shape[0] >= s.system.sub_batch_min_batch:
        lens, channels = lens[0::2], channels[0::2]
    return lens, channels


def roofline_points(source: SimResult | Setup, lens: np.ndarray | None = None) -> RooflineData:
    """NPU and PIM rooflines with one decode layer's ops (plus the LM head) placed on them.

    The ops and their costs come from ``schedule.breakdown.op_breakdown`` (static placement, before DBO) for
    the batch of :func:`representative_batch`: x = flops / bytes (DRAM bytes on the NPU, bytes read inside the
    banks on PIM), y = flops / time_s.
    Ops moving no bytes (vector ops) or doing no arithmetic (all-reduce) cannot be placed; they are listed
    in ``omitted``.
    """
    s = _setup_of(source)
    hw = s.system.hardware
    mb_rows = representative_batch(s, lens, sub_batch=False)[0].shape[0]
    lens, channels = representative_batch(s, lens)
    recs = op_breakdown(s, lens, channels)
    if mb_rows != lens.shape[0]:  # the LM head runs once on the whole micro-batch, not per sub-batch
        head = npu_cost(lm_head_op(s.model, s.tp, float(mb_rows)), hw)
        recs = [r if r["op"] != "lm_head" else {**r, "time_s": float(head.time_s), "flops": float(head.flops),
                                                "bytes": float(head.bytes), "bound": str(head.bound)}
                for r in recs]
    points: list[RooflinePoint] = []
    omitted: list[str] = []
    for r in recs:
        flops, nbytes, t = float(r["flops"]), float(r["bytes"]), float(r["time_s"])
        dev = str(r["device"])
        if dev not in ("npu", "pim") or flops <= 0 or nbytes <= 0 or t <= 0:
            omitted.append(str(r["op"]))
            continue
        points.append(RooflinePoint(str(r["op"]), dev, flops, nbytes, t, str(r.get("bound", ""))))
    roofs = [Roof("npu", f"NPU ({hw.name})", hw.npu.peak_flops, hw.memory.bw_bytes_per_s)]
    if s.system.uses_pim:  # PIM hardware the system never uses gets no roof
        roofs.append(Roof("pim", "PIM (all banks)", hw.pim_peak_flops, hw.pim_internal_bw_bytes_per_s))
    title = (f"Roofline: {s.model.name} on {s.system.name}, one layer at batch {lens.shape[0]} "
             f"(of {s.batch}), tp={s.tp}" + (f", pp={s.pp}" if s.pp > 1 else ""))
    return RooflineData(title, roofs, points, omitted)


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


# the stage orders of one micro-batch (schedule.iteration._plan); H (LM head) closes each micro-batch
_PLANS = {"A": ("A", "B", "C", "D", "E", "F"), "Q": ("Q", "M", "R")}


def micro_batch_sequences(stages: Sequence[Any]) -> list[list[Any]]:
    """Split an iteration's stage records into one execution-ordered list per pipeline micro-batch.

    ``schedule.iteration`` records stage j of every micro-batch together (all A's, then all B's, ...) and
    the LM heads (H, one per micro-batch) last; this undoes that interleaving. A stage kind with zero
    repetitions (C, D when a pipeline stage holds one layer) is absent for every micro-batch. Records that
    do not fit the pattern come back as one sequence in recorded order (the times still add up).
    """
    heads = [st for st in stages if st.name == "H"]
    body = [st for st in stages if st.name != "H"]
    m = len(heads)
    if m <= 1:
        return [list(body) + heads]
    try:
        plans = [_PLANS[st.name] for st in body[:m]]
    except KeyError:
        return [list(stages)]
    seqs: list[list[Any]] = [[] for _ in range(m)]
    k = 0
    for j in range(max(len(p) for p in plans)):
        members = [i for i in range(m) if j < len(plans[i])]
        take = body[k:k + len(members)]
        if not take or take[0].name != plans[members[0]][j]:
            continue  # a stage kind with no repetitions: skipped for all micro-batches
        if len(take) != len(members) or any(st.name != plans[i][j] for st, i in zip(take, members, strict=True)):
            return [list(stages)]
        for st, i in zip(take, members, strict=True):
            seqs[i].append(st)
        k += len(members)
    if k != len(body):
        return [list(stages)]
    return [seq + [h] for seq, h in zip(seqs, heads, strict=True)]


def _blocks(stages) -> list[tuple[int, list]]:
    """Group consecutive stages with the same repeat count > 1 into loops run in alternation."""
    out: list[tuple[int, list]] = []
    for st in stages:
        if st.repeats > 1 and out and out[-1][0] == st.repeats:
            out[-1][1].append(st)
        else:
            out.append((st.repeats, [st]))
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
    it = result.iterations[iteration]
    if not it.stages:
        raise InputError("the result holds no stage records; simulate with keep_stages=True")
    segs: list[Segment] = []
    gaps: list[Gap] = []
    t = 0.0
    seqs = micro_batch_sequences(it.stages)
    for mb, seq in enumerate(seqs):
        for reps, block in _blocks(seq):
            shown = reps if layers is None else min(reps, layers)
            for r in range(shown):
                for st in block:
                    d = st.decision
                    moved = 0 if d.attn_to_npu is None else int(np.count_nonzero(d.attn_to_npu))
                    segs.append(Segment(st.name, r + 1 if reps > 1 else 0, t, float(st.time.time_s),
                                        float(st.time.npu_s), float(st.time.pim_max_s), st.npu_work, st.pim_work,
                                        int(d.fc_rows_to_pim), moved, mb))
                    t += float(st.time.time_s)
            if shown < reps:
                gaps.append(Gap(t, reps - shown, (reps - shown) * float(sum(st.time.time_s for st in block)),
                                ",".join(st.name for st in block)))
    s = result.setup
    return Timeline(s.system.name, s.model.name, s.batch, segs, gaps, float(it.time_s), s.system.uses_pim, len(seqs))


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
