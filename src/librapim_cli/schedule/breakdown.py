"""Per-op breakdown of one decode iteration: where the time, FLOPs, bytes and energy go.

Each op of one decode layer (``graph.decode_layer_ops``) is costed on its home device under the system's
static placement (before DBO moves anything):

- FC GEMMs and vector ops (norms, softmax, activations, residuals): the NPU (``cost.npu_cost``);
- decode attention (score and context GEMVs): the PIM when ``placement.attention == "pim"``
  (``cost.pim_cost`` with the requests' KV channels: the slowest channel sets the time), else the NPU;
- all-reduces: the device-to-device link (``cost.link_cost``).

A layer op counts ``model.layers // pp`` times (the layers of one pipeline stage); the LM head
(``graph.lm_head_op``) counts once. Each record's ``time_s`` is therefore the time the op occupies its
device in one iteration, per device; ``energy_j`` is summed over all ``tp * pp`` devices, like the
``energy_j_per_token`` metric.

``share`` is ``time_s`` divided by the simulated time of one iteration of the same batch
(``schedule.run_iteration``, with DBO when the system enables it). Shares are not a partition: they can sum
above 1 when stages overlap NPU and PIM work (sub-batch interleaving, concurrent bank access), and below 1
when contention for the banks stretches a stage beyond its ops' standalone costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..cost.link import link_cost
from ..cost.npu import npu_cost
from ..cost.pim import pim_cost
from ..graph.decode import decode_layer_ops, lm_head_op
from ..graph.ops import AllReduce, Attention
from .iteration import run_iteration

if TYPE_CHECKING:
    from ..simulate import Setup

RECORD_KEYS = ("op", "phase", "device", "repeats", "time_s", "share", "bound", "flops", "bytes", "energy_j")


def _phase(op: Any) -> str:
    return "attention" if isinstance(op, Attention) else str(op.phase)


def op_breakdown(setup: Setup, lens: np.ndarray, channels: np.ndarray) -> list[dict[str, Any]]:
    """One record per op of a decode iteration for requests with context lengths ``lens``.

    ``channels[i]`` is the HBM channel holding request ``i``'s KV cache. Records are in execution order
    (the layer's ops, then the LM head) with the keys of ``RECORD_KEYS``; see the module docstring for
    what each figure means.
    """
    lens = np.asarray(lens, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    if lens.ndim != 1 or lens.shape != channels.shape or lens.size == 0:
        raise ValueError("op_breakdown: lens and channels must be equal-length, non-empty 1-D arrays")
    system, model, hw = setup.system, setup.model, setup.system.hardware
    tp, pp = setup.tp, setup.pp
    layers = model.layers // pp
    devices = tp * pp
    attn_on_pim = system.placement.attention == "pim" and hw.pim is not None

    iteration_s = iteration_time_s(setup, lens, channels)

    costed: list[tuple[Any, Any, int]] = []
    for op in decode_layer_ops(model, tp, lens):
        if isinstance(op, AllReduce):
            c = link_cost(op, system.link, hw)
        elif isinstance(op, Attention) and attn_on_pim:
            c = pim_cost(op, hw, channels)
        else:
            c = npu_cost(op, hw)
        costed.append((op, c, layers))
    head = lm_head_op(model, tp, float(lens.size))
    costed.append((head, npu_cost(head, hw), 1))

    records: list[dict[str, Any]] = []
    for op, c, repeats in costed:
        time_s = float(c.time_s) * repeats
        records.append({
            "op": op.name,
            "phase": _phase(op),
            "device": c.device,
            "repeats": repeats,
            "time_s": time_s,
            "share": time_s / iteration_s if iteration_s > 0 else 0.0,
            "bound": str(c.bound),
            "flops": float(c.flops) * repeats,
            "bytes": float(c.bytes) * repeats,
            "energy_j": float(c.energy_j) * repeats * (tp if op is head else devices),
        })
    return records


def iteration_time_s(setup: Setup, lens: np.ndarray, channels: np.ndarray) -> float:
    """Simulated time of one iteration of this batch (the denominator of ``share``), DBO seeded as in simulate()."""
    from ..simulate import make_schedule  # the schedule constants of a setup are built next to simulate()

    lens = np.asarray(lens, dtype=np.int64)
    sched = make_schedule(setup, int(lens.size), int(lens.max()))
    return run_iteration(sched, lens, np.asarray(channels, dtype=np.int64),
                         np.random.default_rng(setup.system.dbo.seed)).time_s
