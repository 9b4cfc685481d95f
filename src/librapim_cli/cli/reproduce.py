"""``librapim reproduce``: rerun the published-results grid and regenerate docs/reproduction.md."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import SpecError
from ..report.console import make_console
from ..report.reproduction_md import render
from ..studies.reproduction import GRID, run_reproduction


def _atomic_write(path: Path, text: str) -> None:
    path = path.expanduser()
    if not path.parent.is_dir():
        raise SpecError(f"cannot write {path}: folder {path.parent} does not exist; create it or pick another path")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _atomic_write(out, render(result))
    if golden is not None:
        _atomic_write(golden, json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n")
    s = result.variants[0].summary()
    console.print(f"wrote {out}" + (f" and {golden}" if golden else "") +
                  f"; LibraPIM/NeuPIMs mean {s['librapim_over_neupims']['mean']:.2f}x (published 2.1x)")
