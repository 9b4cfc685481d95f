"""Serving: the continuous-batching loop, its admission policies, and prefill costs."""
