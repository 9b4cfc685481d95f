"""Fixed studies that wrap simulate(): the regime map of the published results (docs/reproduction.md)."""

from .reproduction import (
    AXES,
    GOLDEN_AXES,
    PUBLISHED,
    Axes,
    Point,
    RegimeMap,
    compute_map,
    locate_all,
    run_map,
)

__all__ = ["AXES", "GOLDEN_AXES", "PUBLISHED", "Axes", "Point", "RegimeMap", "compute_map", "locate_all", "run_map"]
