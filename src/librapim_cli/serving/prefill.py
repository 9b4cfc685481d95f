"""Prefill cost: the NPU time of prompts entering the batch (docs/model/serving.md).

A prefill step is costed the way ``run_iteration`` costs a decode iteration: the prompts are split into
``pp`` micro-batches (prompt ``i`` goes to micro-batch ``i mod pp``), and each micro-batch costs, on one
pipeline stage,

    layers/pp x (sum of npu_cost over the compute ops of prefill_ops + sum of link_cost over its all-reduces)
    + the LM head over the micro-batch's last prompt tokens (the first output token comes out of prefill)
    + one activation hand-off from the previous pipeline stage (pp > 1: latency + tokens x d x dtype / bw).

The step costs the sum over micro-batches (the steady-state pipeline view of decode iterations, so
``pp`` hand-offs per step). The ops run one after another on the NPU; PIM is idle during prefill.

The cost depends on the prompts only through what ``prefill_ops`` reads: their count, total tokens and
total causal pairs sum(P (P + 1) / 2). :class:`PrefillCoster` memoizes micro-batch costs on that key, and
costs many micro-batches in one pass by stacking their ops' sizes into arrays (op sizes may be arrays,
graph/ops.py), which the cost functions evaluate element-wise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..cost.link import link_cost
from ..cost.npu import npu_cost
from ..graph.decode import lm_head_op, prefill_ops
from ..graph.ops import AllReduce
from ..spec.model import ModelSpec
from ..spec.system import SystemSpec


@dataclass(frozen=True, slots=True)
class PrefillCost:
    """Figures of one prefill step (per device; all TP devices are symmetric)."""

    time_s: float  # wall time of the step
    npu_busy_s: float  # NPU compute and all-reduce time (time_s minus the pipeline hand-offs)
    flops: float  # NPU FLOPs on one device
    energy_j: float  # whole system (all tp * pp devices)


ZERO = PrefillCost(0.0, 0.0, 0.0, 0.0)


def micro_batch_key(prompt_lens) -> tuple[int, int, int]:
    """(prompts, tokens, causal pairs) of one micro-batch: everything its prefill cost depends on."""
    p = [int(x) for x in np.asarray(prompt_lens, dtype=np.int64).tolist()]
    return len(p), sum(p), sum(x * (x + 1) // 2 for x in p)


def _stack(op_lists: list[list]) -> list | None:
    """One op list whose sizes are arrays over the lists (fields that differ), or None if the lists differ
    in structure (op count, types or names)."""
    first = op_lists[0]
    shape = [(type(op), op.name) for op in first]
    if any([(type(op), op.name) for op in ops] != shape for ops in op_lists[1:]):
        return None
    stacked = []
    for j, op in enumerate(first):
        sizes = {}
        for f in dataclasses.fields(op):
            col = [getattr(ops[j], f.name) for ops in op_lists]
            if isinstance(col[0], (str, bool)) or col[0] is None:
                if any(v != col[0] for v in col):
                    return None
                continue
            arr = np.asarray(col, dtype=float)
            if (arr != arr[0]).any():
                sizes[f.name] = arr
        stacked.append(dataclasses.replace(op, **sizes) if sizes else op)
    return stacked


def micro_batch_costs(model: ModelSpec, system: SystemSpec, tp: int, pp: int,
                      micro_batches: list[np.ndarray]) -> list[PrefillCost]:
    """Prefill of each micro-batch on one pipeline stage (layers/pp layers, LM head, one hand-off).

    All micro-batches are costed in one vectorized pass; each result equals costing it alone.
    """
    mbs = [np.asarray(mb, dtype=np.int64) for mb in micro_batches]
    if not mbs:
        return []
    if any(mb.shape[0] == 0 for mb in mbs):
        return [ZERO if mb.shape[0] == 0 else micro_batch_costs(model, system, tp, pp, [mb])[0] for mb in mbs]
    ops = _stack([prefill_ops(model, tp, mb) for mb in mbs])
    if ops is None:  # the graph differs between micro-batches: one at a time
        return [micro_batch_costs(model, system, tp, pp, [mb])[0] for mb in mbs]
    hw = system.hardware
    K = len(mbs)
    layer_s, layer_fl, layer_e = np.zeros(K), np.zeros(K), np.zeros(K)
    for op in ops:
        c = link_cost(op, system.link, hw) if isinstance(op, AllReduce) else npu_cost(op, hw)
        layer_s = layer_s + c.time_s
        layer_fl = layer_fl + c.flops
        layer_e = layer_e + c.energy_j
    counts = np.array([mb.shape[0] for mb in mbs], dtype=float)
    tokens = np.array([float(mb.sum()) for mb in mbs])
    head = npu_cost(lm_head_op(model, tp, counts if K > 1 else float(counts[0])), hw)
    layers = model.layers // pp
    busy_s = layers * layer_s + head.time_s
    row_bytes = model.d_model * model.dtype_bytes
    handoff_s = (system.link.latency_s + tokens * row_bytes / system.link.bw_bytes_per_s) if pp > 1 else 0.0
    time_s = busy_s + handoff_s
    flops = layers * layer_fl + head.flops
    energy = (layers * layer_e * pp + head.energy_j) * tp
    cols = [np.broadcast_to(np.asarray(x, dtype=float), (K,)).tolist() for x in (time_s, busy_s, flops, energy)]
    return [PrefillCost(*row) for row in zip(*cols, strict=True)]


def micro_batch_cost(model: ModelSpec, system: SystemSpec, tp: int, pp: int,
                     prompt_lens: np.ndarray) -> PrefillCost:
    """Prefill of one micro-batch on one pipeline stage (:func:`micro_batch_costs` of one)."""
    return micro_batch_costs(model, system, tp, pp, [prompt_lens])[0]


def prefill_cost(model: ModelSpec, system: SystemSpec, tp: int, pp: int, prompt_lens: np.ndarray) -> PrefillCost:
    """Cost of prefilling ``prompt_lens`` together: the sum over the pp micro-batches (module docstring)."""
    lens = np.asarray(prompt_lens, dtype=np.int64)
    time_s = busy_s = flops = energy = 0.0
    for i in range(min(pp, lens.shape[0])):
        c = micro_batch_cost(model, system, tp, pp, lens[i::pp])
        time_s, busy_s = time_s + c.time_s, busy_s + c.npu_busy_s
        flops, energy = flops + c.flops, energy + c.energy_j
    return PrefillCost(time_s, busy_s, flops, energy)


class PrefillCoster:
    """``prefill_cost`` for one (model, system, tp, pp), memoized per micro-batch key.

    A serving run prefills a few prompts between most decode iterations, and micro-batches of one prompt
    repeat by prompt length: :meth:`warm` costs those for all of a trace's prompt lengths in one pass, and
    the steps that follow are mostly dictionary hits.
    """

    def __init__(self, model: ModelSpec, system: SystemSpec, tp: int, pp: int) -> None:
        self.model, self.system, self.tp, self.pp = model, system, tp, pp
        self._memo: dict[tuple[int, int, int], PrefillCost] = {}

    def _cost_missing(self, batches: list[list[int]]) -> None:
        todo: dict[tuple[int, int, int], list[int]] = {}
        for mb in batches:
            key = (len(mb), sum(mb), sum(p * (p + 1) // 2 for p in mb))  # == micro_batch_key(mb)
            if key not in self._memo:
                todo.setdefault(key, mb)
        if todo:
            costs = micro_batch_costs(self.model, self.system, self.tp, self.pp,
                                      [np.asarray(mb, dtype=np.int64) for mb in todo.values()])
            self._memo.update(zip(todo, costs, strict=True))

    def warm(self, prompt_lens: np.ndarray) -> None:
        """Cost the single-prompt micro-batches of these prompt lengths ahead, in one pass."""
        self._cost_missing([[p] for p in np.unique(np.asarray(prompt_lens, dtype=np.int64)).tolist()])

    def __call__(self, prompt_lens: np.ndarray) -> PrefillCost:
        lens = np.asarray(prompt_lens, dtype=np.int64).tolist()  # a few prompts: Python ints beat numpy
        pp, memo = self.pp, self._memo
        batches = [lens[i::pp] for i in range(min(pp, len(lens)))]
        keys = [(len(mb), sum(mb), sum(p * (p + 1) // 2 for p in mb)) for mb in batches]
        if any(k not in memo for k in keys):
            self._cost_missing(batches)
        time_s = busy_s = flops = energy = 0.0
        for k in keys:
            c = memo[k]
            time_s += c.time_s
            busy_s += c.npu_busy_s
            flops += c.flops
            energy += c.energy_j
        return PrefillCost(time_s, busy_s, flops, energy)

    @property
    def distinct_micro_batches(self) -> int:
        """Micro-batch shapes costed so far."""
        return len(self._memo)


@lru_cache(maxsize=32)
def prefill_coster(model: ModelSpec, system: SystemSpec, tp: int, pp: int) -> PrefillCoster:
    """The PrefillCoster of one configuration, shared by every run in the process (its memo only ever
    holds exact costs of micro-batch shapes, so sharing it changes no result)."""
    return PrefillCoster(model, system, tp, pp)
