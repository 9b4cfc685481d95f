"""Metrics: one registry of definitions (``registry``) and their computation from summed figures (``compute``)."""

from .compute import SUMMED, iteration_metrics
from .registry import (
           LATENCIES,
           LATENCY_STATS,
           METRICS,
           MetricDef,
           format_metric,
           get,
           keys,
           label,
           latency_keys,
)

__all__ = ["LATENCIES", "LATENCY_STATS", "METRICS", "SUMMED", "MetricDef", "format_metric", "get",
           "iteration_metrics", "keys", "label", "latency_keys"]
