"""Serving admission policies (an extension point): who is admitted, how the KV cache is accounted, and who
is preempted when it runs out.

Each policy is one module with an :class:`AdmissionPolicy` subclass, registered here; ``system.serving.
admission`` (or ``simulate --policy``) names one. To add a policy: write a module next to these and add one
``register(...)`` line below; ``tests/admission/`` runs every registered policy through the same
conformance suite and the serving loop's invariants.
"""

from __future__ import annotations

from .base import AdmissionPolicy, PolicyParams
from .paged import Paged
from .reserve import Reserve

_REGISTRY: dict[str, AdmissionPolicy] = {}


def register(policy: AdmissionPolicy) -> AdmissionPolicy:
    """Make ``policy`` available under ``policy.name`` (a name may be registered once)."""
    if not policy.name or policy.name in _REGISTRY:
        raise ValueError(f"admission policy name {policy.name!r} is empty or already registered")
    _REGISTRY[policy.name] = policy
    return policy


def get(name: str) -> AdmissionPolicy:
    """The registered policy called ``name`` (KeyError if none)."""
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Names of every registered policy, in registration order."""
    return tuple(_REGISTRY)


for _policy in (Reserve(), Paged()):
    register(_policy)

__all__ = ["AdmissionPolicy", "PolicyParams", "get", "names", "register"]
