"""The strict base every spec derives from: pydantic v2, strict types, finite numbers, extra fields forbidden, frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Strict, frozen, documented: unknown fields are an error, values never change after load.

    Strict mode: no silent coercion (``"32"`` is not an integer, ``true`` is not 1); an integer is accepted
    where a float is expected (TOML writes ``clock_hz = 1000000000`` as an integer). ``inf`` and ``nan`` are
    rejected everywhere (``allow_inf_nan=False``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False)
