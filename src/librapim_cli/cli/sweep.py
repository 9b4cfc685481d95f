"""``librapim sweep``: an Optuna search over model, batch and hardware parameters (docs/sweep.md).

All optuna code lives in ``librapim_cli.sweep``; this module parses options, shows progress on stderr
and prints the best trial or the Pareto front. It imports the sweep package's optuna parts only inside the
command, so ``librapim --help`` and the other commands never import optuna.
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..report.console import fmt_metric, make_console
from ..report.json_doc import SCHEMA_VERSION, dumps
from ..sweep.validate import SAMPLERS

if TYPE_CHECKING:
    from ..sweep.run import Progress as SweepProgress
    from ..sweep.run import RunResult


def register(app: typer.Typer) -> None:
    """Add the ``sweep`` command to the root app."""
    app.command("sweep")(sweep_cmd)


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _short_labels(paths: list[str]) -> dict[str, str]:
    """The last path element of each parameter, or the whole path where that would be ambiguous."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (lp if last.count(lp) == 1 else p) for p, lp in zip(paths, last, strict=True)}


def best_table(result: RunResult) -> Table:
    """The best trial (one objective: parameter / value rows) or the Pareto front (several: a row per trial)."""
    if len(result.objectives) == 1:
        row = result.best[0]
        table = _table(f"Best trial of '{result.study_name}': #{row['number']}")
        table.add_column("Parameter / objective")
        table.add_column("Value", justify="right")
        for p, v in row["params"].items():
            table.add_row(p, _fmt_param(v))
        (metric, direction), value = result.objectives[0], row["values"][0]
        table.add_row(Text(f"{metric} ({direction})", style="bold"), Text(fmt_metric(metric, value), style="bold"))
        return table
    table = _table(f"Pareto front of '{result.study_name}' ({len(result.best)} feasible trial(s))")
    table.add_column("Trial", justify="right")
    labels = _short_labels(list(result.best[0]["params"]))
    for label in labels.values():
        table.add_column(label)
    for metric, direction in result.objectives:
        table.add_column(f"{metric} ({'max' if direction == 'maximize' else 'min'})", justify="right")
    groups: dict[str, list[dict[str, Any]]] = {}  # samplers revisit points: one line per distinct design
    for row in result.best:
        groups.setdefault(repr(sorted(row["params"].items())), []).append(row)
    for rows in groups.values():
        row = rows[0]
        vals = row["values"] or [None] * len(result.objectives)
        label = str(row["number"]) + (f" (+{len(rows) - 1})" if len(rows) > 1 else "")
        table.add_row(label, *(_fmt_param(row["params"].get(p)) for p in labels),
                      *(fmt_metric(m, v) for (m, _), v in zip(result.objectives, vals, strict=False)))
    if len(groups) < len(result.best):
        table.caption = "(+k): k more trials with the same parameters"
    return table


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, padding=(0, 2, 0, 0),
                 pad_edge=False)


def resume_command(spec: str, result: RunResult, workers: int) -> str:
    """The command that continues this study."""
    parts = ["librapim", "sweep", spec, "--trials", str(result.target), "--sampler", result.sampler,
             "--storage", result.storage.display, "--study", result.study_name]
    if workers > 1:
        parts += ["--workers", str(workers)]
    return " ".join(shlex.quote(p) for p in parts)


class _Bar:
    """Rich progress bar on stderr: trials done / target, running, rate, best so far."""

    def __init__(self, study: str) -> None:
        self.console = make_console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]sweep[/bold] {task.fields[study]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[extra]}"),
            console=self.console, transient=False)
        self.task = self.progress.add_task("sweep", total=None, study=study, rate="", extra="")
        self.t0 = time.perf_counter()
        self.first: int | None = None

    def __call__(self, p: SweepProgress) -> None:
        if self.first is None:  # started here, not in __enter__: option errors print no empty bar
            self.first = p.done
            self.progress.start()
        dt = time.perf_counter() - self.t0
        rate = f"{(p.done - self.first) / dt:.1f} trials/s" if dt > 0.5 and p.done > self.first else ""
        extra = "  ".join(x for x in (f"running {p.running}" if p.running else "",
                                      f"best {p.best}" if p.best else "") if x)
        self.progress.update(self.task, completed=p.done, total=p.target, rate=rate, extra=extra)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.first is not None:
            self.progress.stop()


def sweep_cmd(
    spec: Annotated[str, typer.Argument(help="Sweep spec: a bundled name (pim-design, batch-model, "
                                             "throughput-vs-area) or a .toml path.", show_default=False)],
    trials: Annotated[int | None, typer.Option(
        "--trials", "-t", show_default="the spec's trials; grid: the grid size",
        help="Finished trials the study ends with, counting earlier runs and other workers.")] = None,
    sampler: Annotated[str, typer.Option(
        "--sampler", help=f"Search algorithm: {', '.join(SAMPLERS)} (grid = brute force over discrete spaces).")
                       ] = "tpe",
    seed: Annotated[int | None, typer.Option(
        "--seed", show_default=False, help="Sampler seed: makes a single-worker run reproducible.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", show_default="memory",
        help="Where the study lives: sqlite:///FILE.db, a journal file (FILE.journal or journal:FILE) or "
             "postgresql://USER@HOST/DB. With a storage, the same command resumes the study; with "
             "PostgreSQL, the same command on several machines shares it.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", show_default="the spec's name", help="Study name in the storage.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", help="Local worker processes, each with its own storage connection (needs --storage); "
                                "at most 4 per CPU.")] = 1,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", show_default=False, dir_okay=False,
        help="Write every trial (params, metrics, state) to a .csv or .json file.")] = None,
    export: Annotated[Path | None, typer.Option(
        "--export-best", show_default=False, file_okay=False,
        help="Write the best trial(s) as system/model/workload preset TOMLs (+ best.json) into this folder.")
                      ] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document on stdout (counts, best trials, files written).")] = False,
) -> None:
    """Search the spec's parameters with Optuna for the best design (or the Pareto front).

    Ctrl-C (SIGINT) or SIGTERM lets running trials finish, keeps everything, prints the command that
    resumes and exits 130 (143 for SIGTERM); a second one stops at once. Infeasible designs (do not fit,
    break a constraint) are recorded with their reason and are never reported as best. See docs/sweep.md.
    """
    from ..sweep import export_best, load_sweep, study_rows, write_trials
    from ..sweep.paths import check_out_dir, check_out_file
    from ..sweep.run import run  # the function: the package attribute is the module once that is loaded

    if out is not None:  # before a long sweep, not after it
        check_out_file(out, "--out", (".csv", ".json"))
    if export is not None:
        check_out_dir(export, "--export-best")
    sweep_spec = load_sweep(spec)
    name = study or sweep_spec.name
    with _Bar(name) as bar:
        result = run(sweep_spec, trials=trials, sampler=sampler, seed=seed, storage=storage, study_name=name,
                     workers=workers, progress=bar, handle_signals=True)
    # the trials are over: a late (or second) Ctrl-C / SIGTERM must not cut the summary, the files or the exit
    # code short with a KeyboardInterrupt; what is left takes moments
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    if out is not None:
        write_trials(study_rows(result.study), out, study=name, objectives=result.objectives)
    exported = export_best(result.study, name, export, sweep_spec) if export is not None and result.best else []
    if export is not None and not result.best:
        result.notes.append(f"--export-best {export}: nothing exported, the study has no feasible trial")
    files = ([str(out)] if out is not None else []) + [str(p) for e in exported for p in (e.system, e.model, e.workload)]
    resume = resume_command(spec, result, workers) if result.interrupted and result.storage.shared else None
    if json_out:
        typer.echo(dumps({
            "schema_version": SCHEMA_VERSION, "study": name, "storage": result.storage.display,
            "sampler": result.sampler, "target": result.target, "finished": result.finished,
            "new_trials": result.new_trials, "interrupted": result.interrupted,
            "objectives": [{"metric": m, "direction": d} for m, d in result.objectives],
            "best": result.best, "exported": [{"trial": e.trial, "command": e.command} for e in exported],
            "files": files, "resume": resume, "notes": result.notes,
            "seconds": {"wall": result.wall_seconds, "simulate": result.sim_seconds}}))
    else:
        _print_summary(result, out, exported, resume)
    if result.interrupted:
        raise typer.Exit(result.exit_code)


def _print_summary(result: RunResult, out: Path | None, exported: list, resume: str | None) -> None:
    console = make_console()
    for note in result.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if result.best:
        console.print(best_table(result))
    else:
        console.print(Text("no feasible trial yet: every design so far is infeasible or breaks a constraint",
                           style="bold yellow"))
    console.print(f"study '{result.study_name}' ({result.storage.display}): {result.finished}/{result.target} "
                  f"trials finished, {result.new_trials} run now in {result.wall_seconds:.1f} s")
    for e in exported:  # commands are printed unwrapped, to copy them whole
        console.print(f"exported trial {e.trial}: {e.command}", soft_wrap=True)
    if out is not None:
        console.print(f"wrote {out}")
    if result.interrupted:
        if resume:
            console.print(Text(f"interrupted; everything so far is kept. Resume with:\n  {resume}", style="bold"),
                          soft_wrap=True)
        else:
            console.print(Text("interrupted; the study was in memory, so it cannot be resumed: add --storage "
                               "FILE.journal (or sqlite:///FILE.db) next time", style="bold"))
