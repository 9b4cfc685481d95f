"""``reserve``: admission reserves a request's whole KV (prompt + every output token) up front, so the active
set never outgrows the cache and nothing is ever preempted (librapim's original policy; reserving up front
admits somewhat fewer requests than allocating on demand)."""

from __future__ import annotations

from .base import AdmissionPolicy, PolicyParams


class Reserve(AdmissionPolicy):
    name = "reserve"
    summary = "FCFS; reserve prompt + output KV at admission; never preempt"
    static_hold = True

    def capacity_units(self, p: PolicyParams) -> int:
        return p.capacity_tokens

    def admission_units(self, p: PolicyParams, prompt, output, generated):
        """P + O tokens."""
        return prompt + output

    def held_units(self, p: PolicyParams, ctx, prompt, output):
        """P + O tokens, whatever the context."""
        return prompt + output
