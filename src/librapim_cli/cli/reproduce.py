"""``librapim reproduce``: rerun the published-results grid and regenerate docs/reproduction.md (or ./reproduction.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..report.console import make_console
from ..report.files import check_distinct, write_atomically
from ..report.reproduction_md import render
from ..studies.reproduction import GRID, run_reproduction


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` command to the root app."""
    app.command("reproduce")(reproduce)


DOCS_OUT = Path("docs/reproduction.md")
HERE_OUT = Path("reproduction.md")


def default_out(cwd: Path | None = None) -> Path:
    """docs/reproduction.md in a checkout (the current folder has a docs/ folder), else ./reproduction.md."""
    return DOCS_OUT if ((cwd or Path.cwd()) / DOCS_OUT.parent).is_dir() else HERE_OUT


def reproduce(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, show_default="docs/reproduction.md if ./docs/ exists, else ./reproduction.md",
        help="Markdown file to (re)write.")] = None,
    golden: Annotated[Path | None, typer.Option(
        "--golden", help="Also write the golden JSON the regression test compares with "
                         "(tests/golden/reproduction.json).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, max=1000, help="Sampled steady-state batches per point.")]
    = GRID.samples,
) -> None:
    """Rerun GPT-3 7B-175B x ShareGPT/Alpaca x batch 64-512 on the NeuPIMs-class hardware for every system and
    write the comparison with the published LibraPIM / NeuPIMs numbers.

    From a checkout (a folder with docs/) it rewrites docs/reproduction.md; elsewhere ./reproduction.md.
    """
    from dataclasses import replace

    out = out if out is not None else default_out()
    check_distinct([("--out", out), ("--golden", golden)])  # before the grid runs, not after

    grid = replace(GRID, samples=samples)
    console = make_console(stderr=True)
    with Progress(TextColumn("reproducing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("grid", total=None)
        result = run_reproduction(grid, progress=lambda done, total: bar.update(task, completed=done, total=total))
    outputs = [("--out", out, render(result))]
    if golden is not None:
        outputs.append(("--golden", golden, json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n"))
    write_atomically([(p, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"), opt)
                      for opt, p, text in outputs])
    s = result.variants[0].summary()
    console.print(f"wrote {out}" + (f" and {golden}" if golden else "") +
                  f"; LibraPIM/NeuPIMs mean {s['librapim_over_neupims']['mean']:.2f}x (published 2.1x)")
