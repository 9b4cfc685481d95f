"""Prefill cost: the prefill ops costed by npu_cost / link_cost, split into pp micro-batches, memoized exactly."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.cost import link_cost, npu_cost
from librapim_cli.graph import AllReduce, lm_head_op, prefill_ops
from librapim_cli.serving.prefill import (
    PrefillCoster,
    micro_batch_cost,
    micro_batch_costs,
    micro_batch_key,
    prefill_cost,
)
from librapim_cli.simulate import setup


@pytest.fixture(scope="module")
def s175():
    return setup("neupims", "gpt3-175b", "sharegpt")  # tp 8, pp 4


def _by_hand(s, lens) -> float:
    """One micro-batch on one pipeline stage, summed op by op."""
    hw = s.system.hardware
    layer = sum(float((link_cost(o, s.system.link, hw) if isinstance(o, AllReduce) else npu_cost(o, hw)).time_s)
                for o in prefill_ops(s.model, s.tp, np.asarray(lens)))
    head = float(npu_cost(lm_head_op(s.model, s.tp, float(len(lens))), hw).time_s)
    hand_off = s.system.link.latency_s + sum(lens) * s.model.d_model * s.model.dtype_bytes / s.system.link.bw_bytes_per_s
    return (s.model.layers // s.pp) * layer + head + (hand_off if s.pp > 1 else 0.0)


def test_micro_batch_cost_by_hand(s175):
    c = micro_batch_cost(s175.model, s175.system, s175.tp, s175.pp, np.array([17, 300]))
    assert c.time_s == pytest.approx(_by_hand(s175, [17, 300]), rel=1e-12)
    assert c.npu_busy_s < c.time_s and c.flops > 0 and c.energy_j > 0


def test_step_splits_prompts_like_run_iteration(s175):
    lens = np.array([5, 40, 300, 7, 1000, 2])  # pp 4: micro-batches [5, 1000], [40, 2], [300], [7]
    expect = sum(_by_hand(s175, mb) for mb in ([5, 1000], [40, 2], [300], [7]))
    assert prefill_cost(s175.model, s175.system, s175.tp, s175.pp, lens).time_s == pytest.approx(expect, rel=1e-12)
    one = setup("neupims", "gpt3-7b", "sharegpt")  # pp 1: one micro-batch, no hand-off
    assert prefill_cost(one.model, one.system, one.tp, one.pp, lens).time_s == pytest.approx(_by_hand(one, lens))


def test_memo_is_exact(s175):
    coster = PrefillCoster(s175.model, s175.system, s175.tp, s175.pp)
    rng = np.random.default_rng(0)
    for _ in range(20):
        lens = rng.integers(1, 600, size=int(rng.integers(1, 9)))
        assert coster(lens) == prefill_cost(s175.model, s175.system, s175.tp, s175.pp, lens)
    assert coster(np.array([33])) == coster(np.array([33]))
    assert coster.distinct_micro_batches <= 20 * 4 + 1


@pytest.mark.parametrize("model", ["gpt3-175b", "mixtral-8x7b"])  # dense, and MoE (array-valued expert sets)
def test_vectorized_micro_batches_equal_one_at_a_time(model):
    s = setup("librapim", model, "sharegpt")
    rng = np.random.default_rng(2)
    mbs = [rng.integers(1, 2000, size=int(rng.integers(1, 6))) for _ in range(25)] + [np.array([7])]
    together = micro_batch_costs(s.model, s.system, s.tp, s.pp, mbs)
    assert together == [micro_batch_cost(s.model, s.system, s.tp, s.pp, mb) for mb in mbs]  # bit for bit


def test_warm_costs_single_prompts_exactly(s175):
    coster = PrefillCoster(s175.model, s175.system, s175.tp, s175.pp)
    coster.warm(np.array([1, 17, 17, 261, 2047]))
    assert coster.distinct_micro_batches == 4
    for p in (1, 17, 261, 2047):
        assert coster(np.array([p])) == prefill_cost(s175.model, s175.system, s175.tp, s175.pp, np.array([p]))
    assert coster.distinct_micro_batches == 4  # all hits


def test_cost_depends_on_count_tokens_and_causal_pairs_only(s175):
    # {1, 5, 6} and {2, 3, 7}: same count (3), tokens (12) and sum of P (P + 1) / 2 (1+15+21 = 3+6+28 = 37)
    a, b = np.array([1, 5, 6]), np.array([2, 3, 7])
    assert micro_batch_key(a) == micro_batch_key(b) == (3, 12, 37)
    m, sy, tp = s175.model, s175.system, s175.tp
    assert micro_batch_cost(m, sy, tp, s175.pp, a) == micro_batch_cost(m, sy, tp, s175.pp, b)


def test_empty_prefill_costs_nothing(s175):
    assert prefill_cost(s175.model, s175.system, s175.tp, s175.pp, np.zeros(0, dtype=np.int64)).time_s == 0.0


@pytest.mark.parametrize("system, model", [("librapim", "gpt3-175b"), ("neupims", "gpt3-7b"), ("attacc", "gpt3-175b")])
def test_token_table_gives_the_same_costs(system, model):
    """A missing micro-batch shape costed with its token-only ops from the per-token table equals costing every
    op (bit for bit), one key or several, within one token block or across blocks."""
    from librapim_cli.serving.prefill import costs_of_keys

    s = setup(system, model, "sharegpt")
    pc = PrefillCoster(s.model, s.system, s.tp, s.pp)
    rng = np.random.default_rng(3)
    keys = []
    for _ in range(40):
        ps = rng.integers(1, 3 * PrefillCoster.TOKEN_BLOCK, int(rng.integers(1, 6))).tolist()
        keys.append((len(ps), sum(ps), sum(p * (p + 1) // 2 for p in ps)))
    keys += [(1, PrefillCoster.TOKEN_BLOCK - 1, 1), (1, PrefillCoster.TOKEN_BLOCK, 1)]  # a block's edges
    plain = costs_of_keys(s.model, s.system, s.tp, s.pp, keys)
    assert [costs_of_keys(s.model, s.system, s.tp, s.pp, [k], pc._token_ops)[0] for k in keys] == plain
    assert costs_of_keys(s.model, s.system, s.tp, s.pp, keys[:6], pc._token_ops) == plain[:6]
    assert len(pc._blocks) >= 2
    heads: dict = {}
    for _ in range(2):  # as the coster calls it: the LM head's cost by prompt count costed once, then reused
        assert [costs_of_keys(s.model, s.system, s.tp, s.pp, [k], pc._token_ops, pc._qkv_ops, heads)[0]
                for k in keys] == plain
    assert sorted(heads) == sorted({float(k[0]) for k in keys})
