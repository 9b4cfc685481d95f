"""A study's trials as plain rows (for tables, plots and files) and its best trials / Pareto front.

A row is a dict::

    {"number": 3, "state": "COMPLETE", "feasible": True, "reason": None, "duration_s": 0.012,
     "params": {"batch": 64, ...}, "values": [1234.5, ...], "metrics": {"throughput_tokens_per_s": ...},
     "constraints": {"fits": 0.0, "area_overhead_fraction<=0.1": -0.99}}

``state`` is optuna's trial state name; PRUNED means infeasible (the configuration cannot run, ``reason``
says why); ``values`` follow the study's objectives (None unless COMPLETE); ``feasible`` is True only for a
COMPLETE trial whose constraint values are all <= 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .paths import check_out_file, write_text
from .study import load_study

SCHEMA_VERSION = 1


def objectives_of(study: optuna.Study) -> list[tuple[str, str]]:
    """(metric, direction) per objective, as the sweep recorded them (generic names otherwise)."""
    recorded = study.user_attrs.get("librapim.objectives")
    if recorded:
        return [(str(m), str(d)) for m, d in recorded]
    return [(f"objective {i}", d.name.lower()) for i, d in enumerate(study.directions)]


def is_feasible(t: FrozenTrial) -> bool:
    """COMPLETE and every constraint value <= 0."""
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    """One trial as a plain row (see the module docstring)."""
    dur = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": t.state.name,
        "feasible": is_feasible(t),
        "reason": t.user_attrs.get("reason"),
        "duration_s": dur,
        "params": dict(t.params),
        "values": list(t.values) if t.values is not None else None,
        "metrics": dict(t.user_attrs.get("metrics") or {}),
        "constraints": dict(t.constraints),
    }


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (one objective) or the feasible Pareto front (several); [] if none."""
    try:
        if len(study.directions) == 1:
            return [study.best_trial]
        return sorted(study.best_trials, key=lambda t: t.number)
    except ValueError:  # no (feasible) complete trial yet
        return []


def best_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Rows of :func:`best_trials`."""
    return [trial_row(t) for t in best_trials(study)]


def study_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of a study as rows, by trial number."""
    return [trial_row(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]


def trials_table(storage: Any, study_name: str) -> list[dict[str, Any]]:
    """Every trial of a stored study as rows (number, state, params, values, metrics, feasible, ...)."""
    return study_rows(load_study(storage, study_name))


# ---- files -----------------------------------------------------------------------------------
def clean_json(x: Any) -> Any:
    """Non-finite floats to None, recursively (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean_json(v) for v in x]
    return x


def flat_row(row: dict[str, Any], objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """A row with params./values./metrics./constraints. columns (for CSV)."""
    out = {k: row[k] for k in ("number", "state", "feasible", "reason", "duration_s")}
    out.update({f"params.{k}": v for k, v in row["params"].items()})
    vals = row["values"] or [None] * len(objectives)
    out.update({f"values.{name}": v for (name, _), v in zip(objectives, vals, strict=False)})
    out.update({f"metrics.{k}": v for k, v in row["metrics"].items()})
    out.update({f"constraints.{k}": v for k, v in row["constraints"].items()})
    return out


def check_out(path: str | Path) -> Path:
    """The --out path, checked before any trial runs (paths.check_out_file): a .csv or .json file in an
    existing, writable folder."""
    return check_out_file(path, "--out", (".csv", ".json"))


def write_trials(rows: list[dict[str, Any]], path: str | Path, *, study: str,
                 objectives: list[tuple[str, str]]) -> Path:
    """Write all trials to ``path`` (whole or not at all): CSV (.csv, one flat row per trial) or JSON (.json)."""
    p = check_out(path)
    if p.suffix.lower() == ".json":
        doc = {"schema_version": SCHEMA_VERSION, "study": study,
               "objectives": [{"metric": m, "direction": d} for m, d in objectives], "trials": clean_json(rows)}
        write_text(p, json.dumps(doc, indent=1) + "\n", "--out")
        return p
    flat = [flat_row(r, objectives) for r in rows]
    cols: dict[str, None] = {}
    for r in flat:
        cols.update(dict.fromkeys(r))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(cols))
    w.writeheader()
    w.writerows(flat)
    write_text(p, buf.getvalue(), "--out")
    return p
