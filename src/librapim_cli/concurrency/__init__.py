"""Concurrency modes: how NPU memory traffic and PIM compute share a DRAM channel (an extension point).

Each mode is one module with a :class:`ConcurrencyMode` subclass, registered here. The specs validate
``system.concurrency.mode`` against :func:`names`; the cost tables bind the mode to its run constants
(:class:`ModeParams`); the engine, the breakdown and DBO call only the interface. To add a mode: write a
module next to these, and add one ``register(...)`` line below; ``tests/concurrency/`` runs every
registered mode through the same conformance suite.
"""

from __future__ import annotations

from .base import ConcurrencyMode, ModeParams
from .blocked import Blocked
from .dex import DEX
from .dual_row_buffer import DualRowBuffer
from .separate import Separate
from .time_interleaved import TimeInterleaved

_REGISTRY: dict[str, ConcurrencyMode] = {}


def register(mode: ConcurrencyMode) -> ConcurrencyMode:
    """Make ``mode`` available under ``mode.name`` (a name may be registered once)."""
    if not mode.name or mode.name in _REGISTRY:
        raise ValueError(f"concurrency mode name {mode.name!r} is empty or already registered")
    _REGISTRY[mode.name] = mode
    return mode


def get(name: str) -> ConcurrencyMode:
    """The registered mode called ``name`` (KeyError if none)."""
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Names of every registered mode, in registration order."""
    return tuple(_REGISTRY)


for _mode in (Blocked(), TimeInterleaved(), DualRowBuffer(), DEX(), Separate()):
    register(_mode)

__all__ = ["ConcurrencyMode", "ModeParams", "get", "names", "register"]
