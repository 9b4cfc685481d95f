"""Fixed studies that wrap simulate(): the reproduction of the published results."""

from .reproduction import GRID, PUBLISHED, ReproductionResult, run_reproduction

__all__ = ["GRID", "PUBLISHED", "ReproductionResult", "run_reproduction"]
