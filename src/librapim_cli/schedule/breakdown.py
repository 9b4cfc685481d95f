"""Per-op breakdown of one decode iteration: where the time, FLOPs, bytes and energy go.

Each op of one decode layer (``graph.decode_layer_ops``) is costed on its home device under the system's
static placement (before DBO moves anything):

- FC GEMMs and vector ops (norms, softmax, activations, residuals): the NPU (``cost.npu_cost``);
- decode attention (score and context GEMVs): the PIM when ``placement.attention == "pim"``
  (``cost.pim_cost`` with the requests' KV channels: the slowest channel sets the time), else the NPU;
- all-reduces: the device-to-device link (``cost.link_cost``).

A layer op counts ``model.layers // pp`` times (the layers of one pipeline stage); the LM head
(``graph.lm_head_op``) counts once. With pipeline parallelism (pp > 1) the batch runs as ``pp``
micro-batches, as in the schedule: every op is costed per micro-batch and summed, and a ``pipeline_send``
record holds the activation hand-off between stages (link time; no energy is charged for it, as in the
schedule). Each record's ``time_s`` is the time the op occupies its device in one iteration, per device;
``energy_j`` is summed over all ``tp * pp`` devices, like the ``energy_j_per_token`` metric. ``bound`` names
the largest of the op's compute, memory, bank-timing and link terms (``cost.Cost.bound``).

Sub-batch interleaving is not split out: where the schedule runs an FC op once per sub-batch (streaming the
weights again unless they stay in SRAM), the breakdown costs it once over the whole (micro-)batch. So
without DBO and without active interleaving the records' energies add up to the iteration's energy; with
interleaving they add up to at most that.

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
from ..cost.types import BOUNDS
from ..graph.decode import decode_layer_ops, lm_head_op
from ..graph.ops import AllReduce, Attention
from .iteration import Schedule, build_schedule, run_iteration

if TYPE_CHECKING:
    from ..inputs import Setup

RECORD_KEYS = ("op", "phase", "device", "repeats", "time_s", "share", "bound", "flops", "bytes", "energy_j")


def _phase(op: Any) -> str:
    return "attention" if isinstance(op, Attention) else str(op.phase)


def _micro_batches(n: int, pp: int) -> list[np.ndarray]:
    """Request indices of each pipeline micro-batch, as the schedule splits them (every pp-th request)."""
    return [np.arange(i, n, pp) for i in range(pp)] if pp > 1 else [np.arange(n)]


def op_breakdown(setup: Setup, lens: np.ndarray, channels: np.ndarray) -> list[dict[str, Any]]:
    """One record per op of a decode iteration for requests with context lengths ``lens``.

    ``channels[i]`` is the HBM channel holding request ``i``'s KV cache. Records are in execution order
    (the layer's ops, the LM head, then the hand-off between pipeline stages when pp > 1) with the keys
    of ``RECORD_KEYS``. With pipeline parallelism each op is costed per micro-batch, as the schedule runs
    it, and summed. See the module docstring for what each figure means.
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
    sched = _schedule(setup, lens)
    iteration_s = _iteration_time(setup, sched, lens, channels)

    acc: dict[str, dict[str, Any]] = {}

    def add(op: Any, c: Any, repeats: int, scale: int) -> None:
        r = acc.setdefault(op.name, {"op": op.name, "phase": _phase(op), "device": c.device, "repeats": repeats,
                                     "time_s": 0.0, "flops": 0.0, "bytes": 0.0, "energy_j": 0.0, "_terms": []})
        r["time_s"] += float(c.time_s) * repeats
        r["flops"] += float(c.flops) * repeats
        r["bytes"] += float(c.bytes) * repeats
        r["energy_j"] += float(c.energy_j) * repeats * scale
        r["_terms"].append(np.array([c.compute_s, c.memory_s, c.bank_s, c.link_s], dtype=float) * repeats)

    mbs = [mb for mb in _micro_batches(int(lens.size), pp) if mb.size]
    for mb in mbs:
        ml, mc = lens[mb], channels[mb]
        for op in decode_layer_ops(model, tp, ml):
            if isinstance(op, AllReduce):
                c = link_cost(op, system.link, hw)
            elif isinstance(op, Attention) and attn_on_pim:
                c = pim_cost(op, hw, mc)
            else:
                c = npu_cost(op, hw)
            add(op, c, layers, devices)
        head = lm_head_op(model, tp, float(mb.size))
        add(head, npu_cost(head, hw), 1, tp)

    records: list[dict[str, Any]] = []
    for r in acc.values():
        terms = r.pop("_terms")
        r["bound"] = BOUNDS[int(np.argmax(np.sum(terms, axis=0)))]
        records.append(r)
    if pp > 1:  # activations handed from one pipeline stage to the next, per micro-batch (no energy charged)
        row_bytes = model.d_model * model.dtype_bytes
        records.append({"op": "pipeline_send", "phase": "pipeline", "device": "link", "repeats": 1,
                        "time_s": sum(sched.p2p_latency_s + mb.size * sched.p2p_s_per_row for mb in mbs),
                        "flops": 0.0, "bytes": float(lens.size * row_bytes), "energy_j": 0.0, "bound": "link"})
    for r in records:
        r["share"] = r["time_s"] / iteration_s if iteration_s > 0 else 0.0
    return [{k: r[k] for k in RECORD_KEYS} for r in records]


def _schedule(setup: Setup, lens: np.ndarray) -> Schedule:
    """The schedule simulate() builds for this setup."""
    s = setup
    return build_schedule(s.model, s.system, s.tp, s.pp, int(lens.size), int(lens.max()))


def _iteration_time(setup: Setup, sched: Schedule, lens: np.ndarray, channels: np.ndarray) -> float:
    return run_iteration(sched, lens, channels, np.random.default_rng(setup.system.dbo.seed)).time_s


def iteration_time_s(setup: Setup, lens: np.ndarray, channels: np.ndarray) -> float:
    """Simulated time of one iteration of this batch (the denominator of ``share``), DBO seeded as in simulate()."""
    lens = np.asarray(lens, dtype=np.int64)
    return _iteration_time(setup, _schedule(setup, lens), lens, np.asarray(channels, dtype=np.int64))
