"""Prefill cost: the NPU time of prompts entering the batch (docs/model/serving.md).

A prefill step is costed the way ``run_iteration`` costs a decode iteration: the prompts are split into
``pp`` micro-batches (prompt ``i`` goes to micro-batch ``i mod pp``), and each micro-batch costs, on one
pipeline stage,

    layers/pp x (sum of npu_cost over the compute ops of prefill_ops + sum of link_cost over its all-reduces)
    + the LM head over the micro-batch's last prompt tokens (the first output token comes out of prefill)
    + one activation hand-off from the previous pipeline stage (pp > 1: latency + tokens x d x dtype / bw).

The step costs the sum over micro-batches (the steady-state pipeline view of decode iterations, so
``pp`` hand-offs per step). The ops run one after another on the NPU; PIM is idle during prefill.

The cost depends on the prompts only through their count, total tokens and total causal pairs
sum(P (P + 1) / 2) (``graph.decode.prefill_ops_for``). :class:`PrefillCoster` memoizes micro-batch costs on
that key, and costs many micro-batches in one pass with op sizes that are arrays over them (graph/ops.py),
which the cost functions evaluate element-wise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..cost.link import link_cost
from ..cost.npu import npu_cost
from ..graph.decode import fc_ops, lm_head_op, prefill_attention_ops, prefill_ops_for
from ..graph.ops import AllReduce
from ..spec.model import ModelSpec
from ..spec.system import SystemSpec
from ..stats import distinct


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


def micro_batch_costs(model: ModelSpec, system: SystemSpec, tp: int, pp: int,
                      micro_batches: list[np.ndarray]) -> list[PrefillCost]:
    """Prefill of each micro-batch on one pipeline stage (layers/pp layers, LM head, one hand-off).

    All micro-batches are costed in one vectorized pass (:func:`costs_of_keys`); each result equals costing it
    alone.
    """
    keys = [micro_batch_key(mb) for mb in micro_batches]
    return costs_of_keys(model, system, tp, pp, keys)


def _op_cost(op, system: SystemSpec):
    return link_cost(op, system.link, system.hardware) if isinstance(op, AllReduce) else npu_cost(op, system.hardware)


def costs_of_keys(model: ModelSpec, system: SystemSpec, tp: int, pp: int,
                  keys: list[tuple[int, int, int]], token_ops=None, qkv_ops: int | None = None,
                  heads: dict | None = None) -> list[PrefillCost]:
    """Prefill cost of micro-batches given by their keys (prompts, tokens, causal pairs), in one pass: the op
    sizes are arrays over the micro-batches, which the cost functions evaluate element-wise. ``token_ops``
    (tokens -> (ops, 3, n) time, FLOPs and energy), when given, supplies the ops that depend on the tokens
    alone (every op but the causal attention), in op order: the same figures, looked up; only the causal
    attention (:func:`prefill_attention_ops`) is then costed, after the first ``qkv_ops`` of them (the 'qkv'
    ops; default: counted from :func:`fc_ops`). ``heads`` (a dict kept by the caller): the LM head's cost of a
    single micro-batch by its prompt count, reused."""
    if not keys:
        return []
    k = np.asarray(keys, dtype=float).reshape(-1, 3)
    live = k[:, 0] > 0
    out = [ZERO] * k.shape[0]
    if not live.any():
        return out
    counts, tokens, pairs = k[live].T
    hw = system.hardware
    one = counts.shape[0] == 1  # scalar sizes: the same figures, without 1-element arrays
    tok_arg, pairs_arg = (float(tokens[0]), float(pairs[0])) if one else (tokens, pairs)
    layer_s = layer_fl = layer_e = 0.0
    if token_ops is None:
        figures = ((c.time_s, c.flops, c.energy_j) for c in (_op_cost(op, system) for op in
                                                              prefill_ops_for(model, tp, tok_arg, pairs_arg)))
    else:
        tok = token_ops(tokens.astype(np.int64))
        tok = tok[:, :, 0].tolist() if one else list(tok)
        if qkv_ops is None:
            qkv_ops = sum(op.phase == "qkv" for op in fc_ops(model, tp, 1.0))
        attn = [(c.time_s, c.flops, c.energy_j) for c in (_op_cost(op, system) for op in
                                                          prefill_attention_ops(model, tp, tok_arg, pairs_arg))]
        figures = tok[:qkv_ops] + attn + tok[qkv_ops:]  # op order: qkv, the causal attention, the rest
    for c_t, c_f, c_e in figures:  # one after another, in op order
        layer_s = layer_s + c_t
        layer_fl = layer_fl + c_f
        layer_e = layer_e + c_e
    if one and heads is not None:
        head = heads.get(cnt := float(counts[0]))
        if head is None:
            head = heads[cnt] = npu_cost(lm_head_op(model, tp, cnt), hw)
    else:
        head = npu_cost(lm_head_op(model, tp, float(counts[0]) if one else counts), hw)
    layers = model.layers // pp
    busy_s = layers * layer_s + head.time_s
    row_bytes = model.d_model * model.dtype_bytes
    handoff_s = (system.link.latency_s + tokens * row_bytes / system.link.bw_bytes_per_s) if pp > 1 else 0.0
    time_s = busy_s + handoff_s
    flops = layers * layer_fl + head.flops
    energy = (layers * layer_e * pp + head.energy_j) * tp
    n = counts.shape[0]
    if one:  # the same floats as the general path's one-element lists
        cols = [[float(np.asarray(x, dtype=float).reshape(-1)[0])] for x in (time_s, busy_s, flops, energy)]
    else:
        cols = [np.broadcast_to(np.asarray(x, dtype=float), (n,)).tolist() for x in (time_s, busy_s, flops, energy)]
    for i, row in zip(np.flatnonzero(live).tolist(), zip(*cols, strict=True), strict=True):
        out[i] = PrefillCost(*row)
    return out


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

    #: token counts per block of the per-token op table (:meth:`_token_ops`)
    TOKEN_BLOCK = 1024

    def __init__(self, model: ModelSpec, system: SystemSpec, tp: int, pp: int) -> None:
        self.model, self.system, self.tp, self.pp = model, system, tp, pp
        self._memo: dict[tuple[int, int, int], PrefillCost] = {}
        self._blocks: dict[int, np.ndarray] = {}  # token block -> (ops, 3, TOKEN_BLOCK)
        self._qkv_ops = sum(op.phase == "qkv" for op in fc_ops(model, tp, 1.0))  # token ops before the attention
        self._heads: dict = {}  # prompt count -> the LM head's cost (costs_of_keys)

    def _token_ops(self, tokens: np.ndarray) -> np.ndarray:
        """(time, FLOPs, energy) of every op of a prefill layer that depends on the tokens alone (all but the
        causal attention), in op order, at these token counts: (ops, 3, n), from blocks of TOKEN_BLOCK token
        counts costed in one vectorized pass each, on first use. A serving run's micro-batches of several
        prompts rarely repeat a key, but their token counts fall in a few blocks."""
        n = self.TOKEN_BLOCK
        blk = tokens // n
        for b in distinct(blk).tolist():
            if b not in self._blocks:
                t = np.arange(b * n, (b + 1) * n, dtype=float)
                ops = [op for op in prefill_ops_for(self.model, self.tp, t, t) if op.phase != "attention"]
                self._blocks[b] = np.stack([np.stack([np.broadcast_to(np.asarray(v, dtype=float), (n,))
                                                      for v in (c.time_s, c.flops, c.energy_j)])
                                            for c in (_op_cost(op, self.system) for op in ops)])
        if blk.shape[0] == 1:
            return self._blocks[int(blk[0])][:, :, tokens - blk * n]
        return np.stack([self._blocks[b][:, :, t - b * n] for b, t in zip(blk.tolist(), tokens.tolist(),
                                                                          strict=True)], axis=2)

    def _cost_missing(self, batches: list[list[int]]) -> None:
        todo = {key for mb in batches
                if (key := (len(mb), sum(mb), sum(p * (p + 1) // 2 for p in mb))) not in self._memo}
        if todo:  # key == micro_batch_key(mb)
            keys = sorted(todo)
            # a few keys: their token-only ops from the per-token table (a single key costs ~4x less); many
            # keys (a warm-up): one vectorized pass over all of them
            table = self._token_ops if len(keys) <= 8 else None
            self._memo.update(zip(keys, costs_of_keys(self.model, self.system, self.tp, self.pp, keys, table,
                                                      self._qkv_ops, self._heads), strict=True))

    def warm(self, prompt_lens: np.ndarray) -> None:
        """Cost the single-prompt micro-batches of these prompt lengths ahead, in one pass."""
        self._cost_missing([[p] for p in distinct(np.asarray(prompt_lens, dtype=np.int64)).tolist()])

    def __call__(self, prompt_lens: np.ndarray) -> PrefillCost:
        return self.of_list(np.asarray(prompt_lens, dtype=np.int64).tolist())

    def cost_missing(self, steps: list[list[int]]) -> None:
        """Cost every micro-batch shape of these steps (prompt lengths as lists of Python ints) that the memo
        lacks, in one vectorized pass."""
        pp = self.pp
        self._cost_missing([lens[i::pp] for lens in steps for i in range(min(pp, len(lens)))])

    def of_list(self, lens: list[int], compute: bool = True) -> PrefillCost | None:
        """``self(lens)`` for prompt lengths given as a list of Python ints (a few prompts: they beat numpy).
        With ``compute`` False, None when the memo lacks one of its micro-batches."""
        pp, memo = self.pp, self._memo
        if len(lens) == 1:  # the usual step: one prompt, one micro-batch, whose cost is the step's
            p = lens[0]
            cost = memo.get((1, p, p * (p + 1) // 2))
            if cost is not None or not compute:
                return cost
        if len(lens) <= pp:  # one prompt per micro-batch
            keys = [(1, p, p * (p + 1) // 2) for p in lens]
        else:
            keys = [(len(mb), sum(mb), sum(p * (p + 1) // 2 for p in mb)) for mb in (lens[i::pp] for i in range(pp))]
        try:
            costs = [memo[k] for k in keys]
        except KeyError:
            if not compute:
                return None
            self._cost_missing([lens[i::pp] for i in range(min(pp, len(lens)))])
            costs = [memo[k] for k in keys]
        if len(costs) == 1:  # one micro-batch: its cost is the step's
            return costs[0]
        time_s = busy_s = flops = energy = 0.0
        for c in costs:
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
