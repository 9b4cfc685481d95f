"""schedule.breakdown.op_breakdown: per-op records that agree with the cost functions and the schedule."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.cost import BOUNDS, npu_cost, pim_cost, snake_channels
from librapim_cli.graph import decode_layer_ops, lm_head_op
from librapim_cli.schedule.breakdown import RECORD_KEYS, iteration_time_s, op_breakdown
from librapim_cli.schedule.iteration import run_iteration
from librapim_cli.simulate import make_schedule, setup, simulate, steady_state_batch

SYSTEMS_WITHOUT_DBO = ["npu-only", "gpu-only", "npu-pim-blocked", "neupims", "attacc"]


def _batch(s):
    lens = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    return lens, snake_channels(lens, s.system.hardware.memory.channels)


def test_records_follow_the_layer_ops_and_placement():
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=32)
    lens, ch = _batch(s)
    records = op_breakdown(s, lens, ch)
    assert all(list(r) == list(RECORD_KEYS) for r in records)
    ops = decode_layer_ops(s.model, s.tp, lens)
    assert [r["op"] for r in records] == [o.name for o in ops] + ["lm_head"]
    by = {r["op"]: r for r in records}
    layers = s.model.layers // s.pp
    # a layer op counts once per layer, costed on its home device
    hw = s.system.hardware
    qkv = next(o for o in ops if o.name == "qkv")
    assert by["qkv"]["time_s"] == pytest.approx(layers * npu_cost(qkv, hw).time_s)
    score = next(o for o in ops if o.name == "attn_score")
    assert by["attn_score"]["device"] == "pim"
    assert by["attn_score"]["time_s"] == pytest.approx(layers * pim_cost(score, hw, ch).time_s)
    assert by["lm_head"]["repeats"] == 1
    assert by["lm_head"]["flops"] == pytest.approx(lm_head_op(s.model, s.tp, 32.0).flops)
    assert all(r["bound"] in BOUNDS for r in records)
    assert by["allreduce_attn"]["device"] == "link"


@pytest.mark.parametrize("system", SYSTEMS_WITHOUT_DBO)
@pytest.mark.parametrize("pp", [1, 2])
def test_energy_adds_up_to_the_iteration(system, pp):
    """Without DBO nothing moves, so the ops' energies are the iteration's energy (all devices); with
    sub-batch interleaving active the schedule may stream FC weights once per sub-batch, so at most that."""
    s = setup(system, "gpt3-7b", "sharegpt", batch=24, sets=[f"system.pp={pp}"])
    lens, ch = _batch(s)
    records = op_breakdown(s, lens, ch)
    it = run_iteration(make_schedule(s, lens.size, int(lens.max())), lens, ch, np.random.default_rng(0))
    total = sum(r["energy_j"] for r in records)
    interleaved = s.system.sub_batch_interleaving and -(-24 // pp) >= s.system.sub_batch_min_batch
    if interleaved:
        assert total <= it.energy_j * (1 + 1e-9)
        flat = setup(system, "gpt3-7b", "sharegpt", batch=24,
                     sets=[f"system.pp={pp}", "system.sub_batch_interleaving=false"])
        it_flat = run_iteration(make_schedule(flat, lens.size, int(lens.max())), lens, ch, np.random.default_rng(0))
        assert sum(r["energy_j"] for r in op_breakdown(flat, lens, ch)) == pytest.approx(it_flat.energy_j, rel=1e-9)
    else:
        assert total == pytest.approx(it.energy_j, rel=1e-9)
    assert ("pipeline_send" in {r["op"] for r in records}) == (pp > 1)


def test_share_is_of_the_simulated_iteration():
    """The denominator is the iteration simulate() runs first for the same steady-state batch."""
    for system in ("librapim", "neupims"):
        s = setup(system, "gpt3-7b", "sharegpt", batch=16)
        lens, ch = _batch(s)
        t = iteration_time_s(s, lens, ch)
        first = simulate(system, "gpt3-7b", "sharegpt", batch=16, mode="iteration", samples=1).iterations[0]
        assert t == pytest.approx(first.time_s, rel=1e-12)
        for r in op_breakdown(s, lens, ch):
            assert r["share"] == pytest.approx(r["time_s"] / t)


def test_attention_on_the_npu_without_pim_placement():
    s = setup("npu-only", "gpt3-7b", "sharegpt", batch=8)
    lens, ch = _batch(s)
    by = {r["op"]: r for r in op_breakdown(s, lens, ch)}
    assert by["attn_score"]["device"] == by["attn_context"]["device"] == "npu"
    assert by["attn_score"]["bound"] == "memory"  # a GEMV streaming the K cache


def test_rejects_mismatched_inputs():
    s = setup("librapim", batch=4)
    with pytest.raises(ValueError):
        op_breakdown(s, np.array([10, 20]), np.array([0]))
