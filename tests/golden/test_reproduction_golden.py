"""Golden regression of the regime map (docs/reproduction.md): the points of its golden subset.

Regenerate after an intended model change with the one command that also rewrites the document:

    librapim reproduce --golden tests/golden/reproduction.json

and explain the change in the commit message.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from librapim_cli.studies.reproduction import AXES, GOLDEN_AXES, compute_map, factors, golden_json

GOLDEN = Path(__file__).with_name("reproduction.json")
RTOL = 1e-6
REGEN = "regenerate with `librapim reproduce --golden tests/golden/reproduction.json` if the change is intended"


def _compare(expected, actual, path="$"):
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(expected) == set(actual), f"{path}: keys differ; {REGEN}"
        for k in expected:
            _compare(expected[k], actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(expected) == len(actual), f"{path}: lengths differ; {REGEN}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _compare(e, a, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert math.isclose(expected, actual, rel_tol=RTOL, abs_tol=1e-12), \
            f"{path}: golden {expected!r}, now {actual!r}; {REGEN}"
    else:
        assert expected == actual, f"{path}: golden {expected!r}, now {actual!r}; {REGEN}"


def test_golden_subset_matches():
    expected = json.loads(GOLDEN.read_text())
    actual = json.loads(json.dumps(golden_json(compute_map(GOLDEN_AXES))))
    _compare(expected, actual)


def test_golden_subset_lies_on_the_map():
    """`librapim reproduce --golden` writes the subset from the map it ran: every golden point is a map point."""
    assert {p.key for p in GOLDEN_AXES.points()} <= {p.key for p in AXES.points()}
    assert GOLDEN_AXES.samples == AXES.samples


def test_golden_points_hold_the_invariants():
    """Physics the golden numbers must respect: LibraPIM never loses to a system it contains, and each ratio
    is exactly the product of its mechanism factors."""
    data = json.loads(GOLDEN.read_text())
    from librapim_cli.studies.reproduction import Point, PointResult

    for p in data["points"]:
        if p["infeasible"]:
            continue
        s = p["systems"]
        for contained in ("npu-pim-blocked", "neupims", "librapim-dex-only", "librapim-dbo-only"):
            assert s["librapim"]["throughput_tokens_per_s"] >= s[contained]["throughput_tokens_per_s"] * (1 - 1e-9)
        r = PointResult(Point(p["model"], p["workload"], p["batch"], p["npu_arrays"], p["registers"]), s, p["detail"])
        for num, den in (("librapim", "npu-pim-blocked"), ("librapim", "pim-gemv"), ("librapim", "neupims")):
            prod = math.prod(v for _, v in factors(r, num, den))
            assert math.isclose(prod, r.ratio(num, den), rel_tol=1e-12)
