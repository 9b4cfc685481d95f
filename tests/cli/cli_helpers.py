"""Helpers shared by the CLI test modules (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel


def leaf_fields(cls: type[BaseModel], prefix: tuple[str, ...] = ()):
    """(path, annotation, metadata) of every leaf field below ``cls`` (nested specs walked)."""
    for name, field in cls.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) if (isinstance(ann, types.UnionType) or typing.get_origin(ann)) else (ann,)
        subs = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if subs:
            yield from leaf_fields(subs[0], (*prefix, name))
        else:
            yield (*prefix, name), ann, field.metadata
