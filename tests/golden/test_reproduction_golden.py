"""Golden regression of the reproduction study (docs/reproduction.md).

Regenerate after an intended model change with:

    librapim reproduce --golden tests/golden/reproduction.json

and explain the change in the commit message.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from librapim_cli.studies import run_reproduction

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


def test_reproduction_matches_golden():
    expected = json.loads(GOLDEN.read_text())
    actual = json.loads(json.dumps(run_reproduction().to_json()))
    _compare(expected, actual)


def test_golden_has_every_published_quantity():
    data = json.loads(GOLDEN.read_text())
    for v in data["variants"]:
        assert set(v["summary"]) == {"librapim_over_naive", "librapim_over_neupims", "neupims_over_npu_only",
                                     "neupims_over_naive", "librapim_npu_util_max", "librapim_pim_util_max"}
