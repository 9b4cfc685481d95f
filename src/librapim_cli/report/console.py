"""Rich rendering of library results for the terminal (the ``--json`` documents live in json_doc.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..metrics import registry
from ..units import fmt_bytes, fmt_si, fmt_time

if TYPE_CHECKING:
    from ..simulate import SimResult
    from ..spec.loading import PresetInfo

IDLE_HIGHLIGHT = 0.5  # a device idle for more than this fraction of the time is highlighted
IDLE_STYLE = "bold yellow"


def make_console(stderr: bool = False) -> Console:
    """A console without automatic highlighting (numbers are styled explicitly) or emoji codes (a name such as
    ``a:b:c`` prints as given)."""
    return Console(stderr=stderr, highlight=False, emoji=False)


def _table(title: str) -> Table:
    """A compact table (fits 80 columns): a rule under the header, one space between columns."""
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, padding=0,
                 pad_edge=False, show_edge=False)


# ---- number formatting: the metric registry's labels and formatters -------------------------------------
def fmt_pct(x: float) -> str:
    """A fraction as a percentage (``0.123`` -> ``12.3 %``)."""
    return registry.fmt_pct(x)


def fmt_metric(key: str, value: Any) -> str:
    """Human text of one metric value, with its unit (``metrics.registry``)."""
    if value is None:
        return "-"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    return registry.format_metric(key, float(value))


def metric_label(key: str) -> str:
    """Human label of a metric key (``metrics.registry``)."""
    return registry.label(key)


@contextlib.contextmanager
def progress_callback(description: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a transient bar on stderr, or None when not enabled."""
    if not enabled:
        yield None
        return
    from rich.progress import (  # only with a bar
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=make_console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# ---- simulate ----------------------------------------------------------------------------------
def inputs_line(result: SimResult) -> Text:
    """One line naming what was simulated."""
    s = result.setup
    t = Text()
    t.append(s.system.name, style="bold")
    t.append(f" ({s.system.hardware.name}, {s.system.concurrency.mode}, tp {s.tp} x pp {s.pp})")
    t.append("  model ")
    t.append(s.model.name, style="bold")
    t.append("  workload ")
    t.append(s.workload.name, style="bold")
    t.append(f"  batch {s.batch}  mode {result.mode}")
    if result.mode == "serve":
        t.append(f"  requests {s.requests}")
    return t


def idle_device(result: SimResult) -> tuple[str, float] | None:
    """The device idle for the largest fraction of the time, if more than IDLE_HIGHLIGHT."""
    m = result.metrics
    idle = {"NPU": 1.0 - float(m.get("npu_utilization", 1.0))}
    if result.setup.system.uses_pim:
        idle["PIM"] = 1.0 - float(m.get("pim_utilization", 1.0))
    dev = max(idle, key=idle.__getitem__)
    return (dev, idle[dev]) if idle[dev] > IDLE_HIGHLIGHT else None


def metrics_table(result: SimResult) -> Table:
    """The metrics of one simulation; the idle device's rows highlighted, PIM rows n/a without PIM work."""
    table = _table("Metrics")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    table.add_column("Key", style="dim")
    idle = idle_device(result)
    uses_pim = result.setup.system.uses_pim
    for key, value in result.metrics.items():
        text = fmt_metric(key, value)
        if key.startswith("pim_") and not uses_pim:
            text = "n/a (no PIM work)"
        style = None
        if idle is not None and key in (f"{idle[0].lower()}_utilization", f"{idle[0].lower()}_idle_s"):
            style = IDLE_STYLE
        table.add_row(metric_label(key), text, key, style=style)
    return table


def latency_table(latency: Mapping[str, Mapping[str, float]]) -> Table:
    """Serving latency percentiles (TTFT, TPOT, end-to-end)."""
    labels = {name: label for name, label, _ in registry.LATENCIES}
    stats = ("mean", "p50", "p90", "p99")
    table = _table("Latency")
    table.add_column("")
    for st in stats:
        table.add_column(st, justify="right")
    for key, row in latency.items():
        table.add_row(labels.get(key, key), *(fmt_time(float(row[st])) if st in row else "-" for st in stats))
    return table


def render_notes(console: Console, notes: Sequence[str]) -> None:
    """One dim ``note:`` line per note (settings that were clamped or have no effect)."""
    for note in notes:
        console.print(Text(f"note: {note}", style="dim"), soft_wrap=True)  # one line each, also when piped


def render_simulation(console: Console, result: SimResult) -> None:
    """Inputs line, notes, metrics table (idle device highlighted) and, when serving, the latency table."""
    console.print(inputs_line(result), soft_wrap=True)
    render_notes(console, result.setup.notes)
    console.print(metrics_table(result))
    idle = idle_device(result)
    if idle is not None:
        console.print(Text(f"{idle[0]} is idle {fmt_pct(idle[1])} of the time", style=IDLE_STYLE))
    if result.latency:
        console.print(latency_table(result.latency))


def render_breakdown(console: Console, records: Sequence[Mapping[str, Any]], iteration_s: float,
                     batch: int, layers: int) -> None:
    """Per-op table: op, device, time, share of the iteration, bound, FLOPs, bytes, energy."""
    table = _table(f"Per-op breakdown of one steady-state iteration (batch {batch})")
    for col, just in (("Op", "left"), ("Device", "left"), ("Time", "right"), ("Share", "right"),
                      ("Bound", "left"), ("FLOPs", "right"), ("Bytes", "right"), ("Energy", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in records:
        table.add_row(r["op"], r["device"], fmt_time(r["time_s"]), fmt_pct(r["share"]), r["bound"],
                      fmt_si(r["flops"]), fmt_bytes(r["bytes"]), fmt_si(r["energy_j"], "J"))
    console.print(table)
    console.print(Text(
        f"Iteration time {fmt_time(iteration_s)}. Layer ops count {layers}x (one pipeline stage), the LM head once; "
        "times are per device on the op's home device before DBO, energy is for all devices. Shares can sum "
        "above 100 % when NPU and PIM work overlap, and below it when bank contention stretches stages.",
        style="dim"))


def render_comparison(console: Console, results: Mapping[str, SimResult], baseline: str,
                      speedup: Mapping[str, float | None]) -> None:
    """One row per system: throughput, speedup over the baseline, utilizations, energy, DBO shares."""
    from .json_doc import comparison_notes

    first = next(iter(results.values()))
    s = first.setup
    console.print(Text(f"model {s.model.name}  workload {s.workload.name}  batch {s.batch}  mode {first.mode}"))
    render_notes(console, comparison_notes(results))
    table = _table(f"Comparison (* = baseline {baseline})")
    cols = (("System", "left"), ("Tok/s", "right"), ("Speedup", "right"), ("Iter", "right"), ("NPU", "right"),
            ("PIM", "right"), ("Energy", "right"), ("Attn>NPU", "right"), ("FC>PIM", "right"))
    for col, just in cols:
        table.add_column(col, justify=just, no_wrap=True)
    best = max(results, key=lambda n: float(results[n].metrics["throughput_tokens_per_s"]))
    for name, r in results.items():
        m = r.metrics
        uses_pim = r.setup.system.uses_pim
        sp = speedup.get(name)
        table.add_row(
            name + (" *" if name == baseline else ""),
            fmt_si(float(m["throughput_tokens_per_s"])),
            "-" if sp is None else f"{sp:.3g}x",
            fmt_time(float(m["iteration_time_s"])),
            fmt_pct(m["npu_utilization"]),
            fmt_pct(m["pim_utilization"]) if uses_pim else "n/a",
            fmt_si(float(m["energy_j_per_token"]), "J"),
            fmt_pct(m["offload_attention_share"]),
            fmt_pct(m["offload_fc_share"]),
            style="bold green" if name == best and len(results) > 1 else None,
        )
    console.print(table)
    console.print(Text("Tok/s: throughput; Iter: mean iteration time; NPU/PIM: busy share of the time; Energy: "
                       "per token; Attn>NPU, FC>PIM: work DBO moved.", style="dim"))


# ---- presets -----------------------------------------------------------------------------------
def render_presets_list(console: Console, infos: Sequence[PresetInfo], wide: bool = False) -> None:
    """Name, kind and one-line summary of each preset (and its source with ``wide``).

    In a terminal: a table whose summaries wrap inside their column (nothing is cut). Piped or redirected:
    plain aligned lines, one per preset, never wrapped or cut, so ``grep`` and ``cut`` work on them.
    """
    if not console.is_terminal:
        w_name = max((len(p.name) for p in infos), default=0)
        w_kind = max((len(p.kind) for p in infos), default=0)
        for p in infos:
            line = f"{p.name:<{w_name}}  {p.kind:<{w_kind}}  {p.summary}".rstrip()
            if wide and p.source:
                line += f"  [source: {p.source}]"
            console.print(Text(line), soft_wrap=True)
        return
    table = _table("Bundled presets")
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Kind", no_wrap=True)
    table.add_column("Summary", ratio=3, overflow="fold")
    if wide:
        table.add_column("Source", ratio=2, style="dim", overflow="fold")
    for p in infos:
        table.add_row(Text(p.name), p.kind, Text(p.summary), *([Text(p.source)] if wide else []))
    console.print(table)
    if not wide:
        console.print(Text("Sources: librapim presets list --wide (or presets show NAME).", style="dim"))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def fmt_derived(key: str, value: Any) -> str:
    """Human text of one derived quantity, by its key's unit suffix."""
    v = float(value)
    if key.endswith("_flops"):
        return fmt_si(v, "FLOP/s")
    if key.endswith("bytes_per_s"):
        return fmt_si(v, "B/s")
    if key.endswith("flop_per_byte"):
        return f"{v:.4g} FLOP/B"
    if key.endswith("_bytes") or "_bytes_per_" in key:
        return fmt_bytes(v)
    if "params" in key:
        return fmt_si(v)
    if key.endswith("_ratio"):
        return f"{v:.4g}x"
    if key.endswith("_derate"):
        return f"{v:.6g}"
    return f"{v:.6g}"


def render_preset(console: Console, doc: Mapping[str, Any]) -> None:
    """A resolved preset (dotted keys and values) and its derived quantities."""
    table = _table(f"{doc['kind']} '{doc['name']}'")
    table.add_column("Field", style="bold", no_wrap=True)
    table.add_column("Value", overflow="fold")  # long sources wrap; nothing is cut with "…"
    for key, value in _flatten(doc["values"]):
        table.add_row(key, Text("-" if value is None else str(value)))
    console.print(table)
    if doc["derived"]:
        d = _table("Derived")
        d.add_column("Quantity", style="bold", no_wrap=True)
        d.add_column("Value", justify="right")
        d.add_column("Exact", justify="right", style="dim")
        for key, value in doc["derived"].items():
            exact = str(value) if isinstance(value, int) else f"{value:.6g}"
            d.add_row(key, fmt_derived(key, value), exact)
        console.print(d)
