"""Hypothesis property tests of the cost-model invariants over random shapes and random hardware specs.

The same invariants as tests/cost/test_invariants.py (roofline lower bound, monotone in problem size, monotone
in resources, finite and non-negative), but over random m, k, n, L, heads and random specs: MAC lanes, input
registers, PIM and NPU clocks, MAC interval, pin rate and all DRAM timings scaled together.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli.cost import attention_requests, fc_on_pim, link_cost, npu_cost, pim_cost
from librapim_cli.cost.npu import gemm_occupancy
from librapim_cli.graph.ops import AllReduce, Attention, Gemm
from librapim_cli.spec import list_presets, load_hardware, load_system

ALL_HW = {p.name: load_hardware(p.name) for p in list_presets("hardware")}
PIM_NAMES = sorted(n for n, h in ALL_HW.items() if h.pim is not None)
LINK = load_system("librapim").link
TIMINGS = ("CL_ns", "tRCD_ns", "tRP_ns", "tRAS_ns", "tRC_ns", "tCCD_S_ns", "tCCD_L_ns", "tRRD_S_ns", "tRRD_L_ns",
           "tFAW_ns", "tRTP_ns", "tWR_ns", "tRFC_ns", "tREFI_ns")
RTOL = 1e-9
SETTINGS = settings(max_examples=60, deadline=None)

factor = st.floats(min_value=0.25, max_value=4.0, allow_nan=False, allow_infinity=False)


def scale_timings(hw, s: float):
    return hw.model_copy(update={"memory": hw.memory.model_copy(update={k: getattr(hw.memory, k) * s
                                                                        for k in TIMINGS})})


@st.composite
def pim_hardware(draw):
    """A PIM preset with its PIM, NPU and DRAM knobs redrawn."""
    hw = ALL_HW[draw(st.sampled_from(PIM_NAMES))]
    pim = hw.pim.model_copy(update={
        "mac_lanes_per_unit": draw(st.integers(1, 64)),
        "input_registers": draw(st.integers(1, 16)),
        "clock_hz": hw.pim.clock_hz * draw(factor),
        "mac_interval_ns": hw.pim.mac_interval_ns * draw(factor),
        "mac_interval_power_limited_ns": hw.pim.mac_interval_power_limited_ns * draw(factor),
        "activate_groups_per_rank": draw(st.sampled_from((1, 2, 4))),
        "activate_tfaw_paced": draw(st.booleans()),
        "allbank_pseudo_channels": draw(st.sampled_from([d for d in range(1, hw.memory.pseudo_channels + 1)
                                                         if hw.memory.pseudo_channels % d == 0])),
        "context_layout": draw(st.sampled_from(("dim", "token"))),
        "io_overlaps_mac": draw(st.booleans()),
    })
    npu = hw.npu.model_copy(update={"clock_hz": hw.npu.clock_hz * draw(factor)})
    mem = hw.memory.model_copy(update={"pin_rate_bps": hw.memory.pin_rate_bps * draw(factor)})
    hw = hw.model_copy(update={"pim": pim, "npu": npu, "memory": mem})
    return scale_timings(hw, draw(st.floats(0.5, 2.0)))


any_hardware = st.one_of(pim_hardware(), st.sampled_from(sorted(n for n, h in ALL_HW.items() if h.pim is None))
                         .map(lambda n: ALL_HW[n]))
dims = st.integers(1, 16384)
rows = st.integers(0, 4096)
lens = st.integers(0, 8192)
heads = st.tuples(st.sampled_from((1, 2, 4, 8, 16, 32)), st.sampled_from((1, 2, 4, 8)))  # (kv heads, group)


def _npu_lb(hw, flops, nbytes, mem=None):
    """``mem``: the memory the bytes come from (default the one holding the weights)."""
    mem = mem or hw.npu_memory
    return max(flops / (hw.npu.peak_flops * hw.npu.compute_efficiency),
               nbytes / (mem.bw_bytes_per_s * hw.npu.bandwidth_efficiency))


def _pim_lb(hw, flops, nbytes, share=1.0):
    return max(flops / (hw.pim_peak_flops * share), nbytes / (hw.pim_internal_bw_bytes_per_s * share))


def _finite_nonneg(*xs):
    for x in xs:
        a = np.asarray(x, dtype=float)
        assert np.all(np.isfinite(a)) and np.all(a >= 0), x


# ---- NPU ------------------------------------------------------------------------------------------------------
@SETTINGS
@given(hw=any_hardware, m=rows, dm=rows, k=dims, n=dims, dk=st.integers(0, 4096), dn=st.integers(0, 4096))
def test_npu_gemm(hw, m, dm, k, n, dk, dn) -> None:
    op = Gemm("g", "qkv", float(m), k, n, 2)
    c = npu_cost(op, hw)
    _finite_nonneg(c.time_s, c.compute_s, c.memory_s, c.flops, c.bytes, c.energy_j)
    assert c.time_s >= _npu_lb(hw, float(op.flops), float(op.bytes)) * (1 - RTOL)
    bigger = npu_cost(Gemm("g", "qkv", float(m + dm), k + dk, n + dn, 2), hw)
    # with an occupancy model a bigger GEMM may fill the SMs better: its time at full occupancy never falls
    occ = float(gemm_occupancy(hw, float(m), k, n))
    occ2 = float(gemm_occupancy(hw, float(m + dm), k + dk, n + dn))
    assert bigger.time_s * occ2 >= c.time_s * occ * (1 - RTOL)


@SETTINGS
@given(hw=any_hardware, m=rows, k=dims, n=dims, f=st.floats(1.0, 4.0), g=st.floats(1.0, 4.0))
def test_npu_gemm_faster_clock_and_pins(hw, m, k, n, f, g) -> None:
    op = Gemm("g", "qkv", float(m), k, n, 2)
    base = npu_cost(op, hw).time_s
    fast = hw.model_copy(update={"npu": hw.npu.model_copy(update={"clock_hz": hw.npu.clock_hz * f}),
                                 "memory": hw.memory.model_copy(update={"pin_rate_bps": hw.memory.pin_rate_bps * g})})
    assert npu_cost(op, fast).time_s <= base * (1 + RTOL)


@SETTINGS
@given(hw=any_hardware, L=st.lists(lens, min_size=1, max_size=20), h=heads, grow=st.integers(0, 4096))
def test_npu_attention(hw, L, h, grow) -> None:
    kv, group = h
    arr = np.array(L, dtype=np.int64)
    op = Attention("a", "score", arr, kv * group, kv, 128, 2)
    c = npu_cost(op, hw)
    _finite_nonneg(c.time_s, c.compute_s, c.memory_s, c.energy_j)
    assert c.time_s >= _npu_lb(hw, op.flops, op.kv_bytes, hw.memory) * (1 - RTOL)
    arr2 = arr.copy()
    arr2[0] += grow
    assert npu_cost(Attention("a", "score", arr2, kv * group, kv, 128, 2), hw).time_s >= c.time_s * (1 - RTOL)


@SETTINGS
@given(payload=st.floats(0, 1e9), extra=st.floats(0, 1e9), n=st.integers(1, 64))
def test_link(payload, extra, n) -> None:
    hw = ALL_HW["neupims-npu-hbm2pim"]
    c = link_cost(AllReduce("ar", "rest", payload, n), LINK, hw)
    _finite_nonneg(c.time_s, c.bytes, c.energy_j)
    assert c.time_s >= 2 * (n - 1) / n * payload / LINK.bw_bytes_per_s * (1 - RTOL)
    assert link_cost(AllReduce("ar", "rest", payload + extra, n), LINK, hw).time_s >= c.time_s * (1 - RTOL)
    assert link_cost(AllReduce("ar", "rest", payload, n + 1), LINK, hw).time_s >= c.time_s * (1 - RTOL)


# ---- PIM ------------------------------------------------------------------------------------------------------
@SETTINGS
@given(hw=pim_hardware(), y=st.integers(0, 64), dy=st.integers(0, 64), k=dims, n=dims,
       dk=st.integers(0, 4096), dn=st.integers(0, 4096))
def test_fc_on_pim(hw, y, dy, k, n, dk, dn) -> None:
    f = fc_on_pim(hw, y, k, n, 2)
    _finite_nonneg(f.time_s, f.bank_s, f.io_s, f.mac_cmds, f.flops, f.internal_bytes, f.io_bytes, f.energy_j)
    wbytes = k * n * 2.0 if y > 0 else 0.0
    assert float(f.time_s) >= _pim_lb(hw, 2.0 * y * k * n, max(wbytes, float(f.internal_bytes))) * (1 - RTOL)
    bigger = fc_on_pim(hw, y + dy, k + dk, n + dn, 2)
    assert float(bigger.time_s) >= float(f.time_s) * (1 - RTOL)
    c = pim_cost(Gemm("g", "qkv", float(y), k, n, 2), hw)
    assert c.time_s == float(f.time_s)


@SETTINGS
@given(hw=pim_hardware(), L=lens, dL=st.integers(0, 4096), h=heads)
def test_attention_requests(hw, L, dL, h) -> None:
    kv, group = h
    q = kv * group
    r = attention_requests(hw, np.array([L, L + dL]), q, kv, 128, 2)
    _finite_nonneg(r.time_s, r.bank_s, r.io_s, r.mac_cmds, r.flops, r.kv_bytes, r.io_bytes, r.energy_j)
    share = 1.0 / hw.pim_channels  # one request runs in the one PIM channel holding its KV
    assert r.time_s[0] >= _pim_lb(hw, 4.0 * q * 128 * L, 2.0 * kv * 128 * 2 * L, share) * (1 - RTOL)
    assert r.time_s[1] >= r.time_s[0] * (1 - RTOL)
    # doubling the heads at a fixed group size is more work
    r2 = attention_requests(hw, np.array([L]), 2 * q, 2 * kv, 128, 2)
    assert r2.time_s[0] >= r.time_s[0] * (1 - RTOL)
    # more query heads over the same KV heads is more work
    r3 = attention_requests(hw, np.array([L]), 2 * q, kv, 128, 2)
    assert r3.time_s[0] >= r.time_s[0] * (1 - RTOL)


@SETTINGS
@given(hw=pim_hardware(), L=st.lists(st.integers(1, 8192), min_size=1, max_size=80), i=st.integers(0, 79),
       grow=st.integers(0, 4096), h=heads)
def test_pim_attention_cost(hw, L, i, grow, h) -> None:
    kv, group = h
    arr = np.array(L, dtype=np.int64)
    op = Attention("a", "score", arr, kv * group, kv, 128, 2)
    c = pim_cost(op, hw)
    _finite_nonneg(c.time_s, c.memory_s, c.bank_s, c.flops, c.bytes, c.energy_j)
    assert c.time_s >= _pim_lb(hw, op.flops, op.kv_bytes) * (1 - RTOL)
    # a longer context for any one request never makes the slowest channel faster
    arr2 = arr.copy()
    arr2[i % arr.shape[0]] += grow
    assert pim_cost(Attention("a", "score", arr2, kv * group, kv, 128, 2), hw).time_s >= c.time_s * (1 - RTOL)


@SETTINGS
@given(hw=pim_hardware(), L=st.integers(1, 8192), h=heads, y=st.integers(1, 64),
       lanes=st.integers(1, 64), f_clk=st.floats(1.0, 4.0), f_mac=st.floats(1.0, 4.0), f_pin=st.floats(1.0, 4.0),
       s_t=st.floats(1.0, 2.0))
def test_pim_resources(hw, L, h, y, lanes, f_clk, f_mac, f_pin, s_t) -> None:
    """More lanes, a faster PIM clock, a shorter MAC interval or faster pins never slow PIM work down; slower
    DRAM timings never speed it up."""
    kv, group = h

    def times(hw_):
        r = attention_requests(hw_, np.array([L]), kv * group, kv, 128, 2)
        return float(r.time_s[0]), float(fc_on_pim(hw_, y, 4096, 3072, 2).time_s)

    base = times(hw)
    p = hw.pim
    more_lanes = hw.model_copy(update={"pim": p.model_copy(update={"mac_lanes_per_unit": max(p.mac_lanes_per_unit,
                                                                                             lanes)})})
    faster = hw.model_copy(update={"pim": p.model_copy(update={
        "clock_hz": p.clock_hz * f_clk, "mac_interval_ns": p.mac_interval_ns / f_mac,
        "mac_interval_power_limited_ns": p.mac_interval_power_limited_ns / f_mac})})
    pins = hw.model_copy(update={"memory": hw.memory.model_copy(update={"pin_rate_bps": hw.memory.pin_rate_bps * f_pin})})
    for variant in (more_lanes, faster, pins):
        for t_new, t_old in zip(times(variant), base, strict=True):
            assert t_new <= t_old * (1 + RTOL)
    for t_new, t_old in zip(times(scale_timings(hw, s_t)), base, strict=True):
        assert t_new >= t_old * (1 - RTOL)
