"""optimize.stage: the FC curves are the figures of fc_at / fc_cols_at at every decision, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.optimize.stage import ROW_STEPS, decode, fc_at, fc_cols_at, fc_curves, fc_figures
from librapim_cli.schedule.context import schedule_for
from librapim_cli.simulate import setup


@pytest.mark.parametrize("system", ["librapim", "librapim-dbo-only", "neupims"])
def test_fc_curves_are_the_figures_of_each_decision(system):
    s = setup(system, "gpt3-7b", "sharegpt", batch=256)
    t = schedule_for(s, s.batch, 2048).tables
    L = t.npu_stack.shape[2] - 1
    rng = np.random.default_rng(0)
    n = 40
    gi = rng.integers(0, t.npu_stack.shape[0], n)
    rows = rng.integers(0, L + 1, n)
    rows[:3] = (0, 1, L)
    cache = rng.choice([0.0, 1.0, 0.37], n)
    for columns in (True, False):
        c = fc_curves(t, gi, rows, cache, columns)
        U = c.shape[2]
        assert U == ROW_STEPS + 1 + (t.cols_stack.shape[2] - 1 if columns and t.cols_stack is not None else 0)
        u = np.arange(U)
        for i in range(n):
            y, j = decode(u, np.full(U, rows[i]))
            want = fc_figures(t, gi[i], rows[i], cache[i], y, j) if t.cols_stack is not None \
                else fc_at(t, gi[i], rows[i], cache[i], y)
            assert np.array_equal(c[i].T, want)  # (U, N_CURVES), bit for bit
    # the element-wise figures do not depend on how the arrays broadcast
    y = rng.integers(0, L + 1, n)
    at = fc_at(t, gi, rows, cache, y)
    for i in range(0, n, 7):
        assert np.array_equal(at[i], fc_at(t, int(gi[i]), int(rows[i]), float(cache[i]), int(y[i])))
    if t.cols_stack is not None:
        j = rng.integers(0, t.cols_stack.shape[2], n)
        ca = fc_cols_at(t, gi, rows, cache, j)
        for i in range(0, n, 7):
            assert np.array_equal(ca[i], fc_cols_at(t, int(gi[i]), int(rows[i]), float(cache[i]), int(j[i])))
