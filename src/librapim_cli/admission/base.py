"""The interface every serving admission policy implements (docs/model/serving.md, 'Admission policies').

A policy owns the KV-cache accounting of the serving loop: in what units the cache is allocated, what a
waiting request needs to be admitted, what an active request holds as its context grows, and (for
policies that allocate on demand) when the active set outgrows the cache and whom to preempt. The loop
calls only these methods; its order is admit -> prefill -> decode -> retire.

Sizes are per device, in whole KV tokens (``capacity_tokens``: the cache left after weights). A request has
prompt ``P``, ``O`` output tokens and has generated ``g`` of them; after a prefill that produced token g,
its next decode iteration sees context ``P + g`` (docs/model/serving.md).

``admission_units`` and ``held_units`` are element-wise (request i's units depend on its entries only) and
return whole units (integer arrays): the loop computes the units of never-admitted requests once per run, and
keeps a static holding up to date by adding and subtracting requests' units as they come and go.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """What a policy needs to know of the system (``system.serving`` and the KV capacity)."""

    capacity_tokens: int  # KV tokens that fit the memory left after weights, per device
    block_tokens: int = 16  # paged: tokens per KV block
    watermark_fraction: float = 0.0  # paged: share of blocks kept free when admitting


class AdmissionPolicy(ABC):
    """First-come first-served admission with a KV-cache accounting rule."""

    #: the name presets and ``--policy`` use
    name: str = ""
    #: one line for docs and ``--help``
    summary: str = ""
    #: True if the active set can outgrow the cache (then ``overflow_at`` and ``victims`` matter)
    preempts: bool = False
    #: True if what a request holds does not change while it decodes (``held_units`` ignores ``ctx``)
    static_hold: bool = False

    @abstractmethod
    def capacity_units(self, p: PolicyParams) -> int:
        """Units the cache holds."""

    @abstractmethod
    def admission_units(self, p: PolicyParams, prompt: np.ndarray, output: np.ndarray,
                        generated: np.ndarray) -> np.ndarray:
        """Units each waiting request must get to be admitted (it is prefilled over P + g tokens)."""

    @abstractmethod
    def held_units(self, p: PolicyParams, ctx: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
        """Units each active request holds while decoding at context ``ctx``."""

    def admission_budget(self, p: PolicyParams, used: int) -> int:
        """Units admissions may take when the active set holds ``used``."""
        return self.capacity_units(p) - used

    def overflow_at(self, p: PolicyParams, ctx: np.ndarray, prompt: np.ndarray, output: np.ndarray,
                    steps: int) -> int:
        """First j in [0, steps) at which the active set at contexts ``ctx + j`` holds more than the cache
        (``steps`` if never). Policies that reserve everything up front never overflow."""
        return steps

    def victims(self, p: PolicyParams, ctx: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> int:
        """How many of the most recently admitted active requests (the last columns) to preempt so that the
        rest fit at contexts ``ctx`` (0 if they already fit)."""
        held = self.held_units(p, ctx, prompt, output)
        over = int(held.sum()) - self.capacity_units(p)
        if over <= 0:
            return 0
        freed = np.cumsum(held[::-1])
        return int(np.searchsorted(freed, over, side="left")) + 1
