"""``paged``: vLLM-style paged KV allocation (Kwon et al., SOSP'23; vllm-project/vllm ``vllm/core/
block_manager_v1.py`` and ``vllm/core/scheduler.py``). The cache is split into blocks of ``block_tokens``
tokens; a request is admitted when the blocks of its current context fit (keeping ``watermark_fraction`` of
the blocks free), and takes a new block whenever its context crosses a block boundary. When a decode
iteration needs more blocks than are free, the most recently admitted requests are preempted by
*recompute*: their blocks are freed, they return to the front of the waiting queue, and on readmission a
prefill over their prompt and the tokens generated so far rebuilds their KV and produces their next token.
"""

from __future__ import annotations

import numpy as np

from .base import AdmissionPolicy, PolicyParams


def _blocks(tokens, b: int):
    return -(-np.asarray(tokens) // b)


class Paged(AdmissionPolicy):
    name = "paged"
    summary = "vLLM-style: KV blocks on demand, admit on the current context, preempt newest (recompute)"
    preempts = True

    def capacity_units(self, p: PolicyParams) -> int:
        """Whole blocks in the cache."""
        return p.capacity_tokens // p.block_tokens

    def admission_units(self, p: PolicyParams, prompt, output, generated):
        """Blocks for the context of the request's first decode iteration after its prefill: P + g + 1."""
        return _blocks(prompt + generated + 1, p.block_tokens)

    def held_units(self, p: PolicyParams, ctx, prompt, output):
        """Blocks holding ``ctx`` tokens."""
        return _blocks(ctx, p.block_tokens)

    def admission_budget(self, p: PolicyParams, used: int) -> int:
        """Free blocks minus the watermark (vLLM: int(watermark x blocks) kept free at admission)."""
        total = self.capacity_units(p)
        return total - used - int(p.watermark_fraction * total)

    def overflow_at(self, p: PolicyParams, ctx, prompt, output, steps: int) -> int:
        """Request i takes a new block at the j where ctx_i + j crosses into a new block, i.e. where
        (ctx_i + j - 1) mod B == 0 for j >= 1; with the residues' histogram the held blocks of every j follow
        from one cumulative sum."""
        b = p.block_tokens
        total = self.capacity_units(p)
        held0 = int(_blocks(ctx, b).sum())
        if held0 > total:
            return 0
        if steps <= 1 or ctx.shape[0] == 0:
            return steps
        hist = np.bincount((1 - ctx) % b, minlength=b)  # request i grows at j = (1 - ctx_i) mod B (+ k B)
        j = np.arange(1, steps)
        held = held0 + np.cumsum(hist[j % b])
        over = np.flatnonzero(held > total)
        return int(over[0]) + 1 if over.size else steps
