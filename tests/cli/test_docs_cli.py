"""docs/cli.md is the generated --help of every command; it must match the code."""

from __future__ import annotations

from pathlib import Path

from librapim_cli.cli.docgen import COMMAND, command_paths, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date():
    assert DOC.is_file(), f"docs/cli.md is missing; generate it with: {COMMAND}"
    assert DOC.read_text(encoding="utf-8") == render(), f"docs/cli.md is out of date; regenerate it with: {COMMAND}"


def test_reference_covers_every_command():
    text = render()
    for path in command_paths():
        assert f" {' '.join(['librapim', *path])}\n" in text
