"""Steady-state batches of iteration mode (docs/model/workload.md, 'Steady-state batch')."""

from __future__ import annotations

import numpy as np

from ..inputs import Setup
from .requests import make_requests


def steady_state_batch(s: Setup, rng: np.random.Generator) -> np.ndarray:
    """Context lengths of a full batch in steady-state continuous batching.

    A slot holds a request picked with probability proportional to its output length (long requests
    occupy slots longer) at a uniformly random point of its decode: context = input + U * output.
    """
    reqs = make_requests(s.workload, max(s.requests, s.batch))
    w = reqs.output_len / reqs.output_len.sum()
    pick = rng.choice(len(reqs), size=s.batch, replace=True, p=w)
    u = rng.random(s.batch)
    return reqs.input_len[pick] + np.floor(u * reqs.output_len[pick]).astype(np.int64) + 1
