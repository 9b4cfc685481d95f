"""The strict base every spec derives from: pydantic v2, extra fields forbidden, frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Strict, frozen, documented: unknown fields are an error, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
