"""Decode-iteration schedule sanity (schedule.plan + schedule.engine; docs/sources.md#s2.5, #s9.4).

- with sub-batch interleaving the iteration is stages A..F plus the LM head H, C and D repeated L-1 times
  (the rule scheduler at batch 512 >= sub_batch_min_batch runs the ``count`` candidate);
- the iteration time is exactly the sum over stages of max(NPU, slowest channel), hence >= sum of
  max(NPU busy, PIM busy);
- npu-only never touches the PIM; the naive blocked system is the serial sum of its per-layer stages, checked
  against the cost functions directly (not the tables);
- metrics: utilizations and offload shares lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from librapim_cli.cost import link_cost, npu_cost
from librapim_cli.cost.pim import attention_parts
from librapim_cli.cost.tables import STACK_GROUPS
from librapim_cli.graph.decode import attention_ops, fc_ops, lm_head_op
from librapim_cli.graph.ops import AllReduce, Gemm, KVWrite, Vector
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import run_iteration
from librapim_cli.simulate import setup, simulate
from librapim_cli.spec import list_presets, load_hardware
from librapim_cli.workload import snake_channels, steady_state_batch
from oracle import runtime as oracle

REL = 1e-9
RULE = ('system.scheduler="rule"',)  # NeuPIMs' batch-size rule: interleave (count split) from 256 requests


def _iteration(system="librapim", model="gpt3-7b", batch=512, seed=0, sets=(), hardware=None, **kw):
    s = setup(system, model, "sharegpt", batch=batch, sets=list(sets))
    if hardware is not None:
        s = replace(s, system=s.system.model_copy(update={"hardware": load_hardware(hardware)}))
    lens = steady_state_batch(s, np.random.default_rng(seed))
    sched = schedule_for(s, s.batch, int(lens.max()))
    ch = snake_channels(lens, sched.tables.channels)
    return s, sched, lens, ch, _Result(run_iteration(sched, lens, ch, keep_stages=True, **kw))


class _Result:
    """One iteration's figures and its stage records as a list of rows."""

    def __init__(self, batch):
        self.batch = batch
        st_ = batch.stages
        self.stages = [_Row(st_, i) for i in range(len(st_))]

    def __getattr__(self, name):
        return float(getattr(self.batch, name)[0])


class _Row:
    def __init__(self, table, i):
        self.table, self.i = table, i

    def __getattr__(self, name):
        v = getattr(self.table, name)[self.i]
        return v.item() if hasattr(v, "item") else v


# ---- stage structure --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("system", ["librapim", "neupims", "librapim-dex-only", "librapim-dbo-only"])
def test_sub_batch_interleaving_stages(system: str) -> None:
    s, sched, _, _, r = _iteration(system, sets=RULE)
    L = s.model.layers // s.pp  # 32
    assert [st.name for st in r.stages] == ["A", "B", "C", "D", "E", "F", "H"]
    assert [st.repeats for st in r.stages] == [1, 1, L - 1, L - 1, 1, 1, 1]
    # the PIM column of docs/sources.md#s2.5: nothing in A and F, MHA#1 in B and D, MHA#2 in C and E; the LM
    # head's vocabulary columns when DBO moves some
    assert [st.pim_work for st in r.stages] == ["-", "MHA#1", "MHA#2", "MHA#1", "MHA#2", "-", "LM head columns"]
    for st in r.stages:
        if st.pim_work in ("-", "LM head columns"):
            assert st.pim_max_s == 0.0 or st.fc_rows_to_pim > 0 or st.fc_cols_to_pim > 0
    # every token row passes every FC group once per layer: QKV in A (sub-batch 1), B (sub-batch 2) and C, D
    # (L - 1 times each), the rest in C, D and E (sub-batch 1), F (sub-batch 2)
    qkv = sum(st.repeats * st.fc_rows for st in r.stages if st.name in "ABCD")
    rest = sum(st.repeats * st.fc_rows for st in r.stages if st.name in "CDEF")
    assert qkv == rest == L * s.batch


def test_pipeline_parallel_micro_batches() -> None:
    s, _, _, _, r = _iteration(model="gpt3-30b", batch=512, sets=RULE)
    assert (s.tp, s.pp) == (4, 2)
    L = s.model.layers // s.pp  # 24 layers per pipeline stage
    names = [st.name for st in r.stages]
    for n in "ABCDEFH":
        assert names.count(n) == s.pp
    # micro-batch by micro-batch, each in execution order and closed by its LM head
    assert names == list("ABCDEFH") * s.pp
    assert [st.micro_batch for st in r.stages] == [0] * 7 + [1] * 7
    assert all(st.repeats == L - 1 for st in r.stages if st.name in "CD")
    assert r.time_s == pytest.approx(sum(st.repeats * st.time_s for st in r.stages), rel=REL)


def test_small_batch_runs_serial_stages() -> None:
    # sub_batch_min_batch = 256 (NeuPIMs README): under the rule a batch of 64 runs QKV, MHA, Proj/FFN per layer
    s, _, _, _, r = _iteration(batch=64, sets=RULE)
    L = s.model.layers
    assert [(st.name, st.repeats) for st in r.stages] == [("Q", L), ("M", L), ("R", L), ("H", 1)]


# ---- iteration time = sum of stage maxima -----------------------------------------------------------------------
CASES = [("librapim", "gpt3-7b", None), ("neupims", "gpt3-7b", None), ("librapim-dbo-only", "gpt3-7b", None),
         ("npu-pim-blocked", "gpt3-7b", None), ("npu-only", "gpt3-7b", None), ("attacc", "gpt3-13b", None),
         ("librapim", "gpt3-30b", None), ("librapim", "gpt3-7b", "neupims-npu8-hbm2pim"),
         ("librapim", "llama2-70b", None), ("gpu-only", "gpt3-7b", None)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(x for x in c if x))
def test_iteration_time_is_sum_of_stage_maxima(case) -> None:
    system, model, hw = case
    _, _, _, _, r = _iteration(system, model, hardware=hw)
    total = 0.0
    for tm in r.stages:
        if tm.name != "H":
            assert tm.time_s == pytest.approx(max(tm.npu_s, tm.channel_max_s), rel=REL), tm.name
        # a channel under any concurrency mode is busy at least as long as its PIM units
        assert tm.channel_max_s >= tm.pim_max_s * (1 - REL)
        assert tm.pim_max_s >= tm.pim_mean_s * (1 - REL)
        assert tm.time_s >= max(tm.npu_s, tm.pim_max_s) * (1 - REL)
        total += tm.repeats * tm.time_s
    assert r.time_s == pytest.approx(total, rel=REL)
    assert r.time_s >= sum(st.repeats * max(st.npu_s, st.pim_max_s) for st in r.stages) * (1 - REL)
    assert r.npu_busy_s <= r.time_s * (1 + REL)
    assert r.pim_busy_max_s <= r.time_s * (1 + REL)


# ---- baselines ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [64, 512])
def test_npu_only_never_uses_the_pim(batch: int) -> None:
    _, _, _, _, r = _iteration("npu-only", batch=batch)
    assert r.pim_busy_s == 0.0
    assert r.pim_busy_max_s == 0.0
    assert r.pim_flops == 0.0
    assert r.fc_flops_offloaded == 0.0 and r.attn_offloaded_bytes == r.attn_bytes  # attention on the NPU by placement
    assert r.attn_bytes > 0  # attention still happens, on the NPU
    for st in r.stages:
        assert st.pim_max_s == 0.0 and st.pim_mean_s == 0.0


def _npu_time(ops, hw, link) -> float:
    """NPU time of a group of ops run back to back: the systolic arrays, vector units and DRAM stream (weights,
    and the new tokens' K/V written into the cache) overlap (max of their sums); all-reduces follow on the link."""
    sa = vec = mem = lk = 0.0
    for op in ops:
        if isinstance(op, AllReduce):
            lk += link_cost(op, link, hw).time_s
        elif isinstance(op, Gemm):
            c = npu_cost(op, hw)
            sa += c.compute_s + c.overhead_s
            mem += c.memory_s
        elif isinstance(op, Vector):
            vec += npu_cost(op, hw).time_s
        elif isinstance(op, KVWrite):
            mem += npu_cost(op, hw).memory_s
    return max(sa, vec, mem) + lk


@pytest.mark.parametrize("batch", [64, 512])
def test_blocked_baseline_is_the_serial_sum(batch: int) -> None:
    """npu-pim-blocked: per layer QKV, then attention on the PIM, then Proj/FFN, one after another."""
    s, _, lens, ch, r = _iteration("npu-pim-blocked", batch=batch)
    hw, link, tp, L, n = s.system.hardware, s.system.link, s.tp, s.model.layers, s.batch
    fc = fc_ops(s.model, tp, float(n))
    q = _npu_time([o for o in fc if o.phase == "qkv"], hw, link)
    rest = _npu_time([o for o in fc if o.phase == "rest"], hw, link)
    score, softmax, context = attention_ops(s.model, tp, lens)
    # blocked: the NPU streams no weights during the attention stage, so the slowest channel's PIM work and the
    # softmax on the vector units set it; a channel's PIM work is the sum of its requests' attention (K rows and
    # the query's GWRITE, V rows and the outputs' READRES, and the scores' trip to the softmax and back),
    # which attention_parts splits into score, context and softmax parts on the slowest channel
    parts = attention_parts(hw, lens, score.q_heads, score.kv_heads, s.model.head_dim, s.model.dtype_bytes, ch)
    pim = parts["score"].time_s + parts["context"].time_s + parts["softmax"].time_s
    m = max(pim, npu_cost(softmax, hw).time_s)
    head = _npu_time([lm_head_op(s.model, tp, float(n))], hw, link)
    assert [st.name for st in r.stages] == ["Q", "M", "R", "H"]
    stage = {st.name: st.time_s for st in r.stages}
    assert stage["Q"] == pytest.approx(q, rel=REL)
    assert stage["M"] == pytest.approx(m, rel=REL)
    assert stage["R"] == pytest.approx(rest, rel=REL)
    assert stage["H"] == pytest.approx(head, rel=REL)
    assert r.time_s == pytest.approx(L * (q + m + rest) + head, rel=REL)


# ---- SRAM weight reuse by the second sub-batch -----------------------------------------------------------------
@pytest.mark.parametrize("model, sets, resident", [("gpt3-7b", (), "all"),
                                                   ("mixtral-8x7b", ("system.tp=8",), "part")])
def test_second_sub_batch_reuses_the_weights_that_fit(model: str, sets, resident: str) -> None:
    """Stage D runs sub-batch 2's FC rows right after C streamed the same weights for sub-batch 1: the share
    min(1, SRAM / bytes) of them (bytes at the larger sub-batch's rows, MoE: the experts those rows touch) is
    still in SRAM (partial residency). gpt3-7b at tp 4 (100 MB per layer < 137 MB of SRAM) keeps it all,
    Mixtral at tp 8 (8 experts, 3 x 4096 x 1792 x 2 B each, plus attention: > 137 MB) part of it. D (and B, F)
    equal the oracle's stages with that share."""
    s, sched, lens, ch, r = _iteration("neupims", model, sets=sets)  # rule, DBO off: every stage as placed
    t = sched.tables
    names = [st.name for st in r.stages]
    b1, b2 = r.stages[names.index("A")].fc_rows, r.stages[names.index("B")].fc_rows
    assert b1 + b2 == s.batch
    share = min(1.0, t.sram_bytes / t.npu_stack[STACK_GROUPS.index("both"), 7, max(b1, b2)])
    assert (share == 1.0) if resident == "all" else (0.0 < share < 1.0)
    oracle.check_engine(sched, [lens], [ch])


# ---- metrics -----------------------------------------------------------------------------------------------------
SYSTEMS = [p.name for p in list_presets("system")]


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("batch", [48, 512])
def test_metrics_in_range(system: str, batch: int) -> None:
    model = "gpt3-13b" if system in ("attacc", "gpu-only") else "gpt3-7b"
    res = simulate(system, model, "sharegpt", batch=batch, samples=2)
    m = res.metrics
    for k in ("npu_utilization", "pim_utilization", "npu_compute_utilization", "pim_mac_utilization",
              "offload_attention_share", "offload_fc_share"):
        assert 0.0 <= m[k] <= 1.0 + 1e-12, (k, m[k])
    assert m["iteration_time_s"] > 0
    its = res.iterations
    assert m["throughput_tokens_per_s"] == pytest.approx(sum(i.tokens for i in its) / sum(i.time_s for i in its))
    assert m["npu_idle_s"] >= -1e-15 and m["pim_idle_s"] >= -1e-15
    if not res.setup.system.uses_pim:
        assert m["pim_utilization"] == 0.0 and m["pim_mac_utilization"] == 0.0
    if not res.setup.system.dbo.enabled:
        assert m["offload_attention_share"] == 0.0 and m["offload_fc_share"] == 0.0
