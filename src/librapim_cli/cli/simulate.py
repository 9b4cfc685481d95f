"""``librapim simulate``: one system (or a comparison of several) on a model and a workload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..report.console import (
    make_console,
    progress_callback,
    render_breakdown,
    render_comparison,
    render_simulation,
)
from ..report.files import STDOUT, check_distinct, write_atomically
from ..report.json_doc import comparison_document, dumps, simulation_document, speedups
from ..simulate import SimResult, simulate

DEFAULT_SYSTEM = "librapim"
DEFAULT_MODE = "serve"  # the whole request trace through continuous batching
MODES = ("serve", "iteration")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the root app."""
    app.command("simulate")(simulate_cmd)


def _compare_names(compare: str) -> list[str]:
    names = [n.strip() for n in compare.split(",") if n.strip()]
    if not names:
        raise InputError(f"--compare '{compare}' names no system; give comma-separated names, e.g. "
                         "--compare neupims,librapim")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"--compare names {', '.join(dup)} more than once; list each system once")
    return names


def simulate_cmd(
    system: Annotated[str | None, typer.Option(
        "--system", "-s", show_default=DEFAULT_SYSTEM, help="System preset name or TOML path.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model preset name or TOML path.")] = "gpt3-7b",
    workload: Annotated[str, typer.Option("--workload", "-w", help="Workload preset name or TOML path.")
                        ] = "sharegpt",
    batch: Annotated[int | None, typer.Option(
        "--batch", "-b", show_default="the workload's max_batch",
        help="Requests decoded together per iteration (serve: the maximum), 1 to 65536.")] = None,
    requests: Annotated[int | None, typer.Option(
        "--requests", "-n", show_default="the workload's num_requests",
        help="Requests in the workload (serve: requests served; iteration: the pool the steady-state batch "
             "is drawn from), 1 to 1000000; a trace serves at most its rows.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", show_default=False,
        help="Override a field: system.<path>=value, model.<path>=value, workload.<path>=value, or "
             "hardware.<path>=value (short for system.hardware.<path>). Repeatable, e.g. "
             "--set hardware.pim.mac_interval_ns=1.0 --set model.layers=48.")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="serve: the whole request trace through continuous batching; iteration: steady-state "
                       "decode iterations at the full batch.")] = DEFAULT_MODE,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document on stdout (schema_version, inputs, metrics, ...).")] = False,
    breakdown: Annotated[bool, typer.Option(
        "--breakdown", help="Add a per-op table: time, share of the iteration, bound, FLOPs, bytes, energy.")
                         ] = False,
    compare: Annotated[str | None, typer.Option(
        "--compare", show_default=False,
        help="Comma-separated systems to simulate side by side (instead of --system), "
             "e.g. neupims,librapim.")] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", show_default="the first compared system",
        help="With --compare: the system the speedups are relative to.")] = None,
    iterations_csv: Annotated[Path | None, typer.Option(
        "--iterations-csv", show_default=False, dir_okay=False,
        help="Write one CSV row per step: each decode iteration and prefill step (serve), or each sampled "
             "iteration laid end to end (iteration).")] = None,
    trace: Annotated[Path | None, typer.Option(
        "--trace", show_default=False, dir_okay=False,
        help="Write a Chrome trace of the NPU/PIM stage timeline (open in chrome://tracing or Perfetto).")
                     ] = None,
    policy: Annotated[str | None, typer.Option(
        "--policy", show_default="the system's serving.admission",
        help="Serve mode: the admission policy: reserve (FCFS, reserve the whole KV up front) or paged "
             "(vLLM-style KV blocks on demand, preempting the newest request by recompute).")] = None,
) -> None:
    """Simulate a system on a model and a workload and print its metrics.

    With no options: LibraPIM on GPT-3 7B serving ShareGPT. Bad input (an unknown preset, a field out of range, a KV cache that does not fit) exits with code 2 and one line on stderr. Settings that are clamped or have no effect are listed as note: lines (--json: "notes").

    Output files (--trace, --iterations-csv) are checked before the simulation and written only when it succeeds: a file is replaced atomically (through a symlink: its target), "-" and /dev/stdout stream to standard output, a character device or a FIFO with a reader is written in place; folders, sockets, block devices and paths in /proc, /sys or /dev are refused.
    """
    if mode not in MODES:
        raise InputError(f"--mode '{mode}' is not a mode: choose one of {', '.join(MODES)}")
    items = list(sets or [])
    if compare is None:
        if baseline is not None:
            raise InputError("--baseline only applies with --compare; add --compare a,b,... or drop --baseline")
        names = [system if system is not None else DEFAULT_SYSTEM]
    else:
        if system is not None:
            raise InputError("--system and --compare both name systems; use one of them")
        for flag, given in (("--breakdown", breakdown), ("--iterations-csv", iterations_csv is not None),
                            ("--trace", trace is not None)):
            if given:
                raise InputError(f"{flag} works with one system; drop --compare or {flag}")
        names = _compare_names(compare)
        baseline = baseline or names[0]
        if baseline not in names:
            raise InputError(f"--baseline '{baseline}' is not one of the compared systems "
                             f"({', '.join(names)}); add it to --compare")
    if mode != "serve" and policy is not None:
        raise InputError("--policy applies to --mode serve only (admission); drop --policy or use --mode serve")
    files = [("--iterations-csv", iterations_csv), ("--trace", trace)]
    check_distinct([*files, ("--json", STDOUT if json_out else None)])  # each writable, no two the same

    show_progress = mode == "serve" and make_console(stderr=True).is_terminal
    results: dict[str, SimResult] = {}
    for name in names:
        with progress_callback(f"serving ({name})", show_progress) as progress:
            results[name] = simulate(name, model, workload, batch=batch, requests=requests, sets=items, mode=mode,
                                     keep_stages=trace is not None, breakdown=breakdown and compare is None,
                                     policy=policy, progress=progress)

    if compare is not None:
        assert baseline is not None
        if json_out:
            typer.echo(dumps(comparison_document(results, baseline)))
        else:
            render_comparison(make_console(), results, baseline, speedups(results, baseline))
        return

    result = results[names[0]]
    records, iter_s = result.breakdown, result.breakdown_iteration_s
    outputs: list[tuple[Path, Callable[[Path], Any], str]] = []
    if iterations_csv is not None:
        from ..report.iterations_csv import write_iterations_csv

        outputs.append((iterations_csv, lambda p: write_iterations_csv(result, p), "--iterations-csv"))
    if trace is not None:
        from ..report.trace import write_chrome_trace

        outputs.append((trace, lambda p: write_chrome_trace(result, p), "--trace"))
    write_atomically(outputs)

    if json_out:
        typer.echo(dumps(simulation_document(result, records)))
        return
    console = make_console()
    render_simulation(console, result)
    if records is not None:
        s = result.setup
        render_breakdown(console, records, iter_s, s.batch, s.model.layers // s.pp)
    for path, _, _ in outputs:
        if str(path) != STDOUT:
            console.print(f"wrote {path}")
