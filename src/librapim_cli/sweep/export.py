"""Export the best trial(s) of a study as preset files that ``librapim simulate`` reruns.

For each best trial (the best feasible one, or every trial of the feasible Pareto front) this writes
``<study>-t<N>-system.toml``, ``-model.toml`` and ``-workload.toml``: the fully resolved specs with the
trial's parameter values (and derived fields) applied, each with a ``source`` naming the study and trial,
plus ``best.json`` listing the trials, their metrics and the command that reproduces them::

    librapim simulate --system DIR/x-t7-system.toml --model DIR/x-t7-model.toml \\
        --workload DIR/x-t7-workload.toml --batch 64 --mode iteration
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..errors import SpecError
from ..simulate import setup
from .paths import check_out_dir, make_dir, write_text
from .results import best_trials, clean_json
from .space import point
from .spec import SweepSpec, parse_sweep
from .study import load_study

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# ---- a small TOML writer (the specs hold tables, scalars and arrays of scalars) --------------------
def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string (ASCII, \\uXXXX escapes) is a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: dict[str, Any], comment: str = "") -> str:
    """TOML text of a dict of scalars, arrays and nested tables (None values are left out)."""
    lines = [f"# {c}" if c else "#" for c in comment.splitlines()] if comment else []

    def table(d: dict[str, Any], prefix: str) -> None:
        subs = []
        if prefix:
            lines.extend(["", f"[{prefix}]"])
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subs:
            table(v, f"{prefix}.{_key(k)}" if prefix else _key(k))

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# ---- export ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportedConfig:
    """One exported best trial."""

    trial: int
    system: Path
    model: Path
    workload: Path
    batch: int
    requests: int
    mode: str
    params: dict[str, Any]
    metrics: dict[str, float]

    @property
    def command(self) -> str:
        """The ``librapim simulate`` command that reruns this configuration."""
        return " ".join(["librapim simulate", "--system", shlex.quote(str(self.system)), "--model",
                         shlex.quote(str(self.model)), "--workload", shlex.quote(str(self.workload)), "--batch",
                         str(self.batch), "--requests", str(self.requests), "--mode", self.mode])


def export_point(spec: SweepSpec, params: dict[str, Any], out_dir: Path, tag: str, origin: str,
                 trial: int = -1, metrics: dict[str, float] | None = None) -> ExportedConfig:
    """Write the three preset files of one parameter assignment; return what was written."""
    p = point(spec, params)
    s = setup(p.system, p.model, p.workload, batch=p.batch, requests=spec.requests, sets=list(p.sets))
    specs = {"system": s.system, "model": s.model, "workload": s.workload}
    paths = {kind: out_dir / f"{tag}-{kind}.toml" for kind in specs}
    exported = ExportedConfig(trial, paths["system"], paths["model"], paths["workload"], s.batch, s.requests,
                              spec.mode, dict(params), dict(metrics or {}))
    changed = ", ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"
    for kind, obj in specs.items():
        data = obj.model_dump(mode="json")
        data["source"] = f"{origin}; {kind} '{data['name']}' with {changed} (was: {data['source']})"
        data["name"] = tag
        data["description"] = f"best of {origin}: {changed}"
        if kind == "system":
            hw = data["hardware"]
            hw["source"] = f"{origin}; hardware '{hw['name']}' with {changed} (was: {hw['source']})"
            hw["description"] = f"{hw['description']} (parameters changed by {origin}: {changed})"
        write_text(paths[kind], to_toml(data, f"Exported by `librapim sweep --export-best` from {origin}.\n"
                                            f"Rerun: {exported.command}"), "--export-best")
    return exported


def export_best(storage: Any, study_name: str, out_dir: str | Path, spec: SweepSpec | None = None
                ) -> list[ExportedConfig]:
    """Export the best trial(s) of a study to ``out_dir`` (created if missing) plus ``best.json``.

    ``storage``: a --storage string, an optuna storage, or the study itself (``RunResult.study``).
    ``spec`` defaults to the sweep spec recorded in the study when it was created.
    """
    study = storage if isinstance(storage, optuna.Study) else load_study(storage, study_name)
    if spec is None:
        recorded = study.user_attrs.get("librapim.spec")
        if not recorded:
            raise SpecError(f"study '{study_name}' has no recorded sweep spec; pass the spec")
        spec = parse_sweep(recorded, study_name)
    out = check_out_dir(out_dir, "--export-best")
    best = best_trials(study)
    if not best:
        raise SpecError(f"study '{study_name}' has no feasible trial to export")
    make_dir(out, "--export-best")
    done = []
    for t in best:
        origin = f"librapim sweep study '{study_name}' trial {t.number}"
        done.append(export_point(spec, t.params, out, f"{study_name}-t{t.number}", origin, t.number,
                                 t.user_attrs.get("metrics")))
    manifest = [{"trial": e.trial, "params": e.params, "metrics": e.metrics, "system": str(e.system),
                 "model": str(e.model), "workload": str(e.workload), "batch": e.batch, "requests": e.requests,
                 "mode": e.mode, "command": e.command} for e in done]
    write_text(out / "best.json", json.dumps({"study": study_name, "best": clean_json(manifest)}, indent=1) + "\n",
               "--export-best")
    return done
