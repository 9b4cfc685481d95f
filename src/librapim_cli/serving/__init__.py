"""Requests and the continuous-batching serving loop."""

from .lengths import Requests, lognormal_params, make_requests, read_trace, sample_lengths

__all__ = ["Requests", "lognormal_params", "make_requests", "read_trace", "sample_lengths"]
