"""``librapim presets list | show | validate``: the bundled presets and user TOML files."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import PresetNotFound, SpecError
from ..inputs import check_spec
from ..report.console import make_console, render_preset, render_presets_list
from ..report.json_doc import dumps, preset_document, presets_list_document
from ..spec.loading import (
    FOLDERS,
    KINDS,
    _read_toml,
    apply_overrides,
    list_presets,
    load,
    load_raw,
    parse_set,
)

KIND_LIST = ", ".join(KINDS)
# keys that only a preset of one kind has at its top level (used when the folder name does not tell)
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("layers", "d_model", "heads"),
    "hardware": ("npu", "memory"),
    "system": ("placement", "concurrency", "dbo"),
    "workload": ("lengths", "num_requests", "max_batch"),
    "sweep": ("parameters", "objectives"),
}

presets_app = typer.Typer(
    help="List, show and validate presets (models, hardware, systems, workloads, sweeps).",
    no_args_is_help=True,
)

KindOption = Annotated[str | None, typer.Option("--kind", "-k", help=f"Preset kind: {KIND_LIST}.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]


def register(app: typer.Typer) -> None:
    """Add the ``presets`` group to the root app."""
    app.add_typer(presets_app, name="presets")


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise SpecError(f"--kind '{kind}' is not a preset kind: choose one of {KIND_LIST}")


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def infer_kind(path: Path, data: dict[str, Any]) -> str:
    """A preset file's kind: from its folder's name (models/, systems/, ...), else from its top-level keys."""
    by_folder = {folder: kind for kind, folder in FOLDERS.items()}
    if path.resolve().parent.name in by_folder:
        return by_folder[path.resolve().parent.name]
    hits = [k for k, keys in KIND_KEYS.items() if any(key in data for key in keys)]
    if len(hits) == 1:
        return hits[0]
    why = "its keys fit several kinds" if hits else "neither its folder nor its keys tell"
    raise SpecError(f"{path}: cannot tell which kind of preset this is ({why}); add --kind with one of {KIND_LIST}")


def resolve_kind(name: str, kind: str | None) -> str:
    """The kind of preset ``name``: --kind if given; for a file its folder or keys; else the bundled kind."""
    _check_kind(kind)
    if kind is not None:
        return kind
    if _is_path(name):
        path = Path(name)
        if not path.is_file():
            why = "is not a regular file (a folder or a device)" if path.exists() else "does not exist"
            raise PresetNotFound(f"preset file '{name}' {why}; give an existing .toml path or a "
                                 "bundled name (see `librapim presets list`)")
        return infer_kind(path, _read_toml(path))
    infos = list_presets()
    kinds = [p.kind for p in infos if p.name == name]
    if len(kinds) == 1:
        return kinds[0]
    if len(kinds) > 1:
        raise SpecError(f"'{name}' names presets of several kinds ({', '.join(kinds)}); add --kind "
                        f"{kinds[0]} (or another of them)")
    close = difflib.get_close_matches(name, sorted({p.name for p in infos}), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise PresetNotFound(f"unknown preset '{name}': {hint}see `librapim presets list`")


def load_any(kind: str, ref: str, overrides: list[tuple[list[str], Any]] | None = None) -> Any:
    """Load a preset of any kind and run every check a command runs on it (``inputs.check_spec``: a
    workload's trace is read and checked); sweeps are validated by the sweep package."""
    if KINDS[kind] is not None:
        spec = load(kind, ref, overrides)
        check_spec(kind, spec)
        return spec
    data = load_raw(kind, ref)
    return _validate_sweep(apply_overrides(kind, data, overrides) if overrides else data, ref)


def _validate_sweep(data: dict[str, Any], ref: str) -> Any:
    """The one place a sweep file is validated for ``presets show|validate``: the checks ``librapim sweep``
    runs before its first trial (fields, preset names, choices, sampler, seed), with ``--set`` overrides
    applied to the data."""
    from ..sweep import validate_sweep  # imports optuna: only when a sweep is asked for
    from ..sweep.spec import parse_sweep

    return validate_sweep(parse_sweep(data, ref))


def _overrides(kind: str, items: list[str]) -> list[tuple[list[str], Any]]:
    """``--set`` items relative to the preset; a leading ``<kind>.`` is accepted and dropped."""
    out = []
    for item in items:
        path, value = parse_set(item)
        if path[0] == kind and len(path) > 1:
            path = path[1:]
        out.append((path, value))
    return out


@presets_app.command("list")
def list_cmd(
    kind: KindOption = None,
    wide: Annotated[bool, typer.Option("--wide", help="Also show the source each preset's numbers come from.")
                    ] = False,
    json_out: JsonOption = False,
) -> None:
    """List the bundled presets: name, kind and one-line summary (--wide: and the source).

    In a terminal the summaries wrap inside a table; piped, each preset is one plain line.
    """
    _check_kind(kind)
    infos = list_presets(kind)
    if json_out:
        typer.echo(dumps(presets_list_document(infos)))
        return
    render_presets_list(make_console(), infos, wide=wide)


@presets_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Preset name (see `librapim presets list`) or a path to a TOML file.")],
    kind: KindOption = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a field before showing it: path=value, e.g. --set layers=48 or "
        "--set hardware.pim.mac_interval_ns=1.0 (a leading '<kind>.' is optional). Repeatable.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Show a preset's resolved values and derived quantities.

    Models: params per layer, total params, weight bytes, KV bytes per token. Hardware (and a system's hardware): peak NPU FLOP/s, ridge point, external bandwidth, per-bank column bandwidth, PIM peak FLOP/s, internal/external bandwidth ratio, refresh derate.

    A name used by several kinds needs --kind.
    """
    k = resolve_kind(name, kind)
    spec = load_any(k, name, _overrides(k, sets or []))
    doc = preset_document(k, spec.name, spec)
    if json_out:
        typer.echo(dumps(doc))
        return
    render_preset(make_console(), doc)


@presets_app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="The preset TOML file to check.", show_default=False)],
    kind: KindOption = None,
) -> None:
    """Check a preset file: prints "ok: <kind> '<name>'", or one line naming the first bad field (exit 2).

    Runs the checks the commands run on the file: fields, cross-field rules, and a workload's trace CSV read and every row checked. The kind comes from --kind, else from the parent folder's name (models/, hardware/, systems/, workloads/, sweeps/), else from the file's top-level keys.
    """
    _check_kind(kind)
    if not file.is_file():
        why = "is not a regular file (a folder or a device)" if file.exists() else "no such file"
        raise PresetNotFound(f"{file}: {why}; give the path of a preset TOML file")
    data = _read_toml(file)
    k = kind or infer_kind(file, data)
    ref = str(file) if _is_path(str(file)) else f"./{file}"
    spec = load_any(k, ref)
    typer.echo(f"ok: {k} '{getattr(spec, 'name', None) or data.get('name', file.stem)}'")
