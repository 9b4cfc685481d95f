"""Helpers of the sweep tests: a small, fast sweep spec (iteration mode, small batches), TOML, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# 3 x 3 = 9 points: batch x PIM MAC lanes on LibraPIM / GPT-3 7B, short fixed-length requests
SMALL: dict[str, Any] = {
    "name": "small",
    "source": "test",
    "system": "librapim",
    "model": "gpt3-7b",
    "workload": "fixed-128-128",
    "mode": "iteration",
    "parameters": [
        {"path": "batch", "type": "choice", "values": [4, 8, 16]},
        {"path": "hardware.pim.mac_lanes_per_unit", "type": "choice", "values": [8, 16, 32]},
    ],
    "objectives": [{"metric": "throughput_tokens_per_s", "direction": "maximize"}],
}


def toml_text(spec: dict[str, Any]) -> str:
    """A sweep spec dict as TOML (just what the test specs use: scalars, lists, arrays of tables)."""
    from librapim_cli.sweep.export import to_toml

    head = {k: v for k, v in spec.items() if not (isinstance(v, list) and v and isinstance(v[0], dict))}
    text = to_toml(head)
    for key, items in spec.items():
        if isinstance(items, list) and items and isinstance(items[0], dict):
            for item in items:
                text += f"\n[[{key}]]\n" + to_toml(item)
    return text


def cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    """Run ``python -m librapim_cli ARGS`` in a subprocess (the real program, as a user runs it)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "librapim_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def cli_popen(*args: str, **kw: Any) -> subprocess.Popen:
    """Start ``python -m librapim_cli ARGS`` without waiting."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "librapim_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def cli_inproc(*args: str):
    """Run ``librapim ARGS`` in this process (typer's runner): exit_code, stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from librapim_cli.cli.app import PROG_NAME, app

    return CliRunner().invoke(app, list(args), prog_name=PROG_NAME, env={"COLUMNS": "200"})
