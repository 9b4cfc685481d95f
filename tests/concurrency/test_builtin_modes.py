"""The built-in concurrency modes by hand (docs/model/concurrency.md), their ordering, and the presets' area
overheads. Properties every registered mode must have are in test_conformance.py.

pim_attn + pim_fc is the PIM units' busy time on a channel, pim_io the part of it on the data bus
(GWRITE/READRES, so pim_io <= pim_attn + pim_fc), npu_w + npu_kv the NPU's traffic through the channel.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli import concurrency
from librapim_cli.concurrency import ModeParams
from librapim_cli.cost.tables import quantum_s, switch_penalty_s
from librapim_cli.simulate import simulate
from librapim_cli.spec import list_presets, load_hardware, load_system

MODES = ("blocked", "time_interleaved", "dual_row_buffer", "dex")
US = 1e-6

secs = st.floats(0.0, 1e-3, allow_nan=False, allow_infinity=False)


@st.composite
def channel_work(draw):
    pim_attn, pim_fc = draw(secs), draw(secs)
    io_share = draw(st.floats(0.0, 1.0))
    return pim_attn, pim_fc, io_share * (pim_attn + pim_fc), draw(secs), draw(secs)


def channel_time(mode, *w, switch_s=28e-9, quantum_s=3.9e-6):
    return concurrency.get(mode).channel_time(ModeParams(switch_s, quantum_s, 1.0), *w)


def ct(mode, w, switch=28e-9, quantum=3.9e-6):
    return float(channel_time(mode, *w, switch_s=switch, quantum_s=quantum))


# ---- hand values ------------------------------------------------------------------------------------------------
W = (6 * US, 4 * US, 2 * US, 3 * US, 2 * US)  # PIM 10 us (of which 2 us on the bus), NPU 5 us


def test_blocked_is_the_sum() -> None:
    assert ct("blocked", W) == pytest.approx(15 * US)


def test_dual_row_buffer_is_max_of_pim_and_bus() -> None:
    # max(PIM 10, bus = NPU 5 + PIM io 2) = 10
    assert ct("dual_row_buffer", W) == pytest.approx(10 * US)
    # bus-bound: NPU 9 + io 2 = 11 > PIM 10
    assert ct("dual_row_buffer", (6 * US, 4 * US, 2 * US, 7 * US, 2 * US)) == pytest.approx(11 * US)


def test_dex_hand_value() -> None:
    # max(PIM 10, bus 7, (10 + 5) / 2 = 7.5) = 10; with NPU 16: max(10, 18, 13) = 18
    assert ct("dex", W) == pytest.approx(10 * US)
    assert ct("dex", (6 * US, 4 * US, 2 * US, 10 * US, 6 * US)) == pytest.approx(18 * US)
    # no PIM io at all, equal PIM and NPU work: DEX still serves them in max(10, 10, 10) = 10
    assert ct("dex", (10 * US, 0.0, 0.0, 10 * US, 0.0)) == pytest.approx(10 * US)


def test_time_interleaved_hand_value() -> None:
    # overlap min(10, 5) = 5 us in 3.9 us slots -> 2 x ceil(5 / 3.9) = 4 switches of tRP + tRCD = 28 ns (HBM2)
    hw = load_hardware("neupims-npu-hbm2pim")
    sw = switch_penalty_s(hw)
    assert sw == pytest.approx(28e-9)
    q = quantum_s(load_system("librapim-dbo-only").concurrency)
    assert q == pytest.approx(3.9e-6)
    assert ct("time_interleaved", W, sw, q) == pytest.approx(15 * US + 4 * 28e-9)
    # nothing to interleave: no switch
    assert ct("time_interleaved", (10 * US, 0, 0, 0, 0), sw, q) == pytest.approx(10 * US)
    assert ct("time_interleaved", (0, 0, 0, 5 * US, 0), sw, q) == pytest.approx(5 * US)


def test_separate_hand_value() -> None:
    # the weights stream from the xPU's own memory: max(PIM 10 + NPU KV reads 2, NPU 3 + 2) = 12; the NPU's
    # stream only bounds it (the stage already waits for the NPU): with NPU 15, max(12, 17) = 17
    assert ct("separate", W) == pytest.approx(12 * US)
    assert ct("separate", (6 * US, 4 * US, 2 * US, 15 * US, 2 * US)) == pytest.approx(17 * US)
    # no NPU KV reads: the PIM alone, whatever its data-bus share
    assert ct("separate", (6 * US, 4 * US, 2 * US, 3 * US, 0.0)) == pytest.approx(10 * US)


def test_unknown_mode_is_not_registered() -> None:
    with pytest.raises(KeyError):
        concurrency.get("shared_bus")


def test_broadcasts_over_channels() -> None:
    pim = np.array([1.0, 2.0, 3.0]) * US
    for mode in MODES:
        out = channel_time(mode, pim, 0.5 * US, 0.1 * US, 2 * US, np.array([0.0, 1.0, 0.0]) * US)
        assert out.shape == (3,)
        for c in range(3):
            assert out[c] == pytest.approx(ct(mode, (pim[c], 0.5 * US, 0.1 * US, 2 * US, [0.0, 1.0, 0.0][c] * US)))


# ---- properties -----------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(w=channel_work(), switch=st.floats(0.0, 1e-6), quantum=st.floats(1e-7, 1e-5))
def test_mode_ordering(w, switch, quantum) -> None:
    pim_attn, pim_fc, pim_io, npu_w, npu_kv = w
    pim, npu = pim_attn + pim_fc, npu_w + npu_kv
    t = {m: ct(m, w, switch, quantum) for m in MODES}
    eps = 1e-12
    assert t["blocked"] == pytest.approx(pim + npu, rel=1e-12, abs=0)
    assert t["dual_row_buffer"] == pytest.approx(max(pim, npu + pim_io), rel=1e-12, abs=0)
    assert t["dual_row_buffer"] - eps <= t["dex"] <= t["blocked"] + eps
    assert t["time_interleaved"] >= t["blocked"] - eps
    for m in MODES:
        # no mode finishes a channel's work faster than its busier side alone
        assert t[m] >= max(pim, npu) - eps, m


@settings(max_examples=100, deadline=None)
@given(w=channel_work(), extra=secs, which=st.integers(0, 4))
def test_modes_monotone_in_work(w, extra, which) -> None:
    more = list(w)
    more[which] += extra
    more[2] = min(more[2], more[0] + more[1])  # keep pim_io <= PIM work
    for m in MODES:
        assert ct(m, more) >= ct(m, w) - 1e-12, m


# ---- area overheads of the system presets ----------------------------------------------------------------------
EXPECTED_AREA = {
    "librapim": 0.00032,  # DEX: 0.032 % (LibraPIM lab page, docs/sources.md#s1.1)
    "librapim-dex-only": 0.00032,
    "librapim-dbo-only": 0.0,  # time interleaving adds no bank resources
    "neupims": 0.5,  # ">50 % larger bank" for duplicated row buffers [I] (docs/sources.md#s1.4)
    "attacc": 0.10,  # bank-level PIM area <= 10 % [S] (docs/sources.md#s3.6)
    "npu-pim-blocked": 0.0,
    "pim-gemv": 0.0,  # blocked banks, as npu-pim-blocked
    "npu-only": 0.0,
    "gpu-only": 0.0,
}
EXPECTED_MODE = {
    "librapim": "dex", "librapim-dex-only": "dex", "librapim-dbo-only": "time_interleaved",
    "neupims": "dual_row_buffer", "attacc": "separate", "npu-pim-blocked": "blocked", "pim-gemv": "blocked",
    "npu-only": "blocked", "gpu-only": "blocked",
}


def test_every_system_preset_is_covered() -> None:
    assert {p.name for p in list_presets("system")} == set(EXPECTED_AREA)


@pytest.mark.parametrize("name", sorted(EXPECTED_AREA))
def test_area_overhead_fraction(name: str) -> None:
    s = load_system(name)
    assert s.concurrency.mode == EXPECTED_MODE[name]
    assert s.concurrency.area_overhead_fraction == pytest.approx(EXPECTED_AREA[name], rel=1e-12, abs=0)
    assert s.concurrency.area_source


@pytest.mark.parametrize("name", ["librapim", "neupims", "npu-only"])
def test_area_overhead_metric(name: str) -> None:
    r = simulate(name, "gpt3-7b", "sharegpt", batch=32, samples=1)
    s = load_system(name)
    want = s.concurrency.area_overhead_fraction if s.uses_pim else 0.0
    assert r.metrics["area_overhead_fraction"] == pytest.approx(want, rel=1e-12, abs=0)
