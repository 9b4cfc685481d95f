"""Generate docs/cli.md from the real ``--help`` output of every command.

    python -m librapim_cli.cli.docgen > docs/cli.md

The help is rendered the way a terminal shows it, at a fixed width of ``WIDTH`` columns and without
colour, so the file is the same on every machine; tests/cli/test_docs_cli.py checks it is up to date.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

import typer
import typer.rich_utils
from typer.testing import CliRunner

from .app import PROG_NAME, app

WIDTH = 100
COMMAND = "python -m librapim_cli.cli.docgen > docs/cli.md"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@contextlib.contextmanager
def _plain_help() -> Iterator[None]:
    """Fixed width, no colour, whatever the environment says (TERMINAL_WIDTH, FORCE_COLOR, ...)."""
    ru = typer.rich_utils
    saved = (ru.MAX_WIDTH, ru.FORCE_TERMINAL, ru.COLOR_SYSTEM)
    ru.MAX_WIDTH, ru.FORCE_TERMINAL, ru.COLOR_SYSTEM = WIDTH, False, None
    try:
        yield
    finally:
        ru.MAX_WIDTH, ru.FORCE_TERMINAL, ru.COLOR_SYSTEM = saved


def command_paths() -> list[list[str]]:
    """Every command path in the app, depth first in registration order (the root is ``[]``)."""
    out: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        if getattr(cmd, "hidden", False):
            return
        out.append(path)
        if hasattr(cmd, "list_commands"):  # a group (the root loads its subcommands on demand: ask it)
            ctx = typer.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def help_text(path: list[str]) -> str:
    """The ``--help`` output of one command, as plain text with trailing spaces removed."""
    runner = CliRunner()
    env = {"COLUMNS": str(WIDTH), "LINES": "50", "NO_COLOR": "1", "TERM": "dumb"}
    with _plain_help():
        result = runner.invoke(app, [*path, "--help"], prog_name=PROG_NAME, env=env, color=False)
    if result.exit_code != 0:
        raise RuntimeError(f"`{' '.join([PROG_NAME, *path])} --help` exited with {result.exit_code}: "
                           f"{result.output}")
    text = _ANSI.sub("", result.stdout)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def render() -> str:
    """The whole markdown reference."""
    paths = command_paths()
    parts = [
        "# Command-line reference",
        "",
        f"<!-- Generated from the real --help output by `{COMMAND}`; do not edit by hand. -->",
        "",
        "Every command prints tables by default and one JSON document on stdout with `--json` (where "
        "offered). Exit codes: 0 success; 2 bad input (unknown preset, field out of range, design that does "
        "not fit, bad option), reported as one line on stderr starting with `error:`; 1 a model error or a "
        "bug (set `LIBRAPIM_DEBUG=1` for the traceback). Sizes are bounded and checked before any work: "
        "`--batch` 1 to 65536, `--requests` 1 to 1 000 000, every spec field within its range "
        "([model/specs.md](model/specs.md#strictness-and-bounds)). Settings that are clamped or have no effect "
        "are printed as `note:` lines (`notes` in `--json`).",
        "",
        "Output files (`--trace`, `--iterations-csv`, `--out`, `--golden`) are checked before any work starts and "
        "written only when the command succeeds: a regular file is replaced atomically (it keeps its permission "
        "bits; through a symlink, the link's target is replaced and the link stays), `-` and `/dev/stdout` "
        "stream to standard output, a character device (`/dev/null`) or a FIFO with a reader is written in "
        "place; a folder, a socket, a block device, a FIFO nobody reads and paths in /proc, /sys or /dev are "
        "refused with exit code 2, as are two options naming the same file. A failed write (a full disk, a "
        "read-only file system) exits with code 2 and replaces nothing.",
        "",
        "The `librapim` process is tuned for a short life, which changes no figure: a command's imports run without "
        "Python's cyclic garbage collector and are then frozen out of its view (`gc.freeze`), and on glibc the "
        "process keeps freed heap for reuse (`mallopt`: buffers up to 32 MiB from the heap, 128 MiB of freed heap "
        "kept). `librapim_cli.simulate()` called from Python sets neither "
        "([benchmarks/README.md](../benchmarks/README.md#start-up-and-one-configuration)).",
        "",
        "Commands:",
        "",
    ]
    for path in paths:
        full = " ".join([PROG_NAME, *path])
        anchor = re.sub(r"[^a-z0-9 -]", "", full.lower()).replace(" ", "-")
        parts.append(f"{'  ' * max(len(path) - 1, 0)}- [`{full}`](#{anchor})")
    for path in paths:
        full = " ".join([PROG_NAME, *path])
        parts += ["", f"{'#' * min(2 + max(len(path) - 1, 0), 4)} {full}", "", "```text", help_text(path), "```"]
    return "\n".join(parts) + "\n"


def main() -> None:
    """Print the reference on stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
