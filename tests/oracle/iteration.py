"""One decode iteration through the system's stage schedule (docs/model/schedule.md).

With sub-batch interleaving (NeuPIMs StageProgram.cc, docs/sources.md#s2.5) the batch splits into two halves and,
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
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from librapim_cli.cost.tables import CostTables, build_tables
from librapim_cli.spec.model import ModelSpec
from librapim_cli.spec.system import SystemSpec

from .dbo import decide_many
from .stage import (
    NO_OFFLOAD,
    AttentionSet,
    Decision,
    StageInput,
    StageTime,
    attention_set,
    make_attention_set,
    stage_time,
)


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage of an iteration, for timelines and traces."""

    name: str
    repeats: int
    npu_work: str
    pim_work: str
    time: StageTime
    decision: Decision
    micro_batch: int = 0  # which pipeline micro-batch this stage belongs to


class IterationResult(NamedTuple):
    """Figures of one decode iteration (per device; all TP devices are symmetric). An immutable record."""

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
    stages: tuple[StageRecord, ...] | list[StageRecord] = ()  # kept only when asked (keep_stages)


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
    # memo of stages without attention: their time and DBO decision depend only on (group, rows, cached)
    fc_only_memo: dict = field(default_factory=dict, compare=False, repr=False)


@lru_cache(maxsize=32)
def build_schedule(model: ModelSpec, system: SystemSpec, tp: int, pp: int, max_rows: int, max_len: int) -> Schedule:
    """Cost tables over rows 0..max_rows and contexts 0..max_len, and the schedule's run constants.

    A pure function of frozen specs, so it is cached: repeated runs of one configuration (sweeps,
    comparisons, benchmarks) share the tables.
    """
    tables = build_tables(model, system, tp, max_rows, max_len)
    link = system.link
    row_bytes = model.d_model * model.dtype_bytes
    return Schedule(tables, system, tp, pp, model.layers // pp, row_bytes / link.bw_bytes_per_s, link.latency_s)


def _noisy(a: AttentionSet, t: CostTables, rng: np.random.Generator, err: float) -> AttentionSet:
    """The predictor's view: each request's PIM time off by a uniform relative error in +/- err."""
    f = 1.0 + rng.uniform(-err, err, size=a.size)
    return make_attention_set(t, a.pim_s * f, a.io_s * f, a.kv_bytes, a.flops, a.channel, a.pim_energy_j,
                              a.npu_energy_j, a.softmax_flops)


def _plan(s: Schedule, lens: np.ndarray, ch: np.ndarray, on_pim: bool, interleave: bool):
    """The stages of one micro-batch: (name, repeats, input, DBO-balanced, NPU label, PIM label)."""
    t, L = s.tables, s.layers_per_stage
    n = lens.shape[0]
    if interleave:
        s1 = attention_set(t, lens[0::2], ch[0::2])
        s2 = attention_set(t, lens[1::2], ch[1::2])
        b1, b2 = s1.size, s2.size
        # sub-batch #2 runs the same weights right after #1: if the layer's weights its rows touch fit in SRAM
        # it reuses them (MoE: the experts hit by max(b1, b2) rows)
        cached = bool(t.npu["both"].bytes[max(b1, b2)] <= t.sram_bytes)
        return [
            ("A", 1, StageInput("qkv", b1, None, on_pim), False, "QKV#1", "-"),
            ("B", 1, StageInput("qkv", b2, s1, on_pim, cached), False, "QKV#2", "MHA#1"),
            ("C", L - 1, StageInput("both", b1, s2, on_pim), True, "Proj/FFN#1+QKV#1", "MHA#2"),
            ("D", L - 1, StageInput("both", b2, s1, on_pim, cached), True, "Proj/FFN#2+QKV#2", "MHA#1"),
            ("E", 1, StageInput("rest", b1, s2, on_pim), False, "Proj/FFN#1", "MHA#2"),
            ("F", 1, StageInput("rest", b2, None, on_pim, cached), False, "Proj/FFN#2", "-"),
        ]
    s0 = attention_set(t, lens, ch)
    return [
        ("Q", L, StageInput("qkv", n, None, on_pim), True, "QKV", "-"),
        ("M", L, StageInput(None, 0, s0, on_pim), True, "-", "MHA"),
        ("R", L, StageInput("rest", n, None, on_pim), True, "Proj/FFN", "-"),
    ]


def run_iteration(s: Schedule, lens: np.ndarray, channels: np.ndarray, rng: np.random.Generator | None = None,
                  keep_stages: bool = False) -> IterationResult:
    """Evaluate one decode iteration for requests with context lengths ``lens`` whose KV lives in ``channels``."""
    t, system = s.tables, s.system
    lens = np.asarray(lens, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    n_all = lens.shape[0]
    on_pim = system.placement.attention == "pim" and t.has_pim
    dbo = system.dbo if (system.dbo.enabled and t.has_pim) else None
    noise = dbo is not None and dbo.prediction_error > 0 and rng is not None
    T = npu_busy = npu_sa = pim_mean = pim_max = npu_fl = pim_fl = energy = 0.0
    attn_b = attn_off = rows = rows_off = head_energy = 0.0
    stages: list[StageRecord] = []
    mbs = [(lens, channels)] if s.pp == 1 else [(lens[i::s.pp], channels[i::s.pp]) for i in range(s.pp)]
    mbs = [(ml, mc) for ml, mc in mbs if ml.shape[0] > 0]
    # one interleaving decision for the whole iteration (micro-batches differ by at most one request), so
    # every micro-batch has the same stage list
    interleave = system.sub_batch_interleaving and bool(mbs) and \
        min(ml.shape[0] for ml, _ in mbs) >= system.sub_batch_min_batch
    plans = [_plan(s, ml, mc, on_pim, interleave) for ml, mc in mbs]
    # stage j of every micro-batch is decided together (vectorized DBO across micro-batches)
    for j in range(max((len(p) for p in plans), default=0)):
        col = [p[j] for p in plans if j < len(p)]
        name, reps, _, balanced, nw, pw = col[0]
        if reps <= 0:
            continue
        inps = [c[2] for c in col]
        use_dbo = dbo is not None and balanced
        if all(i.attn is None for i in inps):
            # FC-only stages: deterministic in (group, rows, cached), so memoized per run
            bases, decs = [], []
            for inp in inps:
                key = (inp.group, inp.rows, inp.weights_cached, use_dbo)
                hit = s.fc_only_memo.get(key)
                if hit is None:
                    st0 = stage_time(t, inp, NO_OFFLOAD)
                    d0 = decide_many(t, [inp], dbo, [st0])[0] if use_dbo else NO_OFFLOAD
                    hit = s.fc_only_memo[key] = (st0, d0, stage_time(t, inp, d0) if d0.fc_rows_to_pim else st0)
                bases.append(hit[2])
                decs.append(hit[1])
        else:
            bases = [stage_time(t, inp, NO_OFFLOAD) for inp in inps]
            decs = [NO_OFFLOAD] * len(inps)
            if use_dbo:
                if noise:
                    pred = [StageInput(i.group, i.rows, _noisy(i.attn, t, rng, dbo.prediction_error), i.attn_on_pim,
                                       i.weights_cached) if i.attn is not None else i for i in inps]
                    decs = decide_many(t, pred, dbo, [stage_time(t, i, NO_OFFLOAD) for i in pred])
                else:
                    decs = decide_many(t, inps, dbo, bases)
        for mb, (inp, st, dec, c) in enumerate(zip(inps, bases, decs, col, strict=True)):
            if dec.attn_to_npu is not None or (dec.fc_rows_to_pim and inp.attn is not None):
                st = stage_time(t, inp, dec)
            T += reps * st.time_s
            npu_busy += reps * st.npu_s
            npu_sa += reps * st.npu_sa_s
            pim_mean += reps * st.pim_mean_s
            pim_max += reps * st.pim_max_s
            npu_fl += reps * st.npu_flops
            pim_fl += reps * st.pim_flops
            energy += reps * st.energy_j
            attn_b += reps * st.attn_bytes
            attn_off += reps * st.attn_offloaded_bytes
            if balanced:
                rows += reps * inp.rows
                rows_off += reps * dec.fc_rows_to_pim
            if keep_stages:
                stages.append(StageRecord(c[0], reps, c[4], c[5], st, dec, mb))
    for mb, (ml, _) in enumerate(mbs):
        n = ml.shape[0]
        # LM head on the last pipeline stage (the bottleneck group), plus the activation hand-off from
        # the previous pipeline stage for this micro-batch
        h = t.npu["head"]
        head_s = max(h.sa_s[n], h.vec_s[n], h.mem_s[n]) + h.link_s[n]
        p2p = (s.p2p_latency_s + n * s.p2p_s_per_row) if s.pp > 1 else 0.0
        T += head_s + p2p
        npu_busy += head_s
        npu_sa += h.sa_s[n]
        npu_fl += h.flops[n]
        head_energy += h.energy_j[n] * s.tp
        if keep_stages:
            stages.append(StageRecord("H", 1, "LM head", "-",
                                      StageTime(head_s + p2p, head_s, h.sa_s[n], 0.0, 0.0, 0.0, h.flops[n], 0.0,
                                                h.energy_j[n], 0.0, 0.0), NO_OFFLOAD, mb))
    devices = s.tp * s.pp
    return IterationResult(
        time_s=float(T), tokens=n_all, npu_busy_s=float(npu_busy), npu_sa_busy_s=float(npu_sa),
        pim_busy_s=float(pim_mean), pim_busy_max_s=float(pim_max), npu_flops=float(npu_fl), pim_flops=float(pim_fl),
        energy_j=float(energy) * devices + float(head_energy), attn_bytes=float(attn_b),
        attn_offloaded_bytes=float(attn_off), fc_rows=float(rows), fc_rows_offloaded=float(rows_off), stages=stages,
    )
