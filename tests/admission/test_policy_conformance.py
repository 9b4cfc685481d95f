"""The conformance suite every registered admission policy runs through (librapim_cli.admission), and the
serving loop's invariants under each policy (conservation, KV bound, latencies ordered)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli import admission
from librapim_cli.admission import PolicyParams
from librapim_cli.errors import SpecError
from librapim_cli.inputs import setup
from librapim_cli.serving.loop import run_serving
from librapim_cli.spec import load

POLICIES = admission.names()
ints = st.integers(1, 3000)


def test_registry():
    assert set(POLICIES) >= {"reserve", "paged"}
    for name in POLICIES:
        assert admission.get(name).name == name and admission.get(name).summary
    with pytest.raises(SpecError, match="unknown admission policy 'lifo'; choose one of reserve, paged"):
        load("system", "librapim", [(["serving", "admission"], "lifo")])


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=100, deadline=None)
@given(cap=st.integers(100, 100_000), block=st.sampled_from([1, 8, 16, 32]),
       prompt=st.lists(ints, min_size=1, max_size=20), data=st.data())
def test_units_are_sane(name, cap, block, prompt, data):
    pol = admission.get(name)
    p = PolicyParams(cap, block, 0.01)
    P = np.array(prompt)
    out = np.array(data.draw(st.lists(ints, min_size=len(prompt), max_size=len(prompt))))
    g = np.zeros_like(P)
    assert pol.capacity_units(p) >= 0
    adm = pol.admission_units(p, P, out, g)
    assert (adm > 0).all()
    # what a request holds never shrinks while it decodes, and never exceeds its whole-KV footprint in tokens
    ctx = P + 1
    h0, h1 = pol.held_units(p, ctx, P, out), pol.held_units(p, P + out, P, out)
    assert (h1 >= h0).all()
    assert (h1 <= pol.held_units(p, P + out, P, out)).all()
    # the admission budget of an empty cache is at most the capacity
    assert pol.admission_budget(p, 0) <= pol.capacity_units(p)


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=100, deadline=None)
@given(ctx=st.lists(st.integers(1, 5000), min_size=1, max_size=40), block=st.sampled_from([1, 4, 16]),
       cap=st.integers(50, 20_000), steps=st.integers(1, 300))
def test_overflow_and_victims_are_exact(name, ctx, block, cap, steps):
    pol = admission.get(name)
    p = PolicyParams(cap, block, 0.0)
    c = np.array(ctx)
    P = np.maximum(c - 1, 1)
    out = np.full_like(c, 10_000)
    j = pol.overflow_at(p, c, P, out, steps)
    assert 0 <= j <= steps
    total = pol.capacity_units(p)
    # brute force: the first step at which the held units exceed the capacity
    held = [int(pol.held_units(p, c + k, P, out).sum()) for k in range(steps)]
    first = next((k for k, h in enumerate(held) if h > total), steps)
    assert j == first if pol.preempts else j == steps
    v = pol.victims(p, c, P, out)
    h = pol.held_units(p, c, P, out)
    assert int(h[: len(c) - v].sum()) <= total or v == len(c)
    if v > 0:  # minimal: keeping one more of them would overflow
        assert int(h[: len(c) - v + 1].sum()) > total


CASES = [("librapim", "gpt3-7b", "sharegpt", 64, 300, []),
         ("neupims", "gpt3-30b", "sharegpt", 256, 400, []),
         ("librapim", "gpt3-13b", "alpaca", 128, 300, ['workload.arrival="poisson"', "workload.rate_per_s=30"])]


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("system,model,workload,batch,n,sets", CASES)
def test_serving_invariants_under_every_policy(name, system, model, workload, batch, n, sets):
    s = setup(system, model, workload, batch=batch, requests=n, sets=sets)
    run = run_serving(s, policy=name)
    st_ = run.steps
    assert np.isfinite(run.finish_s).all() and np.isfinite(run.first_token_s).all()
    assert (run.first_token_s >= run.arrival_s).all() and (run.finish_s >= run.first_token_s).all()
    dec = st_["kind"] == "decode"
    # every output token is produced once: by the first prefill, a recompute prefill, or a decode iteration
    prefill_tokens = int(st_["batch"][~dec].sum())
    assert int(st_["batch"][dec].sum()) + prefill_tokens == int(run.output_len.sum())
    assert int(st_["finished"].sum()) == len(run.output_len)
    assert (st_["batch"][dec] <= batch).all()
    # the KV held never exceeds the capacity
    assert int(st_["kv_tokens"].max()) <= run.kv_capacity_tokens
    starts = st_["start_s"]
    assert (np.diff(starts) >= -1e-12).all()


def test_paged_admits_more_and_preempts_under_pressure():
    """A small cache: paged admits on the current context, so it runs bigger batches than reserve, and it
    must preempt when the contexts grow."""
    sets = ["system.hardware.memory.capacity_bytes=16000000000"]
    s = setup("librapim", "gpt3-13b", "sharegpt", batch=256, requests=600, sets=sets)
    r = run_serving(s, policy="reserve")
    p = run_serving(s, policy="paged")
    dec_r, dec_p = r.steps["kind"] == "decode", p.steps["kind"] == "decode"
    assert p.steps["batch"][dec_p].mean() > r.steps["batch"][dec_r].mean()
    assert p.preemptions > 0 and r.preemptions == 0
