"""The ops of one decode iteration (per layer, per tensor-parallel shard) and of a prefill."""

from __future__ import annotations

import numpy as np

from ..spec.model import ModelSpec
from .ops import AllReduce, Attention, Gemm, KVWrite, Vector


def shard_heads(model: ModelSpec, tp: int) -> tuple[int, int]:
    """(query heads, KV heads) on one TP shard; KV heads are replicated when tp > kv_heads (GQA/MQA)."""
    q = max(1, model.heads // tp)
    kv = max(1, model.kv_heads // tp)
    return q, kv


def moe_expected_experts(model: ModelSpec, tokens: np.ndarray | float) -> np.ndarray | float:
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly to top-k of E experts.

    E * (1 - (1 - k/E)^tokens); 1 for a dense model.
    """
    e, k = model.moe_experts, model.moe_top_k
    if e == 1:
        return np.where(np.asarray(tokens) > 0, 1.0, 0.0)
    return e * (1.0 - (1.0 - k / e) ** np.asarray(tokens, dtype=float))


def fc_ops(model: ModelSpec, tp: int, tokens: np.ndarray | float) -> list:
    """FC, vector and collective ops of one layer for ``tokens`` rows (may be an array of row counts).

    Phases: 'qkv' (LN1, QKV and writing each token's new K/V into the KV cache) and 'rest' (projection,
    all-reduce, residual, LN2, FFN, all-reduce, residual).
    """
    d, dh, dt = model.d_model, model.head_dim, model.dtype_bytes
    q, kv = shard_heads(model, tp)
    f = model.ffn_dim
    t = np.asarray(tokens, dtype=float)
    up_mats = model.ffn_matrices - 1
    f_shard = f // tp
    if model.moe_experts > 1:
        # experts are sharded like dense FFNs (each expert's f split over tp); tokens spread over the hit experts
        sets = moe_expected_experts(model, t)
        rows = np.where(sets > 0, t * model.moe_top_k / np.maximum(sets, 1e-12), 0.0)
    else:
        sets, rows = 1.0, None
    # vector FLOPs per element are our estimate [I] (docs/model/overview.md W5): LayerNorm 5 (mean, variance,
    # normalize, scale, shift), residual 1, activation 8 (GELU/ReLU polynomial) or 9 (plus the gate multiply)
    ops: list = [
        Vector("layernorm_1", "qkv", t * d, 5.0, dt),
        Gemm("qkv", "qkv", t, d, (q + 2 * kv) * dh, dt),
        KVWrite("kv_write", "qkv", t, 2 * kv * dh * dt),
        Gemm("out_proj", "rest", t, q * dh, d, dt),
    ]
    if tp > 1:
        ops.append(AllReduce("allreduce_attn", "rest", t * d * dt, tp))
    ops += [
        Vector("residual_1", "rest", t * d, 1.0, dt),
        Vector("layernorm_2", "rest", t * d, 5.0, dt),
        Gemm("ffn_up", "rest", t, d, up_mats * f_shard, dt, sets, rows),
        Vector(f"act_{model.activation}", "rest", t * f_shard * model.moe_top_k,
               8.0 if model.ffn_kind == "plain" else 9.0, dt, 0 if model.ffn_kind == "plain" else 1),
        Gemm("ffn_down", "rest", t, f_shard, d, dt, sets, rows),
    ]
    if tp > 1:
        ops.append(AllReduce("allreduce_ffn", "rest", t * d * dt, tp))
    ops.append(Vector("residual_2", "rest", t * d, 1.0, dt))
    return ops


def attention_ops(model: ModelSpec, tp: int, context_lens: np.ndarray) -> list:
    """Score GEMV, softmax and context GEMV of one layer for requests with the given context lengths."""
    q, kv = shard_heads(model, tp)
    lens = np.asarray(context_lens, dtype=np.int64)
    return [
        Attention("attn_score", "score", lens, q, kv, model.head_dim, model.dtype_bytes),
        Vector("softmax", "attention", float(q * lens.sum()), 5.0, model.dtype_bytes),  # max, sub, exp, sum, div [I]
        Attention("attn_context", "context", lens, q, kv, model.head_dim, model.dtype_bytes),
    ]


def lm_head_op(model: ModelSpec, tp: int, tokens: np.ndarray | float) -> Gemm:
    """The LM head (once per iteration, on the last pipeline stage): rows x d x vocab/tp."""
    return Gemm("lm_head", "head", np.asarray(tokens, dtype=float), model.d_model, -(-model.vocab // tp),
                model.dtype_bytes)


def decode_layer_ops(model: ModelSpec, tp: int, context_lens: np.ndarray) -> list:
    """All ops of one decode layer, in execution order, for a batch with the given context lengths."""
    b = float(len(context_lens))
    fc = fc_ops(model, tp, b)
    qkv = [o for o in fc if o.phase == "qkv"]
    rest = [o for o in fc if o.phase == "rest"]
    return qkv + attention_ops(model, tp, context_lens) + rest


def prefill_ops(model: ModelSpec, tp: int, prompt_lens: np.ndarray) -> list:
    """Ops of one prefill layer: FC over all prompt tokens, causal attention as dense GEMMs.

    Causal attention of a prompt of length P costs 2 * P*(P+1)/2 * dh FLOPs per head for scores
    and the same for context; it runs on the NPU as GEMMs (compute-bound).
    """
    lens = np.asarray(prompt_lens, dtype=float)
    return prefill_ops_for(model, tp, float(lens.sum()), float((lens * (lens + 1) / 2).sum()))


def prefill_ops_for(model: ModelSpec, tp: int, tokens, causal_pairs) -> list:
    """:func:`prefill_ops` from what it depends on: the prompts' total tokens and total causal pairs
    sum(P (P + 1) / 2) (scalars, or arrays over micro-batches: every op size is then an array)."""
    tokens = np.asarray(tokens, dtype=float) if np.ndim(tokens) else float(tokens)
    ops = fc_ops(model, tp, tokens)
    qkv = [o for o in ops if o.phase == "qkv"]
    rest = [o for o in ops if o.phase == "rest"]
    return qkv + prefill_attention_ops(model, tp, tokens, causal_pairs) + rest


def prefill_attention_ops(model: ModelSpec, tp: int, tokens, causal_pairs) -> list:
    """The causal attention of :func:`prefill_ops_for` (its only ops that depend on more than the tokens), between
    the 'qkv' and the 'rest' ops: per query head, score (P x dh) @ (dh x P) causal half and context
    (P x P/2) @ (P x dh), modelled as GEMMs with m = tokens * q_heads rows and a mean causal span of
    tri / tokens keys."""
    tokens = np.asarray(tokens, dtype=float) if np.ndim(tokens) else float(tokens)
    q, _ = shard_heads(model, tp)
    span = np.maximum(np.round(causal_pairs / np.maximum(tokens, 1.0)), 1)
    span = span.astype(float) if np.ndim(span) else int(span)
    return [
        Gemm("prefill_score", "attention", tokens * q, model.head_dim, span, model.dtype_bytes,
             streams_weights=False),
        Gemm("prefill_context", "attention", tokens * q, span, model.head_dim, model.dtype_bytes,
             streams_weights=False),
    ]
