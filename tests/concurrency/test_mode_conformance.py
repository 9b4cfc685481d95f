"""The conformance suite every registered concurrency mode runs through (librapim_cli.concurrency).

A mode is what the engine, the breakdown and DBO call for channel times, so each must be physically sane
(non-negative, no faster than either device's own work, monotone in the work) and its two shortcuts must be
exact: ``busiest_channel_time`` equals the channel-by-channel maximum, and ``attention_move_can_help`` never
rules out a request that an optimal offload moves (checked by brute force over every subset of requests).
A new mode added to the registry runs through all of this unchanged.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli import concurrency
from librapim_cli.concurrency import ModeParams
from librapim_cli.errors import SpecError
from librapim_cli.spec import load
from librapim_cli.spec.loading import load_raw, validate

MODES = concurrency.names()
secs = st.floats(0.0, 1e-3, allow_nan=False, allow_infinity=False)
params = st.builds(ModeParams, switch_s=st.floats(0.0, 1e-6), quantum_s=st.floats(1e-7, 1e-5),
                   ch_bw_bytes_per_s=st.floats(1e9, 1e11))


@st.composite
def work(draw, channels: int = 1):
    """Per-channel (pim_attn, pim_io share) and shared (pim_fc, pim_fc io share, npu_w) terms, and npu_kv."""
    n = channels
    pa = np.array(draw(st.lists(secs, min_size=n, max_size=n)))
    pf = draw(secs)
    share = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    fshare = draw(st.floats(0, 1))
    return pa, pf, share * pa, fshare * pf, draw(secs), np.array(draw(st.lists(secs, min_size=n, max_size=n)))


def test_registry_names_are_unique_and_resolve():
    assert len(set(MODES)) == len(MODES) >= 4
    for name in MODES:
        assert concurrency.get(name).name == name
        assert concurrency.get(name).summary


@pytest.mark.parametrize("mode", MODES)
def test_system_spec_accepts_every_registered_mode(mode):
    data = load_raw("system", "librapim")
    data["concurrency"]["mode"] = mode
    assert validate("system", data, "x").concurrency.mode == mode


def test_partial_batch_offload_only_acts_where_the_mode_rides_the_stream():
    """A mode whose PIM cannot compute on the streamed rows ignores the option, and the run says so."""
    from librapim_cli.inputs import setup, setup_notes
    from librapim_cli.schedule.context import schedule_for

    for mode in concurrency.names():
        s = setup("librapim", "gpt3-7b", "sharegpt", batch=8, sets=[f'system.concurrency.mode="{mode}"'])
        assert s.system.concurrency.partial_batch_offload
        rides = concurrency.get(mode).rides_weight_stream
        assert (schedule_for(s, 8, 64).tables.pim_fc_ride_stack is not None) == rides
        noted = any("partial_batch_offload has no effect" in n for n in setup_notes(s))
        assert noted == (not rides)


def test_system_spec_rejects_an_unregistered_mode():
    with pytest.raises(SpecError, match="unknown concurrency mode 'shared_bus'; choose one of blocked"):
        load("system", "librapim", [(["concurrency", "mode"], "shared_bus")])


def test_a_new_mode_registers_through_one_call():
    class Serial(concurrency.ConcurrencyMode):
        name = "test_serial_only"
        summary = "test"

        def channel_time(self, p, pim_attn, pim_fc, pim_io, npu_w, npu_kv):
            return pim_attn + pim_fc + npu_w + npu_kv

    mode = concurrency.register(Serial())
    try:
        assert concurrency.get("test_serial_only") is mode
        with pytest.raises(ValueError, match="already registered"):
            concurrency.register(Serial())
    finally:
        concurrency._REGISTRY.pop("test_serial_only")


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(w=work(), p=params)
def test_sane_channel_time(mode, w, p):
    m = concurrency.get(mode)
    pa, pf, pio, pfio, npu_w, kv = w
    t = float(m.channel_time(p, pa[0], pf, pio[0] + pfio, npu_w, kv[0]))
    assert np.isfinite(t) and t >= 0
    # no mode finishes a channel faster than either device's own work on it
    assert t >= max(pa[0] + pf, npu_w + kv[0]) * (1 - 1e-12)
    assert float(m.channel_time(p, 0.0, 0.0, 0.0, 0.0, 0.0)) == 0.0


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(w=work(), p=params, extra=secs, which=st.integers(0, 4))
def test_monotone_in_every_argument(mode, w, p, extra, which):
    m = concurrency.get(mode)
    pa, pf, pio, pfio, npu_w, kv = w
    args = [pa[0], pf, pio[0] + pfio, npu_w, kv[0]]
    more = list(args)
    more[which] += extra
    if which == 2:  # data-bus share of the PIM work cannot exceed the PIM work
        more[0] += extra
    assert float(m.channel_time(p, *more)) >= float(m.channel_time(p, *args)) * (1 - 1e-12)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(w=work(), p=params, ride_share=st.floats(0, 1), less_w=st.floats(0, 1))
def test_fc_work_on_the_pim_never_shortens_a_channel(mode, w, p, ride_share, less_w):
    """DBO's exact pruning of FC moves (docs/model/dbo.md) bounds a channel from below by the same channel with
    no PIM FC work and the NPU's smallest weight stream: FC work on the PIM (riding the stream or not) can only
    add time, a smaller stream cannot add any."""
    m = concurrency.get(mode)
    pa, pf, pio, pfio, npu_w, kv = w
    ride = pf * ride_share if m.rides_weight_stream else 0.0
    full = float(m.channel_time(p, pa[0], pf, pio[0] + pfio, npu_w, kv[0], ride))
    bare = float(m.channel_time(p, pa[0], 0.0, pio[0], npu_w * less_w, kv[0], 0.0))
    assert full >= bare * (1 - 1e-12)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(w=work(), p=params, ride_share=st.floats(0, 1))
def test_affine_terms_reproduce_the_busiest_channel(mode, w, p, ride_share):
    """A mode's optional FC-search fast path must equal its busiest channel for every attention maximum a and
    data-bus maximum io <= a (ConcurrencyMode.affine_terms)."""
    m = concurrency.get(mode)
    pa, pf, pio, pfio, npu_w, _ = w
    ride = pf * ride_share if m.rides_weight_stream else 0.0
    terms = m.affine_terms(p, pf, pfio, npu_w, ride)
    if terms is None:
        return
    f0, fa, fio = (float(x) for x in terms)
    a, io = float(pa.max()), float(min(pio.max(), pa.max()))
    want = float(m.busiest_channel_time(p, a, io, pf, pfio, npu_w, ride))
    assert max(f0, a + fa, io + fio) == pytest.approx(want, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(w=work(channels=6), p=params)
def test_busiest_channel_is_the_channel_by_channel_maximum(mode, w, p):
    m = concurrency.get(mode)
    pa, pf, pio, pfio, npu_w, _ = w
    per_channel = m.channel_time(p, pa, pf, pio + pfio, npu_w, 0.0)
    fast = m.busiest_channel_time(p, pa.max(), pio.max(), pf, pfio, npu_w)
    assert float(fast) == pytest.approx(float(np.max(per_channel)), rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=120, deadline=None)
@given(data=st.data(), p=params)
def test_move_filter_never_drops_a_request_an_optimum_moves(mode, data, p):
    """One channel, up to 6 requests: the best subset moved to the NPU (brute force over every subset) can
    always be achieved without the requests the mode's filter rules out."""
    m = concurrency.get(mode)
    n = data.draw(st.integers(1, 6))
    pim = np.array(data.draw(st.lists(st.floats(1e-7, 1e-4), min_size=n, max_size=n)))
    io = pim * np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    kv = np.array(data.draw(st.lists(st.floats(1e2, 1e7), min_size=n, max_size=n)))
    npu_w = data.draw(secs)
    keep = np.asarray(m.attention_move_can_help(p, pim, kv), dtype=bool)

    def level(moved):
        mv = np.zeros(n, dtype=bool)
        mv[list(moved)] = True
        return float(m.channel_time(p, pim[~mv].sum(), 0.0, io[~mv].sum(), npu_w, kv[mv].sum() / p.ch_bw_bytes_per_s))

    subsets = [c for r in range(n + 1) for c in itertools.combinations(range(n), r)]
    best = min(level(c) for c in subsets)
    best_kept = min(level(c) for c in subsets if all(keep[i] for i in c))
    assert best_kept <= best * (1 + 1e-12) + 1e-18
