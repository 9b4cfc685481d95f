"""Op records: small frozen value types. Sizes may be numpy arrays (vectorized over batch sizes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Phase = Literal["qkv", "attention", "rest", "head"]


@dataclass(frozen=True, slots=True)
class Gemm:
    """C[m, n] = A[m, k] @ W[k, n]: an FC layer over m token rows (m may be an array of batch sizes).

    ``weight_sets`` is the number of distinct weight matrices touched (MoE: expected experts hit);
    each set sees ``m * tokens_per_set_fraction`` rows.
    """

    name: str
    phase: Phase
    m: np.ndarray | float
    k: int
    n: int
    dtype_bytes: int
    weight_sets: np.ndarray | float = 1.0
    rows_per_set: np.ndarray | float | None = None  # default: m
    streams_weights: bool = True  # False: both operands are activations already on chip (prefill attention)
    sram_fraction: float = 0.0  # share of the weights still in on-chip SRAM from the previous sub-batch (not re-read)

    @property
    def set_rows(self) -> np.ndarray | float:
        """Token rows each weight set processes."""
        return self.m if self.rows_per_set is None else self.rows_per_set

    @property
    def flops(self) -> np.ndarray | float:
        """2 * rows * k * n summed over weight sets."""
        return 2.0 * self.weight_sets * self.set_rows * self.k * self.n

    @property
    def weight_bytes(self) -> np.ndarray | float:
        """Weights streamed from DRAM: sets * k * n * dtype (once per iteration, reused across rows), less the
        share still in SRAM."""
        if not self.streams_weights:
            return np.zeros_like(np.asarray(self.m, dtype=float))
        return np.where(np.asarray(self.m) > 0,
                        self.weight_sets * self.k * self.n * self.dtype_bytes * (1.0 - self.sram_fraction), 0.0)

    @property
    def bytes(self) -> np.ndarray | float:
        """DRAM bytes: the weights (activations stay in on-chip SRAM, docs/model/npu.md)."""
        return self.weight_bytes


@dataclass(frozen=True, slots=True)
class Attention:
    """Decode attention of a set of requests: ``part`` 'score' (Q.K^T) or 'context' (S.V), per TP shard."""

    name: str
    part: Literal["score", "context"]
    context_lens: np.ndarray  # tokens in each request's KV cache (int64)
    q_heads: int  # query heads on this shard
    kv_heads: int  # KV heads on this shard
    head_dim: int
    dtype_bytes: int

    @property
    def flops(self) -> float:
        """2 * q_heads * head_dim * sum(L) (one multiply-add per KV element per query head)."""
        return 2.0 * self.q_heads * self.head_dim * float(self.context_lens.sum())

    @property
    def kv_bytes(self) -> float:
        """K (score) or V (context) bytes read: kv_heads * head_dim * sum(L) * dtype."""
        return float(self.kv_heads * self.head_dim * self.dtype_bytes) * float(self.context_lens.sum())

    @property
    def bytes(self) -> float:
        """DRAM bytes: the KV stream."""
        return self.kv_bytes


@dataclass(frozen=True, slots=True)
class Vector:
    """Elementwise / reduction op on the vector units (norm, softmax, activation, residual)."""

    name: str
    phase: Phase
    elements: np.ndarray | float
    flops_per_element: float
    dtype_bytes: int = 2
    extra_inputs: int = 0  # tensors of its size it reads beyond its own input (a gated activation's gate)

    @property
    def flops(self) -> np.ndarray | float:
        """elements * flops_per_element."""
        return self.elements * self.flops_per_element

    @property
    def kernel(self) -> str:
        """Its class of GPU kernel (``NPUSpec.vector_kernels``): layernorm, activation, softmax or residual ('' for
        an op of no class)."""
        for prefix, kind in (("layernorm", "layernorm"), ("act_", "activation"), ("softmax", "softmax"),
                             ("residual", "residual")):
            if self.name.startswith(prefix):
                return kind
        return ""

    @property
    def bytes(self) -> float:
        """DRAM bytes: none (operands are on chip; a GPU kernel's own traffic is costed by ``npu_cost``)."""
        return 0.0


@dataclass(frozen=True, slots=True)
class KVWrite:
    """Writing new tokens' K and V into the KV cache in DRAM (decode: one token per request per layer; prefill:
    every prompt token). The NPU produced them in the QKV GEMM; they go to the channel holding the request."""

    name: str
    phase: Phase
    tokens: np.ndarray | float
    bytes_per_token: int  # K + V of one token on this shard: 2 * kv_heads * head_dim * dtype

    @property
    def flops(self) -> float:
        """No arithmetic."""
        return 0.0

    @property
    def bytes(self) -> np.ndarray | float:
        """DRAM bytes written: tokens * bytes_per_token."""
        return self.tokens * self.bytes_per_token


@dataclass(frozen=True, slots=True)
class AllReduce:
    """All-reduce of ``payload_bytes`` over ``devices`` tensor-parallel devices (the algorithm is the link's,
    ``cost.link.link_cost``)."""

    name: str
    phase: Phase
    payload_bytes: np.ndarray | float
    devices: int

    @property
    def flops(self) -> float:
        """No arithmetic counted."""
        return 0.0

    @property
    def bytes(self) -> np.ndarray | float:
        """Bytes each device sends in a ring all-reduce: 2 (n-1)/n * payload (``link_cost`` reports the link
        algorithm's own)."""
        return 2.0 * (self.devices - 1) / self.devices * self.payload_bytes


Op = Gemm | Attention | Vector | KVWrite | AllReduce
