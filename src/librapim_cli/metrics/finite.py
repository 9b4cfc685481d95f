"""Results must be finite numbers: a NaN or an infinity is a model error (exit code 1), never a figure.

The spec bounds (docs/model/specs.md) keep every input finite and in a sane range, so a non-finite result
means the model met a regime it does not support. ``finite_results`` wraps a simulation entry point:
numpy's overflow and invalid-value warnings are silenced inside it (they would print extra lines on
stderr), and every metric and latency figure of the result is checked afterwards.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from ..errors import ModelError

F = TypeVar("F", bound=Callable[..., Any])


def non_finite(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(key, value) of every number in ``values`` (nested mappings included) that is NaN or infinite."""
    bad: list[tuple[str, Any]] = []
    for key, v in values.items():
        if isinstance(v, Mapping):
            bad += non_finite(v, f"{prefix}{key}.")
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not math.isfinite(float(v)):
            bad.append((f"{prefix}{key}", v))
    return bad


def check_result(result: Any) -> Any:
    """``result`` if its metrics and latency are all finite; ModelError naming the first bad figure otherwise."""
    bad = non_finite(getattr(result, "metrics", None) or {})
    bad += non_finite(getattr(result, "latency", None) or {}, "latency.")
    if bad:
        key, value = bad[0]
        s = getattr(result, "setup", None)
        what = f"{s.system.name} / {s.model.name} / batch {s.batch}" if s is not None else "this simulation"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ModelError(f"the model produced a non-finite {key} ({value}){more} for {what}: an unsupported "
                         "regime, e.g. an extreme spec value; bring the values nearer the presets' and report it "
                         "if they are realistic")
    return result


def finite_results(fn: F) -> F:
    """Decorator: run ``fn`` with numpy's floating-point warnings silenced, then ``check_result`` its return."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = fn(*args, **kwargs)
        return check_result(result)

    return wrapper  # type: ignore[return-value]
