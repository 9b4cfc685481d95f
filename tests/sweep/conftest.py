"""Fixtures of the sweep tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sweep_helpers import SMALL


@pytest.fixture
def small() -> dict[str, Any]:
    """A fresh copy of the small spec dict (3 batches x 3 PIM MAC lane counts)."""
    return copy.deepcopy(SMALL)
