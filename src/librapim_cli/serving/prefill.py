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
total causal pairs sum(P (P + 1) / 2). :class:`PrefillCoster` memoizes micro-batch costs on that key.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def micro_batch_key(prompt_lens: np.ndarray) -> tuple[int, int, int]:
    """(prompts, tokens, causal pairs) of one micro-batch: everything its prefill cost depends on."""
    p = np.asarray(prompt_lens, dtype=np.int64)
    return int(p.shape[0]), int(p.sum()), int((p * (p + 1) // 2).sum())


def micro_batch_cost(model: ModelSpec, system: SystemSpec, tp: int, pp: int,
                     prompt_lens: np.ndarray) -> PrefillCost:
    """Prefill of one micro-batch on one pipeline stage (layers/pp layers, LM head, one hand-off)."""
    lens = np.asarray(prompt_lens, dtype=np.int64)
    n = int(lens.shape[0])
    if n == 0:
        return ZERO
    hw = system.hardware
    layer_s = layer_fl = layer_e = 0.0
    for op in prefill_ops(model, tp, lens):
        c = link_cost(op, system.link, hw) if isinstance(op, AllReduce) else npu_cost(op, hw)
        layer_s += float(c.time_s)
        layer_fl += float(c.flops)
        layer_e += float(c.energy_j)
    head = npu_cost(lm_head_op(model, tp, float(n)), hw)
    layers = model.layers // pp
    busy_s = layers * layer_s + float(head.time_s)
    tokens = float(lens.sum())
    row_bytes = model.d_model * model.dtype_bytes
    handoff_s = (system.link.latency_s + tokens * row_bytes / system.link.bw_bytes_per_s) if pp > 1 else 0.0
    energy = (layers * layer_e * pp + float(head.energy_j)) * tp
    return PrefillCost(busy_s + handoff_s, busy_s, layers * layer_fl + float(head.flops), energy)


def _add(a: PrefillCost, b: PrefillCost) -> PrefillCost:
    return PrefillCost(a.time_s + b.time_s, a.npu_busy_s + b.npu_busy_s, a.flops + b.flops, a.energy_j + b.energy_j)


def prefill_cost(model: ModelSpec, system: SystemSpec, tp: int, pp: int, prompt_lens: np.ndarray) -> PrefillCost:
    """Cost of prefilling ``prompt_lens`` together: the sum over the pp micro-batches (module docstring)."""
    lens = np.asarray(prompt_lens, dtype=np.int64)
    total = ZERO
    for i in range(min(pp, lens.shape[0])):
        total = _add(total, micro_batch_cost(model, system, tp, pp, lens[i::pp]))
    return total


class PrefillCoster:
    """``prefill_cost`` for one (model, system, tp, pp), memoized per micro-batch key.

    A serving run prefills a few prompts between most decode iterations; micro-batches of one prompt
    repeat by prompt length, so most steps are dictionary hits.
    """

    def __init__(self, model: ModelSpec, system: SystemSpec, tp: int, pp: int) -> None:
        self.model, self.system, self.tp, self.pp = model, system, tp, pp
        self._memo: dict[tuple[int, int, int], PrefillCost] = {}

    def __call__(self, prompt_lens: np.ndarray) -> PrefillCost:
        lens = np.asarray(prompt_lens, dtype=np.int64).tolist()  # a few prompts: Python ints beat numpy
        pp, memo = self.pp, self._memo
        time_s = busy_s = flops = energy = 0.0
        for i in range(min(pp, len(lens))):
            mb = lens[i::pp]
            key = (len(mb), sum(mb), sum(p * (p + 1) // 2 for p in mb))  # == micro_batch_key(mb)
            c = memo.get(key)
            if c is None:
                c = memo[key] = micro_batch_cost(self.model, self.system, self.tp, pp, np.asarray(mb, np.int64))
            time_s += c.time_s
            busy_s += c.npu_busy_s
            flops += c.flops
            energy += c.energy_j
        return PrefillCost(time_s, busy_s, flops, energy)

    @property
    def distinct_micro_batches(self) -> int:
        """Micro-batch shapes costed so far (cache misses)."""
        return len(self._memo)
