"""Shared helpers of the CLI tests: run the real typer app in-process, stdout and stderr kept apart."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from librapim_cli.cli.app import PROG_NAME, app


class Run:
    """Invoke ``librapim ARGS`` and keep exit code, stdout and stderr."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None):
        return self.runner.invoke(app, list(args), prog_name=PROG_NAME, env={"COLUMNS": "120", **(env or {})})


@pytest.fixture
def run() -> Run:
    return Run()


def _one_line_error(result, code: int = 2) -> str:
    """A bad-input failure: the exit code, nothing on stdout, one `error:` line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def one_line_error():
    """``one_line_error(result, code=2) -> the line``: asserts the shape of a bad-input failure."""
    return _one_line_error
