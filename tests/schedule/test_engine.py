"""The vectorized engine against the runtime-scheduler oracle (tests/oracle/runtime.py), and its own invariants.

- every system preset, several full-size models and hardware variants, full and partial batches (some below
  the interleaving gate, some below pp), contexts stretched so PIM-bound stages and both DBO directions occur:
  every figure equals the oracle's (relative 1e-9; tests/schedule/test_runtime_oracle.py covers small cases);
- Hypothesis over random batches and channel placements on a three-channel device;
- one iteration alone equals the same iteration inside a batch of many; the memoized layout changes nothing;
- a noisy predictor is deterministic, independent of batching, and never beats the exact one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli.errors import InputError
from librapim_cli.inputs import setup
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import FIELDS, prediction_noise, run_iteration, run_iterations
from librapim_cli.spec import list_presets
from librapim_cli.workload import place_channels, snake_channels, steady_state_batch
from oracle import runtime as oracle

SYSTEMS = [p.name for p in list_presets("system")]
CASES = [("gpt3-7b", ()), ("gpt3-175b", ()), ("gpt3-7b", ("hardware.npu.systolic_arrays=8",)),
         ("llama2-70b", ()), ("mixtral-8x7b", ("system.tp=8",)), ("gpt3-30b", ()),
         ("gpt3-7b", ('system.placement.attention="npu"',)),
         ("gpt3-13b", ('system.placement.attention="npu"', "hardware.npu.systolic_arrays=8"))]


def _compare(s, lens, chans):
    sched = schedule_for(s, max(len(x) for x in lens), int(max(x.max() for x in lens)))
    oracle.check_engine(sched, lens, chans)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("model,sets", CASES)
def test_engine_equals_the_runtime_oracle(system, model, sets):
    try:
        s = setup(system, model, "sharegpt", batch=256, sets=sets)
    except InputError:
        pytest.skip(f"{model} does not fit {system}")
    rng = np.random.default_rng(7)
    lens = [np.minimum(steady_state_batch(s, rng)[:n] * (1 + i % 3), 2047) for i, n in
            enumerate((256, 255, 130, 64, 3, 1))]
    C = s.system.hardware.pim_channels if s.system.hardware.pim is not None else s.system.hardware.memory.channels
    chans = [place_channels(x, C, "least_loaded" if i % 2 else "round_robin") for i, x in enumerate(lens)]
    _compare(s, lens, chans)


def test_both_dbo_directions_are_exercised():
    moved_fc = moved_attn = False
    for model, sets in CASES[:5]:
        s = setup("librapim", model, "sharegpt", batch=256, sets=sets)
        rng = np.random.default_rng(7)
        lens = [np.minimum(steady_state_batch(s, rng)[:n], 2047) for n in (256, 64, 3)]
        sched = schedule_for(s, 256, 2048)
        many = run_iterations(sched, lens, [snake_channels(x, sched.tables.channels) for x in lens])
        moved_fc |= bool(many.fc_flops_offloaded.sum() > 0)
        moved_attn |= bool(many.attn_offloaded_bytes.sum() > 0)
    assert moved_fc and moved_attn


SMALL = ["hardware.memory.stacks=1", "hardware.memory.channels_per_stack=3"]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(system=st.sampled_from(["librapim", "neupims", "librapim-dbo-only", "npu-pim-blocked"]),
       arrays=st.sampled_from([1, 8]), data=st.data())
def test_random_batches_on_a_three_channel_device(system, arrays, data):
    s = setup(system, "gpt3-7b", "sharegpt", batch=64,
              sets=SMALL + [f"hardware.npu.systolic_arrays={arrays}", "system.sub_batch_min_batch=4"])
    k = data.draw(st.integers(1, 4))
    lens, chans = [], []
    for _ in range(k):
        n = data.draw(st.integers(1, 64))
        lens.append(np.array(data.draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))))
        chans.append(np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))))
    _compare(s, lens, chans)


def test_one_iteration_equals_the_same_iteration_among_many():
    s = setup("librapim", "gpt3-30b", "sharegpt", batch=300)
    rng = np.random.default_rng(3)
    lens = [steady_state_batch(s, rng)[:n] for n in (300, 17, 256)]
    sched = schedule_for(s, 300, int(max(x.max() for x in lens)))
    chans = [snake_channels(x, sched.tables.channels) for x in lens]
    many = run_iterations(sched, lens, chans)
    for k in range(3):
        for _ in range(2):  # the second call hits the memoized layout
            one = run_iteration(sched, lens[k], chans[k])
            for f in FIELDS:
                assert getattr(one, f)[0] == pytest.approx(getattr(many, f)[k], rel=1e-12, abs=1e-18), f


def test_stage_records_add_up_to_the_iteration():
    s = setup("librapim", "gpt3-30b", "sharegpt", batch=511)
    lens = steady_state_batch(s, np.random.default_rng(1))
    sched = schedule_for(s, 511, int(lens.max()))
    r = run_iteration(sched, lens, snake_channels(lens, sched.tables.channels), keep_stages=True)
    st_ = r.stages
    assert r.time_s[0] == pytest.approx(float((st_.repeats * st_.time_s).sum()), rel=1e-12)
    assert r.npu_busy_s[0] == pytest.approx(float((st_.repeats * st_.npu_s).sum()), rel=1e-12)
    # stage = max(NPU, slowest channel, the moved FC work's chain); the chain is 0 when no FC work moved
    body = st_.name != "H"
    floor = np.maximum(st_.npu_s, st_.channel_max_s)
    assert (st_.time_s[body] >= floor[body] * (1 - 1e-12)).all()
    still = body & (st_.fc_rows_to_pim == 0) & (st_.fc_cols_to_pim == 0)
    assert still.any() and np.allclose(st_.time_s[still], floor[still], rtol=1e-12)
    assert (st_.channel_max_s >= st_.pim_max_s * (1 - 1e-12)).all()


@pytest.mark.parametrize("hardware", [(), ("hardware.npu.systolic_arrays=8",)])
def test_noisy_predictor_is_deterministic_and_never_helps(hardware):
    sets = list(hardware)
    exact = setup("librapim", "gpt3-7b", "sharegpt", batch=256, sets=sets)
    noisy = setup("librapim", "gpt3-7b", "sharegpt", batch=256, sets=sets + ["system.dbo.prediction_error=0.3"])
    rng = np.random.default_rng(5)
    lens = [np.minimum(steady_state_batch(exact, rng) * 3, 2047) for _ in range(4)]
    chans = [snake_channels(x, 32) for x in lens]
    a = run_iterations(schedule_for(exact, 256, 2048), lens, chans)
    sched = schedule_for(noisy, 256, 2048)
    b = run_iterations(sched, lens, chans)
    b2 = run_iterations(sched, lens[::-1], chans[::-1])  # batched differently: the same figures
    assert np.allclose(b.time_s, b2.time_s[::-1], rtol=1e-12)
    assert (b.time_s >= a.time_s * (1 - 1e-12)).all()
    f = prediction_noise(0, np.arange(1, 5000), np.arange(1, 5000) % 32, 0.3)
    assert f.min() >= 0.7 and f.max() <= 1.3 and abs(f.mean() - 1.0) < 0.02


def test_a_copied_schedule_never_reuses_the_memos_of_another_system():
    """The engine's per-schedule memos (stage layouts, FC curve stores, LM-head tables) serve only the tables and
    system they were built for: a Schedule copied with another system and concurrency mode, memos and all,
    gives what a fresh one gives (the configuration where sharing them once made DBO-on slower than DBO-off)."""
    from dataclasses import replace

    from librapim_cli import concurrency

    sets = ["model.layers=2", "hardware.npu.systolic_arrays=8", "hardware.pim.mac_lanes_per_unit=4",
            "hardware.pim.input_registers=1", "hardware.pim.global_buffer_bytes=1024", "hardware.pim.mac_interval_ns=1.0",
            "hardware.pim.mac_interval_power_limited_ns=1.0", "hardware.pim.clock_hz=4e9"]
    s = setup("librapim", "gpt3-13b", "sharegpt", batch=161, sets=sets)
    lens = steady_state_batch(s, np.random.default_rng(0))
    base = schedule_for(s, s.batch, int(lens.max()))
    ch = place_channels(lens, base.tables.channels, "round_robin")
    run_iteration(base, lens, ch)  # fills the memos
    other = setup("librapim-dbo-only", "gpt3-13b", "sharegpt", batch=161, sets=sets).system
    t = base.tables
    mode = concurrency.get(other.concurrency.mode)
    movable = np.asarray(mode.attention_move_can_help(t.mode_params, t.attn.pim_s, t.attn.kv_bytes), dtype=bool)
    tables = replace(t, mode=mode, movable_by_len=movable, pim_fc_ride_stack=None)
    shared = replace(base, tables=tables, system=other)  # the memo dicts come along
    fresh = replace(base, tables=tables, system=other, layouts={}, memo={})
    a, b = run_iteration(shared, lens, ch), run_iteration(fresh, lens, ch)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@pytest.mark.parametrize("memo", [40, 200, 8192])
def test_the_curve_store_growing_and_clearing_changes_nothing(monkeypatch, memo):
    """FC curves are computed into the store's rows as they are first needed; the store grows and, past
    CURVE_MEMO curves, starts afresh: every call gives what a schedule with empty memos gives, exactly."""
    from dataclasses import replace

    from librapim_cli.schedule import engine

    monkeypatch.setattr(engine, "CURVE_MEMO", memo)
    monkeypatch.setattr(engine, "MEMO_MAX_K", 0)  # no layout memo: every call asks the curve store
    resets = []
    reset = engine._CurveStore._reset
    monkeypatch.setattr(engine._CurveStore, "_reset", lambda self: resets.append(self) or reset(self))
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=256)
    rng = np.random.default_rng(7)
    full = steady_state_batch(s, rng)
    sched = replace(schedule_for(s, 256, 2048), layouts={}, memo={})
    grown = 0
    for call in range(6):  # iterations of many sizes: each call asks for new (group, rows) curves
        lens = [np.minimum(full[:n] + 40 * call, 2047) for n in rng.integers(1, 257, 12 + 8 * call)]
        chans = [snake_channels(x, sched.tables.channels) for x in lens]
        a = run_iterations(sched, lens, chans)
        b = run_iterations(replace(sched, layouts={}, memo={}), lens, chans)
        assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
        grown += sched.memo["curves", True].curves.shape[0] > 64
    cleared = sum(x is sched.memo["curves", True] for x in resets) - 1  # the first: when it was made
    assert grown and (cleared > 0) == (memo <= 200)  # it grew, and (past CURVE_MEMO) started afresh
