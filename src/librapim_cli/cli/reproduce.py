"""``librapim reproduce``: rerun the published-results grid and regenerate docs/reproduction.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..report.console import make_console
from ..report.files import check_writable, write_atomically
from ..report.reproduction_md import render
from ..studies.reproduction import GRID, run_reproduction


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` command to the root app."""
    app.command("reproduce")(reproduce)


def reproduce(
    out: Annotated[Path, typer.Option("--out", "-o", help="Markdown file to (re)write.")] = Path("docs/reproduction.md"),
    golden: Annotated[Path | None, typer.Option(
        "--golden", help="Also write the golden JSON the regression test compares with "
                         "(tests/golden/reproduction.json).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Sampled steady-state batches per point.")]
    = GRID.samples,
) -> None:
    """Rerun GPT-3 7B-175B x ShareGPT/Alpaca x batch 64-512 on the NeuPIMs-class hardware for every system and
    write the comparison with the published LibraPIM / NeuPIMs numbers (docs/reproduction.md)."""
    from dataclasses import replace

    grid = replace(GRID, samples=samples)
    console = make_console(stderr=True)
    with Progress(TextColumn("reproducing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("grid", total=None)
        result = run_reproduction(grid, progress=lambda done, total: bar.update(task, completed=done, total=total))
    check_writable("--out", out)
    if golden is not None:
        check_writable("--golden", golden)
    outputs = [(out, render(result))]
    if golden is not None:
        outputs.append((golden, json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n"))
    write_atomically([(p, lambda tmp, text=text: tmp.write_text(text)) for p, text in outputs])
    s = result.variants[0].summary()
    console.print(f"wrote {out}" + (f" and {golden}" if golden else "") +
                  f"; LibraPIM/NeuPIMs mean {s['librapim_over_neupims']['mean']:.2f}x (published 2.1x)")
