"""A name -> object registry, the shape every extension point shares (concurrency modes, admission policies)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects with a ``name`` attribute, registered once each, in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what  # e.g. "concurrency mode", for error messages
        self.items: dict[str, T] = {}

    def register(self, obj: T) -> T:
        """Make ``obj`` available under ``obj.name`` (a name may be registered once)."""
        name = getattr(obj, "name", "")
        if not name or name in self.items:
            raise ValueError(f"{self.what} name {name!r} is empty or already registered")
        self.items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The registered object called ``name`` (KeyError if none)."""
        return self.items[name]

    def names(self) -> tuple[str, ...]:
        """Names of every registered object, in registration order."""
        return tuple(self.items)
