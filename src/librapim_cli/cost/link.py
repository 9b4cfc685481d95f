"""Link cost: all-reduce over the device-to-device link (docs/model/npu.md, 'Collectives').

Three algorithms (``link.allreduce``), each a number of latency steps and the bytes one device moves over its
link, plus a fixed start time (``link.collective_start_s``); P = payload, n = devices, B = link bandwidth, a =
``link.latency_s``:

- ``ring``: 2(n-1) steps, each of P/n bytes: 2(n-1) a + 2(n-1)/n P / B (NCCL's ring; GenZ
  ``collective_times.py``; LLMCompass' ring topology, docs/sources.md#s12);
- ``one_shot``: (n-1) steps of P/n bytes: (n-1) a + (n-1)/n P / B (a switch-based or fully connected
  reduce-scatter whose result needs no second round: AttAcc's ``get_nvlink_time`` x (n-1), LLMCompass' fully
  connected topology);
- ``tree``: 2 ceil(log2 n) hops, the payload up the tree and down again at half the bus bandwidth:
  2 ceil(log2 n) a + 2 P / B (NCCL's tree model, ``src/graph/tuning.cc``).
"""

from __future__ import annotations

import math

import numpy as np

from ..graph.ops import AllReduce
from ..spec.hardware import HardwareSpec
from ..spec.system import LinkSpec
from .types import Cost

PJ = 1e-12


def allreduce_steps_and_bytes(algorithm: str, n: int, payload):
    """(latency steps, bytes one device moves) of an all-reduce of ``payload`` bytes over ``n`` devices."""
    p = np.asarray(payload, dtype=float)
    if n <= 1:
        return 0, np.zeros_like(p)
    if algorithm == "ring":
        return 2 * (n - 1), 2.0 * (n - 1) / n * p
    if algorithm == "one_shot":
        return n - 1, (n - 1) / n * p
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(n)), 2.0 * p
    raise ValueError(f"unknown all-reduce algorithm {algorithm!r}")


def link_cost(op: AllReduce, link: LinkSpec, hw: HardwareSpec) -> Cost:
    """All-reduce under ``link.allreduce``: start + steps x latency + bytes / bandwidth (0 when n = 1 or no
    payload)."""
    n = op.devices
    steps, nbytes = allreduce_steps_and_bytes(link.allreduce, n, op.payload_bytes)
    active = (np.asarray(op.payload_bytes, dtype=float) > 0) & (n > 1)
    t = np.where(active, link.collective_start_s + steps * link.latency_s + nbytes / link.bw_bytes_per_s, 0.0)
    nbytes = np.where(active, nbytes, 0.0)
    energy = nbytes * 8.0 * hw.energy.link_pj_per_bit * PJ
    t = float(t) if t.ndim == 0 else t
    nb = float(nbytes) if nbytes.ndim == 0 else nbytes
    en = float(energy) if np.ndim(energy) == 0 else energy
    return Cost("link", t, 0.0, 0.0, 0.0, t, 0.0, 0.0, nb, en)
