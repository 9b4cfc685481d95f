"""Tests import the oracles in tests/oracle as ``oracle``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
