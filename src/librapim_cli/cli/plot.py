"""``librapim plot roofline | timeline | compare | pareto | regime | utilization``: figures as PNG, SVG or PDF (by --out's extension).

The figures come from ``report.plots`` (matplotlib, Agg canvas, headless) over data that ``report.plot_data``
assembles from simulation results; files are written through a temporary file and a rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..report.files import check_writable
from ..report.plot_data import compare_table, pareto_points, roofline_points, timeline_segments
from ..simulate import simulate


def _plots():
    """report.plots, imported on first use so that matplotlib does not slow down every other command."""
    from ..report import plots

    return plots


plot_app = typer.Typer(
    help="Draw figures: roofline, device timeline, system comparison, Pareto front, regime-map heatmaps "
         "(PNG/SVG/PDF by --out).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``plot`` group to the root app."""
    app.add_typer(plot_app, name="plot")


# ---- shared options -------------------------------------------------------------------------------------
OutOption = Annotated[Path, typer.Option(
    "--out", "-o", dir_okay=False, show_default=False,
    help="Image file to write; the extension picks the format: .png, .svg or .pdf.")]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model preset name or TOML path.")]
WorkloadOption = Annotated[str, typer.Option("--workload", "-w", help="Workload preset name or TOML path.")]
BatchOption = Annotated[int | None, typer.Option(
    "--batch", "-b", show_default="the workload's max_batch", help="Requests decoded together per iteration.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", show_default=False,
    help="Override a field: system.<path>=value, model.<path>=value, workload.<path>=value, or "
         "hardware.<path>=value (short for system.hardware.<path>). Repeatable; applies to every system "
         "and model drawn.")]
DpiOption = Annotated[int, typer.Option("--dpi", min=20, max=600, help="Resolution of PNG output (dots per inch).")]


def _check_out(out: Path) -> None:
    """Fail before any simulation if --out cannot be written as an image."""
    _plots().image_format(out)
    check_writable("--out", out)


def _names(option: str, text: str, example: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError(f"{option} '{text}' names nothing; give comma-separated names, e.g. {option} {example}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{option} names {', '.join(dup)} more than once; list each once")
    return names


def _done(out: Path) -> None:
    typer.echo(f"wrote {out}")


# ---- commands -------------------------------------------------------------------------------------------
@plot_app.command("roofline")
def roofline_cmd(
    out: OutOption,
    system: Annotated[str, typer.Option("--system", "-s", help="System preset name or TOML path.")] = "librapim",
    model: ModelOption = "gpt3-7b",
    workload: WorkloadOption = "sharegpt",
    batch: BatchOption = None,
    sets: SetOption = None,
    dpi: DpiOption = 100,
) -> None:
    """NPU and PIM rooflines with one decode layer's ops (and the LM head) placed on them.

    NPU roof: peak FLOP/s and external HBM bandwidth; PIM roof: peak PIM FLOP/s and internal
    (all-bank) bandwidth. Each op sits at its FLOP/byte and achieved FLOP/s, costed under the static
    placement at the batch the op sees (half the batch with sub-batch interleaving).
    """
    _check_out(out)
    result = simulate(system, model, workload, batch=batch, sets=list(sets or []), mode="iteration", samples=1,
                      breakdown=True)
    _plots().save_figure(_plots().roofline_figure(roofline_points(result)), out, dpi=dpi)
    _done(out)


@plot_app.command("timeline")
def timeline_cmd(
    out: OutOption,
    systems: Annotated[str, typer.Option(
        "--systems", help="Comma-separated systems, one panel each.")] = "neupims,librapim",
    model: ModelOption = "gpt3-7b",
    workload: WorkloadOption = "sharegpt",
    batch: BatchOption = None,
    sets: SetOption = None,
    layers: Annotated[int, typer.Option(
        "--layers", min=1, max=1024, help="Repetitions of each repeating stage loop to draw (the rest is elided).")] = 3,
    dpi: DpiOption = 100,
) -> None:
    """Gantt chart of NPU and PIM busy and idle time per stage over the first layers of an iteration.

    Stages in execution order: A, B, then C, D per layer, ..., E, F, LM head H (without sub-batch
    interleaving: Q, M, R per layer, then H). A stage lasts its modelled time, the NPU bar its NPU
    time, the PIM bar its slowest channel's PIM time; idle time is hatched. One panel per system, so
    DBO filling idle PIM time shows.
    """
    _check_out(out)
    names = _names("--systems", systems, "neupims,librapim")
    items = list(sets or [])
    timelines = [timeline_segments(simulate(n, model, workload, batch=batch, sets=items, mode="iteration",
                                            samples=1, keep_stages=True), layers=layers) for n in names]
    _plots().save_figure(_plots().timeline_figure(timelines), out, dpi=dpi)
    _done(out)


@plot_app.command("compare")
def compare_cmd(
    out: OutOption,
    systems: Annotated[str, typer.Option(
        "--systems", help="Comma-separated systems, one bar each.")] = "npu-only,neupims,librapim",
    models: Annotated[str, typer.Option(
        "--models", help="Comma-separated models, one group of bars each.")] = "gpt3-7b",
    workload: WorkloadOption = "sharegpt",
    batch: BatchOption = None,
    sets: SetOption = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", show_default=False,
        help="Plot speedup over this system instead of throughput (simulated too if not in --systems).")] = None,
    dpi: DpiOption = 100,
) -> None:
    """Grouped bars of decode throughput (or speedup over --baseline) per system and model.

    Each bar is `simulate --mode iteration` of that system and model: tokens per second of
    steady-state decode at the full batch. Inside each bar: the NPU and PIM utilization (busy time /
    iteration time).
    """
    _check_out(out)
    sys_names = _names("--systems", systems, "neupims,librapim")
    model_names = _names("--models", models, "gpt3-7b,llama2-13b")
    if baseline is not None and baseline not in sys_names:
        sys_names = [baseline, *sys_names]
    items = list(sets or [])
    results = [simulate(s, m, workload, batch=batch, sets=items, mode="iteration")
               for m in model_names for s in sys_names]
    _plots().save_figure(_plots().compare_figure(compare_table(results, baseline), baseline), out, dpi=dpi)
    _done(out)


@plot_app.command("pareto")
def pareto_cmd(
    out: OutOption,
    storage: Annotated[str, typer.Option(
        "--storage", show_default=False,
        help="Storage the sweep wrote: an RDB URL (sqlite:///study.db, postgresql://...) or a journal file.")],
    study: Annotated[str, typer.Option("--study", show_default=False, help="Name of a two-objective study.")],
    dpi: DpiOption = 100,
) -> None:
    """A two-objective sweep's trials with the Pareto front and the best point labelled.

    Complete trials are points (infeasible ones as crosses); the front of the feasible trials is a
    staircase; the star marks the front point best on the first objective.
    """
    _check_out(out)
    from ..sweep.results import load_study, objectives_of, study_rows  # the sweep's table (trials_table rows)

    stored = load_study(storage, study)
    objectives = objectives_of(stored)
    if len(objectives) != 2:
        raise InputError(f"--study {study}: has {len(objectives)} objective(s) "
                         f"({', '.join(m for m, _ in objectives)}); the Pareto plot needs exactly two")
    table = study_rows(stored)
    data = pareto_points(table, [m for m, _ in objectives], [d for _, d in objectives], study=study)
    _plots().save_figure(_plots().pareto_figure(data), out, dpi=dpi)
    _done(out)


# ---- regime map ---------------------------------------------------------------------------------------------
ModelsOption = Annotated[str | None, typer.Option(
    "--models", show_default="the four GPT-3 models", help="Comma-separated models; cells average over them.")]
WorkloadsOption = Annotated[str | None, typer.Option(
    "--workloads", show_default="ShareGPT, Alpaca, 2k, 4k, 8k (--rows npu: sharegpt)",
    help="Comma-separated workload presets (the contexts).")]
BatchesOption = Annotated[str | None, typer.Option(
    "--batches", show_default="1, 2, ..., 512", help="Comma-separated batch sizes (the columns).")]
MapStorageOption = Annotated[str | None, typer.Option(
    "--storage", show_default="the storage `librapim reproduce` uses",
    help="Where map points are stored and reused (as `librapim reproduce --storage`; 'memory' keeps nothing).")]
MapWorkersOption = Annotated[int | None, typer.Option(
    "--workers", "-j", min=1, max=1024, show_default="all local cores", help="Local processes simulating points.")]


def _map(models, workloads, batches, npu_arrays, registers, storage, workers, *, default_workloads=None,
         default_npu=None, default_regs=None):
    from ..studies.reproduction import AXES, Axes
    from .reproduce import _workers, axes_from, default_storage, run_with_progress

    base = Axes(AXES.models, default_workloads or AXES.workloads, AXES.batches, default_npu or AXES.npu_arrays,
                default_regs or AXES.registers, AXES.samples)
    ax = axes_from(models, workloads, batches, npu_arrays, registers, AXES.samples, base)
    store = storage if storage is not None else default_storage()
    if store == default_storage():
        Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return run_with_progress(ax, store, _workers(workers))


@plot_app.command("regime")
def regime_cmd(
    out: OutOption,
    baseline: Annotated[str, typer.Option(
        "--baseline", help="The system LibraPIM is divided by: npu-pim-blocked (naive), neupims, pim-gemv, "
                           "npu-only, neupims+dbo, librapim-dex-only or librapim-dbo-only.")] = "neupims",
    rows: Annotated[str, typer.Option(
        "--rows", help="context: batch x context, one panel per NPU strength; npu: batch x NPU arrays, one panel "
                       "per register count.")] = "context",
    models: ModelsOption = None,
    workloads: WorkloadsOption = None,
    batches: BatchesOption = None,
    npu_arrays: Annotated[str | None, typer.Option(
        "--npu-arrays", show_default="1,8 (--rows npu: 1,2,4,8)", help="Comma-separated NPU systolic arrays.")] = None,
    registers: Annotated[str | None, typer.Option(
        "--registers", show_default="1 (--rows npu: 1,8)", help="Comma-separated PIM input registers R.")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", show_default="the published number for the baseline (6.2, 2.1, 2.4)",
        help="Outline cells at or above this ratio.")] = None,
    storage: MapStorageOption = None,
    workers: MapWorkersOption = None,
    dpi: DpiOption = 100,
) -> None:
    """Heatmap of LibraPIM's speedup over a baseline on the regime map (the points `librapim reproduce`
    runs): batch x context or batch x NPU strength, each cell the geometric mean over the models that fit,
    red where LibraPIM wins, grey where the KV cache does not fit, outlined at the published number.
    """
    from ..studies.reproduction import SYSTEMS

    _check_out(out)
    if baseline not in SYSTEMS or baseline == "librapim":
        raise InputError(f"--baseline '{baseline}': choose one of "
                         f"{', '.join(s for s in SYSTEMS if s != 'librapim')}")
    if rows not in ("context", "npu"):
        raise InputError(f"--rows '{rows}': choose context or npu")
    thr = threshold if threshold is not None else {"npu-pim-blocked": 6.2, "pim-gemv": 6.2, "neupims": 2.1,
                                                   "npu-only": 2.4}.get(baseline)
    if rows == "context":
        m = _map(models, workloads, batches, npu_arrays, registers, storage, workers, default_npu=(1, 8),
                 default_regs=(1,))
    else:
        m = _map(models, workloads, batches, npu_arrays, registers, storage, workers,
                 default_workloads=("sharegpt",), default_regs=(1, 8))
    from ..report.plot_data import regime_speedup

    data = regime_speedup(m, baseline, rows, registers=m.axes.registers[:1] if rows == "context" else None,
                          workload=m.axes.workloads[0], threshold=thr)
    _plots().save_figure(_plots().heatmap_figure(data), out, dpi=dpi)
    _done(out)


@plot_app.command("utilization")
def utilization_cmd(
    out: OutOption,
    npu_arrays: Annotated[int, typer.Option("--npu-arrays", min=1, max=4096, help="NPU systolic arrays.")] = 1,
    registers: Annotated[int, typer.Option("--registers", min=1, max=4096, help="PIM input registers R.")] = 1,
    models: ModelsOption = None,
    workloads: WorkloadsOption = None,
    batches: BatchesOption = None,
    storage: MapStorageOption = None,
    workers: MapWorkersOption = None,
    dpi: DpiOption = 100,
) -> None:
    """LibraPIM's utilization map over batch x context: NPU and PIM, as busy time / iteration time and as
    compute (FLOPs over peak FLOP/s), each cell the mean over the models that fit; cells within 5 points of
    the published 77% (NPU) and 38% (PIM) outlined.
    """
    _check_out(out)
    m = _map(models, workloads, batches, str(npu_arrays), str(registers), storage, workers)
    from ..report.plot_data import regime_utilization

    _plots().save_figure(_plots().heatmap_figure(regime_utilization(m, npu_arrays, registers)), out, dpi=dpi)
    _done(out)
