"""The speculative serving loop (chunks laid out with predicted times, verified, rolled back) equals the
step-by-step loop of librapim 0.1 (tests/oracle/serving_loop.py), for closed loops, Poisson arrivals and
timed traces: every per-step column, every decode iteration, first-token and finish times, total time."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.inputs import setup
from librapim_cli.serving import loop
from oracle import serving_loop as stepwise

POISSON = ['workload.arrival="poisson"']
CASES = [
    ("librapim", "gpt3-7b", "sharegpt", 64, 300, []),
    ("neupims", "gpt3-7b", "alpaca", 32, 200, []),
    ("librapim", "gpt3-175b", "fixed-2048-128", 64, 256, []),
    ("librapim-dbo-only", "gpt3-13b", "sharegpt", 48, 150, []),
    ("npu-only", "gpt3-7b", "sharegpt", 32, 100, []),
    ("attacc", "gpt3-30b", "alpaca", 40, 120, []),
    ("librapim", "gpt3-7b", "sharegpt", 32, 200, POISSON + ["workload.rate_per_s=20"]),
    ("librapim", "gpt3-175b", "sharegpt", 512, 800, POISSON + ["workload.rate_per_s=5"]),
    ("npu-pim-blocked", "gpt3-30b", "sharegpt", 256, 400, POISSON + ["workload.rate_per_s=50"]),
    ("neupims", "gpt3-7b", "alpaca", 16, 300, POISSON + ["workload.rate_per_s=400"]),
    ("librapim", "gpt3-7b", "sharegpt-trace-sample", 16, None, []),
]


@pytest.mark.parametrize("system,model,workload,batch,requests,sets", CASES)
def test_speculative_loop_equals_step_by_step(system, model, workload, batch, requests, sets):
    s = setup(system, model, workload, batch=batch, requests=requests, sets=sets)
    a = stepwise.run_serving(s, vectorize=False)
    b = loop.run_serving(s)
    assert a.steps.keys() <= b.steps.keys()
    for k in a.steps:
        if a.steps[k].dtype.kind == "f":
            np.testing.assert_allclose(b.steps[k], a.steps[k], rtol=1e-9, atol=1e-12, err_msg=k)
        else:
            np.testing.assert_array_equal(b.steps[k], a.steps[k], err_msg=k)
    np.testing.assert_allclose(b.first_token_s, a.first_token_s, rtol=1e-9)
    np.testing.assert_allclose(b.finish_s, a.finish_s, rtol=1e-9)
    np.testing.assert_array_equal(b.channel, a.channel)
    assert b.total_time_s == pytest.approx(a.total_time_s, rel=1e-9)
    assert b.idle_s == pytest.approx(a.idle_s, rel=1e-9, abs=1e-12)
    assert len(b.iterations) == len(a.iterations)
    for x, y in zip(a.iterations, b.iterations, strict=True):
        assert y.time_s == pytest.approx(x.time_s, rel=1e-9)
        assert y.energy_j == pytest.approx(x.energy_j, rel=1e-9)


def test_timed_arrivals_roll_back_and_still_agree(monkeypatch):
    """A deliberately bad predictor (fed every committed iteration 100x too fast, so it predicts them so) forces
    rollbacks at almost every arrival; the result is still the step-by-step loop's."""
    real = loop._Predictor.update
    monkeypatch.setattr(loop._Predictor, "update", lambda self, n, s, t: real(self, n, s, t * 0.01))
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=16, requests=120, sets=POISSON + ["workload.rate_per_s=40"])
    a = stepwise.run_serving(s, vectorize=False)
    b = loop.run_serving(s)
    np.testing.assert_allclose(b.steps["start_s"], a.steps["start_s"], rtol=1e-9)
    np.testing.assert_allclose(b.finish_s, a.finish_s, rtol=1e-9)
