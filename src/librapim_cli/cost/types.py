"""The Cost value type every cost function returns (fields may be numpy arrays when ops are vectorized)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BOUNDS = ("compute", "memory", "bank-timing", "link", "fixed")


@dataclass(frozen=True, slots=True)
class Cost:
    """Time and resources of one op on one device.

    NPU ops overlap their terms: ``time_s = max(compute_s, memory_s) + overhead_s``. PIM ops serialize
    their bank work and their data-bus transfers on the channel: ``time_s = bank_s + memory_s``. Links:
    ``time_s = link_s``. ``bound`` names the largest term either way ('fixed': the fixed overhead, e.g. a GPU
    kernel's launch).
    """

    device: str
    time_s: Any
    compute_s: Any = 0.0
    memory_s: Any = 0.0
    bank_s: Any = 0.0
    link_s: Any = 0.0
    overhead_s: Any = 0.0
    flops: Any = 0.0
    bytes: Any = 0.0
    energy_j: Any = 0.0

    @property
    def bound(self) -> Any:
        """Which term dominates: 'compute', 'memory', 'bank-timing', 'link' or 'fixed' (array of labels if
        vectorized; the first on ties)."""
        terms = np.stack(np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in
                                               (self.compute_s, self.memory_s, self.bank_s, self.link_s,
                                                self.overhead_s))))
        idx = np.argmax(terms, axis=0)
        labels = np.asarray(BOUNDS)[idx]
        return str(labels) if labels.ndim == 0 else labels

