"""Preset discovery, loading, ``--set`` overrides and turning validation errors into one-line messages.

Presets are TOML files under ``presets/<kind>s/``. They resolve the same way from a source checkout,
an editable install (the repository's ``presets/``) and a wheel (``librapim_cli/presets`` inside the
package). A path to a TOML file works everywhere a name does.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import PresetNotFound, SpecError
from .hardware import HardwareSpec
from .model import ModelSpec
from .system import SystemSpec
from .workload import WorkloadSpec

KINDS: dict[str, type[BaseModel] | None] = {
    "model": ModelSpec,
    "hardware": HardwareSpec,
    "system": SystemSpec,
    "workload": WorkloadSpec,
    "sweep": None,  # validated by librapim_cli.sweep (optuna lives there)
}
FOLDERS = {"model": "models", "hardware": "hardware", "system": "systems", "workload": "workloads", "sweep": "sweeps"}


def presets_root() -> Path:
    """Folder holding the bundled presets (inside the wheel, or the repository root's ``presets/``)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "presets"
    if packaged.is_dir():
        return packaged
    checkout = here.parent.parent / "presets"
    if checkout.is_dir():
        return checkout
    raise SpecError(f"bundled presets not found (looked in {packaged} and {checkout}); reinstall librapim")


@dataclass(frozen=True)
class PresetInfo:
    """One bundled preset file."""

    name: str
    kind: str
    path: Path
    summary: str
    source: str


#: a preset is a small TOML file (the largest bundled one is a few KiB)
MAX_PRESET_BYTES = 4 * 2**20


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_PRESET_BYTES:
            raise SpecError(f"{path}: {size / 2**20:.0f} MiB is too large for a preset (at most "
                            f"{MAX_PRESET_BYTES // 2**20} MiB); give a preset TOML file")
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}); fix the file's syntax") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text (binary, or another encoding such as UTF-16); save it as a UTF-8 "
                        "TOML file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror}); check the path and its permissions") from None


def list_presets(kind: str | None = None) -> list[PresetInfo]:
    """All bundled presets, optionally of one kind, sorted by kind then name."""
    if kind is not None and kind not in KINDS:
        raise SpecError(f"unknown preset kind '{kind}': choose one of {', '.join(KINDS)}")
    root = presets_root()
    out: list[PresetInfo] = []
    for k in KINDS if kind is None else [kind]:
        for path in sorted((root / FOLDERS[k]).glob("*.toml")):
            data = _read_toml(path)
            out.append(PresetInfo(path.stem, k, path, str(data.get("description", "")), str(data.get("source", ""))))
    return out


def preset_names(kind: str) -> list[str]:
    """Names of the bundled presets of one kind."""
    return [p.name for p in list_presets(kind)]


def looks_like_path(ref: str) -> bool:
    """True if a preset reference is a file path rather than a bundled name."""
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def resolve_preset_path(kind: str, ref: str) -> Path:
    """Path of a preset given by bundled name or by file path; PresetNotFound with close matches otherwise."""
    if looks_like_path(ref):
        p = Path(ref).expanduser()
        if p.is_file():
            return p
        if p.exists():
            raise PresetNotFound(f"{kind} preset '{ref}' is not a regular file (a folder or a device); give a .toml "
                                 f"file path or a bundled name (see `librapim presets list --kind {kind}`)")
        raise PresetNotFound(f"{kind} preset file '{ref}' does not exist; give an existing .toml path or a bundled name "
                             f"(see `librapim presets list --kind {kind}`)")
    path = presets_root() / FOLDERS[kind] / f"{ref}.toml"
    if path.is_file():
        return path
    names = preset_names(kind)
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise PresetNotFound(f"unknown {kind} preset '{ref}': {hint}see `librapim presets list --kind {kind}`")


def load_raw(kind: str, ref: str) -> dict[str, Any]:
    """The TOML of a preset as a dict, with a system's hardware reference expanded."""
    path = resolve_preset_path(kind, ref)
    data = _read_toml(path)
    if kind == "system" and isinstance(data.get("hardware"), str):
        data["hardware"] = load_raw("hardware", data["hardware"])
    if kind == "workload" and data.get("trace_path") and not Path(data["trace_path"]).is_absolute():
        # a trace path inside a preset is relative to the preset file
        data["trace_path"] = str((path.parent / data["trace_path"]).resolve())
    return data


# ---- overrides -------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """Parse an override value as a TOML literal (numbers, booleans, strings, arrays); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its path and parsed value."""
    if "=" not in item:
        raise SpecError(f"--set '{item}' is not of the form dotted.path=value (e.g. --set hardware.pim.mac_interval_ns=1.0)")
    key, _, value = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SpecError(f"--set '{item}' has an empty path; write dotted.path=value")
    return path, parse_value(value.strip())


def _fields_of(model: type[BaseModel] | None, path: list[str]) -> type[BaseModel] | None:
    """The pydantic model class reached by following ``path`` from ``model`` (None if not a model)."""
    for part in path:
        if model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        sub = None
        for cand in getattr(ann, "__args__", (ann,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                sub = cand
        model = sub
    return model


def apply_overrides(kind: str, data: dict[str, Any], sets: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Return a copy of ``data`` with each (path, value) override applied; unknown paths are SpecErrors."""
    import copy

    out = copy.deepcopy(data)
    root_model = KINDS[kind]
    for path, value in sets:
        node = out
        model = root_model
        for i, part in enumerate(path):
            if model is not None and part not in model.model_fields:
                allowed = ", ".join(model.model_fields)
                where = ".".join(path[:i]) or kind
                close = difflib.get_close_matches(part, list(model.model_fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise SpecError(f"--set {kind}.{'.'.join(path)}: '{part}' is not a field of {where}{hint}; "
                                f"fields: {allowed}")
            if i == len(path) - 1:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
                model = _fields_of(model, [part]) if model is not None else None
    return out


def split_overrides(items: list[str], roots: tuple[str, ...]) -> dict[str, list[tuple[list[str], Any]]]:
    """Group ``--set`` items by their first path element (``model.``, ``system.``, ``hardware.``...)."""
    groups: dict[str, list[tuple[list[str], Any]]] = {r: [] for r in roots}
    for item in items:
        path, value = parse_set(item)
        head = path[0]
        if head == "hardware" and "system" in groups and "hardware" not in groups:
            groups["system"].append((path, value))
            continue
        if head not in groups or len(path) < 2:
            starts = [r + "." for r in roots] + (["hardware."] if "system" in roots else [])
            owner = next((r for r in [*roots, "hardware"] if r in KINDS and KINDS[r] is not None
                          and head in KINDS[r].model_fields), None)  # type: ignore[union-attr]
            hint = f"did you mean --set {owner}.{item}?" if owner else f"e.g. --set {starts[-1]}pim.mac_interval_ns=1.0"
            raise SpecError(f"--set '{item}': the path must start with one of {', '.join(starts)} ({hint})")
        groups[head].append((path[1:], value))
    return groups


# ---- validation --------------------------------------------------------------------------------
def fmt_number(v: Any) -> str:
    """A bound or value as a short literal: ints as they are, floats as ``1e6``, ``0.001``, ``2.5``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    short = f"{v:g}"
    text = short if float(short) == v or v != v else repr(v)  # exact: never a rounded value
    return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _field_of(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> Any:
    """The pydantic FieldInfo at ``loc`` below ``model`` (None if the path leaves the spec tree)."""
    if model is None or not loc or not all(isinstance(p, str) for p in loc):
        return None
    parent = _fields_of(model, [str(p) for p in loc[:-1]])
    return None if parent is None else parent.model_fields.get(str(loc[-1]))


def allowed_range(field: Any) -> str:
    """``1 to 1024``, ``> 0 and <= 1``, ``>= 0``... from a field's numeric constraints ('' if it has none)."""
    lo = hi = ""
    for m in getattr(field, "metadata", ()):
        for attr, op in (("ge", ">="), ("gt", ">")):
            if getattr(m, attr, None) is not None:
                lo = f"{op} {fmt_number(getattr(m, attr))}"
        for attr, op in (("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                hi = f"{op} {fmt_number(getattr(m, attr))}"
    if lo.startswith(">= ") and hi.startswith("<= "):
        return f"{lo[3:]} to {hi[3:]}"
    return " and ".join(x for x in (lo, hi) if x)


_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
               "finite_number": "a finite number", "bool_type": "true or false", "string_type": "a string"}


def _ctx_bound(ctx: dict[str, Any]) -> str:
    for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f" (allowed: {op} {ctx[key]})"
    return f" (allowed: {ctx['expected']})" if "expected" in ctx else ""


def _describe_error(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """One clause for one pydantic error: ``path: what is wrong, got X (allowed: ...)``.

    With ``model`` (the spec class validated), the allowed range is the field's whole range (``1 to 1024``);
    without it, the bound the value broke (``>= 1``).
    """
    loc_t = tuple(err.get("loc", ()))
    loc = ".".join(str(p) for p in loc_t)
    msg = err.get("msg", "invalid")
    ctx = err.get("ctx") or {}
    typ = err.get("type", "")
    got = err.get("input")
    if typ == "extra_forbidden":
        return f"{loc}: unknown field; remove it or check the spelling (see `librapim presets show`)"
    if typ == "missing":
        return f"{loc}: required field is missing; add it"
    msg = msg[0].lower() + msg[1:] if msg else msg
    if typ == "value_error":
        msg = msg.removeprefix("value error, ")
        return f"{loc or 'spec'}: {msg}"
    if model is None:  # the bound the value broke, as pydantic reports it (the sweep spec's messages)
        return f"{loc}: {msg}, got {'a table' if isinstance(got, dict) else repr(got)}{_ctx_bound(ctx)}"
    field = _field_of(model, loc_t)
    rng = allowed_range(field) if field is not None else ""
    word = _TYPE_WORDS.get(typ)
    if word and rng:
        allowed = f" (allowed: {word}, {rng})"
    elif word:
        allowed = f" (allowed: {word})"
    elif rng:
        allowed = f" (allowed: {rng})"
    elif typ == "string_too_short" and ctx.get("min_length") == 1:
        allowed = " (allowed: a non-empty string)"
    else:
        allowed = _ctx_bound(ctx)
    if isinstance(got, dict):
        shown = "a table"
    elif isinstance(got, list):
        shown = "an array"
    elif isinstance(got, float):
        shown = fmt_number(got)
    else:
        shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    hint = ""
    if typ in ("int_type", "float_type", "bool_type") and isinstance(got, str):
        hint = "; write the value without quotes"
    return f"{loc}: {msg}, got {shown}{allowed}{hint}"


def validate(kind: str, data: dict[str, Any], label: str) -> BaseModel:
    """Validate a dict into the spec of ``kind``; one-line SpecError naming the first bad field."""
    model = KINDS[kind]
    assert model is not None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        first = _describe_error(errs[0], model)
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise SpecError(f"invalid {kind} '{label}': {first}{more}") from None


def load(kind: str, ref: str, sets: list[tuple[list[str], Any]] | None = None) -> Any:
    """Load, override and validate one preset (a bundled preset's TOML is read once per process; the overrides
    apply to a copy of it)."""
    if kind not in KINDS:
        raise SpecError(f"unknown preset kind '{kind}': choose one of {', '.join(KINDS)}")
    data = load_raw(kind, ref) if looks_like_path(ref) else _bundled_raw(kind, ref)
    data = apply_overrides(kind, data, sets) if sets else data
    return validate(kind, data, ref)


@lru_cache(maxsize=256)
def _bundled_raw(kind: str, name: str) -> dict[str, Any]:
    """A bundled preset's TOML, read once per process; callers never mutate it (``apply_overrides`` copies)."""
    return load_raw(kind, name)


@lru_cache(maxsize=256)
def load_bundled(kind: str, name: str) -> Any:
    """A bundled preset by name, validated once per process (the specs are frozen, so sharing is safe)."""
    return load(kind, name)


def load_model(ref: str, sets: list[tuple[list[str], Any]] | None = None) -> ModelSpec:
    """Load a model preset (name or path)."""
    return load("model", ref, sets) if (sets or looks_like_path(ref)) else load_bundled("model", ref)


def load_hardware(ref: str, sets: list[tuple[list[str], Any]] | None = None) -> HardwareSpec:
    """Load a hardware preset (name or path)."""
    return load("hardware", ref, sets) if (sets or looks_like_path(ref)) else load_bundled("hardware", ref)


def load_system(ref: str, sets: list[tuple[list[str], Any]] | None = None) -> SystemSpec:
    """Load a system preset (name or path), its hardware reference resolved."""
    return load("system", ref, sets) if (sets or looks_like_path(ref)) else load_bundled("system", ref)


def load_workload(ref: str, sets: list[tuple[list[str], Any]] | None = None) -> WorkloadSpec:
    """Load a workload preset (name or path)."""
    return load("workload", ref, sets) if (sets or looks_like_path(ref)) else load_bundled("workload", ref)
