"""DBO as the engine runs it (optimize.dbo + schedule.engine): exhaustive search, a continuous lower bound at
scale, and its guarantees.

(a) Exhaustive search: the engine equals the runtime-scheduler oracle (tests/schedule/test_runtime_oracle.py),
    whose DBO enumerates every FC decision and every combination of per-channel attention prefixes on small
    cases (and a threshold family, checked against that brute force, at scale);
(b) batches of 512 on 32 channels: every balanced stage lies between a continuous-relaxation lower bound over
    a superset of DBO's decisions (derived below) and its time with nothing moved;
(c) DBO never makes a stage (same schedule) or an iteration slower, and moves work without creating or losing
    any: every FLOP of the iteration runs on the NPU or the PIM (hand-derived count);
(d) with every direction switched off an iteration equals DBO off; a direction switched off never moves work.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from librapim_cli.cost.tables import COLUMN_STEPS
from librapim_cli.optimize.stage import C_CHAIN, C_LINK, C_MEM, C_PF, C_SA, C_VEC
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import FIELDS, run_iteration
from librapim_cli.simulate import setup
from librapim_cli.spec import load_hardware
from librapim_cli.workload import snake_channels, steady_state_batch
from oracle import runtime as oracle


# ---- (b) large stages vs a continuous lower bound -------------------------------------------------------------------
def continuous_lower_bound(inst: oracle.Inst) -> float:
    """A lower bound on a balanced stage's time over EVERY decision (u, S): u any FC decision (y = 0..rows token
    rows, or column tiles j = 1..COLUMN_STEPS), S any fractional set of attention moved to the NPU (no movable
    filter, any split of a request). For u, with X_u its FC figures (``stage.fc_at`` / ``fc_cols_at``), P_c
    channel c's PIM attention seconds, p_i, kv_i a request's PIM seconds and KV bytes, B_c = sum of kv_i s_i over
    channel c:
      (1) T >= NPU >= max(sa_u, vec_u + softmax / vector_flops) + link          (moving attention only adds)
      (2) T >= NPU >= mem_u + sum_c B_c / npu_bw + link                          (the NPU streams S's KV)
      (3) T >= chain_u                                                           (the moved FC work's own chain)
      (4) T >= channel c >= P_c - sum_{i in S, ch(i) = c} p_i s_i + pim_fc_u     (every mode's channel time is at
                                                                                  least its PIM units' busy time)
      (5) T >= channel c >= mem_u + B_c / ch_bw                                  (and at least the NPU's traffic
                                                                                  through it: blocked and
                                                                                  time_interleaved add it, the
                                                                                  dual row buffer and DEX max it)
    For fixed u and T, channel c must shed need_c = P_c + pim_fc_u - T PIM seconds; the fewest KV bytes that do it,
    bytes_c(need_c), is a fractional knapsack (requests by p_i / kv_i descending, the last one partially). T is
    feasible iff (1), (3), T >= pim_fc_u, every bytes_c <= (T - mem_u) ch_bw (5) and mem_u + link + sum_c bytes_c /
    npu_bw <= T (2). The needs fall as T grows, so the least feasible T is found by bisection; the bound is its
    minimum over u. Dropping the data-bus, switch and riding terms only weakens it.
    """
    o, t = inst.o, inst.o.t
    C = o.C
    decisions = [(y, 0) for y in range(inst.rows + 1)]
    if o.columns:
        decisions += [(0, j) for j in range(1, COLUMN_STEPS + 1)]
    X = np.array([o.fc(inst.gi, inst.rows, inst.cache, y, j) for y, j in decisions])
    on = o.on_pim and o.dbo.attention_to_npu
    soft = inst.tot[oracle.A_SOFT] / t.vector_flops
    fixed = np.maximum(X[:, C_SA], X[:, C_VEC] + soft) + X[:, C_LINK]
    mem, link, pf, chain = X[:, C_MEM], X[:, C_LINK], X[:, C_PF], X[:, C_CHAIN]
    P = np.zeros(C)
    curves = []
    for c in range(C):
        reqs = inst.by_channel[c]
        p = np.array([r.col[oracle.A_PIM] for r in reqs])
        kv = np.array([r.col[oracle.A_KV] for r in reqs])
        P[c] = p.sum()
        o_ = np.argsort(-(p / np.maximum(kv, 1.0)), kind="stable")
        curves.append((np.concatenate(([0.0], np.cumsum(p[o_]))), np.concatenate(([0.0], np.cumsum(kv[o_])))))

    def feasible(T):
        ok = (T >= fixed) & (T >= pf) & (T >= chain)
        total = np.zeros(T.shape)
        for c, (cp, ck) in enumerate(curves):
            need = P[c] + pf - T
            if not on:  # nothing may move: the channel must already fit
                ok &= need <= 0
                continue
            ok &= need <= cp[-1]
            b = np.interp(np.clip(need, 0.0, cp[-1]), cp, ck)
            ok &= b <= (T - mem) * t.ch_bw_bytes_per_s * (1 + 1e-12) + 1e-6
            total += b
        return ok & (mem + link + total / t.npu_bw_bytes_per_s <= T * (1 + 1e-12))

    lo = np.zeros(len(decisions))
    hi = np.maximum.reduce([fixed, mem + link, chain, P.max() + pf, mem + P.max() + pf]) * 4 + 1e-12
    assert feasible(hi).all()
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        ok = feasible(mid)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return float(hi.min())


def _large_cases():
    out = []
    for system, hw in (("librapim", None), ("neupims", None), ("librapim-dbo-only", None), ("npu-pim-blocked", None),
                       ("librapim", "neupims-npu8-hbm2pim")):
        s = setup(system, "gpt3-7b", "sharegpt", batch=512, sets=["system.dbo.enabled=true"])
        if hw is not None:  # 8 arrays: a fast NPU, so the PIM side becomes the bottleneck
            s = replace(s, system=s.system.model_copy(update={"hardware": load_hardware(hw)}))
        for scale in (1, 4, 12):
            out.append((f"{system}{'+' + hw if hw else ''}/x{scale}", s, scale))
    return out


LARGE = _large_cases()


@pytest.mark.parametrize("case", LARGE, ids=[c[0] for c in LARGE])
def test_large_stages_between_lower_bound_and_no_offload(case) -> None:
    label, s, scale = case
    rng = np.random.default_rng(7)
    lens = np.minimum(steady_state_batch(s, rng) * scale, 16384)
    sched = schedule_for(s, 512, int(lens.max()))
    assert sched.tables.channels == 32
    ch = snake_channels(lens, 32)
    got = run_iteration(sched, lens, ch, keep_stages=True).stages
    it = oracle.check_engine(sched, [lens], [ch])[0]  # the oracle's stages are the engine's (checked)
    checked = 0
    for i, st in enumerate(it.stages):
        inst = st.inst
        if inst is None or not inst.kind.balanced:
            continue
        time = float(got.time_s[i])
        none = inst.time(oracle.Oracle(sched).fc(inst.gi, inst.rows, inst.cache), False)
        lb = continuous_lower_bound(inst)
        print(f"\n{label} mb {st.mb} {st.name}: DBO {time:.4e} (y={st.y}, j={st.j}, units {st.units}), lower bound "
              f"{lb:.4e} (gap {time / lb - 1:+.2%}), nothing moved {none:.4e}")
        assert lb <= time * (1 + 1e-9)
        assert time <= none * (1 + 1e-12)
        checked += 1
    assert checked >= 2  # C and D interleaved, or Q, M and R flat, per micro-batch


def test_large_cases_exercise_both_directions() -> None:
    fc = attn = 0
    for _, s, scale in LARGE:
        lens = np.minimum(steady_state_batch(s, np.random.default_rng(7)) * scale, 16384)
        sched = schedule_for(s, 512, int(lens.max()))
        r = run_iteration(sched, lens, snake_channels(lens, 32), keep_stages=True).stages
        body = r.name != "H"
        fc += int(((r.fc_rows_to_pim > 0) | (r.fc_cols_to_pim > 0))[body].sum())
        attn += int((r.attn_to_npu > 0).sum())
    assert fc > 0 and attn > 0


# ---- (c) never slower; work conservation ----------------------------------------------------------------------------
def _dbo(s, enabled: bool, **options):
    dbo = s.system.dbo.model_copy(update={"enabled": enabled, **options})
    return replace(s, system=s.system.model_copy(update={"dbo": dbo}))


@pytest.mark.parametrize("scheduler", ["rule", "runtime"])
@pytest.mark.parametrize("system", ["librapim", "librapim-dbo-only", "neupims", "npu-pim-blocked", "attacc"])
def test_dbo_never_slows_a_stage_or_an_iteration(system: str, scheduler: str) -> None:
    s = setup(system, "gpt3-7b", "sharegpt", batch=512, sets=[f'system.scheduler="{scheduler}"'])
    lens = steady_state_batch(s, np.random.default_rng(3))
    on, off = (schedule_for(_dbo(s, e), 512, int(lens.max())) for e in (True, False))
    ch = snake_channels(lens, on.tables.channels)
    r_on = run_iteration(on, lens, ch, keep_stages=True)
    r_off = run_iteration(off, lens, ch, keep_stages=True)
    assert r_on.time_s[0] <= r_off.time_s[0] * (1 + 1e-12)
    if scheduler == "rule":  # the same schedule: stage by stage
        a, b = r_on.stages, r_off.stages
        assert list(a.name) == list(b.name)
        assert (a.time_s <= b.time_s * (1 + 1e-12)).all()


FLOP_CASES = {"dbo": (), "no-dbo": ("system.dbo.enabled=false",), "rule": ('system.scheduler="rule"',),
              "8-arrays": ("hardware.npu.systolic_arrays=8",), "attention-on-npu": ('system.placement.attention="npu"',),
              "fc-on-pim": ("system.dbo.enabled=false", 'system.placement.fc="pim"')}


@pytest.mark.parametrize("sets,batch", [
    pytest.param(sets, batch, id=f"{name}-{batch}",
                 marks=[])
    for name, sets in FLOP_CASES.items() for batch in (3, 64, 512)])
def test_every_flop_runs_somewhere(sets, batch: int) -> None:
    """gpt3-7b at tp 4: 8 query and 8 KV heads of 128 per shard, d = 4096, FFN 16384 / 4 = 4096 per shard, vocab
    50304 / 4 = 12576 per shard. Per token and layer the FC GEMMs do 2 x 4096 x (3 x 1024 + 1024 + 4096 + 4096)
    = 2 x 4096 x 12288 FLOPs, the LM head 2 x 4096 x 12576 once per token; a request of context L does 4 x 8 x
    128 x L = 4096 L attention FLOPs per layer and moves 2 x 8 x 128 x 2 B x L = 4096 L KV bytes, i.e. 1 FLOP
    per KV byte. Whatever the schedule and DBO move, npu_flops + pim_flops + the attention FLOPs the NPU runs
    (1 per offloaded KV byte) count each exactly once, over the 32 layers."""
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=batch, sets=list(sets))
    lens = steady_state_batch(s, np.random.default_rng(batch))
    sched = schedule_for(s, batch, int(lens.max()))
    r = run_iteration(sched, lens, snake_channels(lens, 32))
    want = batch * (32 * 2 * 4096 * 12288 + 2 * 4096 * 12576) + 32 * 4096 * float(lens.sum())
    got = float(r.npu_flops[0] + r.pim_flops[0] + r.attn_offloaded_bytes[0] * 1.0)
    assert got == pytest.approx(want, rel=1e-9)
    assert float(r.attn_bytes[0]) == pytest.approx(32 * 4096 * float(lens.sum()), rel=1e-12)


# ---- (d) directions switched off ------------------------------------------------------------------------------------
def _case(hw: str | None = None, scale: int = 1):
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=512)
    if hw is not None:
        s = replace(s, system=s.system.model_copy(update={"hardware": load_hardware(hw)}))
    lens = np.minimum(steady_state_batch(s, np.random.default_rng(5)) * scale, 8192)
    return s, lens, snake_channels(lens, 32)


CASES = [(None, 1), (None, 4), ("neupims-npu8-hbm2pim", 1), ("neupims-npu8-hbm2pim", 4)]


@pytest.mark.parametrize("hw,scale", CASES)
def test_no_direction_means_no_offload(hw, scale) -> None:
    s, lens, ch = _case(hw, scale)
    idle = schedule_for(_dbo(s, True, attention_to_npu=False, fc_to_pim=False, lm_head=False), 512, int(lens.max()))
    static = schedule_for(_dbo(s, False), 512, int(lens.max()))
    a, b = run_iteration(idle, lens, ch), run_iteration(static, lens, ch)
    for f in FIELDS:
        assert float(getattr(a, f)[0]) == pytest.approx(float(getattr(b, f)[0]), rel=1e-12, abs=1e-18), f


@pytest.mark.parametrize("hw,scale", CASES)
def test_single_directions_respected(hw, scale) -> None:
    s, lens, ch = _case(hw, scale)
    moved = 0
    for options, check in (({"attention_to_npu": False}, "attention"), ({"fc_to_pim": False}, "fc"),
                           ({"fc_to_pim": False, "lm_head": False}, "none")):
        sched = schedule_for(_dbo(s, True, **options), 512, int(lens.max()))
        r = run_iteration(sched, lens, ch, keep_stages=True)
        st = r.stages
        body = st.name != "H"
        if check == "attention":
            assert r.attn_offloaded_bytes[0] == 0.0 and (st.attn_to_npu == 0).all()
            moved += int(r.fc_flops_offloaded[0] > 0)
        else:  # no FC rows or columns of the layers move; the LM head only with dbo.lm_head
            assert (st.fc_rows_to_pim[body] == 0).all() and (st.fc_cols_to_pim[body] == 0).all()
            if check == "none":
                assert r.fc_flops_offloaded[0] == 0.0
    # the allowed direction is still used somewhere (else this test could not fail)
    if hw is None and scale == 1:
        assert moved


def test_undominated_moves_are_exactly_the_possible_first_minima():
    """engine._undominated keeps a move iff no earlier move is <= it in all three terms (brute force on random
    small-integer curves, with ties and a mode lacking a term), in increasing order, padded with +inf and 0."""
    from librapim_cli.schedule.engine import _undominated

    rng = np.random.default_rng(0)
    for trial in range(300):
        n, U = int(rng.integers(1, 6)), int(rng.integers(1, 30))
        k, fa, fio = (rng.integers(0, 5, (n, U)).astype(float) for _ in range(3))
        if trial % 3 == 0:
            k[:] = -np.inf  # e.g. dual_row_buffer has no weight-section term
        kk, a, b, u = _undominated(k, fa, fio)
        for i in range(n):
            want = [x for x in range(U) if not any(k[i, y] <= k[i, x] and fa[i, y] <= fa[i, x] and fio[i, y] <= fio[i, x]
                                                   for y in range(x))]
            m = len(want)
            assert u[i, :m].tolist() == want and (u[i, m:] == 0).all()
            assert kk[i, :m].tolist() == k[i, want].tolist() and a[i, :m].tolist() == fa[i, want].tolist()
            assert b[i, :m].tolist() == fio[i, want].tolist() and np.isinf(kk[i, m:]).all()
        # and the first minimum of max(k, p + fa, io + fio, c) over the kept moves is the overall first minimum
        p, io, c = rng.uniform(0, 5, 3)
        tot = np.maximum(np.maximum(np.maximum(k, p + fa), io + fio), c)
        tot_kept = np.maximum(np.maximum(np.maximum(kk, p + a), io + b), c)
        assert (u[np.arange(n), np.argmin(tot_kept, axis=1)] == np.argmin(tot, axis=1)).all()


@pytest.mark.parametrize("block", [1, 7, 32])
def test_undominated_blocks_of_curves_with_unequal_counts(block):
    """Many curves whose candidate counts differ widely (taken in blocks by count): each curve's kept moves are
    still exactly the brute-force ones, whatever the block size."""
    from librapim_cli.schedule.engine import _undominated

    rng = np.random.default_rng(block)
    n, U = 90, 40
    k, fa, fio = (rng.integers(0, 6, (n, U)).astype(float) for _ in range(3))
    few = rng.uniform(size=n) < 0.5  # these curves: most moves dominated by the first (few candidates)
    k[few, 1:] = np.maximum(k[few, 1:], k[few, :1] + (rng.uniform(size=(int(few.sum()), U - 1)) < 0.9))
    fa[few, 1:] = np.maximum(fa[few, 1:], fa[few, :1])
    fio[few, 1:] = np.maximum(fio[few, 1:], fio[few, :1])
    kk, a, b, u = _undominated(k, fa, fio, block)
    ref = _undominated(k, fa, fio, n)  # one block: every curve over the longest count
    for x, y in zip((kk, a, b, u), ref, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    for i in range(n):
        want = [x for x in range(U) if not any(k[i, y] <= k[i, x] and fa[i, y] <= fa[i, x] and fio[i, y] <= fio[i, x]
                                               for y in range(x))]
        m = len(want)
        assert u[i, :m].tolist() == want and (u[i, m:] == 0).all() and np.isinf(kk[i, m:]).all()
