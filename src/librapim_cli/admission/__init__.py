"""Serving admission policies (an extension point): who is admitted, how the KV cache is accounted, and who
is preempted when it runs out.

Each policy is one module with an :class:`AdmissionPolicy` subclass, registered here; ``system.serving.
admission`` (or ``simulate --policy``) names one. To add a policy: write a module next to these and add one
``register(...)`` line below; ``tests/admission/`` runs every registered policy through the same
conformance suite and the serving loop's invariants.
"""

from __future__ import annotations

from ..registry import Registry
from .base import AdmissionPolicy, PolicyParams
from .paged import Paged
from .reserve import Reserve

_REGISTRY_OBJ: Registry[AdmissionPolicy] = Registry("admission policy")
_REGISTRY = _REGISTRY_OBJ.items  # name -> object (the conformance tests unregister their probes here)
register = _REGISTRY_OBJ.register
get = _REGISTRY_OBJ.get
names = _REGISTRY_OBJ.names

for _policy in (Reserve(), Paged()):
    register(_policy)

__all__ = ["AdmissionPolicy", "PolicyParams", "get", "names", "register"]
