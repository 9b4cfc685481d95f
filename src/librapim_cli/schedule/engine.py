"""The stage engine: decode iterations evaluated in one vectorized pass (docs/model/schedule.md).

One iteration is a batch of one. Every request of every iteration (once per schedule candidate it is laid
out in) is one row of the attention arrays, every stage instance (a stage kind of one micro-batch of one
candidate of one iteration, laid out by ``schedule.plan``) one row of the instance arrays, and DBO decides
all balanced instances at once (``optimize.dbo``). The figures of every instance come from
``optimize.stage``'s formulas over the cost tables; a candidate sums its instances' figures times their
repeats; an iteration keeps its fastest candidate (by the predictor, with a runtime scheduler; the only
one otherwise) and adds the LM head and the pipeline hand-off of each micro-batch.

Evaluation is split by what the figures depend on:

- :func:`prepare` (once per candidate structure, memoized per schedule for small K): the stage
  instances, and everything that depends only on them and on the cost tables: the NPU side of every
  instance, the LM heads (with DBO's column split), DBO's decision for balanced stages without attention
  (they depend only on their FC group, rows and SRAM reuse), and the FC-offload curves of the balanced
  stages with attention;
- :func:`run_iterations_flat` (every call): the attention of every group of requests, the stage times,
  DBO for the balanced stages with attention, and each iteration's choice of candidate.

With a noisy DBO predictor (``dbo.prediction_error > 0``) DBO (and the runtime scheduler) decide on a view
in which every request's PIM time is off by a factor uniform in 1 +/- prediction_error; the factor is a
fixed pseudo-random function of (``dbo.seed``, context length, channel), so it does not depend on how
iterations are batched. The figures are those of the true times under those decisions.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from ..cost.tables import CostTables
from ..optimize.dbo import attention_sweep, remaining
from ..optimize.stage import (
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
    GRID_FIELDS,
    MEM,
    N_CURVES,
    SA,
    busiest_channel,
    channel_times,
    decode,
    fc_curves,
    fc_decisions,
    fc_figures,
    fc_grid,
    npu_time,
    row_steps,
)
from ..stats import distinct
from .context import Schedule
from .plan import HEAD, HEAD_STAGE, KINDS, Assignment, Layout, assign, sram_share, structure, tile

# figures summed per iteration (IterationBatch fields besides ``tokens``)
FIELDS = ("time_s", "npu_busy_s", "npu_sa_busy_s", "pim_busy_s", "pim_busy_max_s", "npu_flops", "pim_flops",
          "energy_j", "attn_bytes", "attn_offloaded_bytes", "fc_flops", "fc_flops_offloaded")
# columns of the attention table (cost.tables.AttnTable.stacked)
A_PIM, A_IO, A_KV, A_FLOPS, A_SOFT, A_PIM_E, A_NPU_E = range(7)
# rows of the per-group attention sums: the attention-table columns 2..6
G_KV, G_FLOPS, G_SOFT, G_PIM_E, G_NPU_E = range(5)
LAYOUT_MEMO = 256  # prepared structures remembered per schedule (serving steps repeat batch shapes)
MEMO_MAX_K = 16  # only structures of at most this many iterations are remembered
CURVE_MEMO = 8192  # FC curves remembered per schedule and FC decision space (_CurveStore)
#: DBO's joint moves: FC row steps (out of stage.ROW_STEPS) moved to the PIM beside the attention sweep
JOINT_STEPS = (2, 4, 8, 16, 32)
#: attention moves by KV head in a channel holding at most this many of the stage's requests (else by request)
HEAD_UNITS_MAX_REQUESTS = 4


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
    fc_flops: float  # FC FLOPs of the DBO-balanced stages and LM heads (x repeats)
    fc_flops_offloaded: float  # of which DBO moved to the PIM


@dataclass(frozen=True)
class StageTable:
    """Executed stages of every iteration, one row per stage instance (repeats > 0) and per LM head,
    in execution order: iteration, micro-batch, stage."""

    iteration: np.ndarray
    micro_batch: np.ndarray
    candidate: np.ndarray  # the schedule candidate the iteration ran (plan.CANDIDATES)
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
    fc_rows_to_pim: np.ndarray  # FC token rows moved to the PIM
    fc_cols_to_pim: np.ndarray  # column tiles (out of cost.tables.COLUMN_STEPS) moved to the PIM
    attn_requests: np.ndarray
    attn_to_npu: np.ndarray  # attention units (requests, or KV heads) DBO moved to the NPU
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
    fc_flops: np.ndarray
    fc_flops_offloaded: np.ndarray
    candidate: np.ndarray | None = None  # the schedule candidate each iteration ran
    candidate_s: np.ndarray | None = None  # (K, candidates laid out): each candidate's predicted stage time
    #   (LM heads excluded; inf where the iteration cannot run it; for a candidate that cannot be chosen, an
    #   upper bound: its attention moves are not searched); runtime scheduler only
    stages: StageTable | None = None  # when asked (keep_stages)
    layout: Layout | None = None  # when asked (keep_stages): what the iterations ran
    assignment: Assignment | None = None  # when asked (keep_stages)

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


# ---- preparation: everything that depends only on the stage structure ------------------------------------
@dataclass(frozen=True)
class Prepared:
    """A layout with the figures that do not depend on the requests' context lengths (module docstring).

    ``x`` (N_CURVES, S): every instance's figures under its fixed FC decision (``y0`` rows or ``j0`` column
    tiles on the PIM: DBO's decision for balanced stages without attention, or the placement's; 0 elsewhere).
    ``dyn`` lists the balanced instances with attention (DBO decides them every call): ``curves`` the figures
    of every distinct FC stage under every FC decision (``stage.fc_curves``), with lower bounds over every
    decision that moves FC work; ``q_*`` the pseudo-stages of the attention direction: every dyn instance with
    no rows moved, then its joint row steps (``q_u``).
    """

    lay: Layout
    x: np.ndarray
    y0: np.ndarray
    j0: np.ndarray
    reps: np.ndarray
    fc_flops: np.ndarray  # FC FLOPs counted in offload_fc_share (balanced instances), per instance
    offload_counts: bool  # FC work on the PIM is DBO's offload (not the placement's home)
    dyn: np.ndarray
    curves: np.ndarray | None  # (distinct FC stages, N_CURVES, U): stage.fc_curves
    grid: np.ndarray | None  # curves[:, GRID_FIELDS]
    vec_link: np.ndarray | None  # (distinct, 2): NPU vector time and all-reduce (the same for every decision)
    dyn_u: np.ndarray | None  # (n_dyn,) each dyn instance's row of ``curves``
    fast: tuple | None  # (K, Fa, Fio, u), each (distinct, W): the mode's affine terms (ConcurrencyMode.affine_terms)
    #   at each curve's undominated decisions u (_undominated)
    lb_chain: np.ndarray  # (distinct,) lower bounds over every decision that moves FC work: its chain ...
    lb_mem: np.ndarray  # ... and the NPU's stream
    q_of: np.ndarray  # (Q,) the dyn index of each pseudo-stage
    q_u: np.ndarray  # (Q,) its FC decision (curve index: a row step)
    q_x: np.ndarray  # (N_CURVES, Q) its figures
    var_starts: np.ndarray  # first instance of each variant that has instances
    var_ids: np.ndarray
    head: np.ndarray  # (len(FIELDS), K): per iteration, what its LM heads and hand-offs add to each field
    mbs: np.ndarray  # live micro-batches (flat index)
    head_mb: np.ndarray  # (7, live mbs): time incl. hand-off, npu, sa, rows, energy, pim time, column tiles moved


def prepare(s: Schedule, a: Assignment) -> Prepared:
    """The stage structure of an assignment and its request-independent figures (memoized per schedule; an
    entry serves only the tables and system it was prepared with, so a Schedule copied with others never
    reuses it)."""
    key = a.key()
    hit = s.layouts.get(key)
    if hit is not None and hit[0] is s.tables and hit[1] is s.system:
        return hit[2]
    prep = _prepare(s, a)
    if a.K <= MEMO_MAX_K:
        if len(s.layouts) >= LAYOUT_MEMO:
            s.layouts.clear()
        s.layouts[key] = (s.tables, s.system, prep)
    return prep


def _share_codes(s: Schedule, share: np.ndarray) -> np.ndarray:
    """Each SRAM share's rank among the distinct shares the schedule's stages can have (0 and
    ``plan.sram_share`` of every FC group at every row count, listed once per schedule): an integer code with
    the shares' equality and order, so :func:`_distinct` need not sort the float column."""
    t = s.tables
    hit = s.memo.get("shares")
    if hit is None or hit[0] is not t or hit[1] is not s.system:  # built for these tables and this system
        vals = distinct(np.concatenate(([0.0], sram_share(t.npu_stack[:, BYTES], t.sram_bytes).reshape(-1))))
        hit = s.memo["shares"] = (t, s.system, vals)
    vals = hit[2]
    code = np.searchsorted(vals, share)
    if not np.array_equal(vals.take(code, mode="clip"), share):  # a share not listed: rank the shares given
        code = np.unique(share, return_inverse=True)[1].reshape(-1)
    return code


def _distinct(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one element of each distinct row, the distinct row of every element) of equal-length columns of
    non-negative integers (a float column is coded by its distinct values first); distinct rows in sorted
    order. Equal rows are interchangeable, so which element represents its row does not matter."""
    key = np.zeros(cols[0].shape[0], dtype=np.int64)
    for c in cols:
        if c.dtype.kind == "f":
            vals, c = np.unique(c, return_inverse=True)
            span = vals.shape[0]
        else:
            span = int(c.max()) + 1 if c.size else 1
        key = key * span + c.reshape(-1)
    if key.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(key)
    ks = key[order]
    new = np.empty(ks.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(ks[1:], ks[:-1], out=new[1:])
    inv = np.empty(ks.shape[0], dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return order[new], inv


def _prepare(s: Schedule, a: Assignment) -> Prepared:
    t, system = s.tables, s.system
    K = a.K
    lay = structure(a, s.layers_per_stage, t.npu_stack[:, BYTES], t.sram_bytes)
    gi, rows, cache, ag = lay.inst_fc_group, lay.inst_rows, lay.inst_cache_frac, lay.inst_ag
    S = rows.shape[0]
    cc = _share_codes(s, cache)
    y0 = np.zeros(S, dtype=np.int64)
    j0 = np.zeros(S, dtype=np.int64)
    dbo = system.dbo if s.dbo_on else None
    fc_home_pim = system.placement.fc == "pim" and t.has_pim
    columns = dbo is not None and dbo.fc_columns and t.cols_stack is not None
    live_bal = lay.inst_balanced & (lay.inst_reps > 0)
    has_attn = ag < lay.n_groups
    dyn = np.zeros(0, dtype=np.int64)
    curves = grid = vec_link = dyn_u = fast = None
    lb_chain = lb_mem = np.zeros(0)
    if fc_home_pim:  # every FC GEMM on the PIM
        y0 = rows.copy()
    elif system.placement.fc == "ffn_split" and t.cols_stack is not None and S:
        # the FFN's column share (tiles of 1/32) on the PIM with which NPU and PIM finish together: the first
        # minimum over the share of max(NPU, busiest channel, the split's chain) (only FFN columns move)
        js = np.arange(t.cols_stack.shape[2])[None, :]
        f = fc_figures(t, gi[:, None], rows[:, None], cache[:, None], np.zeros_like(js), js)
        npu_j = npu_time(f[..., C_SA], f[..., C_VEC], f[..., C_MEM], f[..., C_LINK])
        chan_j = busiest_channel(t, 0.0, 0.0, f[..., C_PF], f[..., C_PFIO], f[..., C_MEM], f[..., C_RIDE])
        j0 = np.argmin(np.maximum(np.maximum(npu_j, chan_j), f[..., C_CHAIN]), axis=1).astype(np.int64)
    elif dbo is not None:
        dyn = np.flatnonzero(live_bal & has_attn)
        fixed = np.flatnonzero(live_bal & ~has_attn & (rows > 0)) if dbo.fc_to_pim else np.zeros(0, dtype=np.int64)
        need = np.concatenate([fixed, dyn]) if dbo.fc_to_pim else fixed
        if need.size:  # the curves of every distinct (FC group, rows, SRAM share) once
            first, inv = _distinct(gi[need], rows[need], cc[need])
            u_i = need[first]
            store = s.memo.get(("curves", columns))
            if store is None or not store.serves(s):
                store = s.memo["curves", columns] = _CurveStore(s, columns)
            cid = store.ids(gi[u_i], rows[u_i], cache[u_i])
            curves = store.curves[cid]
            grid = curves[:, GRID_FIELDS]
            vec_link = curves[:, (C_VEC, C_LINK), 0]
            if fixed.size:  # FC-only balanced stages: the first minimum (moves only if strictly shorter)
                z = np.zeros(curves.shape[0])
                u = np.argmin(fc_grid(t, grid, vec_link[:, 0], vec_link[:, 1], z, z, z, z)[0], axis=1)
                y0[fixed], j0[fixed] = decode(u[inv[:fixed.size]], rows[fixed])
            if dbo.fc_to_pim:
                dyn_u = inv[fixed.size:]
                lb_chain, lb_mem = store.lb_chain[cid], store.lb_mem[cid]
                if store.affine:  # the undominated decisions, padded to the longest of these curves
                    W = int(store.count[cid].max())
                    fast = (store.k[cid, :W], store.fa[cid, :W], store.fio[cid, :W], store.u[cid, :W])
    first, inv = _distinct(gi, rows, cc, y0, j0)  # (N_CURVES, S), computed once per distinct instance
    x = _figures(s, gi[first], rows[first], cache[first], y0[first], j0[first])[:, inv]
    # pseudo-stages of the attention direction: no rows moved, then the joint row steps
    n = dyn.shape[0]
    q_of, q_u = np.arange(n), np.zeros(n, dtype=np.int64)
    q_x = x[:, dyn]
    if dbo is not None and dyn_u is not None and dbo.joint and s.on_pim and dbo.attention_to_npu and n:
        # the steps that move rows (0 < y < rows, each row count once), per distinct curve, then per instance
        r = rows[u_i]
        steps = np.array(JOINT_STEPS)
        ys = row_steps(r[:, None], steps[None, :])
        keep = (ys > 0) & (ys < r[:, None])
        keep[:, 1:] &= ys[:, 1:] != ys[:, :-1]
        jo, col = np.nonzero(keep[dyn_u])
        q_of, q_u = np.concatenate([q_of, jo]), np.concatenate([q_u, steps[col]])
        cj = curves[:, :, steps].transpose(1, 0, 2).reshape(curves.shape[1], -1)  # (N_CURVES, distinct x steps)
        q_x = np.concatenate([q_x, cj[:, dyn_u[jo] * steps.shape[0] + col]], axis=1)
    vs = lay.inst_var
    var_starts = np.flatnonzero(np.concatenate(([True], vs[1:] != vs[:-1]))) if S else np.zeros(0, dtype=np.int64)
    # LM head of every micro-batch (with DBO: the vocabulary-column share on the PIM), and its hand-off
    mbs = np.flatnonzero(lay.mb_rows > 0)
    hr = lay.mb_rows[mbs]
    cols = t.cols_stack is not None and (fc_home_pim or (dbo is not None and dbo.lm_head))
    head_s, head_npu, head_sa, head_fl, head_e, head_pim, head_pfl, head_j = _head_table(s, cols, fc_home_pim, hr)
    p2p = (s.p2p_latency_s + hr * s.p2p_s_per_row) if s.pp > 1 else np.zeros(hr.shape[0])
    kk = mbs // s.pp
    z = np.zeros(hr.shape[0])
    off = head_pfl if dbo is not None else z  # FC work on the PIM by placement is its home, not an offload
    per_mb = (head_s + p2p, head_npu, head_sa, head_pim, head_pim, head_fl, head_pfl, head_e * s.tp, z, z,
              head_fl + head_pfl, off)  # in FIELDS order
    # per field and iteration: one bincount over (field, iteration) keys (each bin summed in the same order)
    head = np.bincount((np.arange(len(per_mb))[:, None] * K + kk).reshape(-1),
                       weights=np.concatenate(per_mb),
                       minlength=len(per_mb) * K).reshape(len(per_mb), K)
    fc_flops = np.where(lay.inst_balanced, x[C_FLOPS] + x[C_PF_FLOPS], 0.0)
    return Prepared(lay, x, y0, j0, lay.inst_reps, fc_flops, dbo is not None, dyn, curves, grid, vec_link, dyn_u,
                    fast, lb_chain, lb_mem, q_of, q_u, q_x, var_starts, vs[var_starts], head, mbs,
                    np.stack((head_s + p2p, head_npu, head_sa, hr.astype(float), head_e, head_pim,
                              head_j.astype(float))))


def _head_table(s: Schedule, cols: bool, home_pim: bool, hr: np.ndarray) -> np.ndarray:
    """The LM head of micro-batches of ``hr`` rows, each row count costed once per schedule: rows (time, NPU,
    systolic, FLOPs, energy, PIM time, PIM FLOPs, vocabulary-column tiles on the PIM). With ``cols`` the column
    share on the PIM is DBO's (the first minimum: columns move only if strictly shorter) or, with a PIM home for
    FC work, every column."""
    t = s.tables
    key = ("head", cols, home_pim)
    hit = s.memo.get(key)
    if hit is None or hit[0] is not t or hit[1] is not s.system:  # built for these tables and this system
        hit = s.memo[key] = (t, s.system, np.zeros((8, t.npu_stack.shape[2])),
                             np.zeros(t.npu_stack.shape[2], dtype=bool))
    tab, have = hit[2], hit[3]
    new = np.flatnonzero(np.bincount(hr[~have[hr]], minlength=have.shape[0]))
    if new.size:
        m = np.arange(new.shape[0])
        h = t.npu_stack[HEAD, :, new]
        head_s = np.maximum(h[:, SA], h[:, MEM])  # max(systolic, stream): the head has no vector op or all-reduce
        head_npu, head_sa, head_fl, head_e = head_s, h[:, SA], h[:, FLOPS], h[:, ENERGY]
        head_pim = head_pfl = np.zeros(new.shape[0])
        head_j = np.zeros(new.shape[0], dtype=np.int64)
        if cols:
            hc = t.cols_stack[HEAD:HEAD + 1, :, :, new][0]  # (fields, J + 1, rows)
            npu_j = np.maximum(hc[CL_SA], hc[CL_MEM])
            total = np.maximum(npu_j, busiest_channel(t, 0.0, 0.0, hc[CL_PIM], hc[CL_PIM_IO], hc[CL_MEM]))
            head_j = np.full(new.shape[0], hc.shape[1] - 1) if home_pim else np.argmin(total, axis=0)
            head_s = total[head_j, m]
            head_npu, head_sa = npu_j[head_j, m], hc[CL_SA, head_j, m]
            head_fl, head_e = hc[CL_FLOPS, head_j, m], hc[CL_ENERGY, head_j, m] + hc[CL_PIM_E, head_j, m]
            head_pim, head_pfl = hc[CL_PIM, head_j, m], hc[CL_PIM_FLOPS, head_j, m]
        tab[:, new] = (head_s, head_npu, head_sa, head_fl, head_e, head_pim, head_pfl, head_j)
        have[new] = True
    return tab[:, hr]


def _figures(s: Schedule, gi: np.ndarray, rows: np.ndarray, cache: np.ndarray, y: np.ndarray,
             j: np.ndarray) -> np.ndarray:
    """``stage.fc_figures`` of these decisions as (N_CURVES, n), each (FC group, rows, SRAM share, y, j) computed
    once per schedule (:class:`_FigureStore`)."""
    store = s.memo.get("figures")
    if store is None or not store.serves(s):
        store = s.memo["figures"] = _FigureStore(s)
    ids = store.ids(gi, rows, cache, y, j)  # first: it may grow the array
    return store.figures[ids].T


class _KeyedStore:
    """Rows a schedule has computed, kept by key (a tuple of the key columns' values) in arrays that grow,
    cleared past CURVE_MEMO rows: :meth:`ids` computes the missing keys' rows with the subclass's ``_fill``,
    which writes them straight into :meth:`_next_rows`. A row depends on its key and the schedule's tables and
    system only, so a store changes no result; it serves only the tables and system it was built for."""

    ARRAYS: tuple[str, ...] = ()  # the store arrays (rows by key)

    def __init__(self, s: Schedule) -> None:
        self.s = s
        self._reset()

    def serves(self, s: Schedule) -> bool:
        """Built for these tables and this system (a Schedule copied with other tables must not share it)."""
        return self.s.tables is s.tables and self.s.system is s.system

    def _reset(self) -> None:
        self.index: dict = {}
        self.n = 0
        for name in self.ARRAYS:
            setattr(self, name, None)

    def ids(self, *cols: np.ndarray) -> np.ndarray:
        """The store rows of these keys (one per element of the equal-length key columns), computing the missing
        ones."""
        keys = list(zip(*(c.tolist() for c in cols), strict=True))
        get = self.index.get
        out = [get(k, -1) for k in keys]
        miss = [i for i, v in enumerate(out) if v < 0]
        if miss:
            if self.n + len(miss) > CURVE_MEMO:
                self._reset()
                out, miss = [-1] * len(keys), list(range(len(keys)))
            m = np.asarray(miss, dtype=np.int64)
            lo = self.n
            self._fill(*(c[m] for c in cols))
            self.n += m.shape[0]
            for j, i in enumerate(miss):
                out[i] = self.index[keys[i]] = lo + j
        return np.asarray(out, dtype=np.int64)

    def _fill(self, *cols: np.ndarray) -> None:
        raise NotImplementedError

    def _next_rows(self, name: str, m: int, shape: tuple, dtype) -> np.ndarray:
        """Rows n..n + m of the store array ``name`` (element shape ``shape``), to fill; the array grows (to twice
        its rows, at least 64) when they do not fit, keeping rows 0..n."""
        old = getattr(self, name)
        if old is None or old.shape[0] < self.n + m:
            grown = np.empty((max(2 * self.n, self.n + m, 64),) + shape, dtype=dtype)
            if old is not None:
                grown[:self.n] = old[:self.n]
            setattr(self, name, grown)
        return getattr(self, name)[self.n:self.n + m]


class _FigureStore(_KeyedStore):
    """``stage.fc_figures`` of every (FC group, rows, SRAM share, y, j) decision a schedule's stages have taken."""

    ARRAYS = ("figures",)

    def _reset(self) -> None:
        super()._reset()
        self.figures = np.empty((0, N_CURVES))  # readable with no rows yet (a layout without stages)

    def _fill(self, gi, rows, cache, y, j) -> None:
        self._next_rows("figures", gi.shape[0], (N_CURVES,), float)[:] = fc_figures(self.s.tables, gi, rows, cache,
                                                                                     y, j)


class _CurveStore(_KeyedStore):
    """Every FC curve a schedule has needed (``stage.fc_curves`` of an (FC group, rows, SRAM share), over one FC
    decision space), kept by key (:class:`_KeyedStore`): the curves, their lower bounds over the decisions that
    move FC work (the moved work's chain, the NPU's stream) and, when DBO's FC search has the mode's affine terms
    (``ConcurrencyMode.affine_terms``, attention on the PIM), each curve's undominated decisions
    (:func:`_undominated`) padded to U with +inf. A serving run's chunks share most of their curves."""

    ARRAYS = ("curves", "lb_chain", "lb_mem", "k", "fa", "fio", "u", "count")

    def __init__(self, s: Schedule, columns: bool) -> None:
        self.columns = columns
        self.affine = s.on_pim and s.tables.mode.affine_terms(s.tables.mode_params, 0.0, 0.0, 0.0, 0.0) is not None
        super().__init__(s)

    def _fill(self, gi, rows, cache) -> None:
        """Compute the curves of these triples (and what is derived from them) straight into the next rows."""
        t = self.s.tables
        m = gi.shape[0]
        curves = fc_curves(t, gi, rows, cache, self.columns,
                           out=self._next_rows("curves", m, (N_CURVES, fc_decisions(t, self.columns)), float))
        self._next_rows("lb_chain", m, (), float)[:] = curves[:, C_CHAIN, 1:].min(axis=1)
        self._next_rows("lb_mem", m, (), float)[:] = curves[:, C_MEM, 1:].min(axis=1)
        if self.affine:  # stage(u) = max(K(u), vec + softmax + link, pmax + Fa(u), iomax + Fio(u))
            terms = t.mode.affine_terms(t.mode_params, curves[:, C_PF], curves[:, C_PFIO], curves[:, C_MEM],
                                        curves[:, C_RIDE])
            npu_k = np.maximum(curves[:, C_SA], curves[:, C_MEM]) + curves[:, C_LINK, :1]
            k, fa, fio, u = _undominated(np.maximum(np.maximum(npu_k, terms[0]), curves[:, C_CHAIN]), terms[1],
                                         terms[2])
            U = curves.shape[2]
            for name, v, fill in (("k", k, np.inf), ("fa", fa, np.inf), ("fio", fio, np.inf), ("u", u, 0)):
                full = self._next_rows(name, m, (U,), v.dtype)
                full[:, :v.shape[1]] = v
                full[:, v.shape[1]:] = fill
            # the first decision (u = 0) is always kept, pads are 0
            self._next_rows("count", m, (), np.int64)[:] = 1 + (u[:, 1:] != 0).sum(axis=1)


def _undominated(k: np.ndarray, fa: np.ndarray, fio: np.ndarray, block: int = 32) -> tuple:
    """The FC decisions of each curve that can be a first minimum of max(k(u), a + fa(u), io + fio(u), c) for some
    a, io, c: u is dropped when an earlier decision u' < u has k, fa and fio all <= u's (then u' is never worse,
    and comes first). Returns (k, fa, fio, u) over the kept decisions of each curve, in increasing u, padded with
    +inf (and u = the first decision, never chosen there) to the longest curve's count.

    Most decisions are dominated by the first (moving nothing), so that test runs first and the pairwise test
    only among the rest (a decision dominated by a dropped one is dominated by what dropped it), on curves taken
    in order of their candidate counts, ``block`` at a time, each block over its own longest count (curves'
    counts vary widely: padding every curve to the longest would test mostly padding)."""
    n, U = k.shape
    cand = ~((k[:, :1] <= k) & (fa[:, :1] <= fa) & (fio[:, :1] <= fio))  # not dominated by u = 0
    cand[:, 0] = True
    n_cand = cand.sum(axis=1)
    c = np.argsort(~cand, axis=1, kind="stable")[:, :max(int(n_cand.max()) if n else 1, 1)]
    cpad = ~np.take_along_axis(cand, c, axis=1)  # past each curve's candidates

    def take(v, u, pad):
        out = np.take_along_axis(v, u, axis=1)
        out[pad] = np.inf
        return out

    kc, fac, fioc = take(k, c, cpad), take(fa, c, cpad), take(fio, c, cpad)
    W = c.shape[1]
    keep = ~cpad
    earlier = np.tri(W, W, -1, dtype=bool).T  # [u', u]: u' < u
    by_count = np.argsort(n_cand, kind="stable")
    for lo in range(0, n, block):  # bounded temporaries: (block, w, w)
        rows = by_count[lo:lo + block]
        w = int(n_cand[rows[-1]])  # the block's longest: its curves' candidates all sit in the first w
        if w < 2:
            continue
        kb, fab, fiob = kc[rows, :w], fac[rows, :w], fioc[rows, :w]
        dom = (kb[:, :, None] <= kb[:, None, :]) & (fab[:, :, None] <= fab[:, None, :]) \
            & (fiob[:, :, None] <= fiob[:, None, :])
        dom &= earlier[:w, :w]
        keep[rows, :w] &= ~dom.any(axis=1)
    count = keep.sum(axis=1)
    W2 = int(count.max()) if n else 1
    pos = np.argsort(~keep, axis=1, kind="stable")[:, :W2]
    pad = np.arange(W2)[None, :] >= count[:, None]
    u = np.take_along_axis(c, pos, axis=1)
    u[pad] = 0
    return take(kc, pos, pad), take(fac, pos, pad), take(fioc, pos, pad), u


@lru_cache(maxsize=64)
def _field_scale(devices: int) -> np.ndarray:
    """Per field: the factor from one device's stage figures to the iteration's (energy: every device)."""
    out = np.ones(len(FIELDS))
    out[FIELDS.index("energy_j")] = devices
    out.setflags(write=False)
    return out


# ---- evaluation --------------------------------------------------------------------------------------------
def run_iterations(s: Schedule, lens_list: list[np.ndarray], channels_list: list[np.ndarray],
                   keep_stages: bool = False) -> IterationBatch:
    """Evaluate K decode iterations (requests ``lens_list[k]`` in channels ``channels_list[k]``) together."""
    n_k = np.array([len(x) for x in lens_list], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    lens = np.concatenate(lens_list).astype(np.int64) if n_k.sum() else empty
    ch = np.concatenate(channels_list).astype(np.int64) if n_k.sum() else empty
    _check_channels(s, ch)
    return run_iterations_flat(s, lens, ch, n_k, keep_stages)


def _check_channels(s: Schedule, ch: np.ndarray) -> None:
    if ch.size and (int(ch.min()) < 0 or int(ch.max()) >= s.tables.channels):
        raise ValueError(f"KV channels must be 0..{s.tables.channels - 1} (the PIM channels of the cost tables), "
                         f"got {int(ch.min())}..{int(ch.max())}")


def run_iteration(s: Schedule, lens: np.ndarray, channels: np.ndarray, keep_stages: bool = False) -> IterationBatch:
    """One decode iteration: a batch of one."""
    lens = np.asarray(lens, dtype=np.int64)
    ch = np.asarray(channels, dtype=np.int64)
    _check_channels(s, ch)
    return run_iterations_flat(s, lens, ch, np.array([lens.shape[0]], dtype=np.int64), keep_stages)


@dataclass(frozen=True, slots=True)
class _Rows:
    """The attention rows of one call and their sums. A row is one request's attention in one candidate block
    (block after block), or, when the cost tables spread a request's KV heads over ``kv_spread`` channels,
    one part of it (part after part within a block)."""

    lens: np.ndarray  # (R,) the requests
    ch: np.ndarray
    row_len: np.ndarray  # (rows,) context length of every row
    row_ch: np.ndarray  # (rows,) its channel
    row_group: np.ndarray  # (rows,) its group
    gc: np.ndarray  # (rows,) group * C + channel
    pim: np.ndarray  # (rows,) PIM seconds
    io: np.ndarray  # (rows,) of which on the data bus
    pim_c: np.ndarray  # (G + 1, C) per-channel sums
    io_c: np.ndarray
    agg: np.ndarray  # (5, G + 1) per-group sums of the attention-table columns 2..6 (whole requests)


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


def _rows(t: CostTables, a: Assignment, lens: np.ndarray, ch: np.ndarray) -> _Rows:
    """Gather every request's attention figures once and sum them per group and channel."""
    C, B, P = t.channels, a.blocks, t.kv_spread
    G1 = a.n_groups + 1
    R = lens.shape[0]
    # every row is a request of ``lens`` (block after block, part after part): gather per request, then repeat
    row_len, row_ch, row_group = tile(lens, B * P), tile(ch, B), a.row_group
    if P > 1:  # part p of a request sits in channel (its channel + p) mod C
        n = row_ch.shape[0]
        row_group = np.tile(row_group, P)
        row_ch = (np.tile(row_ch, P) + np.repeat(np.arange(P), n)) % C
    gc = row_group * C + row_ch
    pim = tile(t.attn_stacked[A_PIM].take(lens), B * P)  # (row).take: ~2x faster than [row, idx]
    io = tile(t.attn_stacked[A_IO].take(lens), B * P)
    pim_c = np.bincount(gc, weights=pim, minlength=G1 * C).reshape(G1, C)
    io_c = np.bincount(gc, weights=io, minlength=G1 * C).reshape(G1, C)
    agg = np.zeros((5, G1))
    # per-group sums block by block (a block's rows are the requests once; blocks hold disjoint groups)
    blocks = [a.row_group[b * R:(b + 1) * R] for b in range(B)]
    prop = t.attn_prop_rows
    if prop.size:  # columns proportional to the context (exact slopes): slope x the group's sum(L)
        lf = lens.astype(float)
        lsum = np.bincount(blocks[0], weights=lf, minlength=G1)
        for rg in blocks[1:]:
            lsum += np.bincount(rg, weights=lf, minlength=G1)
        agg[prop - 2] = np.multiply.outer(t.attn_slopes[prop] * P, lsum)
    for c in t.attn_sum_rows:  # the others
        w = t.attn_stacked[c].take(lens) * P
        for rg in blocks:
            agg[c - 2] += np.bincount(rg, weights=w, minlength=G1)
    return _Rows(lens, ch, row_len, row_ch, row_group, gc, pim, io, pim_c, io_c, agg)


# rows of the per-instance figure array of one call (DBO overwrites the columns of the instances it changes);
# the first len(FIELDS) rows are summed per iteration in FIELDS order
(F_TIME, F_NPU, F_SA, F_PMEAN, F_PMAX, F_NPU_FL, F_PIM_FL, F_ENERGY, F_KV, F_ATTN_OFF, F_FC_FL, F_FC_OFF,
 F_PRED, F_CHAN, F_Y, F_J, F_MOVED) = range(17)
N_FIG = 17


def run_iterations_flat(s: Schedule, lens: np.ndarray, ch: np.ndarray, n_k: np.ndarray,
                        keep_stages: bool = False) -> IterationBatch:
    """Evaluate K decode iterations; iteration k holds the next ``n_k[k]`` entries of ``lens`` / ``ch``."""
    t = s.tables
    K = int(n_k.shape[0])
    a = assign(s.system, s.pp, n_k, lens, ch, t.channels)
    prep = prepare(s, a)
    lay = prep.lay
    rw = _rows(t, a, lens, ch)
    ag = lay.inst_ag
    av = rw.agg[:, ag]
    x = prep.x
    vf = t.vector_flops
    if s.on_pim:  # per group first (fewer groups than instances), then per instance
        pmax, iomax = rw.pim_c.max(axis=1)[ag], rw.io_c.max(axis=1)[ag]
        pmean = rw.pim_c.sum(axis=1)[ag] / t.channels
        vec_x = av[G_SOFT] / vf if t.softmax_on_npu else np.zeros(ag.shape[0])
        mem_x = np.zeros(ag.shape[0])
        pim_fl, attn_off, attn_e = av[G_FLOPS], np.zeros(ag.shape[0]), av[G_PIM_E]
    else:  # attention on the NPU: it streams the KV and runs the MACs on the vector units
        n_req = lay.group_rows[ag]
        fixed = np.where(n_req > 0, t.npu_attn_fixed_s, 0.0)  # the kernels' fixed time: in every engine's term
        vec_x = (av[G_SOFT] + av[G_FLOPS]) / vf + fixed
        mem_x = av[G_KV] / (t.npu_bw_bytes_per_s * t.npu_attn_bw_share[np.minimum(n_req, t.max_rows)]) + fixed
        pmax = iomax = pmean = pim_fl = np.zeros(ag.shape[0])
        attn_off, attn_e = av[G_KV], av[G_NPU_E]
    vec = x[C_VEC] + vec_x
    mem = x[C_MEM] + mem_x
    npu = npu_time(x[C_SA], vec, mem, x[C_LINK])
    chan = busiest_channel(t, pmax, iomax, x[C_PF], x[C_PFIO], mem, x[C_RIDE])
    time = np.maximum(np.maximum(npu, chan), x[C_CHAIN])
    S = ag.shape[0]
    fig = np.empty((N_FIG, S))
    fig[F_TIME] = fig[F_PRED] = time
    fig[F_NPU], fig[F_SA], fig[F_CHAN], fig[F_NPU_FL] = npu, x[C_SA], chan, x[C_FLOPS]
    fig[F_ENERGY] = x[C_ENERGY] + x[C_PF_ENERGY] + attn_e
    fig[F_PMAX], fig[F_PMEAN], fig[F_PIM_FL] = pmax + x[C_PF], pmean + x[C_PF], pim_fl + x[C_PF_FLOPS]
    fig[F_KV], fig[F_ATTN_OFF], fig[F_FC_FL] = av[G_KV], attn_off, prep.fc_flops
    fig[F_FC_OFF] = x[C_PF_FLOPS] if prep.offload_counts else 0.0
    fig[F_Y], fig[F_J], fig[F_MOVED] = prep.y0, prep.j0, 0.0
    view = _View(rw.pim, rw.io, rw.pim_c, rw.io_c, pmax, iomax)
    dbo = s.system.dbo
    if s.dbo_on and s.on_pim and dbo.prediction_error > 0 and lens.shape[0] > 0:
        view = _noisy_view(s, rw, lay, x, mem, fig, dbo)
    if prep.dyn.size:
        _dbo(s, prep, a, rw, view, av, vec_x, mem_x, attn_e, iomax, fig)
    # ---- each iteration's candidate: the fastest by the predictor (ties: the simplest)
    reps = prep.reps
    V = a.var_k.shape[0]
    chosen_var = np.arange(V)
    pv = None
    if a.blocks > 1:
        pv = np.zeros(V)
        if prep.var_starts.size:
            pv[prep.var_ids] = np.add.reduceat(fig[F_PRED] * reps, prep.var_starts)
        pv = np.where(a.var_ok, pv, np.inf).reshape(a.blocks, K)
        chosen_var = np.argmin(pv, axis=0) * K + np.arange(K)
    keep = np.zeros(V, dtype=bool)
    keep[chosen_var] = True
    live = keep[lay.inst_var]
    # ---- per-iteration sums: the chosen candidate's instances x repeats, plus the LM heads and hand-offs
    block = fig[:len(FIELDS)] * np.where(live, reps, 0.0)
    out = np.zeros((len(FIELDS), K))
    if prep.var_starts.size:
        sums = np.add.reduceat(block, prep.var_starts, axis=1)
        np.add.at(out.T, a.var_k[prep.var_ids], sums.T)
    out = out * _field_scale(s.tp * s.pp)[:, None] + prep.head
    cand = a.var_c[chosen_var]
    stages = _records(s, prep, a, live, fig, cand) if keep_stages else None
    return IterationBatch(n_k, *out, candidate=cand, candidate_s=None if pv is None else pv.T, stages=stages,
                          layout=lay if keep_stages else None, assignment=a if keep_stages else None)


# ---- DBO ----------------------------------------------------------------------------------------------------
def _units(heads: int, q: np.ndarray, gc_r: np.ndarray, count_gc: np.ndarray, by_heads: bool):
    """The attention units of the candidate rows (pseudo-stage ``q``, group * C + channel ``gc_r``): one per row,
    or ``heads`` equal shares of a row whose stage holds at most HEAD_UNITS_MAX_REQUESTS requests in its channel
    (``count_gc``: requests per group and channel). Returns (row of each unit, its share)."""
    if not by_heads or heads <= 1 or q.shape[0] == 0:
        return np.arange(q.shape[0]), np.ones(q.shape[0])
    u = np.where(count_gc[gc_r] <= HEAD_UNITS_MAX_REQUESTS, heads, 1)
    src = np.repeat(np.arange(q.shape[0]), u)
    return src, 1.0 / u[src]


@dataclass(frozen=True, slots=True)
class _View:
    """The predictor's view of the attention (module docstring): per-row PIM and data-bus seconds, their sums
    per group and channel, and each instance's busiest-channel maxima."""

    pim: np.ndarray
    io: np.ndarray
    pim_c: np.ndarray
    io_c: np.ndarray
    pmax: np.ndarray
    iomax: np.ndarray


def _noisy_view(s: Schedule, rw: _Rows, lay: Layout, x: np.ndarray, mem: np.ndarray, fig: np.ndarray, dbo) -> _View:
    """The view of a noisy predictor: every row's PIM time off by its fixed factor; the predicted time of every
    instance with attention (what DBO and the runtime scheduler decide on) written into ``fig[F_PRED]``."""
    t = s.tables
    C, G1 = t.channels, lay.n_groups + 1
    f = prediction_noise(dbo.seed, rw.row_len, rw.row_ch, dbo.prediction_error)
    pim, io = rw.pim * f, rw.io * f
    pim_c = np.bincount(rw.gc, weights=pim, minlength=G1 * C).reshape(G1, C)
    io_c = np.bincount(rw.gc, weights=io, minlength=G1 * C).reshape(G1, C)
    ag = lay.inst_ag
    pmax, iomax = pim_c.max(axis=1)[ag], io_c.max(axis=1)[ag]
    attn = ag < lay.n_groups
    pred = np.maximum(np.maximum(fig[F_NPU], busiest_channel(t, pmax, iomax, x[C_PF], x[C_PFIO], mem, x[C_RIDE])),
                      x[C_CHAIN])
    fig[F_PRED] = np.where(attn, pred, fig[F_PRED])
    return _View(pim, io, pim_c, io_c, pmax, iomax)


def _dbo(s: Schedule, prep: Prepared, a: Assignment, rw: _Rows, view: _View, av, vec_x, mem_x, attn_e, iomax,
         fig: np.ndarray) -> None:
    """DBO for the dynamic instances (balanced, with attention), on the predictor's view (docs/model/dbo.md):

    1. FC direction: every row count and column tile, scored at once (``stage.fc_grid``) for the instances
       whose lower bound over every FC move (the moved work's chain, the NPU's vector time and all-reduce, the
       slowest channel with the NPU's smallest stream) is below their stage time;
    2. attention direction: the pseudo-stages (no rows moved, and the joint grid of rows moved) whose PIM side
       bounds them and whose lower bound (every channel relieved of all its movable attention at no cost, the
       NPU and the moved rows' chain unchanged) beats the best so far, get the exact prefix sweep
       (``optimize.dbo.attention_sweep``) over their movable units (requests, or KV heads);
    3. each instance keeps its best decision (strictly shorter than moving nothing), and its figures are
       recomputed with the true attention times.
    """
    t, dbo, lay = s.tables, s.system.dbo, prep.lay
    d = prep.dyn
    n = d.shape[0]
    C = t.channels
    G1 = lay.n_groups + 1
    agd = lay.inst_ag[d]
    vxd, mxd = vec_x[d], mem_x[d]
    on_pim = s.on_pim
    pim_r, io_r, pc_d, ic_d = view.pim, view.io, view.pim_c, view.io_c  # the predictor's view
    pmax_d, imax_d, best = view.pmax[d], view.iomax[d], fig[F_PRED, d]
    u_best = np.zeros(n, dtype=np.int64)
    # 1. FC rows / column tiles to the PIM
    if prep.dyn_u is not None:
        du = prep.dyn_u
        vl = prep.vec_link[du]
        lb = np.maximum(np.maximum(prep.lb_chain[du], vl[:, 0] + vxd + vl[:, 1]),
                        busiest_channel(t, pmax_d, imax_d, 0.0, 0.0, prep.lb_mem[du] + mxd, 0.0))
        sel = np.flatnonzero(lb < best)
        if sel.size:
            us = du[sel]
            if prep.fast is not None:
                k_, fa, fio, u_of = prep.fast  # the undominated decisions only (_undominated)
                tot = np.maximum(np.maximum(k_[us], pmax_d[sel, None] + fa[us]), imax_d[sel, None] + fio[us])
                np.maximum(tot, (vl[sel, 0] + vxd[sel] + vl[sel, 1])[:, None], out=tot)
                uc = np.argmin(tot, axis=1)
                pred = tot[np.arange(sel.shape[0]), uc]
                u = u_of[us, uc]
            else:
                tot = fc_grid(t, prep.grid[us], vl[sel, 0], vl[sel, 1], vxd[sel], mxd[sel], pmax_d[sel],
                              imax_d[sel])[0]
                u = np.argmin(tot, axis=1)
                pred = tot[np.arange(sel.shape[0]), u]
            win = pred < best[sel]
            u_best[sel[win]] = u[win]
            best[sel[win]] = pred[win]
    # 2. attention to the NPU (alone, or beside rows moved to the PIM)
    att_q = None
    if on_pim and dbo.attention_to_npu:
        q_of, qx = prep.q_of, prep.q_x
        vec_q = qx[C_VEC] + vxd[q_of]
        mem_q = qx[C_MEM]
        npu_q = npu_time(qx[C_SA], vec_q, mem_q, qx[C_LINK])
        floor_q = np.maximum(npu_q, qx[C_CHAIN])
        chan_q = busiest_channel(t, pmax_d[q_of], imax_d[q_of], qx[C_PF], qx[C_PFIO], mem_q, qx[C_RIDE])
        sq = np.flatnonzero((chan_q > floor_q) & (floor_q < best[q_of]))
        if sq.size:
            mov = np.flatnonzero(t.movable_by_len.take(rw.row_len))  # the rows the mode lets move
            g = agd[q_of[sq]]
            if mov.shape[0] == rw.row_len.shape[0]:  # every row: nothing stays behind
                stay_p, stay_i = 0.0, 0.0
            elif mov.shape[0] == 0:
                stay_p, stay_i = pc_d[g], ic_d[g]
            else:  # what stays in each channel of the selected groups (their movable rows' sums taken off)
                pos = np.full(G1, -1)
                pos[g] = 0
                ug = np.flatnonzero(pos == 0)
                pos[ug] = np.arange(ug.shape[0])
                g_pos = pos[g]
                mg = mov[pos[rw.row_group[mov]] >= 0]
                key = pos[rw.row_group[mg]] * C + rw.row_ch[mg]
                pm = np.bincount(key, weights=pim_r[mg], minlength=ug.shape[0] * C).reshape(-1, C)
                im = np.bincount(key, weights=io_r[mg], minlength=ug.shape[0] * C).reshape(-1, C)
                stay_p, stay_i = pc_d[g] - pm[g_pos], ic_d[g] - im[g_pos]
            lvl = channel_times(t, stay_p, qx[C_PF, sq][:, None], stay_i + qx[C_PFIO, sq][:, None],
                                mem_q[sq][:, None], 0.0, qx[C_RIDE, sq][:, None]).max(axis=1)
            lb_q = np.maximum(floor_q[sq], lvl)
            keep = lb_q < best[q_of[sq]]
            sq, lb_q = sq[keep], lb_q[keep]
            if sq.size and a.blocks > 1:
                sq = _candidates_that_can_win(prep, a, fig, best, sq, lb_q)
        if sq.size:
            att_q = _attention(s, prep, rw, pim_r, io_r, mov, pc_d, ic_d, sq, vec_q, mem_q, best)
    moved = None
    att = np.zeros(n, dtype=bool)
    if att_q is not None:
        win_q, pred_q, units = att_q
        inst = prep.q_of[win_q]
        order = np.lexsort((pred_q, inst))  # per instance: its best winning pseudo-stage
        first = order[np.concatenate(([True], inst[order][1:] != inst[order][:-1]))]
        take_q, take_i, take_p = win_q[first], inst[first], pred_q[first]
        ok = take_p < best[take_i]
        take_q, take_i, take_p = take_q[ok], take_i[ok], take_p[ok]
        if take_q.size:
            att[take_i] = True
            u_best[take_i] = prep.q_u[take_q]
            best[take_i] = take_p
            chosen = np.zeros(prep.q_of.shape[0], dtype=bool)
            chosen[take_q] = True
            u_rows, share, u_q, umask = units
            umask = umask & chosen[u_q]
            moved = (u_rows[umask], share[umask], u_q[umask])
    fig[F_PRED, d] = best
    changed = (u_best > 0) | att
    if not changed.any():
        return
    # 3. the chosen decisions' figures, with the true attention times
    sel = np.flatnonzero(changed)
    i_all = d[sel]
    yd, jd = decode(u_best[sel], lay.inst_rows[i_all])
    xc = prep.curves[prep.dyn_u[sel], :, u_best[sel]].T if prep.dyn_u is not None else prep.x[:, i_all]
    mem_ = xc[C_MEM] + mem_x[i_all]
    vec_ = xc[C_VEC] + vec_x[i_all]
    S = sel.shape[0]
    g = agd[sel]
    attn_fl = av[G_FLOPS, i_all] if on_pim else 0.0
    new = np.empty((N_FIG, S))
    # FC work moved only: every channel keeps its attention (dyn instances start at y = 0)
    pmax_t, pmean_t = fig[F_PMAX, i_all], fig[F_PMEAN, i_all]
    imax_t = iomax[i_all] if on_pim else 0.0  # the true busiest data bus
    new[F_NPU] = npu_time(xc[C_SA], vec_, mem_, xc[C_LINK])
    new[F_CHAN] = busiest_channel(t, pmax_t, imax_t, xc[C_PF], xc[C_PFIO], mem_, xc[C_RIDE])
    new[F_PMAX], new[F_PMEAN] = pmax_t + xc[C_PF], pmean_t + xc[C_PF]
    new[F_ENERGY] = xc[C_ENERGY] + xc[C_PF_ENERGY] + attn_e[i_all]
    new[F_PIM_FL] = attn_fl + xc[C_PF_FLOPS]
    new[F_ATTN_OFF] = fig[F_ATTN_OFF, i_all]
    new[F_MOVED] = 0.0
    if moved is not None:  # the instances that moved attention: channel by channel
        a_pos = np.flatnonzero(att[sel])
        sub = new[:, a_pos]
        _attention_moved(s, prep, rw, moved, sel[a_pos], g[a_pos], xc[:, a_pos], vec_[a_pos], mem_[a_pos],
                         attn_e[i_all[a_pos]], attn_fl[a_pos] if on_pim else 0.0,
                         fig[F_ATTN_OFF, i_all[a_pos]], sub)
        new[:, a_pos] = sub
    new[F_TIME] = np.maximum(np.maximum(new[F_NPU], new[F_CHAN]), xc[C_CHAIN])
    new[F_SA], new[F_NPU_FL] = xc[C_SA], xc[C_FLOPS]
    new[F_KV], new[F_FC_FL] = av[G_KV, i_all], fig[F_FC_FL, i_all]
    new[F_FC_OFF], new[F_PRED], new[F_Y], new[F_J] = xc[C_PF_FLOPS], best[sel], yd, jd
    fig[:, i_all] = new


def _attention_moved(s: Schedule, prep: Prepared, rw: _Rows, moved, sel, g, xc, vec_, mem_, attn_e, attn_fl,
                     attn_off, new: np.ndarray) -> None:
    """The figures of decisions that moved attention units (true times): every channel relieved of its moved
    units' PIM time and charged their NPU reads; the NPU's stream and vector time grow by their KV and FLOPs.
    Writes F_NPU, F_CHAN, F_PMAX, F_PMEAN, F_ENERGY, F_PIM_FL, F_ATTN_OFF and F_MOVED of ``new``."""
    t = s.tables
    C = t.channels
    n = prep.dyn.shape[0]
    S = sel.shape[0]
    pc, ic = (rw.pim_c[g], rw.io_c[g]) if s.on_pim else (np.zeros((S, C)), np.zeros((S, C)))
    m_rows, m_share, m_q = moved
    pos = np.full(n, -1, dtype=np.int64)
    pos[sel] = np.arange(S)
    jpos = pos[prep.q_of[m_q]]
    lens_m = rw.row_len[m_rows]
    colm = t.attn_stacked[:, lens_m] * m_share
    idx = jpos * C + rw.row_ch[m_rows]
    pc = remaining(pc, np.bincount(idx, weights=colm[A_PIM], minlength=S * C).reshape(S, C))
    ic = remaining(ic, np.bincount(idx, weights=colm[A_IO], minlength=S * C).reshape(S, C))
    kv_c = np.bincount(idx, weights=colm[A_KV], minlength=S * C).reshape(S, C) / t.ch_bw_bytes_per_s
    kv_off = np.bincount(jpos, weights=colm[A_KV], minlength=S)
    fl_off = np.bincount(jpos, weights=colm[A_FLOPS], minlength=S)
    e_swap = np.bincount(jpos, weights=colm[A_NPU_E] - colm[A_PIM_E], minlength=S)  # on the NPU, not the PIM
    n_units = np.bincount(jpos, minlength=S)
    new[F_NPU] = npu_time(xc[C_SA], vec_ + fl_off / t.vector_flops, mem_ + kv_off / t.npu_bw_bytes_per_s,
                          xc[C_LINK])
    new[F_CHAN] = channel_times(t, pc, xc[C_PF][:, None], ic + xc[C_PFIO][:, None], mem_[:, None], kv_c,
                                xc[C_RIDE][:, None]).max(axis=1)
    new[F_ENERGY] = xc[C_ENERGY] + xc[C_PF_ENERGY] + attn_e + e_swap
    new[F_PMAX], new[F_PMEAN] = pc.max(axis=1) + xc[C_PF], pc.sum(axis=1) / C + xc[C_PF]
    new[F_PIM_FL] = attn_fl - fl_off + xc[C_PF_FLOPS]
    new[F_ATTN_OFF] = attn_off + kv_off  # attention placed on the NPU stays there
    new[F_MOVED] = n_units


def _candidates_that_can_win(prep: Prepared, a: Assignment, fig: np.ndarray, best: np.ndarray, sq: np.ndarray,
                             lb_q: np.ndarray) -> np.ndarray:
    """The pseudo-stages ``sq`` of schedule candidates that can still be chosen. A candidate's predicted total
    can drop at most by what its surviving pseudo-stages' bounds ``lb_q`` allow below their instances' best so
    far; a candidate whose total cannot drop below another candidate's current total for the same iteration
    is not chosen whatever its attention moves, so its sweep is skipped (an exact pruning: the chosen
    candidate, and every figure of it, are unchanged)."""
    lay, d = prep.lay, prep.dyn
    K = a.K
    inst = prep.q_of[sq]
    gain = np.zeros(d.shape[0])
    np.maximum.at(gain, inst, best[inst] - lb_q)
    pred = fig[F_PRED].copy()
    pred[d] = best
    V = a.var_k.shape[0]
    total = np.bincount(lay.inst_var, weights=pred * prep.reps, minlength=V)
    low = total - np.bincount(lay.inst_var[d], weights=gain * prep.reps[d], minlength=V)
    best_total = np.where(a.var_ok, total, np.inf).reshape(a.blocks, K).min(axis=0)
    can_win = low <= best_total[a.var_k]
    return sq[can_win[lay.inst_var[d[inst]]]]


def _attention(s: Schedule, prep: Prepared, rw: _Rows, pim_r, io_r, mov, pc_d, ic_d, sq, vec_q, mem_q, best):
    """The exact prefix sweep for the pseudo-stages ``sq`` over their movable units (``mov``: the movable rows, in
    order). Returns (winning pseudo-stages, their predicted times, (unit rows, shares, unit pseudo-stages, moved
    mask)) or None."""
    t, lay = s.tables, prep.lay
    C = t.channels
    G1 = lay.n_groups + 1
    q_of, qx = prep.q_of, prep.q_x
    g_sq = lay.inst_ag[prep.dyn[q_of[sq]]]
    # every movable row of a selected group, once per selected pseudo-stage of that group
    sq = sq[np.argsort(g_sq, kind="stable")]
    g_sq = lay.inst_ag[prep.dyn[q_of[sq]]]
    per = np.bincount(g_sq, minlength=G1)
    first = np.cumsum(per) - per
    rows = mov[per[rw.row_group[mov]] > 0]
    if rows.size == 0:
        return None
    rg = rw.row_group[rows]
    rep = per[rg]
    r_src = np.repeat(rows, rep)
    k = np.arange(r_src.shape[0]) - np.repeat(np.cumsum(rep) - rep, rep)
    q_pos = np.repeat(first[rg], rep) + k  # position in sq
    heads = max(1, max(1, s.model.kv_heads // s.tp) // t.kv_spread)  # KV heads in one row
    count_gc = np.bincount(rw.gc, minlength=G1 * C) if s.system.dbo.attention_by_heads and heads > 1 else None
    src, share = _units(heads, q_pos, rw.gc[r_src], count_gc, count_gc is not None)
    u_rows = r_src[src]
    u_pos = q_pos[src]
    fpb = np.full(sq.shape[0], t.attn_flops_per_kv_byte)
    lens_u = rw.row_len[u_rows]
    pred, mask, m = attention_sweep(
        t, u_pos, rw.row_ch[u_rows], pim_r[u_rows] * share, io_r[u_rows] * share,
        t.attn_stacked[A_KV].take(lens_u) * share, sq.shape[0], qx[C_SA, sq], vec_q[sq], mem_q[sq], qx[C_LINK, sq], fpb,
        pc_d[g_sq].reshape(-1), ic_d[g_sq].reshape(-1), qx[C_PF, sq], qx[C_PFIO, sq], qx[C_RIDE, sq], qx[C_CHAIN, sq])
    win = (m > 0) & (pred < best[q_of[sq]])
    if not win.any():
        return None
    return sq[win], pred[win], (u_rows, share, sq[u_pos], mask)


def _records(s: Schedule, prep: Prepared, a: Assignment, live_mask, fig: np.ndarray, cand: np.ndarray) -> StageTable:
    """The executed stages (repeats > 0) of the chosen candidates and the LM heads, micro-batch by
    micro-batch in execution order."""
    lay = prep.lay
    live = (prep.reps > 0) & live_mask
    mbs = prep.mbs
    names = np.array([k.name for k in KINDS] + [HEAD_STAGE])
    npu_w = np.array([k.npu_work for k in KINDS] + ["LM head"])
    pim_w = np.array([k.pim_work for k in KINDS] + ["LM head columns"])
    kind = np.concatenate([lay.inst_kind[live], np.full(mbs.shape[0], len(KINDS))])
    mb_of = np.concatenate([lay.inst_k[live] * s.pp + lay.inst_mb[live], mbs])
    order = np.lexsort((kind, mb_of))  # micro-batch by micro-batch; kinds in table order, head last
    zi = np.zeros(mbs.shape[0], dtype=np.int64)
    hm = prep.head_mb
    cols = dict(
        iteration=mb_of // s.pp, micro_batch=mb_of % s.pp, candidate=cand[mb_of // s.pp], name=names[kind],
        repeats=np.concatenate([prep.reps[live], np.ones(mbs.shape[0])]).astype(np.int64),
        time_s=np.concatenate([fig[F_TIME, live], hm[0]]), npu_s=np.concatenate([fig[F_NPU, live], hm[1]]),
        npu_sa_s=np.concatenate([fig[F_SA, live], hm[2]]), pim_max_s=np.concatenate([fig[F_PMAX, live], hm[5]]),
        pim_mean_s=np.concatenate([fig[F_PMEAN, live], hm[5]]),
        channel_max_s=np.concatenate([fig[F_CHAN, live], hm[5]]), energy_j=np.concatenate([fig[F_ENERGY, live], hm[4]]),
        fc_rows=np.concatenate([lay.inst_rows[live], hm[3].astype(np.int64)]),
        fc_rows_to_pim=np.concatenate([fig[F_Y, live].astype(np.int64), zi]),
        fc_cols_to_pim=np.concatenate([fig[F_J, live].astype(np.int64), hm[6].astype(np.int64)]),
        attn_requests=np.concatenate([lay.group_rows[lay.inst_ag[live]], zi]),
        attn_to_npu=np.concatenate([fig[F_MOVED, live].astype(np.int64), zi]), npu_work=npu_w[kind], pim_work=pim_w[kind])
    return StageTable(**{k: v[order] for k, v in cols.items()})
