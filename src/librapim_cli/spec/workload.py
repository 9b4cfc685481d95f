"""Traffic: request lengths (dataset statistics, fixed, or a CSV trace), count, batch, arrivals."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Spec
from .limits import MAX_BATCH, MAX_REQUESTS, MAX_SEED, MAX_TOKENS


class LengthStats(Spec):
    """Published statistics of one length distribution (tokens)."""

    mean: float = Field(gt=0, le=MAX_TOKENS, description="Mean length, tokens.")
    median: float = Field(gt=0, le=MAX_TOKENS, description="Median length, tokens.")
    p90: float = Field(gt=0, le=MAX_TOKENS, description="90th percentile, tokens.")
    p99: float = Field(gt=0, le=MAX_TOKENS, description="99th percentile, tokens.")
    min: int = Field(default=1, ge=1, le=MAX_TOKENS, description="Smallest length generated.")
    max: int = Field(ge=1, le=MAX_TOKENS, description="Largest length generated (cap).")

    @model_validator(mode="after")
    def _check(self) -> LengthStats:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        for key in ("mean", "median"):
            v = getattr(self, key)
            if not self.min <= v <= self.max:
                raise ValueError(f"{key} ({v:g}) must lie between min ({self.min}) and max ({self.max})")
        return self


class WorkloadSpec(Spec):
    """What the system serves."""

    name: str = Field(min_length=1, max_length=200, description="Preset name of the workload.")
    source: str = Field(description="Where the length statistics or trace come from.")
    description: str = Field(default="", description="One-line human summary.")
    lengths: Literal["dataset", "fixed", "trace"] = Field(description="How request lengths are produced.")
    input_stats: LengthStats | None = Field(default=None, description="lengths='dataset': prompt length statistics.")
    output_stats: LengthStats | None = Field(default=None, description="lengths='dataset': output length statistics.")
    input_len: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="lengths='fixed': prompt tokens per request.")
    output_len: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="lengths='fixed': output tokens per request.")
    trace_path: str | None = Field(default=None, min_length=1,
                                   description="lengths='trace': CSV with input_len, output_len[, arrival_s].")
    max_seq_len: int = Field(default=2048, ge=2, le=MAX_TOKENS, description="Cap on input + output tokens (NeuPIMs caps at 2048).")
    num_requests: int = Field(ge=1, le=MAX_REQUESTS, description="Requests to serve.")
    max_batch: int = Field(ge=1, le=MAX_BATCH, description="Maximum requests decoded together in one iteration.")
    arrival: Literal["closed", "poisson", "trace"] = Field(
        default="closed", description="All requests at t=0 ('closed'), Poisson at rate_per_s, or the trace's arrival_s.")
    rate_per_s: float | None = Field(default=None, ge=1e-6, le=1e9,
                                     description="arrival='poisson': mean arrivals per second.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed for length sampling and arrivals.")

    @model_validator(mode="after")
    def _check(self) -> WorkloadSpec:
        if self.lengths == "dataset" and (self.input_stats is None or self.output_stats is None):
            raise ValueError("lengths='dataset' needs input_stats and output_stats")
        if self.lengths == "fixed" and (self.input_len is None or self.output_len is None):
            raise ValueError("lengths='fixed' needs input_len and output_len")
        if self.lengths == "trace" and not self.trace_path:
            raise ValueError("lengths='trace' needs trace_path")
        if self.arrival == "trace" and self.lengths != "trace":
            raise ValueError("arrival='trace' needs lengths='trace' (the CSV's arrival_s column)")
        if self.arrival == "poisson" and self.rate_per_s is None:
            raise ValueError("arrival='poisson' needs rate_per_s")
        return self
