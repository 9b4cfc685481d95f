"""One decode iteration through the system's stage schedule (docs/model/schedule.md).

With sub-batch interleaving (NeuPIMs StageProgram.cc, facts.md 2.5) the batch splits into two halves and,
per pipeline stage of ``L`` layers, the stages are::

    A        NPU: QKV#1                 PIM: -
    B        NPU: QKV#2                 PIM: MHA#1
    C x(L-1) NPU: Proj/FFN#1 + QKV#1    PIM: MHA#2
    D x(L-1) NPU: Proj/FFN#2 + QKV#2    PIM: MHA#1
    E        NPU: Proj/FFN#1            PIM: MHA#2
    F        NPU: Proj/FFN#2            PIM: -

Without it, every layer runs QKV, attention, Proj/FFN one after another (Q, M, R, each x L). The LM head
closes the iteration on the NPU. Every stage lasts max(NPU, slowest channel under the concurrency mode);
with DBO on, the optimizer rebalances the repeating stages (C, D; or Q, M, R) every iteration.
With pipeline parallelism the batch is split into ``pp`` micro-batches that follow each other through
every pipeline stage, so an iteration costs the sum of the micro-batches' stage times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cost.tables import CostTables
from ..optimize.dbo import decide
from ..optimize.stage import Decision, StageInput, StageTime, no_offload, stage_time
from ..spec.system import SystemSpec


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage of an iteration, for timelines and traces."""

    name: str
    repeats: int
    npu_work: str
    pim_work: str
    time: StageTime
    decision: Decision


@dataclass(frozen=True)
class IterationResult:
    """Figures of one decode iteration (per device; all TP devices are symmetric)."""

    time_s: float
    tokens: int
    npu_busy_s: float
    npu_sa_busy_s: float
    pim_busy_s: float  # mean over channels
    pim_busy_max_s: float  # slowest channel
    npu_flops: float
    pim_flops: float
    energy_j: float  # whole system (all devices)
    attn_bytes: float
    attn_offloaded_bytes: float
    fc_rows: float  # FC token rows in DBO-balanced stages
    fc_rows_offloaded: float
    stages: list[StageRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    """Run-constant schedule parameters."""

    tables: CostTables
    system: SystemSpec
    tp: int
    pp: int
    layers_per_stage: int
    p2p_s_per_row: float  # activation hand-off between pipeline stages, per token row
    p2p_latency_s: float


def _inputs(t: CostTables, lens: np.ndarray, ch: np.ndarray, group: str | None, rows: int, on_pim: bool,
            idx: np.ndarray | None = None) -> StageInput:
    if idx is not None:
        lens, ch = lens[idx], ch[idx]
    a = t.attn
    return StageInput(group, rows, a.pim_s[lens], a.pim_io_s[lens], a.kv_bytes[lens], a.flops[lens],
                      a.softmax_flops[lens], ch, a.pim_energy_j[lens], a.npu_energy_j[lens], on_pim)


_EMPTY = np.zeros(0, dtype=np.int64)


def _noisy(inp: StageInput, rng: np.random.Generator, err: float) -> StageInput:
    """The predictor's view: each per-request PIM time off by a uniform relative error in +/- err."""
    f = 1.0 + rng.uniform(-err, err, size=inp.pim_s.shape[0])
    return StageInput(inp.group, inp.rows, inp.pim_s * f, inp.io_s * f, inp.kv_bytes, inp.flops, inp.softmax_flops,
                      inp.channel, inp.pim_energy_j, inp.npu_energy_j, inp.attn_on_pim)


def run_iteration(s: Schedule, lens: np.ndarray, channels: np.ndarray, rng: np.random.Generator | None = None,
                  keep_stages: bool = False) -> IterationResult:
    """Evaluate one decode iteration for requests with context lengths ``lens`` whose KV lives in ``channels``."""
    t, system = s.tables, s.system
    lens = np.asarray(lens, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    n_all = lens.shape[0]
    on_pim = system.placement.attention == "pim" and t.has_pim
    dbo = system.dbo if (system.dbo.enabled and t.has_pim) else None
    L = s.layers_per_stage
    acc = np.zeros(12)
    head_energy = 0.0
    stages: list[StageRecord] = []
    if s.pp > 1:
        mbs = [np.arange(i, n_all, s.pp) for i in range(s.pp)]
    else:
        mbs = [None]
    for mb in mbs:
        ml = lens if mb is None else lens[mb]
        mc = channels if mb is None else channels[mb]
        n = ml.shape[0]
        if n == 0:
            continue
        plan: list[tuple[str, int, StageInput, bool, str, str]] = []
        if system.sub_batch_interleaving and n >= system.sub_batch_min_batch:
            i1, i2 = np.arange(0, n, 2), np.arange(1, n, 2)
            b1, b2 = i1.shape[0], i2.shape[0]
            plan = [
                ("A", 1, _inputs(t, ml, mc, "qkv", b1, on_pim, _EMPTY), False, "QKV#1", "-"),
                ("B", 1, _inputs(t, ml, mc, "qkv", b2, on_pim, i1), False, "QKV#2", "MHA#1"),
                ("C", L - 1, _inputs(t, ml, mc, "both", b1, on_pim, i2), True, "Proj/FFN#1+QKV#1", "MHA#2"),
                ("D", L - 1, _inputs(t, ml, mc, "both", b2, on_pim, i1), True, "Proj/FFN#2+QKV#2", "MHA#1"),
                ("E", 1, _inputs(t, ml, mc, "rest", b1, on_pim, i2), False, "Proj/FFN#1", "MHA#2"),
                ("F", 1, _inputs(t, ml, mc, "rest", b2, on_pim, _EMPTY), False, "Proj/FFN#2", "-"),
            ]
        else:
            plan = [
                ("Q", L, _inputs(t, ml, mc, "qkv", n, on_pim, _EMPTY), True, "QKV", "-"),
                ("M", L, _inputs(t, ml, mc, None, 0, on_pim), True, "-", "MHA"),
                ("R", L, _inputs(t, ml, mc, "rest", n, on_pim, _EMPTY), True, "Proj/FFN", "-"),
            ]
        for name, reps, inp, balanced, nw, pw in plan:
            if reps <= 0:
                continue
            if dbo is not None and balanced:
                pred_in = _noisy(inp, rng, dbo.prediction_error) if (dbo.prediction_error > 0 and rng is not None) \
                    else inp
                dec = decide(t, pred_in, dbo)
            else:
                dec = no_offload(inp)
            st = stage_time(t, inp, dec)
            acc += reps * np.array([st.time_s, st.npu_s, st.npu_sa_s, st.pim_mean_s, st.pim_max_s, st.npu_flops,
                                    st.pim_flops, st.energy_j, st.attn_bytes, st.attn_offloaded_bytes,
                                    inp.rows if balanced else 0.0, dec.fc_rows_to_pim if balanced else 0.0])
            if keep_stages:
                stages.append(StageRecord(name, reps, nw, pw, st, dec))
        # LM head on the last pipeline stage (the bottleneck group), plus the activation hand-off from
        # the previous pipeline stage for this micro-batch
        h = t.npu["head"]
        head_s = max(h.sa_s[n], h.vec_s[n], h.mem_s[n]) + h.link_s[n]
        p2p = (s.p2p_latency_s + n * s.p2p_s_per_row) if s.pp > 1 else 0.0
        acc[0] += head_s + p2p
        acc[1] += head_s
        acc[2] += h.sa_s[n]
        acc[5] += h.flops[n]
        head_energy += h.energy_j[n] * s.tp
        if keep_stages:
            stages.append(StageRecord("H", 1, "LM head", "-",
                                      StageTime(head_s + p2p, head_s, h.sa_s[n], 0.0, 0.0, 0.0, h.flops[n], 0.0,
                                                h.energy_j[n], 0.0, 0.0),
                                      Decision(0, np.zeros(0, dtype=bool), float("nan"))))
    devices = s.tp * s.pp
    return IterationResult(
        time_s=float(acc[0]), tokens=n_all, npu_busy_s=float(acc[1]), npu_sa_busy_s=float(acc[2]),
        pim_busy_s=float(acc[3]), pim_busy_max_s=float(acc[4]), npu_flops=float(acc[5]), pim_flops=float(acc[6]),
        energy_j=float(acc[7]) * devices + head_energy, attn_bytes=float(acc[8]), attn_offloaded_bytes=float(acc[9]),
        fc_rows=float(acc[10]), fc_rows_offloaded=float(acc[11]), stages=stages,
    )
