"""Many decode iterations in one vectorized pass, with exactly the figures of ``run_iteration``.

``run_iteration`` evaluates one iteration with a few dozen small numpy calls, so its cost is per-call
overhead. Where many iterations are known before their times are (the steady-state samples of
``simulate(mode='iteration')``, and every decode iteration of a closed-loop serving run, whose
membership does not depend on the clock), this module evaluates them together: every request of every
iteration is one row of the same arrays, every stage of every pipeline micro-batch is one row of the
stage arrays, and DBO's two directions run for all balanced stages at once (the FC-row direction over a
stages x rows grid, the attention direction through the shared sweep in ``optimize.dbo``).

The formulas are those of ``optimize.stage.stage_time`` and ``optimize.dbo.decide_many``; a test checks
the figures equal ``run_iteration``'s for every system preset. Configurations it does not cover (a noisy
DBO predictor, DBO with attention placed on the NPU, kept stage records) go through ``run_iteration``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..cost.concurrency import channel_time
from ..optimize.dbo import attention_sweep, movable
from ..optimize.stage import channel_max
from .iteration import IterationResult, Schedule

FIELDS = ("time_s", "npu_busy_s", "npu_sa_busy_s", "pim_busy_s", "pim_busy_max_s", "npu_flops", "pim_flops",
          "energy_j", "attn_bytes", "attn_offloaded_bytes", "fc_rows", "fc_rows_offloaded")


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

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    def result(self, k: int) -> IterationResult:
        """Iteration k as an IterationResult (no stage records)."""
        return IterationResult(tokens=int(self.tokens[k]), **{f: float(getattr(self, f)[k]) for f in FIELDS})

    def results(self) -> list[IterationResult]:
        """Every iteration as an IterationResult, built from plain lists (no per-element numpy access)."""
        order = IterationResult._fields[:-1]  # every field but the stage records, in declaration order
        cols = [self.tokens.tolist() if f == "tokens" else getattr(self, f).tolist() for f in order]
        return [IterationResult(*row) for row in zip(*cols, strict=True)]


class LazyResults(Sequence):
    """A read-only sequence of IterationResult over consecutive IterationBatch chunks, built on access."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._batches: list[IterationBatch] = []
        self._n = 0

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


def supports(s: Schedule, keep_stages: bool = False) -> bool:
    """True if run_iterations reproduces run_iteration for this schedule."""
    system, t = s.system, s.tables
    dbo_on = system.dbo.enabled and t.has_pim
    on_pim = system.placement.attention == "pim" and t.has_pim
    return not keep_stages and not (dbo_on and system.dbo.prediction_error > 0) and not (dbo_on and not on_pim)


@dataclass
class _Groups:
    """Attention aggregates of every (iteration, micro-batch, sub-batch) group of requests."""

    g: np.ndarray  # group of each request
    ch: np.ndarray
    lens: np.ndarray
    table: np.ndarray  # the cost tables' stacked attention columns (7, max_len + 1)
    rows: np.ndarray  # requests per group
    pim_c: np.ndarray  # (G, C)
    io_c: np.ndarray
    pmax: np.ndarray
    iomax: np.ndarray
    pmean: np.ndarray
    soft: np.ndarray
    kv: np.ndarray
    flops: np.ndarray
    pim_e: np.ndarray
    npu_e: np.ndarray
    _gat: np.ndarray | None = None

    @property
    def gat(self) -> np.ndarray:
        """(7, R) per-request table columns, gathered on first use (only DBO's attention moves need them)."""
        if self._gat is None:
            self._gat = self.table[:, self.lens]
        return self._gat


class _Acc:
    """Per-iteration sums of stage figures x repeats (instances always arrive sorted by iteration)."""

    def __init__(self, K: int) -> None:
        self.K = K
        self.m = np.zeros((len(FIELDS), K))
        self.row = {f: i for i, f in enumerate(FIELDS)}

    @property
    def v(self) -> dict[str, np.ndarray]:
        """The sums by field name."""
        return {f: self.m[i] for f, i in self.row.items()}

    def _add(self, k: np.ndarray, names: list[str], block: np.ndarray) -> None:
        if k.size == 0:
            return
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        sums = np.add.reduceat(block, starts, axis=1)  # one pass for every field
        rows = [self.row[f] for f in names]
        self.m[np.ix_(rows, k[starts])] += sums

    def add(self, k: np.ndarray, reps, **vals: np.ndarray) -> None:
        block = np.empty((len(vals), k.shape[0]))
        for i, x in enumerate(vals.values()):
            block[i] = x
        if reps != 1:
            block *= reps
        self._add(k, list(vals), block)

    def add_rows(self, k: np.ndarray, vals: dict[str, np.ndarray]) -> None:
        """Add already repeat-weighted per-instance values (every field) to their iterations."""
        self._add(k, list(vals), np.stack(list(vals.values())))


def run_iterations(s: Schedule, lens_list: list[np.ndarray], channels_list: list[np.ndarray]) -> IterationBatch:
    """Evaluate K decode iterations (requests ``lens_list[k]`` in channels ``channels_list[k]``) together."""
    n_k = np.array([len(x) for x in lens_list], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    lens = np.concatenate(lens_list).astype(np.int64) if n_k.sum() else empty
    ch = np.concatenate(channels_list).astype(np.int64) if n_k.sum() else empty
    return run_iterations_flat(s, lens, ch, n_k)


def run_iterations_flat(s: Schedule, lens: np.ndarray, ch: np.ndarray, n_k: np.ndarray) -> IterationBatch:
    """run_iterations on concatenated requests: iteration k holds the next ``n_k[k]`` entries of
    ``lens`` / ``ch`` (int64)."""
    if not supports(s):
        raise ValueError("run_iterations does not cover this schedule; use run_iteration")
    t, system = s.tables, s.system
    C, pp, L = t.channels, s.pp, s.layers_per_stage
    K = int(n_k.shape[0])
    R = int(lens.shape[0])
    kid = np.repeat(np.arange(K), n_k)
    r = np.arange(R) - np.repeat(np.cumsum(n_k) - n_k, n_k)
    mb, pos = (r % pp, r // pp) if pp > 1 else (0, r)
    # requests per micro-batch, and the one interleaving decision per iteration (run_iteration's rule)
    mbsize = (n_k[:, None] - np.arange(pp)[None, :] + pp - 1) // pp  # (K, pp)
    smallest = np.where(mbsize > 0, mbsize, np.iinfo(np.int64).max).min(axis=1)
    interleave = system.sub_batch_interleaving & (n_k > 0) & (smallest >= system.sub_batch_min_batch)
    nsub = 2 if bool(interleave.any()) else 1  # sub-batches per micro-batch (group ids stay dense)
    sub = np.where(interleave[kid], pos % 2, 0) if bool(interleave.any()) else 0
    G = K * pp * nsub
    g = (kid * pp + mb) * nsub + sub
    cnt = np.bincount(g, minlength=G)
    gc_idx = g * C + ch
    pim_c = np.bincount(gc_idx, weights=t.attn_stacked[0, lens], minlength=G * C).reshape(G, C)
    io_c = np.bincount(gc_idx, weights=t.attn_stacked[1, lens], minlength=G * C).reshape(G, C)
    # per-group sums of the other columns; a column proportional to L is its slope times the group's sum(L)
    len_sum = np.bincount(g, weights=lens, minlength=G)
    sums = [pim_c.sum(axis=1), None] + [
        len_sum * t.attn_slopes[i] if np.isfinite(t.attn_slopes[i])
        else np.bincount(g, weights=t.attn_stacked[i, lens], minlength=G) for i in range(2, 7)]
    grp = _Groups(g, ch, lens, t.attn_stacked, cnt, pim_c, io_c, pim_c.max(axis=1), io_c.max(axis=1),
                  sums[0] / C, sums[4], sums[2], sums[3], sums[5], sums[6])
    acc = _Acc(K)
    mbi = np.arange(K * pp)
    k_of = mbi // pp
    live = mbsize.reshape(-1) > 0
    sbi = live & interleave[k_of]
    flat = live & ~interleave[k_of]
    on_pim = system.placement.attention == "pim" and t.has_pim
    dbo = system.dbo if (system.dbo.enabled and t.has_pim) else None
    ev = _StageEval(s, grp, on_pim, dbo)
    i_s = mbi[sbi]
    if i_s.size:
        g0, g1 = i_s * nsub, i_s * nsub + 1
        b1, b2 = cnt[g0], cnt[g1]
        cached = t.npu["both"].bytes[np.maximum(b1, b2)] <= t.sram_bytes
        no = np.zeros(i_s.size, dtype=bool)
        for group, rows, ag, cach, reps, bal in (
                ("qkv", b1, None, no, 1, False), ("qkv", b2, g0, cached, 1, False),
                ("both", b1, g1, no, L - 1, True), ("both", b2, g0, cached, L - 1, True),
                ("rest", b1, g1, no, 1, False), ("rest", b2, None, cached, 1, False)):
            if reps > 0:
                ev.stage(acc, k_of[i_s], group, rows, ag, cach, reps, bal)
    i_f = mbi[flat]
    if i_f.size:
        g0 = i_f * nsub
        n = cnt[g0]
        no = np.zeros(i_f.size, dtype=bool)
        for group, rows, ag in (("qkv", n, None), (None, np.zeros_like(n), g0), ("rest", n, None)):
            ev.stage(acc, k_of[i_f], group, rows, ag, no, L, True)
    # LM head of every micro-batch, and its hand-off from the previous pipeline stage
    i_l = mbi[live]
    n = mbsize.reshape(-1)[live]
    h = t.npu["head"]
    head_s = np.maximum(np.maximum(h.sa_s[n], h.vec_s[n]), h.mem_s[n]) + h.link_s[n]
    p2p = (s.p2p_latency_s + n * s.p2p_s_per_row) if pp > 1 else 0.0
    kk = k_of[i_l]
    acc.add(kk, 1.0, time_s=head_s + p2p, npu_busy_s=head_s, npu_sa_busy_s=h.sa_s[n], npu_flops=h.flops[n])
    head_energy = np.bincount(kk, weights=h.energy_j[n] * s.tp, minlength=K)
    v = {f: x.copy() for f, x in acc.v.items()}
    v["energy_j"] = v["energy_j"] * (s.tp * pp) + head_energy
    return IterationBatch(tokens=n_k, **v)


class _StageEval:
    """Stage times (and DBO decisions) for arrays of stage instances of one kind."""

    def __init__(self, s: Schedule, grp: _Groups, on_pim: bool, dbo) -> None:
        self.s, self.t, self.grp, self.on_pim, self.dbo = s, s.tables, grp, on_pim, dbo

    def _npu(self, group, nb, rows, cached):
        t = self.t
        if group is None:
            z = np.zeros(np.shape(nb))
            return z, z, z, np.zeros(np.shape(rows)), z, z
        G = t.npu[group]
        mem = np.where(cached, 0.0, G.mem_s[nb])
        energy = G.energy_j[nb] - np.where(cached, G.dram_energy_j[nb], 0.0)
        return G.sa_s[nb], G.vec_s[nb], mem, G.link_s[rows], G.flops[nb], energy

    def stage(self, acc: _Acc, k: np.ndarray, group, rows, ag, cached, reps, balanced: bool) -> None:
        if ag is None and rows.size > 1:
            # an FC-only stage depends only on (rows, cached): evaluate each distinct pair once
            key = rows * 2 + cached.astype(np.int64)
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            if uniq.size < rows.size:
                sub = _Acc(uniq.size)
                self.stage(sub, np.arange(uniq.size), group, rows[first], None, cached[first], reps, balanced)
                acc.add_rows(k, {f: x[inv] for f, x in sub.v.items()})
                return
        t, grp, on_pim = self.t, self.grp, self.on_pim
        n_inst = k.shape[0]
        sa, vec, mem, link, npu_fl, energy = self._npu(group, rows, rows, cached)
        zeros = np.zeros(n_inst)
        if ag is None:
            npu = np.maximum(np.maximum(sa, vec), mem) + link
            chan = zeros
            vals = dict(pim_max=zeros, pim_mean=zeros, pim_fl=zeros, attn_b=zeros, attn_off=zeros)
        elif not on_pim:
            # attention on the NPU (no PIM, or placed there): it streams the KV, MACs on the vector units
            kv = grp.kv[ag]
            vec = vec + (grp.soft[ag] + grp.flops[ag]) / t.vector_flops
            npu = np.maximum(np.maximum(sa, vec), mem + kv / t.npu_bw_bytes_per_s) + link
            energy = energy + grp.npu_e[ag]
            chan = zeros
            vals = dict(pim_max=zeros, pim_mean=zeros, pim_fl=zeros, attn_b=kv, attn_off=kv)
        else:
            vec = vec + grp.soft[ag] / t.vector_flops
            npu = np.maximum(np.maximum(sa, vec), mem) + link
            chan = channel_max(t, grp.pmax[ag], grp.iomax[ag], 0.0, 0.0, mem)
            energy = energy + grp.pim_e[ag]
            vals = dict(pim_max=grp.pmax[ag], pim_mean=grp.pmean[ag], pim_fl=grp.flops[ag], attn_b=grp.kv[ag],
                        attn_off=zeros)
        time = np.maximum(npu, chan)
        y = np.zeros(n_inst, dtype=np.int64)
        if self.dbo is not None and balanced:
            best = time.copy()
            if self.dbo.fc_to_pim and group is not None:
                yb, pred = self._best_fc(group, rows, ag, cached)
                better = pred < best
                y = np.where(better, yb, 0)
                best = np.where(better, pred, best)
            moved = None
            if self.dbo.attention_to_npu and ag is not None:
                moved = self._best_attention(ag, chan > npu, sa, vec, mem, link, best)
            if moved is not None:
                sel, mask = moved
                y[sel] = 0
                done = np.zeros(n_inst, dtype=bool)
                done[sel] = True
                time, npu, energy, vals = self._with_attention(time, npu, energy, vals, sa, vec, mem, link, ag,
                                                               sel, mask)
            else:
                done = np.zeros(n_inst, dtype=bool)
            fc = (y > 0) & ~done
            if fc.any():
                time, npu, sa, npu_fl, energy, vals = self._with_fc(
                    fc, group, rows, ag, cached, y, time, npu, sa, npu_fl, energy, vals)
        acc.add(k, reps, time_s=time, npu_busy_s=npu, npu_sa_busy_s=sa, pim_busy_s=vals["pim_mean"],
                pim_busy_max_s=vals["pim_max"], npu_flops=npu_fl, pim_flops=vals["pim_fl"], energy_j=energy,
                attn_bytes=vals["attn_b"], attn_offloaded_bytes=vals["attn_off"])
        if balanced:
            acc.add(k, reps, fc_rows=rows, fc_rows_offloaded=y)

    # ---- DBO, FC rows to the PIM: every y of every instance at once -------------------------------------
    def _best_fc(self, group, rows, ag, cached):
        t, grp = self.t, self.grp
        ys = np.arange(int(rows.max()) + 1) if rows.size else np.arange(1)
        valid = ys[None, :] <= rows[:, None]
        nb = np.clip(rows[:, None] - ys[None, :], 0, None)
        sa, vec, mem, link, _, _ = self._npu(group, nb, rows[:, None], cached[:, None])
        pf = t.pim_fc[group]
        if ag is not None:
            vec = vec + (grp.soft[ag] / t.vector_flops)[:, None]
            chan = channel_max(t, grp.pmax[ag][:, None], grp.iomax[ag][:, None], pf.time_s[ys][None, :],
                               pf.io_s[ys][None, :], mem)
        else:
            chan = channel_max(t, 0.0, 0.0, pf.time_s[ys][None, :], pf.io_s[ys][None, :], mem)
        npu = np.maximum(np.maximum(sa, vec), mem) + link
        total = np.where(valid, np.maximum(npu, chan), np.inf)
        yb = np.argmin(total, axis=1)
        return yb, total[np.arange(rows.shape[0]), yb]

    def _with_fc(self, fc, group, rows, ag, cached, y, time, npu, sa, npu_fl, energy, vals):
        """Stage figures of the instances in ``fc`` with y[fc] FC rows on the PIM (no attention moved)."""
        t, grp = self.t, self.grp
        time, npu, sa, npu_fl, energy = time.copy(), npu.copy(), sa.copy(), npu_fl.copy(), energy.copy()
        vals = {key: v.copy() for key, v in vals.items()}
        yy = y[fc]
        rr = rows[fc]
        sa_, vec_, mem_, link_, fl_, en_ = self._npu(group, rr - yy, rr, cached[fc])
        pf = t.pim_fc[group]
        pft, pfio, pffl, pfe = pf.time_s[yy], pf.io_s[yy], pf.flops[yy], pf.energy_j[yy]
        en_ = en_ + pfe
        if ag is not None:
            a = ag[fc]
            vec_ = vec_ + grp.soft[a] / t.vector_flops
            chan = channel_max(t, grp.pmax[a], grp.iomax[a], pft, pfio, mem_)
            vals["pim_max"][fc] = grp.pmax[a] + pft
            vals["pim_mean"][fc] = grp.pmean[a] + pft
            vals["pim_fl"][fc] = grp.flops[a] + pffl
            en_ = en_ + grp.pim_e[a]
        else:
            chan = channel_max(t, 0.0, 0.0, pft, pfio, mem_)
            vals["pim_max"][fc] = pft
            vals["pim_mean"][fc] = pft
            vals["pim_fl"][fc] = pffl
        npu_ = np.maximum(np.maximum(sa_, vec_), mem_) + link_
        time[fc] = np.maximum(npu_, chan)
        npu[fc], sa[fc], npu_fl[fc], energy[fc] = npu_, sa_, fl_, en_
        return time, npu, sa, npu_fl, energy, vals

    # ---- DBO, attention to the NPU: the shared exact sweep over every PIM-bound instance ------------------
    def _best_attention(self, ag, pim_bound, sa, vec, mem, link, best):
        t, grp = self.t, self.grp
        cand = pim_bound & (grp.rows[ag] > 0)
        if not cand.any():
            return None
        # only movable requests can be in an optimal prefix; whether one is depends only on its context length
        helps = movable(t, t.attn_stacked[0], t.attn_stacked[2])[grp.lens]
        cand &= np.bincount(grp.g, weights=helps, minlength=grp.rows.shape[0])[ag] > 0
        sel = np.flatnonzero(cand)
        if sel.size == 0:
            return None
        Q = sel.size
        q_of_group = np.full(grp.rows.shape[0], -1, dtype=np.int64)
        q_of_group[ag[sel]] = np.arange(Q)
        q_of_req = q_of_group[grp.g]
        req = (q_of_req >= 0) & helps
        kv = grp.kv[ag[sel]]
        fpb = np.where(kv > 0, grp.flops[ag[sel]] / np.where(kv > 0, kv, 1.0), 0.0)
        pred, mask, m = attention_sweep(t, q_of_req[req], grp.ch[req], grp.gat[0][req], grp.gat[1][req],
                                        grp.gat[2][req], Q, sa[sel], vec[sel], mem[sel], link[sel], fpb,
                                        grp.pim_c[ag[sel]].reshape(-1), grp.io_c[ag[sel]].reshape(-1))
        win = (m > 0) & (pred < best[sel])
        if not win.any():
            return None
        full = np.zeros(grp.g.shape[0], dtype=bool)
        full[np.flatnonzero(req)] = mask
        keep_q = np.flatnonzero(win)
        full &= np.isin(q_of_req, keep_q)
        return sel[keep_q], full

    def _with_attention(self, time, npu, energy, vals, sa, vec, mem, link, ag, sel, mask):
        """Stage figures of the instances ``sel`` with the requests in ``mask`` moved to the NPU."""
        t, grp = self.t, self.grp
        C = t.channels
        time, npu, energy = time.copy(), npu.copy(), energy.copy()
        vals = {key: v.copy() for key, v in vals.items()}
        S = sel.shape[0]
        q_sel = np.full(grp.rows.shape[0], -1, dtype=np.int64)  # position in sel of each moved request's group
        q_sel[ag[sel]] = np.arange(S)
        j = q_sel[grp.g[mask]]
        chm = grp.ch[mask]
        pim_s, io_s, kvb, fl = grp.gat[0][mask], grp.gat[1][mask], grp.gat[2][mask], grp.gat[3][mask]
        kv_off = np.bincount(j, weights=kvb, minlength=S)
        fl_off = np.bincount(j, weights=fl, minlength=S)
        pe_off = np.bincount(j, weights=grp.gat[5][mask], minlength=S)
        ne_off = np.bincount(j, weights=grp.gat[6][mask], minlength=S)
        idx = j * C + chm
        a = ag[sel]
        pim_c = grp.pim_c[a] - np.bincount(idx, weights=pim_s, minlength=S * C).reshape(S, C)
        io_c = grp.io_c[a] - np.bincount(idx, weights=io_s, minlength=S * C).reshape(S, C)
        npu_kv_c = np.bincount(idx, weights=kvb, minlength=S * C).reshape(S, C) / t.ch_bw_bytes_per_s
        vec_s = vec[sel] + fl_off / t.vector_flops
        npu_s = np.maximum(np.maximum(sa[sel], vec_s), mem[sel] + kv_off / t.npu_bw_bytes_per_s) + link[sel]
        chan = channel_time(t.mode, pim_c, 0.0, io_c, mem[sel][:, None], npu_kv_c, t.switch_s,
                            t.quantum_s).max(axis=1)
        time[sel] = np.maximum(npu_s, chan)
        npu[sel] = npu_s
        energy[sel] = energy[sel] - pe_off + ne_off  # moved requests' energy on the NPU instead of the PIM
        vals["pim_max"][sel] = pim_c.max(axis=1)
        vals["pim_mean"][sel] = pim_c.sum(axis=1) / C
        vals["pim_fl"][sel] = grp.flops[a] - fl_off
        vals["attn_off"][sel] = kv_off
        return time, npu, energy, vals
