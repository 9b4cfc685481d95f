"""Concurrency modes: how NPU memory traffic and PIM compute share a DRAM channel (an extension point).

Each mode is one module with a :class:`ConcurrencyMode` subclass, registered here. The specs validate
``system.concurrency.mode`` against :func:`names`; the cost tables bind the mode to its run constants
(:class:`ModeParams`); the engine, the breakdown and DBO call only the interface. To add a mode: write a
module next to these, and add one ``register(...)`` line below; ``tests/concurrency/`` runs every
registered mode through the same conformance suite.
"""

from __future__ import annotations

from ..registry import Registry
from .base import ConcurrencyMode, ModeParams
from .blocked import Blocked
from .dex import DEX
from .dual_row_buffer import DualRowBuffer
from .separate import Separate
from .time_interleaved import TimeInterleaved

_REGISTRY_OBJ: Registry[ConcurrencyMode] = Registry("concurrency mode")
_REGISTRY = _REGISTRY_OBJ.items  # name -> object (the conformance tests unregister their probes here)
register = _REGISTRY_OBJ.register
get = _REGISTRY_OBJ.get
names = _REGISTRY_OBJ.names

for _mode in (Blocked(), TimeInterleaved(), DualRowBuffer(), DEX(), Separate()):
    register(_mode)

__all__ = ["ConcurrencyMode", "ModeParams", "get", "names", "register"]
