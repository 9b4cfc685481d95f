"""A system: devices, parallelism, link, op placement, concurrency mode, schedule options and DBO."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .. import admission, concurrency
from .base import Spec
from .hardware import HardwareSpec
from .limits import MAX_BATCH, MAX_SEED


class ConcurrencySpec(Spec):
    """How NPU memory traffic and PIM compute share the DRAM banks (docs/model/concurrency.md)."""

    mode: str = Field(description="A registered concurrency mode (librapim_cli.concurrency): blocked | time_interleaved "
                                  "| dual_row_buffer | dex | separate.")
    area_overhead_fraction: float = Field(ge=0, le=1, description="DRAM die area added by the mode, as a fraction.")
    area_source: str = Field(description="Where the area overhead figure comes from.")
    switch_quantum_ns: float = Field(
        default=3900.0, ge=1e-3, le=1e9,
        description="time_interleaved: length of one PIM/normal slot between mode switches, ns.")
    partial_batch_offload: bool = Field(
        default=False,
        description="DEX option from the same group's Bank-Split PIM (DAC'25 'Partial Batch Offloading'): FC token "
                    "rows DBO moves to the PIM ride the weight rows the NPU is streaming (the alternate I/O buffer "
                    "gets a copy), up to the PIM's input vectors per row, with no activation of their own. Only "
                    "modes whose PIM can compute on the streamed rows (dex) use it; elsewhere it has no effect.")

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        if v not in concurrency.names():
            raise ValueError(f"unknown concurrency mode {v!r}; choose one of {', '.join(concurrency.names())}")
        return v



class LinkSpec(Spec):
    """Device-to-device interconnect used by tensor/pipeline parallel collectives."""

    bw_bytes_per_s: float = Field(ge=1e6, le=1e15, description="Per-direction link bandwidth of one device, bytes/s.")
    latency_s: float = Field(ge=0, le=1, description="Per-hop latency, seconds.")
    allreduce: Literal["ring", "one_shot", "tree"] = Field(
        default="ring",
        description="All-reduce algorithm (docs/model/npu.md, 'Collectives'): 'ring' (2(n-1) steps of payload/n: "
                    "NCCL ring, GenZ, LLMCompass ring), 'one_shot' ((n-1) steps of payload/n: a switch-based "
                    "reduce, AttAcc's model, LLMCompass fully connected), 'tree' (2 log2(n) hops, payload twice: "
                    "NCCL tree).")
    collective_start_s: float = Field(
        default=0.0, ge=0, le=1, description="Fixed start time of one collective, seconds (GenZ: 5 us).")
    source: str = Field(description="Where the link numbers come from.")


class PlacementSpec(Spec):
    """Where each op class runs before DBO moves anything."""

    fc: Literal["npu", "pim", "ffn_split"] = Field(
        default="npu",
        description="FC / GEMM ops (QKV, projection, FFN) and the LM head: 'npu' (DBO may move token rows or column "
                    "tiles to the PIM), 'pim': every FC GEMM and the LM head run on the PIM as GEMVs, the vector "
                    "ops (norms, activations, residuals) stay on the NPU (Samsung HBM-PIM / SK hynix AiM style), or "
                    "'ffn_split': the FFN GEMMs' output columns are split between the NPU and the PIM so that both "
                    "finish together (AttAcc's FFN co-processing); every other GEMM stays on the NPU.")
    attention: Literal["npu", "pim"] = Field(description="Decode attention GEMVs: on the NPU or on the PIM.")
    softmax: Literal["npu", "pim"] = Field(
        default="npu",
        description="The attention softmax when attention runs on the PIM: 'npu' (the scores go to the NPU's vector "
                    "units and back over the channel bus, NeuPIMs) or 'pim' (a softmax unit inside the stack, the "
                    "scores never leave it, AttAcc).")
    kv_layout: Literal["request", "head"] = Field(
        default="request",
        description="Where a request's KV cache lives: 'request' (all its heads in one channel, NeuPIMs' layout) or "
                    "'head' (its KV heads spread over consecutive channels, AttAcc's head-wise mapping).")
    kv_channel_policy: Literal["round_robin", "least_loaded"] = Field(
        default="least_loaded", description="How a request's KV cache is assigned to one HBM channel.")


class DBOSpec(Spec):
    """Dynamic Batch Offloading (LibraPIM): per-iteration rebalancing between NPU and PIM."""

    enabled: bool = Field(description="Run the DBO optimizer every iteration.")
    attention_to_npu: bool = Field(default=True, description="Allow moving requests' attention from PIM to the NPU.")
    fc_to_pim: bool = Field(default=True, description="Allow moving FC token rows from the NPU to the PIM.")
    attention_by_heads: bool = Field(
        default=True, description="Move attention at the granularity of one KV head (with its query heads), not only "
                                  "of whole requests.")
    joint: bool = Field(
        default=True, description="Also consider moving FC rows to the PIM and attention to the NPU in the same stage.")
    fc_columns: bool = Field(
        default=True, description="Also move FC output-column tiles (1/32 of every GEMM's columns each) to the PIM: "
                                  "unlike token rows, they shrink the NPU's weight stream.")
    lm_head: bool = Field(
        default=True, description="Also rebalance the LM head: vocabulary-column tiles (1/32 each) to the PIM.")
    prediction_error: float = Field(
        default=0.0, ge=0, lt=1,
        description="Relative error of DBO's predictor: each request's predicted PIM time is off by a seeded uniform factor in +/- this fraction.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the prediction-error noise.")


class ServingSpec(Spec):
    """How the serving loop admits requests and accounts the KV cache (docs/model/serving.md)."""

    admission: str = Field(
        default="reserve",
        description="A registered admission policy (librapim_cli.admission): 'reserve' (FCFS, reserve prompt + "
                    "output KV up front, never preempt) or 'paged' (vLLM-style blocks on demand, preempt the "
                    "newest request by recompute).")
    kv_block_tokens: int = Field(
        default=16, ge=1, le=4096,
        description="paged: tokens per KV block (vLLM's default block size, 16).")
    watermark_fraction: float = Field(
        default=0.01, ge=0, lt=1,
        description="paged: share of the KV blocks kept free when admitting (vLLM's BlockSpaceManager default, 0.01).")

    @field_validator("admission")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in admission.names():
            raise ValueError(f"unknown admission policy {v!r}; choose one of {', '.join(admission.names())}")
        return v


class SystemSpec(Spec):
    """A complete system to simulate."""

    name: str = Field(min_length=1, max_length=200, description="Preset name of the system.")
    source: str = Field(description="Paper or repository whose system this models.")
    description: str = Field(default="", description="One-line human summary.")
    hardware: HardwareSpec = Field(description="The device (NPU + HBM + PIM), replicated tp * pp times.")
    tp: int | None = Field(default=None, ge=1, le=4096, description="Tensor-parallel degree (unset: the model's default_tp).")
    pp: int | None = Field(default=None, ge=1, le=1024, description="Pipeline-parallel degree (unset: the model's default_pp).")
    link: LinkSpec = Field(description="Device-to-device link.")
    placement: PlacementSpec = Field(description="Default op placement.")
    concurrency: ConcurrencySpec = Field(description="NPU-traffic / PIM-compute concurrency mode.")
    sub_batch_interleaving: bool = Field(description="Split the batch in two and overlap NPU FC with PIM attention.")
    sub_batch_min_batch: int = Field(
        default=2, ge=2, le=MAX_BATCH,
        description="scheduler 'rule': interleave only when the batch has at least this many requests.")
    scheduler: Literal["rule", "runtime"] = Field(
        default="rule",
        description="'rule': interleave by the fixed batch-size rule with NeuPIMs' channel split (a published "
                    "baseline's behaviour); 'runtime': every iteration choose, with DBO's predictor, between no "
                    "interleaving and interleaving with either channel-balanced split.")
    dbo: DBOSpec = Field(description="Dynamic Batch Offloading.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Serving admission policy and KV accounting.")

    @model_validator(mode="after")
    def _check(self) -> SystemSpec:
        if self.placement.attention == "pim" and self.hardware.pim is None:
            raise ValueError(f"placement.attention is 'pim' but hardware '{self.hardware.name}' has no PIM")
        if self.dbo.enabled and self.hardware.pim is None:
            raise ValueError("dbo.enabled needs hardware with PIM")
        if self.placement.fc != "npu" and self.hardware.pim is None:
            raise ValueError(f"placement.fc is {self.placement.fc!r} but hardware '{self.hardware.name}' has no PIM")
        if self.placement.fc != "npu" and self.dbo.enabled:
            raise ValueError(f"placement.fc = {self.placement.fc!r} fixes FC GEMMs on the PIM; DBO cannot rebalance "
                             "them (set dbo.enabled = false)")
        if self.placement.softmax == "pim" and self.placement.attention != "pim":
            raise ValueError("placement.softmax = 'pim' needs placement.attention = 'pim' (the scores are in the "
                             "stack only when the PIM computes them)")
        return self

    @property
    def uses_pim(self) -> bool:
        """True if any work can run on PIM."""
        return self.hardware.pim is not None and (self.placement.attention == "pim" or self.dbo.enabled
                                                   or self.placement.fc != "npu")
