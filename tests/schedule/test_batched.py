"""run_iterations (many iterations in one vectorized pass) gives exactly run_iteration's figures."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.cost.pim import snake_channels
from librapim_cli.errors import InputError
from librapim_cli.schedule.batched import FIELDS, run_iterations, supports
from librapim_cli.schedule.iteration import run_iteration
from librapim_cli.simulate import make_schedule, setup, steady_state_batch
from librapim_cli.spec import list_presets

SYSTEMS = [p.name for p in list_presets("system")]
CASES = [("gpt3-7b", ()), ("gpt3-175b", ()), ("gpt3-7b", ("hardware.npu.systolic_arrays=8",)),
         ("llama2-70b", ()), ("mixtral-8x7b", ("system.tp=8",))]


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("model,sets", CASES)
def test_batched_equals_one_at_a_time(system, model, sets):
    try:
        s = setup(system, model, "sharegpt", batch=256, sets=sets)
    except InputError:
        pytest.skip(f"{model} does not fit {system}")
    rng = np.random.default_rng(7)
    # full and partial batches (some below the interleaving gate, some below pp), contexts stretched so that
    # PIM-bound stages (and DBO's attention direction) occur too
    lens = [np.minimum(steady_state_batch(s, rng)[:n] * (1 + i % 3), 2047) for i, n in
            enumerate((256, 255, 130, 64, 3, 1))]
    sched = make_schedule(s, 256, 2048)
    assert supports(sched)
    chans = [snake_channels(x, sched.tables.channels) for x in lens]
    one = [run_iteration(sched, x, c) for x, c in zip(lens, chans, strict=True)]
    many = run_iterations(sched, lens, chans)
    assert len(many) == len(one)
    for k, r in enumerate(one):
        assert many.tokens[k] == r.tokens
        for f in FIELDS:
            assert getattr(many, f)[k] == pytest.approx(getattr(r, f), rel=1e-9, abs=1e-15), (k, f)


def test_both_dbo_directions_are_exercised():
    """The comparison above covers FC rows moved to the PIM and attention moved to the NPU."""
    moved_fc = moved_attn = False
    for model, sets in CASES:
        s = setup("librapim", model, "sharegpt", batch=256, sets=sets)
        rng = np.random.default_rng(7)
        lens = [np.minimum(steady_state_batch(s, rng)[:n], 2047) for n in (256, 64, 3)]
        sched = make_schedule(s, 256, 2048)
        many = run_iterations(sched, lens, [snake_channels(x, sched.tables.channels) for x in lens])
        moved_fc |= bool(many.fc_rows_offloaded.sum() > 0)
        moved_attn |= bool(many.attn_offloaded_bytes.sum() > 0)
    assert moved_fc and moved_attn


def test_unsupported_configurations_are_refused():
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=8, sets=["system.dbo.prediction_error=0.1"])
    sched = make_schedule(s, 8, 2048)
    assert not supports(sched)
    with pytest.raises(ValueError):
        run_iterations(sched, [np.array([5, 6])], [np.array([0, 1])])
