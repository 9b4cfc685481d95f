"""Op graph of a decode iteration / prefill, sharded for tensor parallelism."""

from .decode import (
           attention_ops,
           decode_layer_ops,
           fc_ops,
           lm_head_op,
           moe_expected_experts,
           prefill_ops,
           prefill_ops_for,
           shard_heads,
)
from .ops import AllReduce, Attention, Gemm, KVWrite, Op, Vector

__all__ = ["AllReduce", "Attention", "Gemm", "KVWrite", "Op", "Vector", "attention_ops", "decode_layer_ops", "fc_ops",
           "lm_head_op", "moe_expected_experts", "prefill_ops", "prefill_ops_for", "shard_heads"]
