"""optuna-dashboard (the `dashboard` extra, also in the test extra) reads a study `librapim sweep` wrote to SQLite:
its WSGI app lists the study and serves its trials with the sweep's user attributes."""

from __future__ import annotations

import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from sweep_helpers import cli_inproc, toml_text

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed "
                                       "(pip install 'librapim[dashboard]')")


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(body)


def test_dashboard_lists_a_study_written_by_librapim_sweep(small, tmp_path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(toml_text(small))
    url = f"sqlite:///{tmp_path}/dash.db"
    r = cli_inproc("sweep", str(spec), "--sampler", "grid", "--storage", url, "--study", "dash-study")
    assert r.exit_code == 0, r.stderr
    app = optuna_dashboard.wsgi(url)
    status, doc = _get(app, "/api/studies")
    assert status.startswith("200"), status
    studies = {s["study_name"]: s for s in doc["study_summaries"]}
    assert "dash-study" in studies
    status, detail = _get(app, f"/api/studies/{studies['dash-study']['study_id']}")
    assert status.startswith("200"), status
    trials = detail["trials"]
    assert len(trials) == 9 and {t["state"] for t in trials} <= {"Complete", "Pruned"}
    keys = {a["key"] for t in trials for a in t["user_attrs"]}
    assert {"metrics", "feasible", "worker"} <= keys
