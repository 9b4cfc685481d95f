"""Matplotlib figures of plain plot data (``report.plot_data``): roofline, timeline, comparison, Pareto front.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot on the Agg canvas, so it
works headless and in notebooks (a Figure displays itself); :func:`save_figure` writes one atomically as
PNG, SVG or PDF chosen by the file extension.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from ..errors import InputError
from ..metrics import registry
from ..units import MS, fmt_si, fmt_time
from .files import check_writable, write_atomically
from .plot_data import CompareRow, HeatmapData, ParetoData, RooflineData, Timeline

NPU_COLOR = "#1f77b4"
PIM_COLOR = "#ff7f0e"
PIM_FC_COLOR = "#d62728"
IDLE_COLOR = "#eeeeee"
IDLE_EDGE = "#b0b0b0"
SYSTEM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
# metadata that would make the files differ from run to run
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
DPI = 100


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _si_formatter(unit: str = "") -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: fmt_si(v, unit) if v > 0 else "0")


# ---------------------------------------------------------------------------------------------------------
# output


def image_format(path: str | os.PathLike) -> str:
    """'png', 'svg' or 'pdf' from the file extension; InputError on anything else."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        shown = f"'{ext}'" if ext else "no extension"
        raise InputError(f"--out {path}: unknown image type ({shown}); use a .png, .svg or .pdf file name")
    return FORMATS[ext]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (format from the extension) through a temporary file and ``os.replace``."""
    fmt = image_format(path)
    out = check_writable("--out", path)

    def write(tmp: Path) -> None:
        with matplotlib.rc_context({"svg.hashsalt": "librapim"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_METADATA[fmt])

    write_atomically([(out, write, "--out")])
    return out


# ---------------------------------------------------------------------------------------------------------
# roofline

_BOUND_MARKERS = {"compute": "o", "memory": "s", "bank-timing": "^", "link": "D"}


def _merge_labels(data: RooflineData, tol: float = 0.03) -> list[tuple[float, float, str, str]]:
    """Points that coincide on a log-log plot (within ``tol`` decades) share one label."""
    groups: list[list] = []
    for p in data.points:
        x, y = math.log10(p.intensity), math.log10(p.rate)
        for g in groups:
            if g[3] == p.device and abs(g[0] - x) < tol and abs(g[1] - y) < tol:
                g[2].append(p.op)
                break
        else:
            groups.append([x, y, [p.op], p.device])
    return [(10 ** x, 10 ** y, textwrap.fill(", ".join(names), 30), dev) for x, y, names, dev in groups]


def roofline_figure(data: RooflineData) -> Figure:
    """Log-log roofline: each device's compute peak and bandwidth slope, ops at (FLOP/byte, FLOP/s)."""
    fig = _figure(9.0, 5.6)
    ax = fig.add_subplot()
    colors = {"npu": NPU_COLOR, "pim": PIM_COLOR}
    xs = [p.intensity for p in data.points] + [r.ridge_flop_per_byte for r in data.roofs]
    x_lo = 10 ** math.floor(math.log10(max(min(xs + [1.0]) / 4, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(xs + [1.0]) * 8))
    grid = np.logspace(math.log10(x_lo), math.log10(x_hi), 400)
    for roof in data.roofs:
        c = colors.get(roof.device, "k")
        ax.plot(grid, roof.rate(grid), color=c, lw=2,
                label=f"{roof.label}: peak {fmt_si(roof.peak_flops, 'FLOP/s')}, "
                      f"{'internal ' if roof.device == 'pim' else ''}bandwidth {fmt_si(roof.bw_bytes_per_s, 'B/s')}")
        ridge = roof.ridge_flop_per_byte
        ax.axvline(ridge, color=c, lw=0.8, ls=":", alpha=0.7)
        ax.annotate(f"ridge {ridge:.3g} FLOP/B", (ridge, roof.peak_flops), xytext=(4, 4),
                    textcoords="offset points", fontsize=8, color=c)
    seen: set[tuple[str, str]] = set()
    for p in data.points:
        key = (p.device, p.bound)
        ax.scatter(p.intensity, p.rate, s=55, color=colors.get(p.device, "k"), edgecolor="black", lw=0.7,
                   marker=_BOUND_MARKERS.get(p.bound, "o"), zorder=5,
                   label=None if key in seen else f"{p.device.upper()} op, {p.bound or 'unknown'}-bound")
        seen.add(key)
    placed: list[tuple[float, float, bool]] = []  # (log x, log y, above) of labels drawn so far
    for x, y, text, dev in sorted(_merge_labels(data)):
        lx, ly = math.log10(x), math.log10(y)
        # below the point, unless a nearby label is already there
        above = any(abs(lx - px) < 0.8 and abs(ly - py) < 0.3 and not pa for px, py, pa in placed)
        placed.append((lx, ly, above))
        ax.annotate(text, (x, y), xytext=(0, 9 if above else -9), textcoords="offset points", fontsize=8,
                    ha="center", va="bottom" if above else "top", color=colors.get(dev, "k"), zorder=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    peaks = [r.peak_flops for r in data.roofs] or [1.0]
    rates = [p.rate for p in data.points] or peaks
    ax.set_ylim(min(min(rates), min(peaks)) / 30, max(peaks) * 4)
    ax.yaxis.set_major_formatter(_si_formatter("FLOP/s"))
    ax.set_xlabel("Arithmetic intensity (FLOP/byte; DRAM bytes on the NPU, in-bank bytes on PIM)")
    ax.set_ylabel("Performance (FLOP/s)")
    ax.set_title(data.title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if data.omitted:
        note = textwrap.fill("Not placed (no DRAM bytes or no FLOPs): " + ", ".join(data.omitted), 60)
        ax.text(0.01, 0.98, note, transform=ax.transAxes, fontsize=7, color="#555555", ha="left", va="top")
    return fig


# ---------------------------------------------------------------------------------------------------------
# timeline


def timeline_figure(timelines: Sequence[Timeline]) -> Figure:
    """Gantt chart: per system, NPU and PIM lanes over the expanded stages; idle time hatched grey."""
    if not timelines:
        raise InputError("timeline: no systems to draw")
    n = len(timelines)
    fig = _figure(11.0, 1.0 + 1.9 * n)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle("Device timeline: NPU and PIM busy time per schedule stage", fontsize=11)
    x_max = max(tl.shown_s for tl in timelines) / MS
    for ax, tl in zip(axes, timelines, strict=True):
        lanes = [("NPU", 1.0, NPU_COLOR, "npu_s")]
        if tl.has_pim:
            lanes.append(("PIM", 0.0, PIM_COLOR, "pim_s"))
        for _name, y, color, attr in lanes:
            slots = [(seg.start_s / MS, seg.time_s / MS) for seg in tl.segments]
            ax.broken_barh(slots, (y - 0.32, 0.64), facecolor=IDLE_COLOR, edgecolor=IDLE_EDGE, hatch="///",
                           lw=0.0)
            busy = [(seg.start_s / MS, getattr(seg, attr) / MS) for seg in tl.segments if getattr(seg, attr) > 0]
            if attr == "pim_s":
                plain = [b for b, seg in zip(busy, [s for s in tl.segments if s.pim_s > 0], strict=True)
                         if seg.fc_rows_to_pim == 0]
                fc = [b for b, seg in zip(busy, [s for s in tl.segments if s.pim_s > 0], strict=True)
                      if seg.fc_rows_to_pim > 0]
                ax.broken_barh(plain, (y - 0.32, 0.64), facecolor=color, edgecolor="white", lw=0.4)
                ax.broken_barh(fc, (y - 0.32, 0.64), facecolor=PIM_FC_COLOR, edgecolor="white", lw=0.4)
            else:
                ax.broken_barh(busy, (y - 0.32, 0.64), facecolor=color, edgecolor="white", lw=0.4)
        prev_mb = 0
        for seg in tl.segments:
            if seg.micro_batch != prev_mb:  # pipeline micro-batches follow each other
                ax.axvline(seg.start_s / MS, color="black", lw=1.4)
                ax.text(seg.start_s / MS, 1.62, f" micro-batch {seg.micro_batch + 1}", fontsize=7, ha="left",
                        va="bottom")
                prev_mb = seg.micro_batch
            ax.axvline(seg.start_s / MS, color="#666666", lw=0.4, alpha=0.6)
            if seg.time_s / MS > 0.012 * x_max:
                ax.text((seg.start_s + seg.time_s / 2) / MS, 1.42, seg.label, ha="center", va="bottom",
                        fontsize=7, color="#333333")
        for g in tl.gaps:
            ax.axvline(g.at_s / MS, color="black", lw=1.2, ls=(0, (4, 2)))
            ax.text(g.at_s / MS, -0.55 if tl.has_pim else 0.55,
                    f" {g.reps} more \u00d7 ({g.stages.replace(',', ', ')}) elided: {fmt_time(g.time_s)}", fontsize=7,
                    ha="left",
                    va="center", color="black")
        shown = tl.shown_s
        npu_idle = 1.0 - sum(s.npu_s for s in tl.segments) / shown if shown > 0 else 0.0
        idle = f"NPU idle {npu_idle:.0%}"
        if tl.has_pim:
            pim_idle = 1.0 - sum(s.pim_s for s in tl.segments) / shown if shown > 0 else 0.0
            idle += f", PIM idle {pim_idle:.0%}"
        mbs = f" in {tl.micro_batches} micro-batches" if tl.micro_batches > 1 else ""
        ax.set_title(f"{tl.system}: {tl.model}, batch {tl.batch}{mbs}; iteration {fmt_time(tl.iteration_time_s)}; "
                     f"{idle} (shown stages)", fontsize=10, loc="left")
        ticks = [y for _n, y, _c, _a in lanes]
        ax.set_yticks(ticks, [nm for nm, *_ in lanes])
        ax.set_ylim(-0.75 if tl.has_pim else 0.45, 1.8)
    axes[-1].set_xlim(0, x_max * 1.005)
    axes[-1].set_xlabel("Time within the iteration (ms; elided loop repetitions removed, marked by dashed lines)")
    handles = [Patch(facecolor=NPU_COLOR, label="NPU busy"), Patch(facecolor=PIM_COLOR, label="PIM busy (slowest channel)"),
               Patch(facecolor=PIM_FC_COLOR, label="PIM busy, incl. FC rows moved by DBO"),
               Patch(facecolor=IDLE_COLOR, edgecolor=IDLE_EDGE, hatch="///", label="idle")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------------------
# system comparison


def compare_figure(rows: Sequence[CompareRow], baseline: str | None = None) -> Figure:
    """Grouped bars: one group per model, one bar per system; throughput, or speedup over ``baseline``."""
    if not rows:
        raise InputError("compare: no results to draw")
    models = list(dict.fromkeys(r.model for r in rows))
    systems = list(dict.fromkeys(r.system for r in rows))
    by = {(r.system, r.model): r for r in rows}
    fig = _figure(max(6.5, 1.3 + 0.55 * len(models) * len(systems) + 0.6 * len(models)), 5.4)
    ax = fig.add_subplot()
    width = 0.8 / len(systems)
    x = np.arange(len(models))
    top = 0.0
    top = max([(r.speedup if baseline is not None else r.throughput_tokens_per_s) or 0.0 for r in rows] + [0.0])
    for i, sysname in enumerate(systems):
        heights, xs, values, utils = [], [], [], []
        for j, m in enumerate(models):
            r = by.get((sysname, m))
            if r is None:
                continue
            h = r.speedup if baseline is not None else r.throughput_tokens_per_s
            heights.append(h)
            xs.append(x[j] - 0.4 + width * (i + 0.5))
            values.append(f"{h:.2f}\u00d7" if baseline is not None else fmt_si(h))
            utils.append(f"NPU {r.npu_utilization:.0%}" + (f"\nPIM {r.pim_utilization:.0%}" if r.uses_pim else ""))
        bars = ax.bar(xs, heights, width * 0.92, color=SYSTEM_COLORS[i % len(SYSTEM_COLORS)], label=sysname)
        for b, val, util in zip(bars, values, utils, strict=True):
            cx, h = b.get_x() + b.get_width() / 2, b.get_height()
            ax.annotate(val, (cx, h), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=8, fontweight="bold")
            if h >= 0.3 * top:  # utilization inside the bar, else above the value
                ax.annotate(util, (cx, h), xytext=(0, -5), textcoords="offset points", ha="center", va="top",
                            fontsize=7, color="white")
            else:
                ax.annotate(util, (cx, h), xytext=(0, 14), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
    wls = sorted({r.workload for r in rows if r.workload})
    batches = sorted({r.batch for r in rows if r.batch})
    where = ", ".join(x for x in (" / ".join(wls), "batch " + " / ".join(map(str, batches)) if batches else "") if x)
    where = f" ({where})" if where else ""
    if baseline is not None:
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_ylabel(f"Speedup over {baseline} (\u00d7, ratio of tokens/s)")
        ax.set_title(f"Decode throughput relative to {baseline}{where}")
    else:
        ax.set_ylabel("Decode throughput (tokens/s)")
        ax.yaxis.set_major_formatter(_si_formatter())
        ax.set_title(f"Decode throughput by system and model{where}")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xticks(x, models)
    ax.set_xlabel("Model (in each bar: NPU / PIM utilization, busy time / iteration time)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(title="System", fontsize=8, title_fontsize=8, loc="outside lower center", ncols=min(len(systems), 6))
    return fig


# ---------------------------------------------------------------------------------------------------------
# Pareto front

def metric_label(name: str) -> str:
    """Axis label with unit for a metric name, from the metric registry (``Throughput (tokens/s)``)."""
    m = registry.get(name)
    if m is not None:
        return f"{m.label} ({'fraction' if m.unit == '1' else m.unit})"
    return registry.label(name)


def _fmt_value(v: float) -> str:
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _fmt_params(params: dict, limit: int = 4) -> str:
    items = list(params.items())
    parts = [f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
             for k, v in items[:limit]]
    return ", ".join(parts) + (", ..." if len(items) > limit else "")


def pareto_figure(data: ParetoData) -> Figure:
    """All complete trials of a two-objective study, the Pareto front as a step line, the best point labelled."""
    fig = _figure(8.0, 5.6)
    ax = fig.add_subplot()
    feas = [p for p in data.points if p.feasible and not p.on_front]
    infeas = [p for p in data.points if not p.feasible]
    front = data.front
    if feas:
        ax.scatter([p.values[0] for p in feas], [p.values[1] for p in feas], s=22, color="#9a9a9a",
                   alpha=0.8, label=f"trial ({len(feas)})")
    if infeas:
        ax.scatter([p.values[0] for p in infeas], [p.values[1] for p in infeas], s=26, marker="x",
                   color="#c44e52", alpha=0.8, label=f"infeasible trial ({len(infeas)})")
    if front:
        fx, fy = [p.values[0] for p in front], [p.values[1] for p in front]
        # staircase bounding the dominated region: it steps at the next point when x is maximized
        ax.step(fx, fy, where="post" if data.directions[0] == "minimize" else "pre", color=NPU_COLOR, lw=1.4, alpha=0.8)
        ax.scatter(fx, fy, s=48, color=NPU_COLOR, edgecolor="black", lw=0.6, zorder=5,
                   label=f"Pareto front ({len(front)})")
    if data.best is not None:
        b = data.best
        ax.scatter([b.values[0]], [b.values[1]], s=220, marker="*", color="gold", edgecolor="black", lw=0.8,
                   zorder=6, label=f"best {data.objectives[0]}")
        text = (f"trial {b.number}\n{data.objectives[0]} = {_fmt_value(b.values[0])}\n"
                f"{data.objectives[1]} = {_fmt_value(b.values[1])}")
        if b.params:
            text += "\n" + _fmt_params(b.params)
        ax.annotate(text, (b.values[0], b.values[1]), xytext=(0.5, 0.97), textcoords="axes fraction",
                    ha="center", va="top", fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "#999999", "alpha": 0.9},
                    arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8})
    arrows = {"minimize": "lower is better", "maximize": "higher is better"}
    ax.set_xlabel(f"{metric_label(data.objectives[0])}  [{arrows[data.directions[0]]}]")
    ax.set_ylabel(f"{metric_label(data.objectives[1])}  [{arrows[data.directions[1]]}]")
    counts = f"{len(data.points)} complete trials" + (f", {data.skipped} pruned/failed not shown" if data.skipped else "")
    ax.set_title(f"Pareto front of study '{data.study}' ({counts})" if data.study else f"Pareto front ({counts})")
    if data.points:
        ys = [p.values[1] for p in data.points]
        lo, hi = min(ys), max(ys)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.08 or 1.0
        ax.set_ylim(lo - pad, hi + pad + (hi - lo + pad) * 0.45)  # room for the label box
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


# ---------------------------------------------------------------------------------------------------------
# regime map heatmaps

def heatmap_figure(data: HeatmapData) -> Figure:
    """Panels of (rows x columns) cells coloured by value, each annotated; one colour scale for all panels.

    Ratios: a diverging log scale centred on 1 (red: the system wins, blue: it loses), cells at or above the
    threshold outlined. Utilizations: 0-100 %, cells within the band of the panel's threshold outlined.
    Grey: no point of the map runs there (the KV cache does not fit).
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    if not data.panels:
        raise InputError("heatmap: no panels to draw")
    n = len(data.panels)
    ncols = 2 if n == 4 else n
    nrows = math.ceil(n / ncols)
    p0 = data.panels[0]
    w = max(4.2, 0.55 * len(p0.cols) + 1.6)
    h = max(2.4, 0.42 * len(p0.rows) + 1.3)
    fig = _figure(w * ncols + 1.2, h * nrows + 0.9)
    finite = np.concatenate([p.values[np.isfinite(p.values)].ravel() for p in data.panels])
    if data.kind == "ratio":
        lo = float(finite.min()) if finite.size else 0.5
        hi = float(finite.max()) if finite.size else 2.0
        lo, hi = min(lo, 0.99), max(hi, 1.01)
        span = max(math.log(hi), -math.log(lo))
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)
        cmap = matplotlib.colormaps["RdBu_r"]
    else:
        norm = Normalize(0.0, 1.0)
        cmap = matplotlib.colormaps["viridis"]
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    image = None
    for ax, p in zip(axes, data.panels, strict=True):
        vals = p.values
        shown = np.log(vals) if data.kind == "ratio" else vals
        masked = np.ma.masked_invalid(shown)
        cm = cmap.with_extremes(bad="#d9d9d9")
        image = ax.imshow(masked, cmap=cm, norm=norm, aspect="auto", origin="lower")
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                v = vals[i, j]
                if not math.isfinite(v):
                    ax.text(j, i, "-", ha="center", va="center", fontsize=7, color="#777777")
                    continue
                text = f"{v:.2f}" if data.kind == "ratio" and v < 10 else (f"{v:.1f}" if data.kind == "ratio"
                                                                             else f"{v:.0%}")
                c = norm(shown[i, j])
                dark = (c > 0.8 or c < 0.2) if data.kind == "ratio" else c < 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
                thr = data.threshold if data.kind == "ratio" else p.threshold
                hit = thr is not None and (v >= thr if data.kind == "ratio" else abs(v - thr) <= data.band)
                if hit:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=1.8))
        ax.set_xticks(range(len(p.cols)), p.cols, fontsize=8)
        ax.set_yticks(range(len(p.rows)), p.rows, fontsize=8)
        ax.set_xlabel(p.col_label, fontsize=9)
        ax.set_ylabel(p.row_label, fontsize=9)
        ax.set_title(p.title, fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.85, pad=0.02)
        if data.kind == "ratio":
            ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16, 32) if -span <= math.log(t) <= span]
            bar.set_ticks([math.log(t) for t in ticks], labels=[f"{t:g}x" for t in ticks])
        else:
            bar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0%", "25%", "50%", "75%", "100%"])
        bar.set_label(data.value_label, fontsize=8)
    fig.suptitle(textwrap.fill(data.title, 110) + (f"\n{data.note}" if data.note else ""), fontsize=10)
    return fig
