"""Issue 11's invariants, as Hypothesis properties over random models, hardware, batches and workloads.

One decode iteration of a steady-state batch (iteration mode), with an exact predictor (dbo.prediction_error
= 0), on the NeuPIMs-class device every compared system shares (overridden the same way for all of them):

1. containment: ``librapim`` (DEX + partial batch offload + DBO + runtime scheduler) is at least as fast as
   each system it contains: ``npu-pim-blocked``, ``neupims``, ``librapim-dex-only``, ``librapim-dbo-only``
   (relative 1e-9). Why each is a true containment:
   - every system here runs the same stage tables (same model, hardware, link, tp, pp); with nothing moved DEX's
     channel time max(attn + kv, weights, attn + fc, npu + kv + io) equals the dual row buffer's and is at most
     blocked's and time_interleaved's sum (data-bus time <= PIM time);
   - the runtime scheduler keeps the fastest of flat / count / context (the predictor is exact), which include
     the candidate any rule picks; DBO keeps a stage's decision only if no slower than moving nothing;
   - ``librapim-dbo-only`` (time_interleaved + DBO): any of its decisions, minus the requests DEX's filter
     leaves in place (those whose KV reads cost the channel at least the PIM time they free, last in every
     channel's order, so the rest is still a prefix), is a decision of librapim's and no slower under DEX
     (each DEX term is bounded by time_interleaved's sum, as above).
2. DBO on >= DBO off, for each of the five systems (same scheduler: DBO only adds decisions at least as good
   as moving nothing, the runtime scheduler takes the minimum over candidates of those).
3. more PIM MAC lanes, more input registers (with a global buffer that holds them) or more PIM internal
   bandwidth (a shorter MAC interval) never slow any of the five systems.

Tables are built once per example for ``librapim`` (which has every table: riding PIM FC rows, column tiles)
and the other systems' are derived by swapping the concurrency mode, its movable-request filter and the
tables they do not use (``derive``; ``test_derived_tables_equal_built_tables`` checks that this equals
building them). Counterexamples found are kept as strict xfails at the end.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli import concurrency
from librapim_cli.cost.tables import ColumnTiles, build_tables
from librapim_cli.inputs import setup
from librapim_cli.schedule.context import Schedule, build_schedule
from librapim_cli.schedule.engine import run_iteration
from librapim_cli.workload import place_channels, steady_state_batch

CONTAINED = ("npu-pim-blocked", "neupims", "librapim-dex-only", "librapim-dbo-only")
SYSTEMS = ("librapim",) + CONTAINED
REL = 1e-9
WORKLOADS = ("sharegpt", "alpaca", "fixed-128-128", "fixed-2048-128")
#: (preset, d_model, heads, ffn_dim) with heads * 128 = d_model and heads a multiple of the preset's tp
MODELS = {"gpt3-7b": (4096, 32, 16384), "gpt3-13b": (5120, 40, 20480), "llama2-7b": (4096, 32, 11008),
          "mixtral-8x7b": (4096, 32, 14336), "gpt3-30b": (7168, 56, 28672), "llama2-70b": (8192, 64, 28672)}


@st.composite
def models(draw):
    """A model preset with its layers (1..4 per pipeline stage), width (x1 or x1/2), KV heads (as the preset, one
    query group per tensor-parallel shard, or MQA) and FFN width (x1 or x1/2) drawn."""
    name = draw(st.sampled_from(sorted(MODELS)))
    d, heads, ffn = MODELS[name]
    tp = 8 if name == "llama2-70b" else 4
    pp = 2 if name == "gpt3-30b" else 1
    if draw(st.booleans()) and (heads // 2) % tp == 0:
        d, heads = d // 2, heads // 2
    kv = draw(st.sampled_from(["preset", "shard", "mqa"]))
    kv_heads = {"preset": None, "shard": tp, "mqa": 1}[kv]
    sets = [f"model.layers={pp * draw(st.integers(1, 4))}", f"model.d_model={d}", f"model.heads={heads}",
            f"model.ffn_dim={ffn // draw(st.sampled_from([1, 2]))}"]
    if kv_heads is not None:
        sets.append(f"model.kv_heads={kv_heads}")
    elif name in ("llama2-70b", "mixtral-8x7b"):  # GQA presets: keep 8 KV heads, a divisor of the heads
        sets.append("model.kv_heads=8")
    else:
        sets.append(f"model.kv_heads={heads}")
    return name, sets


HARDWARE = st.fixed_dictionaries({
    "npu.systolic_arrays": st.sampled_from([1, 2, 8]),
    "pim.mac_lanes_per_unit": st.sampled_from([4, 8, 16]),
    "pim.input_registers": st.sampled_from([1, 2, 4]),
    "pim.global_buffer_bytes": st.sampled_from([1024, 4096]),
    "pim.mac_interval_ns": st.sampled_from([1.0, 2.0, 4.0]),
})


def hw_sets(hw: dict) -> list[str]:
    # the power-limited interval follows the drawn one; the PIM clock (4 GHz) never binds the MAC interval
    return [f"hardware.{k}={v}" for k, v in hw.items()] + [
        f"hardware.pim.mac_interval_power_limited_ns={hw['pim.mac_interval_ns']}", "hardware.pim.clock_hz=4e9"]


def derive(base: Schedule, system) -> Schedule:
    """``base`` (librapim's schedule) with another system's concurrency mode, its movable-request filter, and
    without the tables that system does not use."""
    t = base.tables
    mode = concurrency.get(system.concurrency.mode)
    movable = np.asarray(mode.attention_move_can_help(t.mode_params, t.attn.pim_s, t.attn.kv_bytes), dtype=bool)
    cols = t.cols_stack if (system.dbo.enabled and (system.dbo.lm_head or system.dbo.fc_columns)) else None
    ride = t.pim_fc_ride_stack if system.concurrency.partial_batch_offload else None
    tables = replace(t, mode=mode, movable_by_len=movable, cols_stack=cols, pim_fc_ride_stack=ride)
    return replace(base, tables=tables, system=system, layouts={})


def with_dbo(system, enabled: bool):
    return system.model_copy(update={"dbo": system.dbo.model_copy(update={"enabled": enabled})})


def iteration_times(model, model_sets, hw, workload, batch, seed, policy) -> dict:
    """Iteration time of every system (and of each with DBO flipped) on one steady-state batch."""
    sets = model_sets + hw_sets(hw)
    setups = {name: setup(name, model, workload, batch=batch, sets=sets) for name in SYSTEMS}
    s = setups["librapim"]
    lens = steady_state_batch(s, np.random.default_rng(seed))
    base = build_schedule(s.model, s.system, s.tp, s.pp, batch, int(lens.max()))
    ch = place_channels(lens, base.tables.channels, policy)
    out = {}
    for name, su in setups.items():
        assert (su.tp, su.pp) == (s.tp, s.pp) and su.system.link == s.system.link
        assert su.system.hardware == s.system.hardware
        for dbo in (True, False):
            out[name, dbo] = float(run_iteration(derive(base, with_dbo(su.system, dbo)), lens, ch).time_s[0])
    return out


def check_containment_and_dbo(times: dict) -> None:
    lib = times["librapim", True]
    for name in CONTAINED:  # as their presets run: only librapim-dbo-only has DBO on
        preset_dbo = name == "librapim-dbo-only"
        assert lib <= times[name, preset_dbo] * (1 + REL), (name, lib, times[name, preset_dbo])
    for name in SYSTEMS:
        assert times[name, True] <= times[name, False] * (1 + REL), (name, "DBO on", times[name, True],
                                                                      "off", times[name, False])


EXAMPLES = dict(deadline=None, derandomize=True, database=None)


@settings(max_examples=1400, **EXAMPLES)
@given(model=models(), hw=HARDWARE, workload=st.sampled_from(WORKLOADS), batch=st.integers(1, 512),
       seed=st.integers(0, 2**16), policy=st.sampled_from(["least_loaded", "round_robin"]))
def test_librapim_contains_its_baselines_and_dbo_never_hurts(model, hw, workload, batch, seed, policy):
    name, sets = model
    check_containment_and_dbo(iteration_times(name, sets, hw, workload, batch, seed, policy))


IMPROVE = st.sampled_from(["pim.mac_lanes_per_unit", "pim.input_registers", "pim.mac_interval_ns"])


def improved(hw: dict, what: str) -> dict:
    out = dict(hw)
    if what == "pim.mac_lanes_per_unit":
        out[what] = hw[what] * 2
    elif what == "pim.input_registers":  # registers help only while the global buffer holds their rows
        out[what] = hw[what] * 2
        out["pim.global_buffer_bytes"] = max(hw["pim.global_buffer_bytes"], 1024 * out[what])
    else:
        out[what] = hw[what] / 2
    return out


@settings(max_examples=600, **EXAMPLES)
@given(model=models(), hw=HARDWARE, what=IMPROVE, workload=st.sampled_from(WORKLOADS), batch=st.integers(1, 512),
       seed=st.integers(0, 2**16))
def test_a_better_pim_never_slows_a_system(model, hw, what, workload, batch, seed):
    name, sets = model
    better = improved(hw, what)
    times = {}
    for label, h in (("base", hw), ("better", better)):
        sets_ = sets + hw_sets(h)
        setups = {n: setup(n, name, workload, batch=batch, sets=sets_) for n in SYSTEMS}
        s = setups["librapim"]
        lens = steady_state_batch(s, np.random.default_rng(seed))
        base = build_schedule(s.model, s.system, s.tp, s.pp, batch, int(lens.max()))
        ch = place_channels(lens, base.tables.channels, "least_loaded")
        for n, su in setups.items():
            times[label, n] = float(run_iteration(derive(base, su.system), lens, ch).time_s[0])
    for n in SYSTEMS:
        assert times["better", n] <= times["base", n] * (1 + REL), (n, what, times["base", n], times["better", n])


# ---- the derivation of the other systems' tables ----------------------------------------------------------------------
@pytest.mark.parametrize("hw", [{}, {"npu.systolic_arrays": 8, "pim.mac_lanes_per_unit": 4, "pim.input_registers": 4,
                                     "pim.global_buffer_bytes": 4096, "pim.mac_interval_ns": 1.0}])
@pytest.mark.parametrize("dbo", [True, False])
def test_derived_tables_equal_built_tables(hw, dbo):
    """derive() gives, for every compared system, exactly the tables build_tables builds for it."""
    sets = ["model.layers=2", "model.kv_heads=8"] + [f"hardware.{k}={v}" for k, v in hw.items()]
    s = setup("librapim", "mixtral-8x7b", "sharegpt", batch=64, sets=sets)
    base = build_schedule(s.model, s.system, s.tp, s.pp, 64, 600)
    for name in SYSTEMS:
        system = with_dbo(setup(name, "mixtral-8x7b", "sharegpt", batch=64, sets=sets).system, dbo)
        want = build_tables(s.model, system, s.tp, 64, 600)
        got = derive(base, system).tables
        for f in want.__dataclass_fields__:
            a, b = (np.asarray(v) if isinstance(v, ColumnTiles) else v for v in (getattr(got, f), getattr(want, f)))
            if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
                assert (a is None) == (b is None), (name, f)
                if b is not None:
                    nan = np.issubdtype(b.dtype, np.floating)
                    assert np.array_equal(a, b, equal_nan=nan), (name, f)
            elif f in ("npu", "pim_fc", "attn"):
                continue  # the stacked arrays above hold the same numbers
            elif f == "mode":
                assert type(a) is type(b), (name, f)
            else:
                assert a == b, (name, f)


# ---- counterexamples found (strict xfails with their reproducers) ------------------------------------------------------
@pytest.mark.xfail(strict=True, reason=(
    "more input registers slow librapim by 1.1e-4 (stage M: 5.3340e-5 s vs 5.3237e-5 s): DBO moves attention as "
    "per-channel PREFIXES of an order by PIM seconds per KV byte, and that order depends on the hardware; with 4 "
    "registers the 122 requests moved with 2 registers (still 5.3237e-5 s) are no longer a prefix, so DBO (exact "
    "over prefixes, as the oracle confirms) ends 0.19% above a decision it had. The prefix restriction, not an "
    "engine bug, breaks monotonicity (and issue 11's 'within 0.1% of the optimum' over any set of requests)"))
def test_more_input_registers_never_slow_librapim_counterexample():
    sets = ["model.layers=1", "model.d_model=2560", "model.heads=20", "model.ffn_dim=20480", "model.kv_heads=4"]
    hw = {"npu.systolic_arrays": 1, "pim.mac_lanes_per_unit": 4, "pim.input_registers": 2,
          "pim.global_buffer_bytes": 4096, "pim.mac_interval_ns": 4.0}
    times = []
    for h in (hw, improved(hw, "pim.input_registers")):
        s = setup("librapim", "gpt3-13b", "fixed-128-128", batch=218, sets=sets + hw_sets(h))
        lens = steady_state_batch(s, np.random.default_rng(0))
        sched = build_schedule(s.model, s.system, s.tp, s.pp, 218, int(lens.max()))
        times.append(float(run_iteration(sched, lens, place_channels(lens, 32, "least_loaded")).time_s[0]))
    assert times[1] <= times[0] * (1 + REL), times  # 8.92449e-4 s with 2 registers, 8.92551e-4 s with 4
