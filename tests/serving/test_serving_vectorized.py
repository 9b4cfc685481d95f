"""A closed-loop run laid out first and evaluated in one vectorized pass equals the step-by-step loop."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.inputs import setup
from librapim_cli.serving import loop

CASES = [
    ("librapim", "gpt3-7b", "sharegpt", 64, 300),
    ("neupims", "gpt3-7b", "alpaca", 32, 200),
    ("librapim", "gpt3-175b", "fixed-2048-128", 64, 256),
    ("librapim-dbo-only", "gpt3-13b", "sharegpt", 48, 150),
    ("npu-only", "gpt3-7b", "sharegpt", 32, 100),
    ("attacc", "gpt3-30b", "alpaca", 40, 120),
]


@pytest.mark.parametrize("system,model,workload,batch,requests", CASES)
def test_vectorized_closed_loop_equals_step_by_step(system, model, workload, batch, requests):
    s = setup(system, model, workload, batch=batch, requests=requests)
    a = loop.run_serving(s, vectorize=False)
    b = loop.run_serving(s)
    assert a.steps.keys() == b.steps.keys()
    for k in a.steps:
        if a.steps[k].dtype.kind == "f":
            np.testing.assert_allclose(b.steps[k], a.steps[k], rtol=1e-9, atol=1e-15, err_msg=k)
        else:
            np.testing.assert_array_equal(b.steps[k], a.steps[k], err_msg=k)
    np.testing.assert_allclose(b.first_token_s, a.first_token_s, rtol=1e-9)
    np.testing.assert_allclose(b.finish_s, a.finish_s, rtol=1e-9)
    assert b.total_time_s == pytest.approx(a.total_time_s, rel=1e-9)
    assert len(b.iterations) == len(a.iterations)
    for x, y in zip(a.iterations, b.iterations, strict=True):
        assert y.time_s == pytest.approx(x.time_s, rel=1e-9)
        assert y.energy_j == pytest.approx(x.energy_j, rel=1e-9)


def test_poisson_arrivals_stay_step_by_step():
    """Arrivals after t = 0 make membership depend on the clock: the loop must not lay steps out first."""
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=16, requests=60,
              sets=["workload.arrival='poisson'", "workload.rate_per_s=50.0"])
    a = loop.run_serving(s, vectorize=False)
    b = loop.run_serving(s)
    np.testing.assert_array_equal(a.steps["time_s"], b.steps["time_s"])
    assert b.idle_s == a.idle_s
