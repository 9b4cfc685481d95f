"""schedule.breakdown: per-op records of the iteration the simulation ran, agreeing with the cost functions,
the stage plan (micro-batches, sub-batches, SRAM reuse, KV channel policy) and the simulated time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from librapim_cli.cost import BOUNDS, npu_cost, pim_cost
from librapim_cli.graph import attention_ops, fc_ops, lm_head_op
from librapim_cli.graph.ops import Gemm
from librapim_cli.schedule import plan
from librapim_cli.schedule.breakdown import RECORD_KEYS
from librapim_cli.simulate import simulate
from librapim_cli.workload import place_channels, steady_state_batch

SYSTEMS_WITHOUT_DBO = ["npu-only", "gpu-only", "npu-pim-blocked", "neupims", "attacc"]


def _run(system, model="gpt3-7b", batch=32, sets=()):
    r = simulate(system, model, "sharegpt", batch=batch, sets=list(sets), samples=1, breakdown=True,
                 keep_stages=True)
    s = r.setup
    lens = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    ch = place_channels(lens, s.system.hardware.memory.channels, s.system.placement.kv_channel_policy)
    return r, lens, ch


def test_records_follow_the_layer_ops_and_placement():
    r, lens, ch = _run("librapim", batch=32)
    s = r.setup
    rows = r.breakdown
    assert all(list(x) == list(RECORD_KEYS) for x in rows)
    by = {x["op"]: x for x in rows}
    layers = s.model.layers // s.pp
    hw = s.system.hardware
    # batch 32 runs without interleaving (Q, M, R per layer): every layer op once per layer over the batch
    qkv = next(o for o in fc_ops(s.model, s.tp, 32.0) if o.name == "qkv")
    assert by["qkv"]["repeats"] == layers
    assert by["qkv"]["time_s"] == pytest.approx(layers * npu_cost(qkv, hw).time_s)
    score = attention_ops(s.model, s.tp, lens)[0]
    assert by["attn_score"]["device"] == "pim"
    assert by["attn_score"]["time_s"] == pytest.approx(layers * pim_cost(score, hw, ch).time_s)
    assert by["lm_head"]["repeats"] == 1
    assert by["lm_head"]["flops"] == pytest.approx(lm_head_op(s.model, s.tp, 32.0).flops)
    assert all(x["bound"] in BOUNDS for x in rows)
    assert by["allreduce_attn"]["device"] == "link"


def test_sub_batches_and_sram_reuse_follow_the_plan():
    """With interleaving, FC ops run once per sub-batch; the second finds the share of its group's weights that
    fits the SRAM still there (partial residency) and streams only the rest."""
    r, lens, ch = _run("neupims", batch=256)
    s = r.setup
    hw = s.system.hardware
    qkv = {o.stage: o for o in r.ops if o.op == "qkv"}
    assert set(qkv) == set("ABCD")

    def weight_bytes(phases):
        return sum(float(op.weight_bytes) for op in fc_ops(s.model, s.tp, 128.0)
                   if isinstance(op, Gemm) and op.phase in phases)

    # B reuses the QKV weights A streamed; D reuses the projection/FFN and next QKV weights C streamed
    for stage, phases in (("B", ("qkv",)), ("D", ("qkv", "rest"))):
        share = min(1.0, hw.npu.sram_bytes / weight_bytes(phases))
        assert qkv[stage].sub_batch == 1 and qkv[stage].weights_in_sram == pytest.approx(share)
        op = next(o for o in fc_ops(s.model, s.tp, float(qkv[stage].rows)) if o.name == "qkv")
        assert qkv[stage].bytes == pytest.approx(float(op.weight_bytes) * (1 - share))
    assert qkv["A"].weights_in_sram == qkv["C"].weights_in_sram == 0.0
    # attention of sub-batch #1 (NeuPIMs' split: the first half of every channel's queue) on its own channels
    sub = plan._split_count(ch, 1, hw.memory.channels)[0]
    mha1 = next(o for o in r.ops if o.op == "attn_score" and o.stage == "B")
    score = attention_ops(s.model, s.tp, lens[sub == 0])[0]
    assert mha1.time_s == pytest.approx(float(pim_cost(score, hw, ch[sub == 0]).time_s))


@pytest.mark.parametrize("system", SYSTEMS_WITHOUT_DBO)
@pytest.mark.parametrize("pp,batch", [(1, 24), (2, 24), (1, 300)])
def test_energy_adds_up_to_the_iteration(system, pp, batch):
    """Without DBO nothing moves, so the ops' energies are the iteration's energy (all devices), sub-batch
    interleaving and SRAM reuse included."""
    r, _, _ = _run(system, batch=batch, sets=[f"system.pp={pp}"])
    total = sum(x["energy_j"] for x in r.breakdown)
    assert total == pytest.approx(r.iterations[0].energy_j, rel=1e-9)
    assert ("pipeline_send" in {x["op"] for x in r.breakdown}) == (pp > 1)


def test_share_is_of_the_simulated_iteration():
    for system in ("librapim", "neupims"):
        r, _, _ = _run(system, batch=16)
        t = r.iterations[0].time_s
        assert r.breakdown_iteration_s == pytest.approx(t, rel=1e-12)
        for x in r.breakdown:
            assert x["share"] == pytest.approx(x["time_s"] / t)


def test_kv_channel_policy_reaches_the_breakdown():
    """The breakdown costs attention on the channels the simulation placed it in (round robin here)."""
    sets = ['system.placement.kv_channel_policy="round_robin"']
    r, lens, ch = _run("librapim", batch=64, sets=sets)
    assert (ch == np.arange(64) % 32).all()
    s = r.setup
    score = attention_ops(s.model, s.tp, lens)[0]
    by = {x["op"]: x for x in r.breakdown}
    layers = s.model.layers
    assert by["attn_score"]["time_s"] == pytest.approx(layers * pim_cost(score, s.system.hardware, ch).time_s)
    assert r.breakdown_iteration_s == pytest.approx(r.iterations[0].time_s, rel=1e-12)


def test_breakdown_follows_the_micro_batches_the_schedule_runs():
    """gpt3-30b, tp 4, pp 2, batch 511: micro-batches of 256 and 255; the smaller is below the interleaving
    gate, so nobody interleaves: every op runs over a whole micro-batch."""
    r, _, _ = _run("neupims", "gpt3-30b", batch=511)
    assert r.setup.pp == 2
    assert {o.stage for o in r.ops} == {"Q", "M", "R", "H"}
    assert {o.rows for o in r.ops if o.op == "qkv"} == {256, 255}


def test_attention_on_the_npu_without_pim_placement():
    r, _, _ = _run("npu-only", batch=8)
    by = {x["op"]: x for x in r.breakdown}
    assert by["attn_score"]["device"] == by["attn_context"]["device"] == "npu"
    assert by["attn_score"]["bound"] == "memory"  # a GEMV streaming the K cache


def test_op_records_are_one_execution_on_one_device():
    r, _, _ = _run("librapim", batch=64)
    rec = next(o for o in r.ops if o.op == "ffn_up")
    op = next(o for o in fc_ops(r.setup.model, r.setup.tp, float(rec.rows)) if o.name == "ffn_up")
    c = npu_cost(dataclasses.replace(op, sram_fraction=rec.weights_in_sram), r.setup.system.hardware)
    assert rec.time_s == pytest.approx(float(c.time_s)) and rec.flops == pytest.approx(float(c.flops))
