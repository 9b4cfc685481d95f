"""One conformance suite over every cost function x every hardware preset (valid combinations only).

Cost functions: npu_cost on Gemm / Attention / Vector, link_cost on AllReduce, pim_cost on Attention / Gemm,
fc_on_pim and attention_requests. For each (function, preset):

- every numeric output is finite and non-negative;
- the time is never below the roofline lower bound of the engine that runs it
  (NPU: max(FLOPs / peak, bytes / (bw x efficiency)); PIM: FLOPs / PIM peak and bytes read in the banks /
  internal peak bandwidth; link: bytes / link bandwidth);
- the time is non-decreasing in problem size (rows m, k, n, context length L, heads, payload), except where a
  GPU occupancy model (``npu.thread_blocks``) lets a bigger kernel fill the SMs better: there the time at full
  occupancy (time x occupancy) is;
- the time is non-increasing in every resource knob (NPU clock, pin rate, PIM MAC lanes, PIM clock,
  MAC interval) -- knobs a function does not use must leave it unchanged, which is also "non-increasing";
- ``Cost.bound`` names the dominating term.

Plus the internal-bandwidth cross-check: a long PIM GEMV sustains more than the external bandwidth and less
than the spec's internal peak, on every PIM preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from librapim_cli.cost import (
    BOUNDS,
    Cost,
    attention_requests,
    fc_on_pim,
    link_cost,
    npu_cost,
    pim_cost,
)
from librapim_cli.cost.npu import gemm_occupancy, occupancy
from librapim_cli.cost.tables import build_tables
from librapim_cli.graph.decode import attention_ops, fc_ops, shard_heads
from librapim_cli.graph.ops import AllReduce, Attention, Gemm, Vector
from librapim_cli.spec import list_presets, load_hardware, load_model, load_system

HW_NAMES = [p.name for p in list_presets("hardware")]
HW = {n: load_hardware(n) for n in HW_NAMES}
PIM_HW = [n for n in HW_NAMES if HW[n].pim is not None]
LINK = load_system("librapim").link
RTOL = 1e-9


# ---- the cost functions under test, behind one interface -----------------------------------------------------
@dataclass(frozen=True)
class Out:
    """What a case evaluation returns: the time, every numeric output, the Cost (if any), the lower bound."""

    time: float
    numbers: dict
    cost: Cost | None
    lower_bound: float


def _numbers(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (int, float, np.ndarray, np.floating)):
            out[f.name] = np.asarray(v, dtype=float)
    return out


def _npu_roofline(hw, flops, nbytes, mem=None) -> float:
    """``mem``: the memory the bytes come from (default the one holding the weights)."""
    npu, mem = hw.npu, mem or hw.npu_memory
    return max(flops / (npu.peak_flops * npu.compute_efficiency), nbytes / (mem.bw_bytes_per_s * npu.bandwidth_efficiency))


def _pim_roofline(hw, flops, internal_bytes, share: float = 1.0) -> float:
    """Lower bound on PIM time; ``share`` = fraction of the device's PIM units that can work on it."""
    return max(flops / (hw.pim_peak_flops * share), internal_bytes / (hw.pim_internal_bw_bytes_per_s * share))


def _cost_out(c: Cost, lb: float) -> Out:
    return Out(float(c.time_s), _numbers(c), c, lb)


def npu_gemm(hw, m=64, k=4096, n=3072):
    op = Gemm("g", "qkv", float(m), k, n, 2)
    return _cost_out(npu_cost(op, hw), _npu_roofline(hw, float(op.flops), float(op.bytes)))


def npu_attention(hw, L=300, heads=8, q_heads=None, requests=3):
    q, kv = (q_heads or heads), heads
    op = Attention("a", "score", np.full(requests, L, dtype=np.int64), q, kv, 128, 2)
    # the MACs run on the vector units, but no engine of the NPU beats the systolic peak
    return _cost_out(npu_cost(op, hw), _npu_roofline(hw, op.flops, op.kv_bytes, hw.memory))


def npu_vector(hw, elements=64 * 4096):
    op = Vector("ln", "qkv", float(elements), 5.0)
    return _cost_out(npu_cost(op, hw), float(op.flops) / hw.npu.vector_flops)


def npu_vector_kernel(hw, elements=64 * 4096):
    """A LayerNorm: a GPU kernel (fixed time + traffic) on hardware that declares one, else the vector units."""
    op = Vector("layernorm_1", "qkv", float(elements), 5.0, 2)
    kern = hw.npu.vector_kernels.layernorm
    lb = float(op.flops) / hw.npu.vector_flops
    if kern.is_kernel and elements > 0:
        lb = kern.fixed_s + max(lb, elements * kern.tensors * 2 / (hw.npu_memory.bw_bytes_per_s * kern.bw_fraction))
    return _cost_out(npu_cost(op, hw), lb)


def link_allreduce(hw, payload=64 * 4096 * 2, devices=4):
    op = AllReduce("ar", "rest", float(payload), devices)
    return _cost_out(link_cost(op, LINK, hw), float(op.bytes) / LINK.bw_bytes_per_s)


def pim_attention(hw, L=300, heads=8, q_heads=None, requests=40):
    q, kv = (q_heads or heads), heads
    rng = np.random.default_rng(0)
    lens = np.maximum(1, (L * rng.uniform(0.5, 1.5, size=requests)).astype(np.int64))
    lens[0] = L
    op = Attention("a", "score", lens, q, kv, 128, 2)
    # pim_cost returns the score part: half the (score + context) time of the slowest channel
    return _cost_out(pim_cost(op, hw), _pim_roofline(hw, op.flops, op.kv_bytes))


def pim_gemm(hw, m=8, k=4096, n=3072):
    op = Gemm("g", "qkv", float(m), k, n, 2)
    return _cost_out(pim_cost(op, hw), _pim_roofline(hw, float(op.flops), k * n * 2.0))


def fc_pim(hw, rows=8, k=4096, n=3072):
    f = fc_on_pim(hw, rows, k, n, 2)
    lb = _pim_roofline(hw, 2.0 * rows * k * n, k * n * 2.0 if rows > 0 else 0.0)
    return Out(float(f.time_s), _numbers(f), None, max(lb, float(f.internal_bytes) / hw.pim_internal_bw_bytes_per_s))


def attn_requests(hw, L=300, heads=8, q_heads=None):
    q, kv = (q_heads or heads), heads
    r = attention_requests(hw, np.array([L]), q, kv, 128, 2)
    # one request runs on the one PIM channel holding its KV: 1/channels of the PIM units
    flops = 4.0 * q * 128 * L
    kv_bytes = 2.0 * kv * 128 * 2 * L
    lb = _pim_roofline(hw, flops, kv_bytes, share=1.0 / hw.pim_channels)
    return Out(float(r.time_s[0]), _numbers(r), None, lb)


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Out]
    needs_pim: bool
    sizes: dict  # parameter -> increasing values


CASES = [
    Case("npu_cost(Gemm)", npu_gemm, False, {
        "m": (1, 16, 64, 127, 128, 129, 256, 1000, 4096),
        "k": (1, 16, 127, 128, 129, 4096, 16384),
        "n": (1, 16, 127, 128, 129, 3072, 50304),
    }),
    Case("npu_cost(Attention)", npu_attention, False, {
        "L": (1, 2, 31, 32, 33, 300, 2048, 8192),
        "heads": (1, 2, 8, 32),
        "requests": (1, 2, 16, 64),
    }),
    Case("npu_cost(Vector)", npu_vector, False, {"elements": (1, 128, 4096, 64 * 4096, 1 << 24)}),
    Case("npu_cost(Vector kernel)", npu_vector_kernel, False, {"elements": (1, 128, 4096, 64 * 4096, 1 << 24)}),
    Case("link_cost(AllReduce)", link_allreduce, False, {
        "payload": (2, 1024, 64 * 4096 * 2, 1 << 26),
        "devices": (2, 4, 8, 16),
    }),
    Case("pim_cost(Attention)", pim_attention, True, {
        "L": (1, 2, 31, 32, 33, 300, 511, 512, 513, 2048, 8192),
        "heads": (1, 2, 8, 32),
        "requests": (1, 2, 32, 33, 100),
    }),
    Case("pim_cost(Gemm)", pim_gemm, True, {
        "m": (1, 2, 7, 8, 9, 16, 64),
        "k": (1, 128, 512, 4096, 16384),
        "n": (1, 128, 3072, 16384),
    }),
    Case("fc_on_pim", fc_pim, True, {
        "rows": (0, 1, 2, 7, 8, 9, 16, 17, 64),
        "k": (1, 128, 512, 4096, 16384),
        "n": (1, 128, 3072, 16384),
    }),
    Case("attention_requests", attn_requests, True, {
        "L": (0, 1, 2, 31, 32, 33, 300, 511, 512, 513, 2048, 8192),
        "heads": (1, 2, 8, 32),
        "q_heads": (1, 2, 4, 8),  # GQA: more query heads over ONE KV head
    }),
]
CASE = {c.name: c for c in CASES}
COMBOS = [(c.name, h) for c in CASES for h in HW_NAMES if HW[h].pim is not None or not c.needs_pim]


def _ids(x) -> str:
    return "-".join(str(v) for v in x)


# ---- resource knobs: each returns hardware variants with MORE of the resource, in order ----------------------
def _with(hw, **parts):
    return hw.model_copy(update=parts)


def _npu(hw, **kw):
    return _with(hw, npu=hw.npu.model_copy(update=kw))


def _mem(hw, **kw):
    return _with(hw, memory=hw.memory.model_copy(update=kw))


def _pim(hw, **kw):
    return _with(hw, pim=hw.pim.model_copy(update=kw))


KNOBS: dict[str, tuple[bool, Callable]] = {
    "npu_clock": (False, lambda hw: [_npu(hw, clock_hz=hw.npu.clock_hz * f) for f in (0.25, 0.5, 1, 2, 4)]),
    "pin_rate": (False, lambda hw: [_mem(hw, pin_rate_bps=hw.memory.pin_rate_bps * f) for f in (0.25, 0.5, 1, 2, 4)]),
    "mac_lanes": (True, lambda hw: [_pim(hw, mac_lanes_per_unit=v) for v in (1, 4, 8, 12, 16, 24, 32, 64)]),
    "pim_clock": (True, lambda hw: [_pim(hw, clock_hz=hw.pim.clock_hz * f) for f in (0.05, 0.1, 0.25, 0.5, 1, 2, 4)]),
    "mac_interval": (True, lambda hw: [_pim(hw, mac_interval_ns=hw.pim.mac_interval_ns * f,
                                            mac_interval_power_limited_ns=hw.pim.mac_interval_power_limited_ns * f)
                                       for f in (8, 4, 2, 1, 0.5, 0.25)]),
}
KNOB_COMBOS = [(c, h, k) for c, h in COMBOS for k, (needs_pim, _) in KNOBS.items()
               if HW[h].pim is not None or not needs_pim]


# ---- the conformance checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case_hw", COMBOS, ids=_ids)
def test_finite_non_negative(case_hw) -> None:
    case, hw = CASE[case_hw[0]], HW[case_hw[1]]
    for param, values in case.sizes.items():
        for v in values:
            out = case.fn(hw, **{param: v})
            for name, x in out.numbers.items():
                assert np.all(np.isfinite(x)), f"{case.name} on {hw.name}, {param}={v}: {name} = {x}"
                assert np.all(x >= 0), f"{case.name} on {hw.name}, {param}={v}: {name} = {x} < 0"


@pytest.mark.parametrize("case_hw", COMBOS, ids=_ids)
def test_never_below_roofline(case_hw) -> None:
    case, hw = CASE[case_hw[0]], HW[case_hw[1]]
    for param, values in case.sizes.items():
        for v in values:
            out = case.fn(hw, **{param: v})
            assert out.time >= out.lower_bound * (1 - RTOL), (
                f"{case.name} on {hw.name}, {param}={v}: time {out.time:.6e} s below the roofline "
                f"{out.lower_bound:.6e} s")


def _occupancy_free(case: Case, hw, param: str, v) -> float:
    """The case's time, and for an NPU GEMM or attention kernel on hardware with an occupancy model, its time at
    full occupancy (time x occupancy): wave quantization may let a bigger kernel run faster, nothing else may."""
    out = case.fn(hw, **{param: v})
    if hw.npu.thread_blocks.cores == 0 or case.fn not in (npu_gemm, npu_attention):
        return out.time
    if case.fn is npu_gemm:
        args = {"m": 64, "k": 4096, "n": 3072, param: v}
        return out.time * float(gemm_occupancy(hw, float(args["m"]), args["k"], args["n"]))
    args = {"L": 300, "heads": 8, "requests": 3, param: v}
    q = args["heads"]
    return out.time * float(occupancy(hw, args["requests"] * q)) if args["L"] > 0 else out.time


@pytest.mark.parametrize("case_hw", COMBOS, ids=_ids)
def test_monotone_in_problem_size(case_hw) -> None:
    case, hw = CASE[case_hw[0]], HW[case_hw[1]]
    for param, values in case.sizes.items():
        times = [_occupancy_free(case, hw, param, v) for v in values]
        for i in range(1, len(values)):
            (v0, t0), (v1, t1) = (values[i - 1], times[i - 1]), (values[i], times[i])
            assert t1 >= t0 * (1 - RTOL), (
                f"{case.name} on {hw.name}: time falls from {t0:.6e} s at {param}={v0} to {t1:.6e} s at {param}={v1}")


@pytest.mark.parametrize("case_hw_knob", KNOB_COMBOS, ids=_ids)
def test_monotone_in_resources(case_hw_knob) -> None:
    case, hw, knob = CASE[case_hw_knob[0]], HW[case_hw_knob[1]], case_hw_knob[2]
    variants = KNOBS[knob][1](hw)
    for param, values in case.sizes.items():
        for v in (values[len(values) // 2], values[-1]):
            times = [case.fn(h, **{param: v}).time for h in variants]
            for i in range(1, len(times)):
                assert times[i] <= times[i - 1] * (1 + RTOL), (
                    f"{case.name} on {hw.name} at {param}={v}: more {knob} (step {i}) made it slower: "
                    f"{times[i - 1]:.6e} -> {times[i]:.6e} s")


@pytest.mark.parametrize("case_hw", [c for c in COMBOS if CASE[c[0]].fn not in (fc_pim, attn_requests)], ids=_ids)
def test_bound_names_the_dominating_term(case_hw) -> None:
    case, hw = CASE[case_hw[0]], HW[case_hw[1]]
    for param, values in case.sizes.items():
        for v in values:
            c = case.fn(hw, **{param: v}).cost
            terms = {"compute": c.compute_s, "memory": c.memory_s, "bank-timing": c.bank_s, "link": c.link_s,
                     "fixed": c.overhead_s}
            top = max(terms.values())
            assert c.bound in BOUNDS
            if top > 0:
                assert terms[c.bound] == top, f"{case.name} on {hw.name}, {param}={v}: bound {c.bound}, terms {terms}"
            # the time is at least the dominating term, and at most all terms one after another
            work = max(v for k, v in terms.items() if k != "fixed")
            assert c.time_s >= work + c.overhead_s - RTOL * c.time_s
            assert c.time_s <= sum(terms.values()) + RTOL * c.time_s


# ---- internal bandwidth cross-check ----------------------------------------------------------------------------
@pytest.mark.parametrize("hw_name", PIM_HW)
def test_long_gemv_internal_bandwidth_between_external_and_peak(hw_name: str) -> None:
    """A long GEMV on PIM must beat streaming over the external bus (the reason PIM exists) and stay below the
    spec's internal peak (activations, refresh and the broadcast all cost time)."""
    hw = HW[hw_name]
    ext, peak = hw.memory.bw_bytes_per_s, hw.pim_internal_bw_bytes_per_s
    # FC: 16384 x 16384 weights, one token row, spread over every bank
    f = fc_on_pim(hw, 1, 16384, 16384, 2)
    sustained = float(f.internal_bytes) / float(f.time_s)
    assert ext < sustained < peak, f"{hw_name}: FC GEMV sustains {sustained / 1e12:.3f} TB/s, external " \
                                   f"{ext / 1e12:.3f}, peak {peak / 1e12:.3f}"
    # attention over L = 2048 (gpt3-7b at tp=4: 8 query / 8 KV heads): one request uses one PIM channel
    C = hw.pim_channels
    r = attention_requests(hw, np.array([2048]), 8, 8, 128, 2)
    per_channel = float(r.kv_bytes[0] / r.time_s[0])
    assert ext / C < per_channel < peak / C, (
        f"{hw_name}: attention sustains {per_channel / 1e9:.2f} GB/s per channel, external {ext / C / 1e9:.2f}, "
        f"peak {peak / C / 1e9:.2f}")


@pytest.mark.parametrize("hw_name", PIM_HW)
def test_pim_peak_within_bank_column_bandwidth(hw_name: str) -> None:
    """The PIM units cannot consume operands faster than the bank columns deliver them (docs/sources.md#s5.4)."""
    hw = HW[hw_name]
    assert hw.pim_internal_bw_bytes_per_s <= hw.memory.banks * hw.memory.bank_column_bw_bytes_per_s * (1 + RTOL)


@pytest.mark.parametrize("hw_name", PIM_HW)
def test_pim_work_conservation(hw_name: str) -> None:
    """The MAC commands issued (x lanes x units per channel) cover every multiply-add of the GEMV, and issuing them
    at the MAC interval fits inside the modelled bank time."""
    hw = HW[hw_name]
    pim, mem = hw.pim, hw.memory
    units_per_channel = hw.pim_banks_per_channel // pim.banks_per_unit
    t_mac = pim.effective_mac_interval_ns * 1e-9
    derate = mem.refresh_derate
    for L in (1, 33, 300, 2048):
        for q, kv in ((8, 8), (8, 1), (32, 32)):
            r = attention_requests(hw, np.array([L]), q, kv, 128, 2)
            assert r.mac_cmds[0] * pim.mac_lanes_per_unit * units_per_channel * 2 >= r.flops[0]
            assert r.mac_cmds[0] * t_mac / derate <= r.bank_s[0] * (1 + RTOL)
    for rows in (1, 3, 8, 9):
        f = fc_on_pim(hw, rows, 4096, 3072, 2)
        assert float(f.mac_cmds) * pim.mac_lanes_per_unit * (mem.banks // pim.banks_per_unit) * 2 >= float(f.flops)
        assert float(f.mac_cmds) * t_mac / derate <= float(f.bank_s) * (1 + RTOL)


@pytest.mark.parametrize("lanes", [12, 24, 48])
def test_mac_commands_are_whole_per_open_row(lanes: int) -> None:
    hw = HW["neupims-npu-hbm2pim"]
    hw = hw.model_copy(update={"pim": hw.pim.model_copy(update={"mac_lanes_per_unit": lanes})})
    per_row = -(-512 // lanes)  # 1 KB row = 512 FP16
    # QKV of gpt3-7b at tp=4 (4096 x 3072) over 1024 banks: 12 288 elements = 24 full rows per bank, one vector
    assert float(fc_on_pim(hw, 1, 4096, 3072, 2).mac_cmds) >= 24 * per_row
    # one request, L = 300, 8 KV heads: K fills 20 full rows per bank (10 tokens x 1024), V 32 rows of 300 tokens
    r = attention_requests(hw, np.array([300]), 8, 8, 128, 2)
    assert r.mac_cmds[0] >= 20 * per_row + 32 * -(-300 // lanes)


# ---- vectorized evaluation and cost tables agree with the scalar cost functions -----------------------------------
@pytest.mark.parametrize("hw_name", PIM_HW)
def test_vectorized_equals_scalar(hw_name: str) -> None:
    hw = HW[hw_name]
    ms = np.arange(0, 300, 37, dtype=float)
    vec = npu_cost(Gemm("g", "qkv", ms, 4096, 3072, 2), hw)
    fv = fc_on_pim(hw, ms, 4096, 3072, 2)
    for i, m in enumerate(ms):
        assert vec.time_s[i] == pytest.approx(npu_cost(Gemm("g", "qkv", m, 4096, 3072, 2), hw).time_s, rel=1e-12)
        assert fv.time_s[i] == pytest.approx(float(fc_on_pim(hw, m, 4096, 3072, 2).time_s), rel=1e-12, abs=0)
    lens = np.array([0, 1, 33, 300, 2048])
    r = attention_requests(hw, lens, 8, 8, 128, 2)
    for i, L in enumerate(lens):
        assert r.time_s[i] == pytest.approx(attention_requests(hw, np.array([L]), 8, 8, 128, 2).time_s[0], rel=1e-12)


def test_cost_tables_match_cost_functions() -> None:
    """build_tables' entries are exactly the cost functions' figures (tables.py module docstring)."""
    model, system = load_model("gpt3-7b"), load_system("librapim")
    hw = system.hardware
    t = build_tables(model, system, 4, 64, 600)
    q, kv = shard_heads(model, 4)
    for rows in (0, 1, 17, 64):
        ops = [o for o in fc_ops(model, 4, float(rows)) if o.phase == "qkv"]
        gemm = [o for o in ops if isinstance(o, Gemm)]
        sa = sum(npu_cost(o, hw).compute_s + npu_cost(o, hw).overhead_s for o in gemm)
        mem = sum(npu_cost(o, hw).memory_s for o in gemm)
        assert t.npu["qkv"].sa_s[rows] == pytest.approx(sa, rel=1e-12, abs=1e-18)
        assert t.npu["qkv"].mem_s[rows] == pytest.approx(mem, rel=1e-12, abs=1e-18)
        pf = sum(float(fc_on_pim(hw, rows, o.k, o.n, o.dtype_bytes).time_s) for o in gemm)
        assert t.pim_fc["qkv"].time_s[rows] == pytest.approx(pf, rel=1e-12, abs=1e-18)
    for L in (0, 1, 300, 600):
        r = attention_requests(hw, np.array([L]), q, kv, model.head_dim, model.dtype_bytes)
        assert t.attn.pim_s[L] == pytest.approx(r.time_s[0], rel=1e-12, abs=1e-18)
        score, _, context = attention_ops(model, 4, np.array([L]))
        assert t.attn.kv_bytes[L] == pytest.approx(score.kv_bytes + context.kv_bytes, rel=1e-12, abs=0)
        assert t.attn.flops[L] == pytest.approx(score.flops + context.flops, rel=1e-12, abs=0)
