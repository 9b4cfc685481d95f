"""Link cost: ring all-reduce over the device-to-device link (docs/model/npu.md, 'Collectives')."""

from __future__ import annotations

import numpy as np

from ..graph.ops import AllReduce
from ..spec.hardware import HardwareSpec
from ..spec.system import LinkSpec
from .types import Cost

PJ = 1e-12


def link_cost(op: AllReduce, link: LinkSpec, hw: HardwareSpec) -> Cost:
    """Ring all-reduce: 2 (n-1)/n * payload / bandwidth + 2 (n-1) * hop latency (0 when n = 1)."""
    n = op.devices
    nbytes = np.asarray(op.bytes, dtype=float)
    active = (nbytes > 0) & (n > 1)
    t = np.where(active, nbytes / link.bw_bytes_per_s + 2 * (n - 1) * link.latency_s, 0.0)
    energy = nbytes * 8.0 * hw.energy.link_pj_per_bit * PJ
    t = float(t) if t.ndim == 0 else t
    nb = float(nbytes) if nbytes.ndim == 0 else nbytes
    en = float(energy) if np.ndim(energy) == 0 else energy
    return Cost("link", t, 0.0, 0.0, 0.0, t, 0.0, 0.0, nb, en)
