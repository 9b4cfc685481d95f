"""Pure cost functions: NPU roofline with systolic tiling, PIM bank timing, link collectives."""

from .link import link_cost
from .npu import npu_cost, systolic_cycles
from .pim import (
           AttentionRequests,
           BankTiming,
           FCOnPIM,
           attention_requests,
           bank_timing,
           fc_on_pim,
           pim_cost,
)
from .types import BOUNDS, Cost

__all__ = ["BOUNDS", "AttentionRequests", "BankTiming", "Cost", "FCOnPIM", "attention_requests", "bank_timing",
           "fc_on_pim", "link_cost", "npu_cost", "pim_cost", "systolic_cycles"]
