"""The stage engine: decode iterations evaluated in one vectorized pass (docs/model/schedule.md).

One iteration is a batch of one. Every request of every iteration is one row of the request arrays, every
stage instance (a stage kind of one micro-batch of one iteration, laid out by ``schedule.plan``) one row
of the instance arrays, and DBO decides all balanced instances at once (``optimize.dbo``). The figures of
every instance come from ``optimize.stage``'s formulas over the cost tables; an iteration sums its
instances' figures times their repeats, plus the LM head and the pipeline hand-off of each micro-batch.

Evaluation is split by what the figures depend on:

- :func:`prepare` (once per requests-per-iteration vector, memoized per schedule for small K): the layout,
  and everything that depends only on it and on the cost tables: the NPU side of every instance, the LM
  heads, and DBO's decision for balanced stages without attention (they depend only on their FC group,
  rows and SRAM reuse), plus the FC-offload curves of the balanced stages that have attention;
- :func:`run_iterations_flat` (every call): the attention of every group of requests, the stage times,
  and DBO for the balanced stages with attention.

With a noisy DBO predictor (``dbo.prediction_error > 0``) DBO decides on a view in which every request's
PIM time is off by a factor uniform in 1 +/- prediction_error; the factor is a fixed pseudo-random function
of (``dbo.seed``, context length, channel), so it does not depend on how iterations are batched. The
figures are those of the true times under those decisions.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from ..cost.tables import CostTables
from ..optimize.dbo import Requests, StageProblem, best_fc, decide_attention
from ..optimize.stage import (
    BYTES,
    C_ENERGY,
    C_FLOPS,
    C_LINK,
    C_MEM,
    C_PF,
    C_PF_ENERGY,
    C_PF_FLOPS,
    C_PFIO,
    C_SA,
    C_VEC,
    DRAM_ENERGY,
    ENERGY,
    FLOPS,
    LINK,
    MEM,
    PF_ENERGY,
    PF_FLOPS,
    PF_IO,
    PF_TIME,
    SA,
    VEC,
    busiest_channel,
    channel_times,
    fc_curves,
    fc_grid,
    npu_time,
)
from .context import Schedule
from .plan import BOTH, HEAD, HEAD_STAGE, KINDS, Layout, layout

# figures summed per iteration (IterationBatch fields besides ``tokens``)
FIELDS = ("time_s", "npu_busy_s", "npu_sa_busy_s", "pim_busy_s", "pim_busy_max_s", "npu_flops", "pim_flops",
          "energy_j", "attn_bytes", "attn_offloaded_bytes", "fc_rows", "fc_rows_offloaded")
# rows of the per-group attention aggregates
G_PMAX, G_IOMAX, G_PMEAN, G_SOFT, G_KV, G_FLOPS, G_PIM_E, G_NPU_E = range(8)
# aggregate row of each attention-table column 2..6 (kv, flops, softmax, PIM energy, NPU energy)
_AGG_ROW = np.array([-1, -1, G_KV, G_FLOPS, G_SOFT, G_PIM_E, G_NPU_E])
LAYOUT_MEMO = 256  # prepared layouts remembered per schedule (serving steps repeat batch sizes)
MEMO_MAX_K = 16  # only layouts of at most this many iterations are remembered


@dataclass(frozen=True, slots=True)
class IterationResult:
    """Figures of one decode iteration (per device; energy for the whole system)."""

    time_s: float
    tokens: int
    npu_busy_s: float
    npu_sa_busy_s: float
    pim_busy_s: float  # sum over stages of the mean channel's PIM busy time
    pim_busy_max_s: float  # sum over stages of the slowest channel's PIM busy time
    npu_flops: float
    pim_flops: float
    energy_j: float  # whole system (all devices)
    attn_bytes: float
    attn_offloaded_bytes: float
    fc_rows: float  # FC token rows in DBO-balanced stages (x repeats)
    fc_rows_offloaded: float


@dataclass(frozen=True)
class StageTable:
    """Executed stages of every iteration, one row per stage instance (repeats > 0) and per LM head,
    in execution order: iteration, micro-batch, stage."""

    iteration: np.ndarray
    micro_batch: np.ndarray
    name: np.ndarray  # stage names (A..F, Q/M/R, H)
    repeats: np.ndarray
    time_s: np.ndarray  # one repetition
    npu_s: np.ndarray
    npu_sa_s: np.ndarray
    pim_max_s: np.ndarray
    pim_mean_s: np.ndarray
    channel_max_s: np.ndarray  # slowest channel's busy time under the concurrency mode
    energy_j: np.ndarray  # one repetition, one device
    fc_rows: np.ndarray
    fc_rows_to_pim: np.ndarray
    attn_requests: np.ndarray
    attn_to_npu: np.ndarray  # requests whose attention DBO moved to the NPU
    npu_work: np.ndarray
    pim_work: np.ndarray

    def rows(self, k: int) -> StageTable:
        """The stages of iteration k."""
        lo, hi = np.searchsorted(self.iteration, [k, k + 1])
        return StageTable(**{f.name: getattr(self, f.name)[lo:hi] for f in fields(self)})

    def rows_where(self, mask: np.ndarray) -> StageTable:
        """The stages where ``mask`` holds."""
        return StageTable(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def __len__(self) -> int:
        return int(self.name.shape[0])


@dataclass(frozen=True)
class IterationBatch:
    """Per-iteration figures of K iterations (arrays of length K, fields as in IterationResult)."""

    tokens: np.ndarray
    time_s: np.ndarray
    npu_busy_s: np.ndarray
    npu_sa_busy_s: np.ndarray
    pim_busy_s: np.ndarray
    pim_busy_max_s: np.ndarray
    npu_flops: np.ndarray
    pim_flops: np.ndarray
    energy_j: np.ndarray
    attn_bytes: np.ndarray
    attn_offloaded_bytes: np.ndarray
    fc_rows: np.ndarray
    fc_rows_offloaded: np.ndarray
    stages: StageTable | None = None  # when asked (keep_stages)
    layout: Layout | None = None  # when asked (keep_stages): what the iterations ran

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    def result(self, k: int) -> IterationResult:
        """Iteration k as an IterationResult."""
        return IterationResult(tokens=int(self.tokens[k]), **{f: float(getattr(self, f)[k]) for f in FIELDS})

    def results(self) -> list[IterationResult]:
        """Every iteration as an IterationResult, built from plain lists."""
        cols = {f: getattr(self, f).tolist() for f in FIELDS}
        tok = self.tokens.tolist()
        return [IterationResult(tokens=tok[k], **{f: cols[f][k] for f in FIELDS}) for k in range(len(self))]

    def totals(self) -> dict[str, float]:
        """Sums of every field over the iterations (and of ``tokens``)."""
        out = {f: float(getattr(self, f).sum()) for f in FIELDS}
        out["tokens"] = float(self.tokens.sum())
        return out


class LazyResults(Sequence):
    """A read-only sequence of IterationResult over consecutive IterationBatch chunks, built on access."""

    def __init__(self, batches: Sequence[IterationBatch] = ()) -> None:
        self._starts: list[int] = []
        self._batches: list[IterationBatch] = []
        self._n = 0
        for b in batches:
            self.append_batch(b)

    def append_batch(self, batch: IterationBatch) -> None:
        """Add the next len(batch) iterations."""
        self._starts.append(self._n)
        self._batches.append(batch)
        self._n += len(batch)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("iteration index out of range")
        c = bisect_right(self._starts, i) - 1
        return self._batches[c].result(i - self._starts[c])


# ---- preparation: everything that depends only on the layout ----------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """A layout with the figures that do not depend on the requests' context lengths (module docstring).

    Instance arrays (S): the NPU side at ``rows - y0`` and the PIM-FC side at ``y0``, where ``y0`` is DBO's
    decision for balanced stages without attention (0 elsewhere). ``dyn`` lists the balanced instances with
    attention (DBO decides them every call); their FC-offload curves over y are ``curves`` (n_dyn, 8, Y).
    """

    lay: Layout
    sa: np.ndarray
    vec: np.ndarray
    mem: np.ndarray
    link: np.ndarray
    flops: np.ndarray
    energy: np.ndarray  # NPU energy (SRAM reuse deducted) + PIM-FC energy at y0
    pf: np.ndarray  # PIM-FC seconds at y0 (every channel)
    pfio: np.ndarray
    pf_flops: np.ndarray
    y0: np.ndarray
    reps: np.ndarray
    fc_rows: np.ndarray  # FC rows counted in offload_fc_share: balanced instances' rows
    dyn: np.ndarray
    curves: np.ndarray | None
    starts: np.ndarray  # first instance of each iteration that has instances
    starts_k: np.ndarray
    head: np.ndarray  # (5, K): per iteration, LM heads + hand-offs: time, npu, sa, flops, energy (all devices)
    mbs: np.ndarray  # live micro-batches (flat index)
    head_mb: np.ndarray  # (5, live mbs): head time incl. hand-off, npu, sa, rows, energy (for stage records)


def prepare(s: Schedule, n_k: np.ndarray) -> Prepared:
    """The layout of K iterations of ``n_k`` requests and its request-independent figures (memoized)."""
    key = n_k.tobytes()
    hit = s.layouts.get(key)
    if hit is not None:
        return hit
    prep = _prepare(s, n_k)
    if n_k.shape[0] <= MEMO_MAX_K:
        if len(s.layouts) >= LAYOUT_MEMO:
            s.layouts.clear()
        s.layouts[key] = prep
    return prep


def _prepare(s: Schedule, n_k: np.ndarray) -> Prepared:
    t, system = s.tables, s.system
    K = int(n_k.shape[0])
    lay = layout(system, s.pp, s.layers_per_stage, n_k, t.npu_stack[BOTH, BYTES], t.sram_bytes)
    gi, rows, cached, ag = lay.inst_fc_group, lay.inst_rows, lay.inst_cached, lay.inst_ag
    S = rows.shape[0]
    y0 = np.zeros(S, dtype=np.int64)
    dbo = system.dbo if s.dbo_on else None
    live_bal = lay.inst_balanced & (lay.inst_reps > 0)
    has_attn = ag < lay.n_groups
    curves = None
    dyn = np.zeros(0, dtype=np.int64)
    if dbo is not None:
        dyn = np.flatnonzero(live_bal & has_attn)
        fixed = np.flatnonzero(live_bal & ~has_attn & (rows > 0)) if dbo.fc_to_pim else np.zeros(0, dtype=np.int64)
        if fixed.size:  # FC-only balanced stages: DBO's decision depends on (group, rows, SRAM reuse) alone
            key = np.stack((gi[fixed], rows[fixed], cached[fixed]))
            uniq, inv = np.unique(key, axis=1, return_inverse=True)
            c = fc_curves(t, uniq[0], uniq[1], uniq[2].astype(bool))
            z = np.zeros(uniq.shape[1])
            y0[fixed] = best_fc(fc_grid(t, c, z, z, z, z))[0][inv.reshape(-1)]  # y > 0 only if strictly shorter
        if dbo.fc_to_pim and dyn.size:
            curves = fc_curves(t, gi[dyn], rows[dyn], cached[dyn])
    nb = rows - y0
    n = t.npu_stack[gi, :, nb]
    p = t.pim_fc_stack[np.minimum(gi, 3), :, y0]
    energy = n[:, ENERGY] - np.where(cached, n[:, DRAM_ENERGY], 0.0) + np.where(y0 > 0, p[:, PF_ENERGY], 0.0)
    ks = lay.inst_k
    starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1]))) if S else np.zeros(0, dtype=np.int64)
    # LM head of every micro-batch, and its hand-off from the previous pipeline stage
    mbs = np.flatnonzero(lay.mb_rows > 0)
    hr = lay.mb_rows[mbs]
    h = t.npu_stack[HEAD, :, hr]
    head_s = npu_time(h[:, SA], h[:, VEC], h[:, MEM], h[:, LINK])
    p2p = (s.p2p_latency_s + hr * s.p2p_s_per_row) if s.pp > 1 else np.zeros(hr.shape[0])
    kk = mbs // s.pp
    head = np.stack([np.bincount(kk, weights=v, minlength=K) for v in
                     (head_s + p2p, head_s, h[:, SA], h[:, FLOPS], h[:, ENERGY] * s.tp)])
    return Prepared(lay, n[:, SA], n[:, VEC], np.where(cached, 0.0, n[:, MEM]), t.npu_stack[gi, LINK, rows],
                    n[:, FLOPS], energy, np.where(y0 > 0, p[:, PF_TIME], 0.0), np.where(y0 > 0, p[:, PF_IO], 0.0),
                    np.where(y0 > 0, p[:, PF_FLOPS], 0.0), y0, lay.inst_reps,
                    np.where(lay.inst_balanced, rows, 0).astype(float), dyn, curves, starts, ks[starts], head,
                    mbs, np.stack((head_s + p2p, head_s, h[:, SA], hr.astype(float), h[:, ENERGY])))


# ---- evaluation --------------------------------------------------------------------------------------------
def run_iterations(s: Schedule, lens_list: list[np.ndarray], channels_list: list[np.ndarray],
                   keep_stages: bool = False) -> IterationBatch:
    """Evaluate K decode iterations (requests ``lens_list[k]`` in channels ``channels_list[k]``) together."""
    n_k = np.array([len(x) for x in lens_list], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    lens = np.concatenate(lens_list).astype(np.int64) if n_k.sum() else empty
    ch = np.concatenate(channels_list).astype(np.int64) if n_k.sum() else empty
    return run_iterations_flat(s, lens, ch, n_k, keep_stages)


def run_iteration(s: Schedule, lens: np.ndarray, channels: np.ndarray, keep_stages: bool = False) -> IterationBatch:
    """One decode iteration: a batch of one."""
    lens = np.asarray(lens, dtype=np.int64)
    return run_iterations_flat(s, lens, np.asarray(channels, dtype=np.int64),
                               np.array([lens.shape[0]], dtype=np.int64), keep_stages)


def _group_aggregates(t: CostTables, lens, ch, group, G1: int, pim_s, io_s):
    """Per group (G1 rows, the last one empty): per-channel PIM / data-bus sums and the other columns."""
    C = t.channels
    gc = group * C + ch
    pim_c = np.bincount(gc, weights=pim_s, minlength=G1 * C).reshape(G1, C)
    io_c = np.bincount(gc, weights=io_s, minlength=G1 * C).reshape(G1, C)
    agg = np.empty((8, G1))
    agg[G_PMAX] = pim_c.max(axis=1)
    agg[G_IOMAX] = io_c.max(axis=1)
    agg[G_PMEAN] = pim_c.sum(axis=1) / C
    # columns proportional to the context (exact slopes): slope x the group's sum(L); the others summed
    prop = t.attn_prop_rows
    if prop.size:
        agg[_AGG_ROW[prop]] = np.multiply.outer(t.attn_slopes[prop], np.bincount(group, weights=lens, minlength=G1))
    for col in t.attn_sum_rows:
        agg[_AGG_ROW[col]] = np.bincount(group, weights=t.attn_stacked[col, lens], minlength=G1)
    return pim_c, io_c, agg


def run_iterations_flat(s: Schedule, lens: np.ndarray, ch: np.ndarray, n_k: np.ndarray,
                        keep_stages: bool = False) -> IterationBatch:
    """Evaluate K decode iterations; iteration k holds the next ``n_k[k]`` entries of ``lens`` / ``ch``."""
    t = s.tables
    K = int(n_k.shape[0])
    prep = prepare(s, n_k)
    lay = prep.lay
    on_pim = s.on_pim
    # ---- attention aggregates of every group of requests, gathered per stage instance
    g0 = t.attn_stacked[:2, lens]  # per request: PIM seconds, of which on the data bus
    pim_c, io_c, agg = _group_aggregates(t, lens, ch, lay.group, lay.n_groups + 1, g0[0], g0[1])
    a = agg[:, lay.inst_ag]
    vf = t.vector_flops
    # ---- every stage instance under the prepared decision (nothing moved for stages with attention)
    zeros = np.zeros(lay.inst_rows.shape[0])
    if on_pim:
        vec_x, mem_x = a[G_SOFT] / vf, zeros
        pmax, iomax, pmean, pim_fl = a[G_PMAX], a[G_IOMAX], a[G_PMEAN], a[G_FLOPS]
        attn_off, attn_e = zeros, a[G_PIM_E]
        mem = prep.mem
    else:  # attention on the NPU: it streams the KV and runs the MACs on the vector units
        vec_x, mem_x = (a[G_SOFT] + a[G_FLOPS]) / vf, a[G_KV] / t.npu_bw_bytes_per_s
        pmax = iomax = pmean = pim_fl = zeros
        attn_off, attn_e = a[G_KV], a[G_NPU_E]
        mem = prep.mem + mem_x
    energy = prep.energy + attn_e
    sa = prep.sa
    vec = prep.vec + vec_x
    npu = npu_time(sa, vec, mem, prep.link)
    chan = busiest_channel(t, pmax, iomax, prep.pf, prep.pfio, mem)
    time = np.maximum(npu, chan)
    pim_max, pmean, pim_fl = pmax + prep.pf, pmean + prep.pf, pim_fl + prep.pf_flops
    npu_fl, y = prep.flops, prep.y0
    moved_n = None
    if prep.dyn.size:
        (time, npu, sa, npu_fl, energy, pim_max, pmean, pim_fl, attn_off, y, chan, moved_n) = _dbo(
            s, prep, lens, ch, g0, pim_c, io_c, a, vec_x, mem_x, attn_e, vec, mem, pmax, iomax, npu, time,
            [time, npu, sa, npu_fl, energy, pim_max, pmean, pim_fl, attn_off, y, chan])
    # ---- per-iteration sums: stage instances x repeats, plus the LM heads and hand-offs
    block = np.stack((time, npu, sa, pmean, pim_max, npu_fl, pim_fl, energy, a[G_KV], attn_off, prep.fc_rows,
                      y)) * prep.reps
    out = np.zeros((len(FIELDS), K))
    if prep.starts.size:
        out[:, prep.starts_k] = np.add.reduceat(block, prep.starts, axis=1)
    h = prep.head
    out[0] += h[0]
    out[1] += h[1]
    out[2] += h[2]
    out[5] += h[3]
    out[7] = out[7] * (s.tp * s.pp) + h[4]
    stages = _records(s, prep, time, npu, sa, pim_max, pmean, chan, energy, y, moved_n) if keep_stages else None
    return IterationBatch(n_k, *out, stages=stages, layout=lay if keep_stages else None)


def prediction_noise(seed: int, lens: np.ndarray, ch: np.ndarray, err: float) -> np.ndarray:
    """The DBO predictor's factor on each request's PIM time: 1 + err * (2u - 1), u in [0, 1) a SplitMix64 hash
    of (seed, context length, channel) (module docstring)."""
    m = np.uint64(0xFFFFFFFFFFFFFFFF)
    x = (lens.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ \
        ((ch.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) * np.uint64(0xD1B54A32D192ED03))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & m
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & m
    x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(float) * 2.0 ** -53
    return 1.0 + err * (2.0 * u - 1.0)


def _dbo(s: Schedule, prep: Prepared, lens, ch, g0, pim_c, io_c, a, vec_x, mem_x, attn_e, vec, mem, pmax, iomax, npu,
         time, figs):
    """DBO for the dynamic instances (balanced, with attention); returns the figures updated in copies."""
    t, dbo, lay = s.tables, s.system.dbo, prep.lay
    on_pim = s.on_pim
    d = prep.dyn
    ag = lay.inst_ag[d]
    pim_s, io_s = g0[0], g0[1]
    p_max, i_max, time_p = pmax[d], iomax[d], time[d]
    if on_pim and dbo.prediction_error > 0 and lens.shape[0] > 0:
        f = prediction_noise(dbo.seed, lens, ch, dbo.prediction_error)
        pim_s, io_s = pim_s * f, io_s * f
        G1 = lay.n_groups + 1
        gc = lay.group * t.channels + ch
        p_c = np.bincount(gc, weights=pim_s, minlength=G1 * t.channels).reshape(G1, -1)[ag]
        i_c = np.bincount(gc, weights=io_s, minlength=G1 * t.channels).reshape(G1, -1)[ag]
        p_max, i_max = p_c.max(axis=1), i_c.max(axis=1)
        time_p = np.maximum(npu[d], busiest_channel(t, p_max, i_max, 0.0, 0.0, mem[d]))
    else:
        p_c, i_c = pim_c[ag], io_c[ag]
    n = d.shape[0]
    best = time_p.copy()
    yd = np.zeros(n, dtype=np.int64)
    if prep.curves is not None:  # FC rows to the PIM: every y at once
        yb, pred = best_fc(fc_grid(t, prep.curves, vec_x[d], mem_x[d], p_max, i_max))
        better = pred < best
        yd = np.where(better, yb, 0)
        best = np.where(better, pred, best)
    moved = None
    att = np.zeros(n, dtype=bool)
    if on_pim and dbo.attention_to_npu:
        # only a stage whose PIM side bounds it, holding a request whose move can lower its channel, can gain
        cand = np.flatnonzero(time_p > npu[d])
        if cand.size:
            kv = a[G_KV, d]
            fpb = np.where(kv > 0, a[G_FLOPS, d] / np.where(kv > 0, kv, 1.0), 0.0)
            prob = StageProblem(prep.sa[d], vec[d], mem[d], prep.link[d], npu[d], time_p, fpb)
            inst_of_group = np.full(lay.n_groups + 1, -1, dtype=np.int64)
            inst_of_group[ag] = np.arange(n)  # a group is the attention of at most one balanced instance
            inst_of_group[lay.n_groups] = -1
            req_inst = inst_of_group[lay.group]
            reqs = Requests(req_inst, ch, pim_s, io_s, t.attn_stacked[2, lens], t.movable_by_len[lens], p_c, i_c)
            dec = decide_attention(t, prob, reqs, best)
            if dec.moved is not None:
                moved, att = dec.moved, dec.attn
                yd = np.where(att, 0, yd)
    time, npu, sa, npu_fl, energy, pim_max, pmean, pim_fl, attn_off, y, chan_all = (x.copy() for x in figs)
    moved_n = np.zeros(time.shape[0], dtype=np.int64)
    fc = np.flatnonzero(yd > 0)
    if fc.size:  # FC rows on the PIM (nothing moved to the NPU): figures at y from the curves, true attention
        i = d[fc]
        c = prep.curves[fc, :, yd[fc]]  # (m, 10)
        mem_ = c[:, C_MEM] + mem_x[i]
        npu_ = npu_time(c[:, C_SA], c[:, C_VEC] + vec_x[i], mem_, c[:, C_LINK])
        chan = busiest_channel(t, pmax[i], iomax[i], c[:, C_PF], c[:, C_PFIO], mem_)
        chan_all[i] = chan
        time[i] = np.maximum(npu_, chan)
        npu[i], sa[i], npu_fl[i] = npu_, c[:, C_SA], c[:, C_FLOPS]
        energy[i] = c[:, C_ENERGY] + c[:, C_PF_ENERGY] + attn_e[i]
        pim_max[i] = pmax[i] + c[:, C_PF]
        pmean[i] = pmean[i] + c[:, C_PF]
        pim_fl[i] = pim_fl[i] + c[:, C_PF_FLOPS]
        y[i] = yd[fc]
    if moved is not None:  # attention moved to the NPU: true figures of the moved requests
        sel = np.flatnonzero(att)
        i = d[sel]
        S = sel.shape[0]
        C = t.channels
        q_of = np.full(n, -1, dtype=np.int64)
        q_of[sel] = np.arange(S)
        inst_of_group = np.full(lay.n_groups + 1, -1, dtype=np.int64)
        inst_of_group[ag] = np.arange(n)
        j = q_of[inst_of_group[lay.group[moved]]]
        col = t.attn_stacked[:, lens[moved]]
        kv_off = np.bincount(j, weights=col[2], minlength=S)
        fl_off = np.bincount(j, weights=col[3], minlength=S)
        idx = j * C + ch[moved]
        pc = pim_c[ag[sel]] - np.bincount(idx, weights=col[0], minlength=S * C).reshape(S, C)
        ic = io_c[ag[sel]] - np.bincount(idx, weights=col[1], minlength=S * C).reshape(S, C)
        kv_c = np.bincount(idx, weights=col[2], minlength=S * C).reshape(S, C) / t.ch_bw_bytes_per_s
        npu_ = npu_time(sa[i], vec[i] + fl_off / t.vector_flops, mem[i] + kv_off / t.npu_bw_bytes_per_s,
                        prep.link[i])
        chan = channel_times(t, pc, 0.0, ic, mem[i][:, None], kv_c).max(axis=1)
        chan_all[i] = chan
        time[i] = np.maximum(npu_, chan)
        npu[i] = npu_
        # the moved requests' energy on the NPU instead of the PIM
        energy[i] = (energy[i] - np.bincount(j, weights=col[5], minlength=S)
                     + np.bincount(j, weights=col[6], minlength=S))
        pim_max[i] = pc.max(axis=1)
        pmean[i] = pc.sum(axis=1) / C
        pim_fl[i] = pim_fl[i] - fl_off
        attn_off[i] = kv_off
        moved_n[i] = np.bincount(j, minlength=S)
    return time, npu, sa, npu_fl, energy, pim_max, pmean, pim_fl, attn_off, y, chan_all, moved_n


def _records(s: Schedule, prep: Prepared, time, npu, sa, pim_max, pmean, chan, energy, y, moved_n) -> StageTable:
    """The executed stages (repeats > 0) and LM heads, micro-batch by micro-batch in execution order."""
    lay = prep.lay
    live = prep.reps > 0
    mbs = prep.mbs
    names = np.array([k.name for k in KINDS] + [HEAD_STAGE])
    npu_w = np.array([k.npu_work for k in KINDS] + ["LM head"])
    pim_w = np.array([k.pim_work for k in KINDS] + ["-"])
    kind = np.concatenate([lay.inst_kind[live], np.full(mbs.shape[0], len(KINDS))])
    mb_of = np.concatenate([lay.inst_k[live] * s.pp + lay.inst_mb[live], mbs])
    order = np.lexsort((kind, mb_of))  # micro-batch by micro-batch; kinds in table order, head last
    zi = np.zeros(mbs.shape[0], dtype=np.int64)
    zf = np.zeros(mbs.shape[0])
    hm = prep.head_mb
    moved = moved_n if moved_n is not None else np.zeros(time.shape[0], dtype=np.int64)
    cols = dict(
        iteration=mb_of // s.pp, micro_batch=mb_of % s.pp, name=names[kind],
        repeats=np.concatenate([prep.reps[live], np.ones(mbs.shape[0])]).astype(np.int64),
        time_s=np.concatenate([time[live], hm[0]]), npu_s=np.concatenate([npu[live], hm[1]]),
        npu_sa_s=np.concatenate([sa[live], hm[2]]), pim_max_s=np.concatenate([pim_max[live], zf]),
        pim_mean_s=np.concatenate([pmean[live], zf]), channel_max_s=np.concatenate([chan[live], zf]),
        energy_j=np.concatenate([energy[live], hm[4]]),
        fc_rows=np.concatenate([lay.inst_rows[live], hm[3].astype(np.int64)]),
        fc_rows_to_pim=np.concatenate([y[live], zi]),
        attn_requests=np.concatenate([lay.group_rows[lay.inst_ag[live]], zi]),
        attn_to_npu=np.concatenate([moved[live], zi]), npu_work=npu_w[kind], pim_work=pim_w[kind])
    return StageTable(**{k: v[order] for k, v in cols.items()})
