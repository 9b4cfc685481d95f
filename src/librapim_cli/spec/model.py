"""Transformer model shape (decoder-only LLM)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Spec


class ModelSpec(Spec):
    """Shape of a decoder-only transformer; derived sizes follow docs/sources.md#s7."""

    name: str = Field(min_length=1, max_length=200, description="Preset name of the model, e.g. 'gpt3-7b'.")
    source: str = Field(description="Paper, config file or repository the shape comes from.")
    description: str = Field(default="", description="One-line human summary.")
    layers: int = Field(ge=1, le=1024, description="Number of decoder layers.")
    d_model: int = Field(ge=1, le=131072, description="Hidden (embedding) dimension.")
    heads: int = Field(ge=1, le=4096, description="Number of query heads.")
    kv_heads: int = Field(ge=1, le=4096, description="Number of key/value heads (= heads for MHA, < heads for GQA, 1 for MQA).")
    head_dim: int = Field(ge=1, le=16384, description="Dimension of one attention head.")
    ffn_dim: int = Field(ge=1, le=2**20, description="Inner dimension of the feed-forward network (per expert for MoE).")
    ffn_kind: Literal["plain", "gated"] = Field(
        description="'plain': 2 matrices (up, down); 'gated': 3 matrices (gate, up, down, e.g. SwiGLU).")
    activation: Literal["gelu", "relu", "silu"] = Field(description="FFN activation function.")
    vocab: int = Field(ge=1, le=2**24, description="Vocabulary size (LM head and embedding rows).")
    dtype_bytes: int = Field(default=2, ge=1, le=8, description="Bytes per weight / activation / KV element (2 = FP16).")
    moe_experts: int = Field(default=1, ge=1, le=4096, description="Number of FFN experts (1 = dense).")
    moe_top_k: int = Field(default=1, ge=1, le=4096, description="Experts each token is routed to.")
    default_tp: int = Field(default=1, ge=1, le=4096, description="Tensor-parallel degree used when the system leaves tp unset.")
    default_pp: int = Field(default=1, ge=1, le=1024, description="Pipeline-parallel degree used when the system leaves pp unset.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.moe_top_k > self.moe_experts:
            raise ValueError(f"moe_top_k ({self.moe_top_k}) must be <= moe_experts ({self.moe_experts})")
        return self

    # ---- derived quantities -------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 = MHA, heads = MQA)."""
        return self.heads // self.kv_heads

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in one FFN (2 plain, 3 gated)."""
        return 3 if self.ffn_kind == "gated" else 2

    @property
    def attn_params_per_layer(self) -> int:
        """Q, K, V and output-projection weights: d*H*dh + 2*d*KV*dh + H*dh*d."""
        d, h, kv, dh = self.d_model, self.heads, self.kv_heads, self.head_dim
        return d * h * dh + 2 * d * kv * dh + h * dh * d

    @property
    def ffn_params_per_layer(self) -> int:
        """FFN weights of all experts: experts * matrices * d * f."""
        return self.moe_experts * self.ffn_matrices * self.d_model * self.ffn_dim

    @property
    def params_per_layer(self) -> int:
        """Weights of one layer, excluding norms and biases (docs/sources.md#s7 formula)."""
        return self.attn_params_per_layer + self.ffn_params_per_layer

    @property
    def active_params_per_layer(self) -> int:
        """Weights one token touches in one layer (top-k experts for MoE)."""
        return self.attn_params_per_layer + self.moe_top_k * self.ffn_matrices * self.d_model * self.ffn_dim

    @property
    def embedding_params(self) -> int:
        """Token embedding (tied with the LM head): vocab * d."""
        return self.vocab * self.d_model

    @property
    def total_params(self) -> int:
        """All weights: layers * params_per_layer + embedding."""
        return self.layers * self.params_per_layer + self.embedding_params

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights at dtype_bytes per element."""
        return self.total_params * self.dtype_bytes

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        """K and V of one token in one layer: 2 * KV * dh * dtype_bytes."""
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers: 2 * KV * dh * dtype_bytes * layers."""
        return self.kv_bytes_per_token_per_layer * self.layers
