"""Render the regime map as docs/reproduction.md (pure string building over the map; no simulation)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..studies.reproduction import (
    AXIS_NAMES,
    CONTEXTS,
    FACTOR_LABELS,
    LABELS,
    PUBLISHED,
    SYSTEMS,
    UTIL_BAND,
    Location,
    PointResult,
    RegimeMap,
    dbo_moves,
    joint_utilization,
    locate_all,
)

DEVICE = ("NeuPIMs-class device (`neupims-npu-hbm2pim`: 128x128 systolic arrays at 1 GHz, HBM2 with 32 channels "
          "and 16 MAC lanes per bank, docs/sources.md#s2.2, #s2.3)")
COMMON_ASSUMPTIONS = ("NeuPIMs-class HBM2-PIM and NPU, NeuPIMs' TP/PP, steady-state decode, 300 GB/s link [I]; "
                      "no fitting factor")


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _q(loc: Location, v: float) -> str:
    return loc.target.shown(v)


def _where(loc: Location) -> str:
    t = loc.target
    n = len(loc.hits)
    if not loc.reached:
        return (f"**Not reached.** Highest on the map: {_q(loc, loc.best_value)} ({loc.best.point.label()})."
                if loc.best else "**Not reached** (no point runs)")
    share = f"{n} of {loc.n_feasible} points"
    if t.kind == "util":
        head = (f"**Reached** ({share} within {UTIL_BAND:.0%} points)" if not loc.approx else
                f"**Crossed** between map points; nearest {share}")
        head += f"; map maximum {_q(loc, loc.best_value)}"
    else:
        head = f"**Reached** at {share}; best {_q(loc, loc.best_value)} ({loc.best.point.label()})"
    return head + ". " + "; ".join(loc.region[:4]) + ("; ..." if len(loc.region) > 4 else "")


def _mechanism(loc: Location) -> str:
    t = loc.target
    if not loc.reached:
        if loc.best is None:
            return "-"
        mech = "; ".join(f"{FACTOR_LABELS[k].split(' (')[0]} {v:.2f}x" for k, v in loc.best_factors)
        return f"at the highest point: {mech}" if mech else f"at the highest point DBO moved {dbo_moves(loc.best)}"
    top = ", ".join(f"{m} ({k} of {len(loc.hits)})" for m, k in loc.mechanisms[:3])
    if t.kind == "ratio" and loc.best_factors:
        f = " x ".join(f"{k} {v:.2f}" for k, v in loc.best_factors)
        return f"{top}. Best point: {f}; DBO moved {dbo_moves(loc.best)}"
    return top


def _assumptions(loc: Location) -> str:
    t = loc.target
    parts = []
    if t.baseline_note:
        parts.append(f"\"baseline PIM-assisted\" read as {t.baseline_note} [I]: the paper's definition is not "
                     "public (docs/sources.md#s1.3)")
    if t.kind == "util":
        parts.append("busy time / iteration time" if t.metric in ("npu_utilization", "pim_utilization")
                     else "FLOPs / (peak FLOP/s x iteration time)")
    if loc.reached:
        npus = sorted({h.point.npu for h in loc.hits})
        regs = sorted({h.point.registers for h in loc.hits})
        parts.append(f"NPU {', '.join(map(str, npus))} array(s) (1 = as NeuPIMs codes it, 8 = as it declares)")
        if regs == sorted(loc.best_regs_all):
            parts.append("any R (PIM input registers; NeuPIMs has 1)")
        elif regs != [1]:
            parts.append(f"R {', '.join(map(str, regs))} input vectors per open row (NeuPIMs: 1)")
        ctx = sorted({h.point.workload for h in loc.hits}, key=list(CONTEXTS).index)
        if any(c.startswith("fixed-4096") or c.startswith("fixed-8192") for c in ctx):
            parts.append("4k/8k contexts exceed GPT-3's 2048-token window [I]")
    parts.append(COMMON_ASSUMPTIONS)
    return "; ".join(parts)


def _missing(loc: Location) -> str:
    """The single assumption that would have to change, from the map's trend at the highest point."""
    if loc.reached or loc.trend is None or not loc.trend[1]:
        return ""
    axis, row, gain = loc.trend
    trend = ", ".join(f"{v}: {loc.target.shown(x)}" for v, x in row)
    name = AXIS_NAMES.get(axis, axis)
    if gain > 1.01:
        end = row[-1][0] if row[-1][1] >= row[0][1] else row[0][0]
        return (f"Holding the highest point's other axes, {name} moves it most ({trend}); the single assumption "
                f"that would have to change is {name} beyond {end}, past the map's range.")
    return (f"No axis of the map moves it toward {loc.target.shown()} at its highest point ({name}: {trend}); "
            "what would have to change is the baseline or the workload definition, not a hardware knob.")


def summary_table(locs: Sequence[Location]) -> list[str]:
    """The answer table at the top of the document."""
    rows = ["| published number | where we reach it | mechanism | assumptions |", "|---|---|---|---|"]
    for loc in locs:
        t = loc.target
        where = _where(loc)
        miss = _missing(loc)
        if miss:
            where += " " + miss
        rows.append(f"| {t.label} | {where} | {_mechanism(loc)} | {_assumptions(loc)} |")
    return rows


def _grid_summary(m: RegimeMap, npu: int) -> list[str]:
    """The previous reproduction grid (batch 64-512, ShareGPT/Alpaca, R 1) at one NPU strength."""
    pts = m.select(npu=npu, registers=1, batch=(64, 128, 256, 512), workload=("sharegpt", "alpaca"))
    rows = ["| quantity | published | mean | geomean | range |", "|---|---|---|---|---|"]
    for num, den, key in (("librapim", "npu-pim-blocked", "librapim_over_baseline"),
                          ("librapim", "neupims", "librapim_over_neupims"),
                          ("librapim", "pim-gemv", "librapim_over_baseline"),
                          ("neupims", "npu-only", "neupims_over_npu_only"),
                          ("neupims", "npu-pim-blocked", "neupims_over_naive")):
        r = [p.ratio(num, den) for p in pts]
        if not r:
            continue
        g = math.exp(sum(math.log(x) for x in r) / len(r))
        rows.append(f"| {LABELS[num]} / {LABELS[den]} | {PUBLISHED[key][0]:.1f}x | {sum(r) / len(r):.2f}x | "
                    f"{g:.2f}x | {min(r):.2f}x - {max(r):.2f}x |")
    return rows


def _points_table(m: RegimeMap, npu: int, workload: str, registers: int) -> list[str]:
    systems = ("npu-only", "npu-pim-blocked", "pim-gemv", "neupims", "librapim")
    head = ("| model | batch | " + " | ".join(f"{LABELS[s]} tok/s" for s in systems) +
            " | L/naive | L/GEMV | L/NeuPIMs | DBO | DEX | NPU busy / compute | PIM busy / MAC | DBO moved |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in m.results:
        p = r.point
        if p.npu != npu or p.workload != workload or p.registers != registers:
            continue
        if r.infeasible:
            rows.append(f"| {p.model} | {p.batch} | does not fit: {r.infeasible} |" + " |" * (len(systems) + 7))
            continue
        lm = r.systems["librapim"]
        th = " | ".join(f"{r.value(s):,.0f}" for s in systems)
        rows.append(
            f"| {p.model} | {p.batch} | {th} | {r.ratio('librapim', 'npu-pim-blocked'):.2f} | "
            f"{r.ratio('librapim', 'pim-gemv'):.2f} | {r.ratio('librapim', 'neupims'):.2f} | "
            f"{r.ratio('neupims+dbo', 'neupims'):.2f} | {r.ratio('librapim', 'neupims+dbo'):.2f} | "
            f"{_pct(lm['npu_utilization'])} / {_pct(lm['npu_compute_utilization'])} | "
            f"{_pct(lm['pim_utilization'])} / {_pct(lm['pim_mac_utilization'])} | {dbo_moves(r)} |")
    return rows


def _geo(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


BANDS = ((1, 16), (32, 128), (256, 512))


def regimes_table(m: RegimeMap) -> list[str]:
    """LibraPIM's ratios by batch band and NPU strength (all contexts, models and registers): geometric mean,
    highest, and what DBO moved most often."""
    from collections import Counter

    from ..studies.reproduction import dominant_move

    head = "| NPU | batch | points | L / NeuPIMs | L / naive | L / PIM-for-GEMV | DBO moved most often |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    for n in m.axes.npu_arrays:
        for lo, hi in BANDS:
            pts = [r for r in m.select(npu=n) if lo <= r.point.batch <= hi]
            if not pts:
                continue
            cells = []
            for den in ("neupims", "npu-pim-blocked", "pim-gemv"):
                v = [r.ratio("librapim", den) for r in pts]
                cells.append(f"{_geo(v):.2f}x (max {max(v):.2f}x)")
            move, k = Counter(dominant_move(r) for r in pts).most_common(1)[0]
            rows.append(f"| {n} array{'s' * (n > 1)} | {lo}-{hi} | {len(pts)} | " + " | ".join(cells) +
                        f" | {move} ({k} of {len(pts)}) |")
    return rows


def factor_ranges(m: RegimeMap) -> list[str]:
    """Each mechanism factor over the whole map: geometric mean, range, and where it is below 1."""
    from ..studies.reproduction import FACTORS

    seen: dict[str, tuple[str, str]] = {}
    for fs in FACTORS.values():
        for name, a, b in fs:
            seen.setdefault(name, (a, b))
    rows = ["| factor | ratio | geometric mean | range | points below 1 (by more than 0.5%) |", "|---|---|---|---|---|"]
    pts = m.feasible()
    for name, (a, b) in seen.items():
        v = [r.ratio(a, b) for r in pts]
        if not v:
            continue
        below = sum(1 for x in v if x < 0.995)
        rows.append(f"| {name} | {LABELS[a]} / {LABELS[b]} | {_geo(v):.2f}x | {min(v):.2f}x - {max(v):.2f}x | "
                    f"{below} of {len(v)} |")
    return rows


def _detail(loc: Location) -> list[str]:
    t = loc.target
    out = [f"### {t.label}", "", f"Published: **{t.shown()}** ({t.source}).", ""]
    mean_kind = "geometric mean" if t.kind == "ratio" else "mean"
    out.append(f"Over all {loc.n_feasible} points that run, the {mean_kind} is {t.shown(loc.mean)} and the "
               f"highest {t.shown(loc.best_value)} ({loc.best.point.label() if loc.best else '-'}).")
    out.append("")
    if loc.reached:
        out.append("Where:" if not loc.approx else "The map steps over the value; nearest points:")
        out.append("")
        out += [f"- {line}" for line in loc.region]
        out.append("")
        if loc.mechanisms:
            out.append("Mechanism at those points (the largest factor; for DBO, what it moved most): " +
                       ", ".join(f"{mname} at {k}" for mname, k in loc.mechanisms) + ".")
            out.append("")
    else:
        miss = _missing(loc)
        out += ["No point of the map reaches it. " + miss, ""]
    if loc.best_factors:
        f = ", ".join(f"{FACTOR_LABELS[k]} {v:.2f}x" for k, v in loc.best_factors)
        out += [f"At the highest point the ratio splits into: {f}; DBO moved {dbo_moves(loc.best)}.", ""]
    return out


def _joint(m: RegimeMap) -> list[str]:
    out = []
    for npu_m, pim_m, what in (("npu_utilization", "pim_utilization", "busy time"),
                               ("npu_compute_utilization", "pim_mac_utilization", "compute")):
        pts = joint_utilization(m, npu_m, pim_m)
        if pts:
            ex = "; ".join(p.point.label() for p in pts[:4]) + ("; ..." if len(pts) > 4 else "")
            out.append(f"- As {what}: NPU 77% and PIM 38% (each within {2 * UTIL_BAND:.0%} points) hold together at "
                       f"{len(pts)} point{'s' * (len(pts) > 1)}: {ex}.")
        else:
            out.append(f"- As {what}: no point has NPU near 77% and PIM near 38% (each within {2 * UTIL_BAND:.0%} "
                       "points) at once.")
    return out


def caption(name: str) -> str:
    """The title of a figure `librapim reproduce` writes, from its file name."""
    if name.startswith("speedup-context-"):
        b = name.removeprefix("speedup-context-")
        return f"LibraPIM / {LABELS.get(b, b)} over batch x context, 1 and 8 systolic arrays, R 1"
    if name.startswith("speedup-npu-"):
        b = name.removeprefix("speedup-npu-")
        return f"LibraPIM / {LABELS.get(b, b)} over batch x NPU strength, ShareGPT, R 1 and 8"
    if name.startswith("utilization-npu"):
        n = name.removeprefix("utilization-npu")
        return f"LibraPIM's utilization (busy time and compute) over batch x context, {n} systolic array(s), R 1"
    return name


def render(m: RegimeMap, images: Mapping[str, str] | None = None) -> str:
    """The whole markdown document; ``images``: figure name -> path relative to the document."""
    ax = m.axes
    locs = locate_all(m)
    images = dict(images or {})
    n_all, n_ok = len(m.results), len(m.feasible())
    out = [
        "# Where LibraPIM wins: a regime map of the published results",
        "",
        "<!-- generated by `librapim reproduce`; do not edit by hand -->",
        "",
        "The architect's question: *where does LibraPIM pay off, by how much, and through which mechanism?* "
        f"This page answers it from a map of {n_all:,} points: "
        f"{', '.join(ax.models)} x {', '.join(CONTEXTS.get(w, w) for w in ax.workloads)} contexts x batch "
        f"{', '.join(map(str, ax.batches))} x NPU of {', '.join(map(str, ax.npu_arrays))} systolic arrays x PIM "
        f"input registers R = {', '.join(map(str, ax.registers))}, every system on the same {DEVICE}, decode in "
        f"steady state (`--mode iteration`, {ax.samples} sampled batches per point). {n_ok:,} points fit in "
        "memory; the others are listed as not fitting. Regenerate everything on this page, pictures included, "
        "with `librapim reproduce` (docs/cli.md); `librapim regime` searches beyond the map's grid.",
        "",
        "## The answer",
        "",
        "Each published number, where the map reaches it, the mechanism behind the gain there, and what it rests "
        "on. Ratios count as reached where a point's throughput ratio is at least the published average; "
        f"utilizations (\"up to\") where LibraPIM's value is within {UTIL_BAND:.0%} points of the published one. "
        "Mechanisms are the largest of the factors a ratio splits into (section *How a ratio splits*); "
        "for DBO, what it moved most.",
        "",
        *summary_table(locs),
        "",
        "The regimes at a glance: LibraPIM's throughput ratios by NPU strength and batch band (every context, "
        "model and register count; geometric mean and highest point):",
        "",
        *regimes_table(m),
        "",
        "Both utilizations at once:",
        "",
        *_joint(m),
        "",
        "## How a ratio splits into mechanisms",
        "",
        "Every point also runs `neupims+dbo`: NeuPIMs' dual row buffer with LibraPIM's DBO and runtime scheduler. "
        "Each ratio is then an exact product of ratios of systems at the same point:",
        "",
        "- LibraPIM / NeuPIMs = **dbo** (NeuPIMs + DBO / NeuPIMs) x **dex** (LibraPIM / NeuPIMs + DBO).",
        "- LibraPIM / naive = **overlap** (NeuPIMs / naive) x dbo x dex.",
        "- LibraPIM / PIM-for-GEMV = **gemm** (naive / PIM-for-GEMV) x overlap x dbo x dex.",
        "- NeuPIMs / NPU-only = **attn** (naive / NPU-only) x overlap; NeuPIMs / naive = overlap.",
        "",
        *[f"- **{k}**: {v}." for k, v in FACTOR_LABELS.items()],
        "",
        "What DBO moved is read from LibraPIM's executed stages (`simulate(..., keep_stages=True)`): the share of "
        "FC token rows (`fc_rows_to_pim`) and of FC output-column tiles (`fc_cols_to_pim`, 1/32 of a GEMM's "
        "columns each) moved to the PIM, the share of attention moved to the NPU (`offload_attention_share`), and "
        "the share of iterations whose runtime scheduler interleaved sub-batches.",
        "",
        "Each factor over the whole map:",
        "",
        *factor_ranges(m),
        "",
        "A **dex** factor below 1 is DEX losing to the dual row buffer. With nothing moved the two are equal; "
        "work DBO moves *across* DEX's bank sections pays for sharing them (FC column tiles are read in the "
        "weight section the NPU streams, attention moved to the NPU reads its KV in the section the PIM "
        "computes in), and only FC rows riding the NPU's stream (partial batch offload) are cheaper under DEX "
        "(docs/model/concurrency.md, *DEX against the dual row buffer, case by case*). DEX's case is area "
        "(0.032% against about 50%), not speed: LibraPIM's gains on this map come from DBO and its runtime "
        "scheduler.",
        "",
    ]
    if images:
        out += ["## Pictures", "",
                "Each cell is a mean over the models whose KV cache fits (geometric for ratios); grey: none fits. "
                "Red: LibraPIM wins, blue: it loses; outlined: at or above the published number. "
                "`librapim plot regime` and `librapim plot utilization` draw any other slice (docs/plots.md).", ""]
        for name, path in images.items():
            out += [f"**{caption(name)}**", "", f"![{caption(name)}]({path})", ""]
    out += ["## Each published number in detail", ""]
    for loc in locs:
        out += _detail(loc)
    out += [
        "## The previous grid (batch 64-512), for comparison",
        "",
        "The grid this page used to report (GPT-3 x ShareGPT/Alpaca x batch 64-512, R 1) read off the same map. "
        "Inside it the published ratios are out of reach; outside it, as the table above shows, they are not.",
        "",
    ]
    for npu in (1, 8):
        if npu in ax.npu_arrays:
            out += [f"NPU of {npu} systolic array{'s' * (npu > 1)}:", "", *_grid_summary(m, npu), ""]
    out += [
        "## The systems",
        "",
        *[f"- `{name}`: {LABELS[name]} (preset `{preset}`" + (f", `{' '.join('--set ' + s for s in sets)}`" if sets else "")
          + ")." for name, (preset, sets) in SYSTEMS.items()],
        "",
        "`pim-gemv` is the PIM-for-GEMV baseline in the style of Samsung HBM-PIM and SK hynix AiM "
        "(`presets/systems/pim-gemv.toml`, docs/sources.md#s4.3): every FC GEMM and the LM head run on the PIM as "
        "GEMVs, the vector ops on the NPU, banks blocked while the PIM computes. On this device it reads every "
        "weight once per token (once per R tokens with R input registers), so it beats the NPU at batch 1-8 and "
        "falls far behind it at large batches; that is where the published 6.2x appears against it.",
        "",
        "## All points: ShareGPT, R 1",
        "",
    ]
    for npu in ax.npu_arrays:
        if "sharegpt" in ax.workloads and 1 in ax.registers:
            out += [f"NPU of {npu} systolic array{'s' * (npu > 1)}:", "", *_points_table(m, npu, "sharegpt", 1), ""]
    out += [
        "Every other point (contexts, R, all eight systems and every metric) is in the map's storage and in "
        "`librapim reproduce --data FILE`.",
        "",
        "## Columns",
        "",
        "- `tok/s`: decode throughput (`throughput_tokens_per_s`, docs/metrics.md) of each system.",
        "- `L/naive`, `L/GEMV`, `L/NeuPIMs`: LibraPIM's throughput over naive NPU+PIM, PIM-for-GEMV and NeuPIMs.",
        "- `DBO`, `DEX`: the factors of L/NeuPIMs (NeuPIMs + DBO / NeuPIMs, LibraPIM / NeuPIMs + DBO).",
        "- utilizations: LibraPIM's busy-time utilizations (`npu_utilization`, `pim_utilization`: busy time / "
        "iteration time) and compute utilizations (`npu_compute_utilization`, `pim_mac_utilization`: FLOPs / "
        "(peak FLOP/s x iteration time)), docs/metrics.md.",
        "- `DBO moved`: what LibraPIM's DBO moved (see *How a ratio splits*).",
        "",
    ]
    return "\n".join(out)


def point_rows(results: Sequence[PointResult]) -> list[dict]:
    """The map as flat rows (one per point and system), for --data FILE.csv."""
    rows = []
    for r in results:
        p = r.point
        base = {"model": p.model, "workload": p.workload, "batch": p.batch, "npu_arrays": p.npu,
                "registers": p.registers, "infeasible": r.infeasible or ""}
        if r.infeasible:
            rows.append({**base, "system": ""})
            continue
        for name, metrics in r.systems.items():
            rows.append({**base, "system": name, **metrics,
                         **({f"detail_{k}": v for k, v in r.detail.items()} if name == "librapim" else {})})
    return rows
