"""The JSON documents the CLI prints with ``--json``: built from library results, plain JSON types only.

Every document is a dict whose keys always appear in the same order; numpy scalars and arrays become
Python numbers and lists, and non-finite floats become ``null`` (strict JSON has no NaN or Infinity).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..simulate import SCHEMA_VERSION

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..simulate import SimResult
    from ..spec.loading import PresetInfo


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy -> Python, tuples -> lists, NaN/inf -> None, dict keys -> str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    if isinstance(value, Sequence):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    raise TypeError(f"jsonable: cannot convert {type(value).__name__} to JSON")


def dumps(doc: Any) -> str:
    """The document as indented, strict JSON text (one document, no trailing newline)."""
    return json.dumps(jsonable(doc), indent=2, allow_nan=False, ensure_ascii=False)


# ---- simulate --------------------------------------------------------------------------------
def simulation_document(result: SimResult, breakdown: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"schema_version", "inputs", "metrics", "notes"[, "latency"][, "breakdown"]}`` for one simulation.

    ``notes``: settings that were clamped or have no effect (``inputs.setup_notes``), one string each.
    """
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "inputs": result.inputs,
        "metrics": dict(result.metrics),
        "notes": list(result.setup.notes),
    }
    if result.latency is not None:
        doc["latency"] = result.latency
    if breakdown is not None:
        doc["breakdown"] = list(breakdown)
    return jsonable(doc)


def speedups(results: Mapping[str, SimResult], baseline: str) -> dict[str, float | None]:
    """Throughput of each system divided by the baseline's (None when the baseline's throughput is 0)."""
    base = float(results[baseline].metrics["throughput_tokens_per_s"])
    return {name: (float(r.metrics["throughput_tokens_per_s"]) / base if base > 0 else None)
            for name, r in results.items()}


def comparison_document(results: Mapping[str, SimResult], baseline: str) -> dict[str, Any]:
    """``{"schema_version", "inputs", "baseline", "systems", "speedup", "notes"[, "latency"]}`` for ``--compare``.

    ``inputs`` holds what the systems share (model, workload, batch, requests, mode); each system's own
    resolved spec is what ``librapim presets show`` prints. ``notes``: ``comparison_notes``.
    """
    first = next(iter(results.values()))
    inputs = first.inputs
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "inputs": {k: inputs[k] for k in ("model", "workload", "batch", "requests", "mode")},
        "baseline": baseline,
        "systems": {name: dict(r.metrics) for name, r in results.items()},
        "speedup": speedups(results, baseline),
        "notes": comparison_notes(results),
    }
    if any(r.latency is not None for r in results.values()):
        doc["latency"] = {name: r.latency for name, r in results.items()}
    return jsonable(doc)


def comparison_notes(results: Mapping[str, SimResult]) -> list[str]:
    """The notes of compared systems, once each: a note every system has as it is, the others as
    ``<system>: <note>``."""
    notes = {name: list(r.setup.notes) for name, r in results.items()}
    shared = [n for n in next(iter(notes.values()), []) if all(n in v for v in notes.values())]
    out = list(shared)
    for name, items in notes.items():
        out += [f"{name}: {n}" for n in items if n not in shared]
    return out


# ---- presets ---------------------------------------------------------------------------------
def presets_list_document(infos: Sequence[PresetInfo]) -> list[dict[str, Any]]:
    """One record per bundled preset: name, kind, summary, source, path."""
    return [{"name": p.name, "kind": p.kind, "summary": p.summary, "source": p.source, "path": str(p.path)}
            for p in infos]


def _hardware_derived(hw: Any) -> dict[str, Any]:
    mem = hw.memory
    return {
        "npu_peak_flops": hw.npu.peak_flops,
        "npu_vector_flops": hw.npu.vector_flops,
        "ridge_flop_per_byte": hw.ridge_flop_per_byte,
        "external_bw_bytes_per_s": mem.bw_bytes_per_s,
        "channels": mem.channels,
        "banks": mem.banks,
        "bank_column_bw_bytes_per_s": mem.bank_column_bw_bytes_per_s,
        "pim_units": hw.pim_units,
        "pim_peak_flops": hw.pim_peak_flops,
        "pim_internal_bw_bytes_per_s": hw.pim_internal_bw_bytes_per_s,
        "pim_bw_ratio": hw.pim_bw_ratio,
        "refresh_derate": mem.refresh_derate,
        "capacity_bytes": mem.capacity_bytes,
    }


def derived_quantities(kind: str, spec: Any) -> dict[str, Any]:
    """Quantities computed from a preset (units in the key suffix); empty for kinds without any."""
    if kind == "model":
        d = {
            "attn_params_per_layer": spec.attn_params_per_layer,
            "ffn_params_per_layer": spec.ffn_params_per_layer,
            "params_per_layer": spec.params_per_layer,
        }
        if spec.moe_experts > 1:
            d["active_params_per_layer"] = spec.active_params_per_layer
        d.update({
            "total_params": spec.total_params,
            "weight_bytes": spec.weight_bytes,
            "kv_bytes_per_token_per_layer": spec.kv_bytes_per_token_per_layer,
            "kv_bytes_per_token": spec.kv_bytes_per_token,
        })
        return d
    if kind == "hardware":
        return _hardware_derived(spec)
    if kind == "system":
        return {f"hardware.{k}": v for k, v in _hardware_derived(spec.hardware).items()}
    return {}


def preset_document(kind: str, name: str, spec: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """``{"kind", "name", "values", "derived"}``: the resolved preset and what follows from it.

    ``spec`` is a validated spec, or the raw TOML data for kinds the spec package does not validate.
    """
    values = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
    derived = derived_quantities(kind, spec) if hasattr(spec, "model_dump") else {}
    return jsonable({"kind": kind, "name": name, "values": values, "derived": derived})
