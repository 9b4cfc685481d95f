"""librapim_cli.numeric: helpers that must equal the numpy functions they stand in for."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from librapim_cli.numeric import median


@settings(deadline=None, max_examples=300)
@given(st.lists(st.floats(min_value=-1e300, max_value=1e300, width=64), min_size=1, max_size=64))
def test_median_equals_numpy(xs):
    x = np.array(xs)
    assert median(x) == np.median(x)


def test_median_of_integers_nan_and_empty():
    assert median(np.array([3, 1, 2, 10])) == 2.5  # (2 + 3) / 2
    assert median([7]) == 7.0
    assert np.isnan(median(np.array([1.0, np.nan, 3.0])))
    assert np.isnan(median(np.zeros(0)))
