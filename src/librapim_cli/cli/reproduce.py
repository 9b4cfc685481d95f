"""``librapim reproduce``: run the regime map and regenerate docs/reproduction.md with its pictures;
``librapim regime``: search for where a target (e.g. LibraPIM/NeuPIMs >= 2.1) holds."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import InputError
from ..report.console import make_console
from ..report.files import check_distinct, check_writable, write_atomically
from ..report.reproduction_md import point_rows, render
from ..studies.reproduction import AXES, CONTEXTS, GOLDEN_AXES, Axes, golden_json, run_map


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` and ``regime`` commands to the root app."""
    app.command("reproduce")(reproduce)
    app.command("regime")(regime)


DOCS_OUT = Path("docs/reproduction.md")
HERE_OUT = Path("reproduction.md")
DOCS_IMAGES = "img/reproduction"  # relative to the markdown file
#: exit codes of a run stopped by a signal
SIGNAL_EXIT = {2: 130, 15: 143}


def default_out(cwd: Path | None = None) -> Path:
    """docs/reproduction.md in a checkout (the current folder has a docs/ folder), else ./reproduction.md."""
    return DOCS_OUT if ((cwd or Path.cwd()) / DOCS_OUT.parent).is_dir() else HERE_OUT


def default_storage() -> str:
    """A SQLite file in the user's cache folder (resumable, reused by later runs and `librapim plot`)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "librapim"
    return f"sqlite:///{base / 'regime-map.db'}"


def _ints(option: str, text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if text is None:
        return default
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{option} '{text}': give comma-separated integers, e.g. {option} 1,8") from None
    if not vals or any(v < 1 for v in vals) or len(set(vals)) != len(vals):
        raise InputError(f"{option} '{text}': give distinct integers >= 1, e.g. {option} 1,8")
    return vals


def _names(option: str, text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return default
    vals = tuple(x.strip() for x in text.split(",") if x.strip())
    if not vals or len(set(vals)) != len(vals):
        raise InputError(f"{option} '{text}': give distinct comma-separated names")
    return vals


def axes_from(models: str | None, workloads: str | None, batches: str | None, npu_arrays: str | None,
              registers: str | None, samples: int, base: Axes = AXES) -> Axes:
    """The map's axes with the CLI's restrictions; presets checked before anything runs."""
    from ..spec.loading import load_model, load_workload

    ax = Axes(_names("--models", models, base.models), _names("--workloads", workloads, base.workloads),
              _ints("--batches", batches, base.batches), _ints("--npu-arrays", npu_arrays, base.npu_arrays),
              _ints("--registers", registers, base.registers), samples)
    for m in ax.models:
        load_model(m)
    for w in ax.workloads:
        load_workload(w)
    return ax


def _workers(n: int | None) -> int:
    return n if n is not None else max(1, os.cpu_count() or 1)


def run_with_progress(ax: Axes, storage: str, workers: int, label: str = "regime map"):
    """run_map with a progress bar on stderr; exits 130/143 (resumable) when stopped by a signal."""
    from ..sweep.points import Interrupted
    from ..sweep.storage import parse_storage

    ref = parse_storage(storage)  # a bad --storage fails before anything runs
    console = make_console(stderr=True)
    try:
        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("points", total=None)
            return run_map(ax, storage=storage, workers=workers, handle_signals=True,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    except Interrupted as exc:
        where = "" if ref.shared else " (in memory: nothing is kept; give --storage to resume)"
        console.print(f"interrupted: {exc.done} of {exc.total} points stored in {ref.display}{where}; "
                      "rerun the same command to resume", soft_wrap=True)
        raise typer.Exit(SIGNAL_EXIT.get(exc.signum, 130)) from None


ModelsOpt = Annotated[str | None, typer.Option(
    "--models", show_default=", ".join(AXES.models), help="Comma-separated model presets of the map.")]
WorkloadsOpt = Annotated[str | None, typer.Option(
    "--workloads", show_default=", ".join(AXES.workloads), help="Comma-separated workload presets (contexts).")]
BatchesOpt = Annotated[str | None, typer.Option(
    "--batches", show_default=", ".join(map(str, AXES.batches)), help="Comma-separated batch sizes.")]
NpuOpt = Annotated[str | None, typer.Option(
    "--npu-arrays", show_default=", ".join(map(str, AXES.npu_arrays)),
    help="Comma-separated NPU strengths, in 128x128 systolic arrays (1: as NeuPIMs codes it; 8: as it declares).")]
RegsOpt = Annotated[str | None, typer.Option(
    "--registers", show_default=", ".join(map(str, AXES.registers)),
    help="Comma-separated PIM input register counts R (each with a global buffer of R rows).")]
StorageOpt = Annotated[str | None, typer.Option(
    "--storage", show_default="sqlite:///~/.cache/librapim/regime-map.db",
    help="Where each point's result is stored: 'memory', sqlite:///FILE.db, a journal file, or "
         "postgresql://USER@HOST/DB. A stopped run resumes from it; machines given the same PostgreSQL "
         "storage share the points.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-j", min=1, max=1024, show_default="all local cores", help="Local processes simulating points.")]


def reproduce(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, show_default="docs/reproduction.md if ./docs/ exists, else ./reproduction.md",
        help="Markdown file to (re)write.")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", file_okay=False, show_default="img/reproduction next to --out",
        help="Folder for the heatmaps the markdown embeds (PNG).")] = None,
    golden: Annotated[Path | None, typer.Option(
        "--golden", dir_okay=False, help="Also write the golden JSON of the map's golden subset (what "
                                         "tests/golden/test_reproduction_golden.py recomputes).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", dir_okay=False, help="Also write every point of the map: .json (nested) or .csv (one row per "
                                       "point and system).")] = None,
    models: ModelsOpt = None,
    workloads: WorkloadsOpt = None,
    batches: BatchesOpt = None,
    npu_arrays: NpuOpt = None,
    registers: RegsOpt = None,
    samples: Annotated[int, typer.Option("--samples", min=1, max=1000, help="Sampled steady-state batches per point.")]
    = AXES.samples,
    storage: StorageOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Run the regime map (GPT-3 7B-175B x ShareGPT, Alpaca, 2k/4k/8k contexts x batch 1-512 x NPU of 1-8
    systolic arrays x PIM input registers 1-8, every system on the NeuPIMs-class device) and write where
    LibraPIM reaches each published number, by how much and through which mechanism, with heatmaps.

    From a checkout (a folder with docs/) it rewrites docs/reproduction.md and docs/img/reproduction/;
    elsewhere ./reproduction.md. Each point's result is stored in --storage as it finishes: a stopped run
    (Ctrl-C, exit 130) resumes where it stopped, later runs reuse the points (results are keyed by a
    fingerprint of the model's code and presets), and machines given the same PostgreSQL storage share the
    work. With --golden the map must contain the golden subset (the default axes do).
    """
    out = out if out is not None else default_out()
    img_dir = images if images is not None else out.parent / DOCS_IMAGES
    ax = axes_from(models, workloads, batches, npu_arrays, registers, samples)
    if golden is not None:
        missing = {p.key for p in GOLDEN_AXES.points()} - {p.key for p in ax.points()}
        if missing or samples != GOLDEN_AXES.samples:
            raise InputError("--golden needs the golden subset in the map (the default axes and --samples "
                             f"{GOLDEN_AXES.samples}); narrowed axes leave out {len(missing)} of its points")
    if data is not None and data.suffix.lower() not in (".json", ".csv"):
        raise InputError(f"--data {data}: give a .json or .csv file name")
    check_distinct([("--out", out), ("--golden", golden), ("--data", data)])
    for opt, p in (("--out", out), ("--golden", golden), ("--data", data)):
        if p is not None:
            check_writable(opt, p)
    storage = storage if storage is not None else default_storage()
    if storage.startswith("sqlite:///") and storage == default_storage():
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    m = run_with_progress(ax, storage, _workers(workers))

    from ..report import plots
    from ..report.plot_data import regime_speedup, regime_utilization

    img_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    targets = {"npu-pim-blocked": 6.2, "neupims": 2.1, "pim-gemv": 6.2}
    for base, thr in targets.items():
        if 8 in ax.npu_arrays and 1 in ax.npu_arrays:
            figures[f"speedup-context-{base}"] = regime_speedup(m, base, "context", npu_arrays=(1, 8),
                                                                registers=(1,) if 1 in ax.registers else None,
                                                                threshold=thr)
        figures[f"speedup-npu-{base}"] = regime_speedup(
            m, base, "npu", registers=tuple(r for r in (1, 8) if r in ax.registers) or None,
            workload="sharegpt" if "sharegpt" in ax.workloads else None, threshold=thr)
    for n in (1, 8):
        if n in ax.npu_arrays:
            figures[f"utilization-npu{n}"] = regime_utilization(m, n, 1 if 1 in ax.registers else ax.registers[0])
    links = {}
    for name, fig_data in figures.items():
        path = img_dir / f"{name}.png"
        plots.save_figure(plots.heatmap_figure(fig_data), path, dpi=80)
        links[name] = os.path.relpath(path, out.parent if str(out.parent) else ".")
    outputs = [("--out", out, render(m, links))]
    if golden is not None:
        sub = {p.key for p in GOLDEN_AXES.points()}
        from ..studies.reproduction import RegimeMap

        gm = RegimeMap(GOLDEN_AXES, [r for r in m.results if r.point.key in sub])
        gm.results.sort(key=lambda r: [p.key for p in GOLDEN_AXES.points()].index(r.point.key))
        outputs.append(("--golden", golden, json.dumps(golden_json(gm), indent=1, sort_keys=True) + "\n"))
    if data is not None:
        if data.suffix.lower() == ".json":
            text = json.dumps(m.to_json(), indent=None, sort_keys=True) + "\n"
        else:
            rows = point_rows(m.results)
            cols = list(dict.fromkeys(k for r in rows for k in r))
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            text = buf.getvalue()
        outputs.append(("--data", data, text))
    write_atomically([(p, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"), opt)
                      for opt, p, text in outputs])
    console = make_console(stderr=True)
    console.print(f"wrote {out} and {len(links)} heatmaps in {img_dir}" + (f", {golden}" if golden else "") +
                  (f", {data}" if data else "") + f"; {m.evaluated} points simulated, {m.reused} reused from "
                  f"the storage, {m.wall_seconds:.0f} s on {m.workers} worker(s)", soft_wrap=True)


def regime(
    target: Annotated[str, typer.Option(
        "--target", "-t", show_default=False,
        help="SYSTEM/BASELINE>=RATIO (throughput ratio on the same device, e.g. librapim/neupims>=2.1; "
             "aliases naive, npu, gemv) or SYSTEM.METRIC>=VALUE (e.g. librapim.npu_compute_utilization>=0.77); "
             "<= also works.")],
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, max=100_000, help="Finished trials to run.")] = 100,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="tpe (concentrates where the quantity is high) or random (an unbiased share).")] = "tpe",
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed.")] = 0,
    models: ModelsOpt = None,
    workloads: WorkloadsOpt = None,
    batch_min: Annotated[int, typer.Option("--batch-min", min=1, max=65536, help="Smallest batch searched.")] = 1,
    batch_max: Annotated[int, typer.Option("--batch-max", min=1, max=65536, help="Largest batch searched.")] = 512,
    npu_arrays: NpuOpt = None,
    registers: RegsOpt = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", show_default="memory",
        help="Optuna storage of the search (as `librapim sweep`): with one, the same command resumes.")] = None,
    study: Annotated[str | None, typer.Option("--study", show_default="regime-<target>", help="Study name.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, max=1024,
                                         help="Local worker processes (needs --storage).")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", dir_okay=False, help="Also write the region as JSON.")]
    = None,
) -> None:
    """Search the regime map's axes (models, contexts, batch as an integer range, NPU arrays, PIM input
    registers) with Optuna for where a target holds, and report the region: the bounds of every parameter
    over the trials that meet it, the share of trials meeting it per value, and overall.

    The search is a sweep (docs/sweep.md): the objective is the target's quantity, the target its
    constraint; a ratio's baseline runs on the same device (the trial's hardware values). With TPE the
    share is of the sampled trials, which crowd where the quantity is high; --sampler random estimates
    the share of the whole space.
    """
    from ..studies.finder import Space, find_regime, parse_target

    t = parse_target(target)
    ax = axes_from(models, workloads, None, npu_arrays, registers, AXES.samples)
    space = Space(ax.models, ax.workloads, batch_min, batch_max, ax.npu_arrays, ax.registers)
    if json_out is not None:
        check_writable("--json", json_out)
    console = make_console(stderr=True)
    with Progress(TextColumn("searching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("trials", total=trials)
        region = find_regime(t, space=space, trials=trials, sampler=sampler, seed=seed, storage=storage,
                             study=study, workers=workers, handle_signals=True,
                             progress=lambda p: bar.update(task, completed=p.done, total=p.target))
    out = make_console()
    verb = "meet" if region.feasible != 1 else "meets"
    out.print(f"target {t.text}: {region.feasible} of {region.ran} trials that ran {verb} it "
              f"({region.share:.0%}; {region.trials - region.ran} did not fit; sampler {region.sampler})",
              soft_wrap=True)
    table = Table("parameter", "searched", "region (trials meeting the target)", "meeting / ran per value")
    for p in region.params:
        shares = ", ".join(f"{CONTEXTS.get(v, v) if isinstance(v, str) else v}: {k}/{n}" for v, k, n in p.shares)
        table.add_row(p.path, p.searched, p.bounds, shares)
    out.print(table)
    if region.best:
        b = region.best
        params = ", ".join(f"{k.split('.')[-1]}={CONTEXTS.get(v, v) if isinstance(v, str) else v}"
                           for k, v in b["params"].items())
        out.print(f"best: {t.quantity} = {b['value']:.4g} at {params} (trial {b['number']})", soft_wrap=True)
    if json_out is not None:
        write_atomically([(json_out, lambda tmp: tmp.write_text(json.dumps(region.to_json(), indent=1) + "\n",
                                                                 encoding="utf-8"), "--json")])
    if region.interrupted:
        console.print(f"interrupted; rerun the same command to resume (study {region.study} in {region.storage})",
                      soft_wrap=True)
        raise typer.Exit(region.exit_code)
