"""librapim_cli.stats equals numpy's median / percentile / unique bit for bit, and imports no numpy.ma."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from librapim_cli.stats import distinct, median, percentiles

Q = (0, 1, 10, 25, 33.3, 50, 66.7, 90, 99, 99.9, 100)


def _inputs(seed: int, count: int = 400):
    """Random 1-D arrays: odd and even lengths from 1 up, heavy duplicates, wide and tiny scales, signed values,
    integers stored as floats (as sample_lengths holds them), infinities, float and integer dtypes."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(1, 9)) if i % 3 == 0 else int(rng.integers(1, 3000))
        kind = i % 7
        if kind == 0:
            x = rng.lognormal(3.0, 1.7, n)
        elif kind == 1:
            x = np.rint(rng.lognormal(4.0, 1.0, n))  # integer-valued floats, many duplicates
        elif kind == 2:
            x = rng.integers(0, 4, n).astype(float)  # almost all duplicates
        elif kind == 3:
            x = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12)
        elif kind == 4:
            x = rng.integers(-1000, 1000, n)  # int64
        elif kind == 5:
            x = rng.uniform(-1.0, 1.0, n) * 1e-300
        else:
            x = rng.standard_normal(n)
            x[rng.integers(0, n, max(n // 50, 1))] = rng.choice([np.inf, -np.inf])
        yield x


def _same(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_equal_numpy(seed):
    rng = np.random.default_rng(100 + seed)
    for x in _inputs(seed):
        qs = [Q, (50, 90, 99), (0,), (100,), tuple(rng.uniform(0, 100, 5).tolist())]
        for q in qs:
            with np.errstate(invalid="ignore"):  # inf - inf where the data hold infinities, in both
                got, want = percentiles(x, q), np.percentile(x, q)
            assert got.dtype == want.dtype and _same(got, want), (x, q, got, want)
            assert got.tobytes() == want.tobytes() or np.isnan(want).any()


@pytest.mark.parametrize("seed", range(5))
def test_median_equals_numpy(seed):
    for x in _inputs(seed):
        got, want = median(x), np.median(x)
        assert isinstance(got, float)
        assert _same(got, want) and np.float64(got).tobytes() == np.float64(want).tobytes() or np.isnan(want), \
            (x, got, want)


def test_median_even_odd_and_nan():
    assert median(np.array([3.0])) == 3.0
    assert median(np.array([4.0, 1.0])) == 2.5
    assert median(np.array([5.0, 1.0, 3.0])) == 3.0
    assert median(np.array([1, 2, 3, 4])) == 2.5
    x = np.array([0.1, 0.2])  # (a + b) / 2 in float64, as np.mean of two
    assert median(x) == (0.1 + 0.2) / 2 == np.median(x)
    assert np.isnan(median(np.array([1.0, np.nan, 2.0])))
    assert np.isnan(percentiles(np.array([1.0, np.nan, 2.0]), (0, 50, 100))).all()


def test_percentiles_lerp_branches():
    # t < 0.5 uses a + (b - a) t, t >= 0.5 uses b - (b - a)(1 - t): the two round differently
    x = np.array([0.1, 0.7, 1e16, 1e16 + 2, 3.3])
    for q in np.linspace(0, 100, 1001):
        assert percentiles(x, (q,)).tobytes() == np.percentile(x, (q,)).tobytes(), q


def test_rejects_what_numpy_would_not_define_here():
    with pytest.raises(ValueError):
        median(np.zeros(0))
    with pytest.raises(ValueError):
        percentiles(np.zeros(0), (50,))
    with pytest.raises(ValueError):
        percentiles(np.ones(3), (101,))
    with pytest.raises(ValueError):
        percentiles(np.ones(3), (-1,))


@pytest.mark.parametrize("seed", range(3))
def test_distinct_equals_unique(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(0, 500))
        x = rng.integers(-5, int(rng.integers(1, 50)), n)
        got, want = distinct(x), np.unique(x)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        f = np.round(rng.random(n) * 8) / 8 * rng.choice([1.0, -1.0, 0.0], n)  # floats: repeats, 0.0 and -0.0
        got, want = distinct(f), np.unique(f)
        assert got.dtype == want.dtype and np.array_equal(got.view(np.uint64), want.view(np.uint64))


def test_no_masked_array_import():
    code = ("import sys, numpy as np\n"
            "from librapim_cli.stats import distinct, median, percentiles\n"
            "x = np.arange(11.0)\n"
            "median(x); percentiles(x, (50, 90, 99)); distinct(np.arange(5))\n"
            "assert 'numpy.ma' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
