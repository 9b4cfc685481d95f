"""Scalar oracle of the decode engine with LibraPIM's runtime scheduler (issue 11), written from its semantics.

Plain Python loops: per iteration, per schedule candidate, per micro-batch, per stage, per channel, per
decision. Its evaluation calls nothing of ``schedule.plan`` / ``schedule.engine`` / ``optimize.dbo`` (only
:func:`check_engine` runs the engine, to compare). What it reuses is the
physics: the cost tables (``CostTables``), the figures of one FC decision (``optimize.stage.fc_at`` /
``fc_cols_at``, ``npu_time``), the concurrency mode's ``channel_time``, ``stage.row_steps`` (round(rows i /
ROW_STEPS)), the rows of ``plan.KINDS`` (what each stage kind runs) and the predictor's noise hash
(``engine.prediction_noise``). What it checks independently is the schedule's structure, the splits, the
candidate choice and the DBO search (by brute force over every decision).

Semantics (docs/model/schedule.md, docs/model/dbo.md, issue 11):

1. Micro-batches (pp > 1): an iteration's requests sorted stably by channel; the i-th of that order goes to
   micro-batch i mod pp. pp = 1: one micro-batch.
2. Candidates: ``flat`` (stages Q, M, R per layer), ``count`` and ``context`` (stages A..F). Rule scheduler:
   ``count`` if the system interleaves and the smallest non-empty micro-batch holds >= sub_batch_min_batch
   requests, else ``flat``. Runtime scheduler: ``flat`` always; ``count`` and ``context`` too when the system
   interleaves and every non-empty micro-batch holds >= 2 requests; the smallest predicted total (stage time x
   repeats over the candidate's stages, LM heads excluded: the same for all) wins, ties flat < count < context.
3. Splits, per (micro-batch, channel) queue in admission order. ``count``: the first floor(n/2) (+1 for
   "extra") to sub-batch 0, the rest to 1; the odd queues of a micro-batch, in channel order, alternate extra =
   1, 0, 1, ... ``context``: the queue by context length descending (ties: admission order), positions dealt
   0, 1, 1, 0, 0, 1, 1, 0, ...; an odd queue whose pattern gives its extra request to the other side than the
   count split does (pattern side: 0 if n % 4 == 1, 1 if n % 4 == 3) has all its labels flipped.
4. Stages: ``plan.KINDS`` rows. Repeats per_layer * L + extra, L = layers // pp. FC rows = the sub-batch's
   requests (flat: the micro-batch's). A kind that may find its weights in SRAM gets the share
   min(1, sram / bytes), bytes = the group's weight bytes at the larger sub-batch's rows; else 0.
5. Stage time under a decision: NPU = max(systolic, vector (+ softmax, + attention MACs it runs), stream (+ KV
   it reads)) + all-reduce; channel c = mode.channel_time(its PIM attention, PIM FC, its PIM data-bus time +
   PIM FC's, NPU stream, NPU KV reads through c, riding PIM FC); stage = max(NPU, max_c channel, FC chain).
6. DBO (enabled, hardware with PIM), per balanced stage with repeats > 0:
   - without attention (Q, R): the first minimum over every FC decision (row steps i = 0..ROW_STEPS, then
     column tiles j = 1..COLUMN_STEPS when dbo.fc_columns);
   - with attention (C, D, M): the best of: nothing moved; every FC decision (in that order); attention moved
     to the NPU alone; attention moved beside FC row steps i in JOINT_STEPS (distinct y strictly between 0 and
     rows; only with dbo.joint and fc_to_pim). A move is taken only if strictly shorter than the best so far.
     Attention moves: units are requests, or (dbo.attention_by_heads, kv_heads / tp > 1, the request's
     channel holding <= HEAD_UNITS_MAX_REQUESTS of the stage's requests) its KV heads as equal shares; only
     movable units (``t.movable_by_len``) move; per channel the moved set is a prefix of the channel's units by
     (PIM seconds / KV bytes) descending (stable). Every combination of per-channel prefixes is enumerated;
     among the shortest, the one moving the fewest KV bytes is kept (the engine's sweep stops at the first
     minimum, which is that one).
   Decisions are taken on the predictor's view (every request's PIM time and data-bus time times
   ``prediction_noise``); the figures are those of the true times under the decisions.
7. Per iteration: the chosen candidate's stages (figure x repeats; energy x tp * pp) plus, per micro-batch,
   the LM head (DBO with dbo.lm_head, or an FC home on the PIM: vocabulary-column tiles, the first minimum)
   with its pipeline hand-off (pp > 1) and energy x tp.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from librapim_cli.cost.tables import COLUMN_STEPS
from librapim_cli.optimize.stage import (
    BYTES,
    C_CHAIN,
    C_ENERGY,
    C_FLOPS,
    C_LINK,
    C_MEM,
    C_PF,
    C_PF_ENERGY,
    C_PF_FLOPS,
    C_PFIO,
    C_RIDE,
    C_SA,
    C_VEC,
    CL_ENERGY,
    CL_FLOPS,
    CL_MEM,
    CL_PIM,
    CL_PIM_E,
    CL_PIM_FLOPS,
    CL_PIM_IO,
    CL_SA,
    ENERGY,
    FLOPS,
    MEM,
    ROW_STEPS,
    SA,
    fc_at,
    fc_cols_at,
    npu_time,
    row_steps,
)
from librapim_cli.schedule import engine
from librapim_cli.schedule.engine import prediction_noise
from librapim_cli.schedule.plan import FLAT, INTERLEAVED, KINDS

#: the oracle's own copies of the decision space (issue 11); a change in the engine shows as a mismatch
JOINT_STEPS = (2, 4, 8, 16, 32)
HEAD_UNITS_MAX_REQUESTS = 4
#: attention_best enumerates every combination of per-channel prefixes up to this many combinations
BRUTE_MAX = 4096
CANDIDATES = ("flat", "count", "context")
HEAD = 4  # the LM head's FC group (cost.tables.STACK_GROUPS)
# columns of CostTables.attn_stacked
A_PIM, A_IO, A_KV, A_FLOPS, A_SOFT, A_PIM_E, A_NPU_E = range(7)
#: execution order of the stages of a micro-batch (the LM head last)
STAGE_ORDER = tuple(k.name for k in KINDS) + ("H",)
FIELDS = ("time_s", "npu_busy_s", "npu_sa_busy_s", "pim_busy_s", "pim_busy_max_s", "npu_flops", "pim_flops",
          "energy_j", "attn_bytes", "attn_offloaded_bytes", "fc_flops", "fc_flops_offloaded")


@dataclass
class Stage:
    """One executed stage (or LM head ``H``) of the chosen candidate."""

    mb: int
    name: str
    repeats: int
    rows: int
    attn_requests: int
    figures: dict  # FIELDS of one repetition (energy of one device)
    y: int = 0  # FC rows moved to the PIM
    j: int = 0  # FC column tiles moved to the PIM
    units: int = 0  # attention units moved to the NPU
    predicted: float = 0.0
    partial: bool = False  # some request moved only some of its KV heads
    inst: Inst | None = None  # the stage instance (None for the LM head)


@dataclass
class Iteration:
    candidate: str
    figures: dict
    stages: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)  # predicted total per allowed candidate
    options: dict = field(default_factory=dict)  # every allowed candidate's Iteration


# ---- 1. micro-batches and 3. splits ---------------------------------------------------------------------------
def micro_batches(ch: list[int], pp: int) -> list[list[int]]:
    """Request indices of each micro-batch, in admission order."""
    if pp == 1:
        return [list(range(len(ch)))]
    order = sorted(range(len(ch)), key=lambda r: ch[r])  # stable
    mbs: list[list[int]] = [[] for _ in range(pp)]
    for i, r in enumerate(order):
        mbs[i % pp].append(r)
    return [sorted(m) for m in mbs]


def _queues(reqs: list[int], ch: list[int]) -> dict[int, list[int]]:
    q: dict[int, list[int]] = {}
    for r in reqs:  # admission order
        q.setdefault(ch[r], []).append(r)
    return dict(sorted(q.items()))


def _extras(queues: dict[int, list[int]]) -> dict[int, int]:
    out, odd_seen = {}, 0
    for c, q in queues.items():
        if len(q) % 2:
            out[c] = 1 if odd_seen % 2 == 0 else 0
            odd_seen += 1
        else:
            out[c] = 0
    return out


def split_count(reqs: list[int], ch: list[int]) -> dict[int, int]:
    """Sub-batch of each request of a micro-batch under the ``count`` split."""
    queues = _queues(reqs, ch)
    extra = _extras(queues)
    sub = {}
    for c, q in queues.items():
        first = len(q) // 2 + extra[c]
        for rank, r in enumerate(q):
            sub[r] = 0 if rank < first else 1
    return sub


def split_context(reqs: list[int], ch: list[int], lens: list[int]) -> dict[int, int]:
    """Sub-batch of each request of a micro-batch under the ``context`` split."""
    queues = _queues(reqs, ch)
    extra = _extras(queues)
    sub = {}
    for c, q in queues.items():
        n = len(q)
        by_len = sorted(q, key=lambda r: -lens[r])  # stable: ties keep admission order
        flip = False
        if n % 2:
            pattern_side = 0 if n % 4 == 1 else 1
            count_side = 0 if extra[c] else 1
            flip = pattern_side != count_side
        for p, r in enumerate(by_len):
            label = 1 if p % 4 in (1, 2) else 0
            sub[r] = 1 - label if flip else label
    return sub


# ---- the instance context ---------------------------------------------------------------------------------------
class Oracle:
    """One schedule (``schedule.context.Schedule``): tables, system, model, tp, pp."""

    def __init__(self, sched) -> None:
        self.s = sched
        self.t = sched.tables
        self.sys = sched.system
        self.C = self.t.channels
        self.dbo = self.sys.dbo if (self.sys.dbo.enabled and self.t.has_pim) else None
        self.on_pim = self.sys.placement.attention == "pim" and self.t.has_pim
        self.fc_home_pim = self.sys.placement.fc == "pim" and self.t.has_pim
        self.columns = self.dbo is not None and self.dbo.fc_columns and self.t.cols_stack is not None
        self.L = sched.model.layers // sched.pp

    # physics wrappers (scalars)
    def fc(self, gi: int, rows: int, cache: float, y: int = 0, j: int = 0) -> np.ndarray:
        a = (np.array([gi]), np.array([rows]), np.array([float(cache)]))
        if j > 0:
            return np.asarray(fc_cols_at(self.t, *a, np.array([j])), dtype=float)[0]
        return np.asarray(fc_at(self.t, *a, np.array([y])), dtype=float)[0]

    def chan(self, pim_attn, pim_fc, pim_io, npu_w, npu_kv, ride) -> float:
        return float(self.t.mode.channel_time(self.t.mode_params, pim_attn, pim_fc, pim_io, npu_w, npu_kv, ride))

    def fc_decisions(self, rows: int, with_columns: bool) -> list[tuple[int, int]]:
        """Every FC decision (y, j) in the engine's order: row steps 0..ROW_STEPS, then column tiles."""
        out = [(int(row_steps(rows, i)), 0) for i in range(ROW_STEPS + 1)]
        if with_columns:
            out += [(0, j) for j in range(1, COLUMN_STEPS + 1)]
        return out


@dataclass
class Req:
    idx: int  # position in the iteration (admission order)
    L: int
    ch: int
    col: np.ndarray  # attn_stacked[:, L]
    movable: bool
    pim_view: float  # the predictor's PIM seconds
    io_view: float  # and data-bus seconds


class Inst:
    """A stage instance: its FC group and its attention.

    A decision is (FC figures X, moved), ``moved`` mapping a request index to how many of its ``n_units`` equal
    attention units move to the NPU. What stays on a channel is summed over what stays (so a channel whose
    attention all moved holds exactly zero, not a rounding residue).
    """

    def __init__(self, o: Oracle, kind: int, mb: int, rows: int, attn: list[Req], cache: float, reps: int):
        self.o, self.k, self.mb, self.rows, self.attn, self.cache, self.reps = o, kind, mb, rows, attn, cache, reps
        self.kind = KINDS[kind]
        self.gi = self.kind.fc_group
        self.tot = np.zeros(7)
        for r in attn:
            self.tot = self.tot + r.col
        self.n_units = {r.idx: 1 for r in attn}
        self.by_channel: list[list[Req]] = [[] for _ in range(o.C)]
        for r in attn:
            self.by_channel[r.ch].append(r)

    def moved_sums(self, moved: dict, channel: int | None = None) -> tuple[float, float, float, list[float]]:
        """KV bytes, attention FLOPs and energy change (NPU - PIM) of the moved units (of one channel, if
        given); KV bytes per channel."""
        kv = fl = de = 0.0
        kv_c = [0.0] * self.o.C
        for r in self.attn if channel is None else self.by_channel[channel]:
            m = moved.get(r.idx, 0)
            if m:
                f = m / self.n_units[r.idx]
                kv += r.col[A_KV] * f
                fl += r.col[A_FLOPS] * f
                de += (r.col[A_NPU_E] - r.col[A_PIM_E]) * f
                kv_c[r.ch] += r.col[A_KV] * f
        return kv, fl, de, kv_c

    def left_on_pim(self, view: bool, moved: dict, channel: int | None = None) -> tuple[list[float], list[float]]:
        """Per channel, the PIM attention seconds and data-bus seconds that stay on the PIM."""
        pc, ic = [0.0] * self.o.C, [0.0] * self.o.C
        if not self.o.on_pim:
            return pc, ic
        for r in self.attn if channel is None else self.by_channel[channel]:
            n = self.n_units[r.idx]
            m = moved.get(r.idx, 0)
            if m == n:
                continue
            f = 1.0 if m == 0 else (n - m) / n
            pc[r.ch] += (r.pim_view if view else r.col[A_PIM]) * f
            ic[r.ch] += (r.io_view if view else r.col[A_IO]) * f
        return pc, ic

    # -- 5. stage time and figures under a decision
    def npu_parts(self, X, kv_off=0.0, fl_off=0.0) -> tuple[float, float]:
        """(NPU time, the NPU's stream every channel carries)."""
        t = self.o.t
        if self.o.on_pim:
            soft = self.tot[A_SOFT] if t.softmax_on_npu else 0.0  # an in-stack softmax leaves the NPU alone
            vec = X[C_VEC] + soft / t.vector_flops + fl_off / t.vector_flops
            stream = X[C_MEM]
            npu_mem = stream + kv_off / t.npu_bw_bytes_per_s
        else:  # the NPU runs the attention: its MACs on the vector units, its KV in its stream, at the bandwidth
            # share its kernel over this many requests reaches, plus the kernels' fixed time in both terms
            n_req = len(self.attn) // t.kv_spread
            fixed = t.npu_attn_fixed_s if n_req > 0 else 0.0
            share = float(t.npu_attn_bw_share[min(n_req, t.max_rows)])
            vec = X[C_VEC] + (self.tot[A_SOFT] + self.tot[A_FLOPS]) / t.vector_flops + fixed
            stream = X[C_MEM] + self.tot[A_KV] / (t.npu_bw_bytes_per_s * share) + fixed
            npu_mem = stream
        return float(npu_time(X[C_SA], vec, npu_mem, X[C_LINK])), stream

    def level(self, X, stream, pim, io, kv_bytes) -> float:
        """One channel's time."""
        return self.o.chan(pim, X[C_PF], io + X[C_PFIO], stream, kv_bytes / self.o.t.ch_bw_bytes_per_s, X[C_RIDE])

    def time(self, X, view: bool, moved: dict | None = None) -> float:
        moved = moved or {}
        kv_off, fl_off, _, kv_c = self.moved_sums(moved)
        npu, stream = self.npu_parts(X, kv_off, fl_off)
        pc, ic = self.left_on_pim(view, moved)
        chan = max(self.level(X, stream, pc[c], ic[c], kv_c[c]) for c in range(self.o.C))
        return max(npu, chan, float(X[C_CHAIN]))

    def figures(self, X, moved: dict, fc_flops: float) -> dict:
        o = self.o
        kv_off, fl_off, e_swap, kv_c = self.moved_sums(moved)
        npu, stream = self.npu_parts(X, kv_off, fl_off)
        pc, ic = self.left_on_pim(False, moved)
        chan = max(self.level(X, stream, pc[c], ic[c], kv_c[c]) for c in range(o.C))
        on = o.on_pim
        return {
            "time_s": max(npu, chan, float(X[C_CHAIN])),
            "npu_busy_s": npu,
            "npu_sa_busy_s": float(X[C_SA]),
            "pim_busy_s": sum(pc) / o.C + X[C_PF],
            "pim_busy_max_s": max(pc) + X[C_PF],
            "npu_flops": float(X[C_FLOPS]),
            "pim_flops": (self.tot[A_FLOPS] - fl_off if on else 0.0) + X[C_PF_FLOPS],
            "energy_j": X[C_ENERGY] + X[C_PF_ENERGY] + (self.tot[A_PIM_E] if on else self.tot[A_NPU_E]) + e_swap,
            "attn_bytes": self.tot[A_KV],
            "attn_offloaded_bytes": kv_off if on else self.tot[A_KV],
            "fc_flops": fc_flops,
            "fc_flops_offloaded": float(X[C_PF_FLOPS]) if o.dbo is not None else 0.0,
            "channel_max_s": chan,
        }

    # -- 6. DBO
    def units_by_channel(self) -> list[list[Req]]:
        """Each channel's movable units (a request once per unit), in moving order."""
        o = self.o
        heads = max(1, max(1, o.s.model.kv_heads // o.s.tp) // o.t.kv_spread)  # KV heads in one part
        by_heads = o.dbo.attention_by_heads and heads > 1
        per_ch = [0] * o.C
        for r in self.attn:
            per_ch[r.ch] += 1
        chans: list[list[Req]] = [[] for _ in range(o.C)]
        for r in self.attn:
            n = heads if by_heads and per_ch[r.ch] <= HEAD_UNITS_MAX_REQUESTS else 1
            self.n_units[r.idx] = n
            if r.movable:
                chans[r.ch] += [r] * n
        for c in range(o.C):  # PIM seconds per KV byte, descending (a unit's share cancels); stable
            chans[c].sort(key=lambda r: -(r.pim_view / self.n_units[r.idx])
                          / max(r.col[A_KV] / self.n_units[r.idx], 1.0))
        return chans

    def prefix_levels(self, X, chans: list[list[Req]]):
        """Per channel c and prefix length k (0..units): the channel's level on the predictor's view after its
        first k units moved, and the KV bytes and attention FLOPs the NPU takes over with them."""
        _, stream = self.npu_parts(X)
        level, kv, fl = [], [], []
        for c in range(self.o.C):
            lv, kb, fb = [], [], []
            for k in range(len(chans[c]) + 1):
                moved = _counts(chans[c][:k])
                kv_off, fl_off, _, _ = self.moved_sums(moved, channel=c)
                pc, ic = self.left_on_pim(True, moved, channel=c)
                lv.append(self.level(X, stream, pc[c], ic[c], kv_off))
                kb.append(kv_off)
                fb.append(fl_off)
            level.append(lv)
            kv.append(kb)
            fl.append(fb)
        return level, kv, fl

    def combo_time(self, X, level, kv, fl, ks) -> tuple[float, float]:
        """(stage time, KV bytes moved) when channel c moves its first ks[c] units."""
        kvb = sum(kv[c][k] for c, k in enumerate(ks))
        flb = sum(fl[c][k] for c, k in enumerate(ks))
        npu, _ = self.npu_parts(X, kvb, flb)
        return max(npu, max(level[c][k] for c, k in enumerate(ks)), float(X[C_CHAIN])), kvb

    def attention_best(self, X, chans: list[list[Req]], method: str = "auto"):
        """The best combination of per-channel prefixes with at least one unit moved, on the predictor's view:
        (time, moved) of the shortest, the fewest KV bytes among equals; None if no unit can move.

        ``brute``: every combination. ``thresholds``: for every level value v any channel reaches, each channel
        moves its shortest prefix whose level is <= v. That family holds the optimum and its fewest-bytes
        representative: a combination of time T has every level <= T and the NPU's share grows with the bytes
        moved, so the shortest prefixes reaching the largest level value <= T are no slower and move the
        fewest bytes (tests check the two methods agree). ``auto``: brute force up to BRUTE_MAX combinations.
        """
        if not any(chans):
            return None
        level, kv, fl = self.prefix_levels(X, chans)
        sizes = [len(u) for u in chans]
        if method == "auto":
            method = "brute" if math.prod(n + 1 for n in sizes) <= BRUTE_MAX else "thresholds"
        if method == "brute":
            combos = itertools.product(*[range(n + 1) for n in sizes])
        else:
            # per channel, its record prefixes (level below every shorter prefix's): the shortest prefix at or
            # below v is the last record whose level is <= v, found by bisection on the falling record levels
            records = []
            for c in range(self.o.C):
                rec = [(-level[c][0], 0)]
                for k in range(1, len(level[c])):
                    if level[c][k] < -rec[-1][0]:
                        rec.append((-level[c][k], k))
                records.append(rec)

            def shortest(v):
                ks = []
                for rec in records:
                    i = bisect.bisect_left(rec, (-v, -1))  # the first record with level <= v
                    if i == len(rec):
                        return None
                    ks.append(rec[i][1])
                return tuple(ks)

            combos = (ks for v in sorted({lv for c in level for lv in c}) if (ks := shortest(v)) is not None)
        best = None
        for ks in combos:
            if not any(ks):
                continue
            tm, kvb = self.combo_time(X, level, kv, fl, ks)
            if best is None or (tm, kvb) < best[:2]:
                best = (tm, kvb, ks)
        if best is None:
            return None
        tm, _, ks = best
        return tm, _counts([r for c, k in enumerate(ks) for r in chans[c][:k]])

    def decide(self) -> tuple[np.ndarray, dict, int, int, float]:
        """(FC figures, moved, y, j, predicted time) of this instance's decision."""
        o = self.o
        X0 = o.fc(self.gi, self.rows, self.cache)
        if o.fc_home_pim:  # every FC GEMM on the PIM
            X = o.fc(self.gi, self.rows, self.cache, self.rows)
            return X, {}, self.rows, 0, self.time(X, True)
        dbo = o.dbo
        if dbo is None or not self.kind.balanced or self.reps == 0:
            return X0, {}, 0, 0, self.time(X0, True)
        if self.kind.attn_sub < 0:  # FC only: the first minimum over every FC decision
            if not dbo.fc_to_pim or self.rows == 0:
                return X0, {}, 0, 0, self.time(X0, True)
            best = None
            for y, j in o.fc_decisions(self.rows, o.columns):
                X = o.fc(self.gi, self.rows, self.cache, y, j)
                tm = self.time(X, True)
                if best is None or tm < best[0]:
                    best = (tm, X, y, j)
            return best[1], {}, best[2], best[3], best[0]
        best = (self.time(X0, True), X0, {}, 0, 0)
        if dbo.fc_to_pim:
            for y, j in o.fc_decisions(self.rows, o.columns)[1:]:
                X = o.fc(self.gi, self.rows, self.cache, y, j)
                tm = self.time(X, True)
                if tm < best[0]:
                    best = (tm, X, {}, y, j)
        if o.on_pim and dbo.attention_to_npu:
            chans = self.units_by_channel()
            ys = [0]
            if dbo.joint and dbo.fc_to_pim:
                for i in JOINT_STEPS:
                    y = int(row_steps(self.rows, i))
                    if 0 < y < self.rows and y not in ys:
                        ys.append(y)
            for y in ys:
                X = o.fc(self.gi, self.rows, self.cache, y)
                res = self.attention_best(X, chans)
                if res is not None and res[0] < best[0]:
                    best = (res[0], X, res[1], y, 0)
        tm, X, moved, y, j = best
        return X, moved, y, j, tm


def _counts(units: list[Req]) -> dict:
    out: dict = {}
    for r in units:
        out[r.idx] = out.get(r.idx, 0) + 1
    return out


# ---- 4. candidates and stages -------------------------------------------------------------------------------------
def _instances(o: Oracle, cand: str, mb: int, reqs: list[int], subs: dict[int, int], R: list[Req]) -> list[Inst]:
    groups = [[r for r in reqs if subs.get(r, 0) == s] for s in (0, 1)]
    sizes = [len(g) for g in groups]
    kinds = FLAT if cand == "flat" else INTERLEAVED
    out = []
    for k in kinds:
        kd = KINDS[k]
        rows = sizes[kd.fc_sub] if kd.fc_sub >= 0 else 0
        attn = [part for r in groups[kd.attn_sub] for part in R[r]] if kd.attn_sub >= 0 else []
        cache = 0.0
        if kd.may_be_cached:
            wb = float(o.t.npu_stack[kd.fc_group, BYTES, max(sizes)])
            cache = min(1.0, o.t.sram_bytes / wb) if wb > 0 else 0.0
        reps = kd.per_layer * o.L + kd.extra
        out.append(Inst(o, k, mb, rows, attn, cache, reps))
    return out


def _head(o: Oracle, rows: int) -> tuple[dict, float, int]:
    """Figures of one micro-batch's LM head (energy of one device), its time without the hand-off, and its
    column tiles moved."""
    t = o.t
    h = t.npu_stack[HEAD, :, rows]
    sa, mem = float(h[SA]), float(h[MEM])
    time, npu, fl, e, pim, pfl, j_best = max(sa, mem), max(sa, mem), float(h[FLOPS]), float(h[ENERGY]), 0.0, 0.0, 0
    use_cols = t.cols_stack is not None and (o.fc_home_pim or (o.dbo is not None and o.dbo.lm_head))
    if use_cols:
        best = None
        js = [COLUMN_STEPS] if o.fc_home_pim else range(COLUMN_STEPS + 1)
        for j in js:
            c = t.cols_stack[HEAD, :, j, rows]
            npu_j = max(c[CL_SA], c[CL_MEM])
            tot = max(npu_j, o.chan(0.0, c[CL_PIM], c[CL_PIM_IO], c[CL_MEM], 0.0, 0.0))
            if best is None or tot < best[0]:
                best = (tot, j)
        time, j_best = best
        c = t.cols_stack[HEAD, :, j_best, rows]
        npu, sa, fl = max(c[CL_SA], c[CL_MEM]), float(c[CL_SA]), float(c[CL_FLOPS])
        e, pim, pfl = float(c[CL_ENERGY] + c[CL_PIM_E]), float(c[CL_PIM]), float(c[CL_PIM_FLOPS])
    fig = {"time_s": time, "npu_busy_s": npu, "npu_sa_busy_s": sa, "pim_busy_s": pim, "pim_busy_max_s": pim,
           "npu_flops": fl, "pim_flops": pfl, "energy_j": e, "attn_bytes": 0.0, "attn_offloaded_bytes": 0.0,
           "fc_flops": fl + pfl, "fc_flops_offloaded": pfl if o.dbo is not None else 0.0}
    return fig, time, j_best


def run_iteration(sched, lens, ch, predictor: str = "view") -> Iteration:
    """One decode iteration (requests with contexts ``lens`` in channels ``ch``, in admission order).

    The returned iteration is the chosen candidate's; ``options`` holds every allowed candidate's, so a caller
    can check a choice between candidates whose totals tie to rounding. ``predictor``: what the runtime
    scheduler adds up for a stage DBO does not decide: "view" (its time on the predictor's view, the docstring
    semantics) or "true" (its true time).
    """
    o = Oracle(sched)
    t, sys_ = o.t, o.sys
    lens = [int(x) for x in lens]
    ch = [int(x) for x in ch]
    noise = [1.0] * len(lens)
    if o.dbo is not None and o.on_pim and o.dbo.prediction_error > 0 and lens:
        noise = [float(x) for x in prediction_noise(o.dbo.seed, np.array(lens, dtype=np.int64),
                                                    np.array(ch, dtype=np.int64), o.dbo.prediction_error)]
    # every request is kv_spread parts (its KV heads spread over consecutive channels: part p in channel
    # (c + p) mod C, each with one part's figures); R[i] lists request i's parts
    P = t.kv_spread
    if o.dbo is not None and o.on_pim and o.dbo.prediction_error > 0 and lens and P > 1:
        noise = [[float(x) for x in prediction_noise(o.dbo.seed, np.array([L] * P, dtype=np.int64),
                                                     (c + np.arange(P)) % o.C, o.dbo.prediction_error)]
                 for L, c in zip(lens, ch, strict=True)]
    else:
        noise = [[f] * P for f in noise]
    R = []
    for i, (L, c, f) in enumerate(zip(lens, ch, noise, strict=True)):
        col = np.array(t.attn_stacked[:, L], dtype=float)
        R.append([Req(i * P + p, L, (c + p) % o.C, col, bool(t.movable_by_len[L]), col[A_PIM] * f[p],
                      col[A_IO] * f[p]) for p in range(P)])
    mbs = micro_batches(ch, sched.pp)
    live = [m for m in mbs if m]
    smallest = min((len(m) for m in live), default=0)
    if sys_.scheduler == "runtime":
        allowed = ["flat"]
        if sys_.sub_batch_interleaving and live and smallest >= 2:
            allowed += ["count", "context"]
    else:
        rule = sys_.sub_batch_interleaving and live and smallest >= sys_.sub_batch_min_batch
        allowed = ["count" if rule else "flat"]
    heads = []
    for mb, reqs in enumerate(mbs):
        if reqs:
            fig, _, j = _head(o, len(reqs))
            if sched.pp > 1:
                fig["time_s"] += sched.p2p_latency_s + len(reqs) * sched.p2p_s_per_row
            heads.append(Stage(mb, "H", 1, len(reqs), 0, fig, 0, j, 0, fig["time_s"]))
    dev = sched.tp * sched.pp
    options = {}
    for cand in allowed:
        it = Iteration(cand, dict.fromkeys(FIELDS, 0.0))
        total = 0.0
        for mb, reqs in enumerate(mbs):
            if not reqs:
                continue
            if cand == "flat":
                subs = {}
            elif cand == "count":
                subs = split_count(reqs, ch)
            else:
                subs = split_context(reqs, ch, lens)
            for inst in _instances(o, cand, mb, reqs, subs, R):
                X, moved, y, j, pred = inst.decide()
                fc_fl = float(X[C_FLOPS] + X[C_PF_FLOPS]) if inst.kind.balanced else 0.0
                fig = inst.figures(X, moved, fc_fl)
                dyn = o.dbo is not None and inst.kind.balanced and inst.kind.attn_sub >= 0 and inst.reps > 0
                if predictor == "true" and not dyn:
                    pred = fig["time_s"]
                total += pred * inst.reps
                for f in FIELDS:
                    it.figures[f] += fig[f] * inst.reps * (dev if f == "energy_j" else 1)
                if inst.reps > 0:
                    partial = any(0 < m < inst.n_units[i] for i, m in moved.items())
                    it.stages.append(Stage(inst.mb, inst.kind.name, inst.reps, inst.rows, len(inst.attn) // t.kv_spread, fig, y, j,
                                           sum(moved.values()), pred, partial, inst))
        for h in heads:
            for f in FIELDS:
                it.figures[f] += h.figures[f] * (sched.tp if f == "energy_j" else 1)
            it.stages.append(h)
        it.stages.sort(key=lambda st: (st.mb, STAGE_ORDER.index(st.name)))
        options[cand] = (total, it)
    cand = min(allowed, key=lambda c: (options[c][0], CANDIDATES.index(c)))
    out = options[cand][1]
    out.totals = {c: options[c][0] for c in allowed}
    out.options = {c: options[c][1] for c in allowed}
    return out


def run_iterations(sched, lens_list, channels_list, predictor: str = "view") -> list[Iteration]:
    return [run_iteration(sched, x, c, predictor) for x, c in zip(lens_list, channels_list, strict=True)]


# ---- the comparison with the engine -------------------------------------------------------------------------------
REL = 1e-9


def check_engine(sched, lens, chans, predictor: str = "true", stats: collections.Counter | None = None):
    """Assert that ``schedule.engine.run_iterations`` equals this oracle on every iteration: the candidate run
    (or one whose predicted total ties the oracle's to rounding), every summed figure (relative ``REL``) and, per
    executed stage, its repeats, rows, time and moves. ``stats`` (optional) counts what the decisions exercised.
    Returns the oracle's iterations."""
    many = engine.run_iterations(sched, lens, chans, keep_stages=True)
    out = []
    for k, (x, c) in enumerate(zip(lens, chans, strict=True)):
        r = run_iteration(sched, x, c, predictor)
        cand = CANDIDATES[int(many.candidate[k])]
        if cand != r.candidate:  # a tie to rounding between candidates: either is right
            assert r.totals[cand] == pytest.approx(r.totals[r.candidate], rel=REL), (k, cand, r.totals)
            r = r.options[cand]
        for f in FIELDS:
            assert float(getattr(many, f)[k]) == pytest.approx(r.figures[f], rel=REL, abs=1e-15), (k, f)
        got = many.stages.rows(k)
        assert list(got.name) == [s.name for s in r.stages], k
        for i, s in enumerate(r.stages):
            where = (k, s.mb, s.name)
            assert int(got.micro_batch[i]) == s.mb and int(got.repeats[i]) == s.repeats, where
            assert int(got.fc_rows[i]) == s.rows and int(got.attn_requests[i]) == s.attn_requests, where
            assert float(got.time_s[i]) == pytest.approx(s.figures["time_s"], rel=REL, abs=1e-15), where
            assert (int(got.fc_rows_to_pim[i]), int(got.fc_cols_to_pim[i]), int(got.attn_to_npu[i])) == \
                (s.y, s.j, s.units), where
        if stats is not None:
            stats["cand_" + r.candidate] += 1
            for s in r.stages:
                body = s.name != "H"
                stats["rows"] += body and s.y > 0 and not s.units
                stats["columns"] += body and s.j > 0
                stats["head_columns"] += not body and s.j > 0
                stats["attention"] += s.units > 0 and s.y == 0
                stats["joint"] += s.units > 0 and s.y > 0
                stats["heads"] += s.partial
        out.append(r)
    return out
