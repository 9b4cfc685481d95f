"""docs/metrics.md and docs/model/*.md must say what the code does.

- every metric key of ``simulate(mode="iteration")`` (and of ``mode="serve"``, with its latency keys and
  per-step columns) appears in docs/metrics.md in backticks;
- every concurrency mode appears in docs/model/concurrency.md, and the per-preset area table matches the presets;
- every field and derived property of the specs appears in backticks somewhere in docs/model/;
- the worked examples in docs/model/pim.md and docs/model/npu.md (marked tables) recompute from the code;
- the derived-values table of docs/model/specs.md matches the hardware presets;
- the DEX == dual-row-buffer statement of docs/model/concurrency.md holds for the code's formula;
- relative links (and their #anchors) between the model docs resolve.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path

import numpy as np
import pytest

from librapim_cli.cost.concurrency import channel_time
from librapim_cli.cost.link import link_cost
from librapim_cli.cost.npu import npu_cost, systolic_cycles
from librapim_cli.cost.pim import _rows_time, attention_requests, bank_timing
from librapim_cli.cost.tables import build_tables
from librapim_cli.graph.decode import fc_ops, shard_heads
from librapim_cli.graph.ops import AllReduce, Gemm, Vector
from librapim_cli.simulate import simulate
from librapim_cli.spec import (
    ConcurrencySpec,
    DBOSpec,
    EnergySpec,
    HardwareSpec,
    LengthStats,
    LinkSpec,
    MemorySpec,
    ModelSpec,
    NPUSpec,
    PIMSpec,
    PlacementSpec,
    SystemSpec,
    WorkloadSpec,
    list_presets,
    load_hardware,
    load_model,
    load_system,
)
from librapim_cli.spec.system import ConcurrencyMode

DOCS = Path(__file__).resolve().parents[2] / "docs"
MODEL = DOCS / "model"
METRICS = DOCS / "metrics.md"


def _text(path: Path) -> str:
    assert path.is_file(), f"{path} is missing"
    return path.read_text(encoding="utf-8")


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _in_backticks(name: str, spans: list[str]) -> bool:
    pat = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
    return any(pat.search(s) for s in spans)


@pytest.fixture(scope="module")
def iteration_result():
    return simulate("librapim", "gpt3-7b", "sharegpt", mode="iteration", batch=64, samples=2)


@pytest.fixture(scope="module")
def serve_result():
    try:
        import librapim_cli.serving.loop  # noqa: F401
    except ImportError:
        pytest.skip("serving loop not available")
    return simulate("librapim", "gpt3-7b", "fixed-128-128", mode="serve", requests=12, batch=8,
                    sets=["workload.output_len=6"])


# ---- metrics.md ------------------------------------------------------------------------------------------
def test_iteration_metric_keys_documented(iteration_result):
    spans = _code_spans(_text(METRICS))
    missing = [k for k in iteration_result.metrics if f"{k}" not in spans]
    assert not missing, f"docs/metrics.md lacks a `key` entry for iteration metrics: {missing}"


def test_serve_metric_keys_documented(serve_result):
    spans = _code_spans(_text(METRICS))
    missing = [k for k in serve_result.metrics if k not in spans]
    assert not missing, f"docs/metrics.md lacks a `key` entry for serve metrics: {missing}"
    assert serve_result.latency is not None
    lat = [k for k in serve_result.latency if k not in spans]
    stats = {s for v in serve_result.latency.values() for s in v}
    lat += [s for s in stats if s not in spans]
    assert not lat, f"docs/metrics.md lacks latency keys: {lat}"
    cols = [c for c in (serve_result.per_iteration or {}) if c not in spans]
    assert not cols, f"docs/metrics.md lacks per-step columns: {cols}"


# ---- concurrency.md ---------------------------------------------------------------------------------------
def test_every_concurrency_mode_documented():
    spans = _code_spans(_text(MODEL / "concurrency.md"))
    missing = [m for m in typing.get_args(ConcurrencyMode) if m not in spans]
    assert not missing, f"docs/model/concurrency.md does not name modes {missing}"


def test_area_table_matches_system_presets():
    text = _text(MODEL / "concurrency.md")
    section = text.split("## Area overhead per mode", 1)[1]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    for info in list_presets("system"):
        sysspec = load_system(info.name)
        hit = [r for r in rows if re.search(rf"[(, ]{re.escape(info.name)}[,)]", r)]
        assert hit, f"system preset {info.name} is missing from the area table of docs/model/concurrency.md"
        cells = [c.strip() for c in hit[0].strip("|").split("|")]
        assert cells[0].startswith(f"`{sysspec.concurrency.mode}`"), (info.name, cells[0])
        value = float(re.match(r"[-0-9.e]+", cells[1]).group(0))
        assert value == pytest.approx(sysspec.concurrency.area_overhead_fraction), (info.name, cells[1])


def test_dex_section_model_as_documented():
    """concurrency.md: without offloaded work dex == dual_row_buffer; work moved across devices serializes in
    the other device's section under dex only."""
    rng = np.random.default_rng(0)
    pim_attn, pim_fc, npu_w, npu_kv = rng.exponential(1.0, size=(4, 5000))
    pim_io = pim_attn * rng.random(5000)
    zero = np.zeros(5000)
    normal = (pim_attn, zero, pim_io, npu_w, zero)
    np.testing.assert_array_equal(channel_time("dex", *normal), channel_time("dual_row_buffer", *normal))
    moved = (pim_attn, pim_fc, pim_io, npu_w, npu_kv)
    dex, drb = channel_time("dex", *moved), channel_time("dual_row_buffer", *moved)
    assert np.all(dex >= drb) and np.any(dex > drb)
    np.testing.assert_allclose(dex, np.maximum.reduce([pim_attn + npu_kv, pim_fc + npu_w, drb]))
    text = _text(MODEL / "concurrency.md")
    assert "they serialize" in text and "exactly the dual-row-buffer time" in text


# ---- spec fields -------------------------------------------------------------------------------------------
SPECS = (MemorySpec, PIMSpec, NPUSpec, EnergySpec, HardwareSpec, ModelSpec, SystemSpec, LinkSpec, PlacementSpec,
         ConcurrencySpec, DBOSpec, WorkloadSpec, LengthStats)


@pytest.mark.parametrize("cls", SPECS, ids=lambda c: c.__name__)
def test_spec_fields_and_properties_documented(cls):
    spans = [s for p in sorted(MODEL.glob("*.md")) for s in _code_spans(_text(p))]
    names = list(cls.model_fields)
    names += [k for k, v in vars(cls).items() if isinstance(v, property)]
    missing = [n for n in names if not _in_backticks(n, spans)]
    assert not missing, f"{cls.__name__} fields/properties not documented in docs/model/: {missing}"


# ---- worked examples ---------------------------------------------------------------------------------------
def _marked_table(path: Path, tag: str) -> tuple[dict[str, str], dict[str, str]]:
    text = _text(path)
    m = re.search(rf"<!-- {tag}: (.*?) -->\n(.*?)<!-- /{tag} -->", text, re.S)
    assert m, f"{path.name}: no <!-- {tag}: ... --> table"
    params = dict(kv.split("=", 1) for kv in m.group(1).split())
    values = {}
    for line in m.group(2).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("quantity", "---"):
            values[cells[0]] = cells[1]
    return params, values


def _check(doc: dict[str, str], computed: dict[str, float], where: str) -> None:
    assert set(doc) == set(computed), f"{where}: rows {sorted(doc)} vs checked {sorted(computed)}"
    for key, shown in doc.items():
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        tol = 0.5 * 10.0 ** (-decimals) + 1e-9 * abs(computed[key])
        assert abs(float(shown) - computed[key]) <= tol, f"{where}: {key} shown {shown}, code gives {computed[key]!r}"


def test_pim_worked_example_matches_code():
    p, doc = _marked_table(MODEL / "pim.md", "pim-example")
    hw, model, tp, L = load_hardware(p["hardware"]), load_model(p["model"]), int(p["tp"]), int(p["L"])
    mem, pim = hw.memory, hw.pim
    bt = bank_timing(hw)
    q, kv = shard_heads(model, tp)
    r = attention_requests(hw, np.array([L]), q, kv, model.head_dim, model.dtype_bytes, bt)
    # the documented formulas (docs/model/pim.md section 4), evaluated independently of cost/pim.py
    B, e_row, lanes, bpu = mem.banks_per_channel, mem.row_bytes // model.dtype_bytes, pim.mac_lanes_per_unit, \
        pim.banks_per_unit
    group = max(1, q // kv)
    reopen = math.ceil(group / pim.input_registers)
    kvdim = kv * model.head_dim
    e_k = math.ceil(L / B) * kvdim
    rows_k, macs_k = math.ceil(e_k / e_row) * reopen, math.ceil(e_k / lanes) * group * bpu
    d_b = math.ceil(kvdim / B)
    rows_v, macs_v = d_b * math.ceil(L / e_row) * reopen, d_b * math.ceil(L / lanes) * group * bpu
    bank_raw = float(_rows_time(bt, rows_k, macs_k) + _rows_time(bt, rows_v, macs_v))
    q_b, s_b = q * model.head_dim * model.dtype_bytes, q * L * model.dtype_bytes
    gw = (math.ceil(q_b / mem.column_bytes) + math.ceil(s_b / mem.column_bytes)) * bt.t_gwrite_per_col_s
    io_raw = gw + (q_b + s_b) / mem.channel_bw_bytes_per_s
    assert macs_k + macs_v == float(r.mac_cmds[0])
    assert bank_raw / bt.derate == pytest.approx(float(r.bank_s[0]), rel=1e-12)
    assert io_raw / bt.derate == pytest.approx(float(r.io_s[0]), rel=1e-12)
    computed = {
        "t_act_ns": bt.t_act_s * 1e9, "t_ras_eff_ns": bt.t_ras_eff_s * 1e9, "t_mac_ns": bt.t_mac_s * 1e9,
        "t_gwrite_per_col_ns": bt.t_gwrite_per_col_s * 1e9, "derate": bt.derate,
        "rows_K": rows_k, "macs_K": macs_k, "rows_V": rows_v, "macs_V": macs_v, "mac_cmds": float(r.mac_cmds[0]),
        "bank_raw_ns": bank_raw * 1e9, "io_raw_ns": io_raw * 1e9,
        "bank_ns": float(r.bank_s[0]) * 1e9, "io_ns": float(r.io_s[0]) * 1e9, "time_ns": float(r.time_s[0]) * 1e9,
        "flops": float(r.flops[0]), "kv_bytes": float(r.kv_bytes[0]), "io_bytes": float(r.io_bytes[0]),
        "energy_nj": float(r.energy_j[0]) * 1e9,
    }
    _check(doc, computed, "docs/model/pim.md worked example")


def test_npu_worked_example_matches_code():
    p, doc = _marked_table(MODEL / "npu.md", "npu-example")
    hw, system, model = load_hardware(p["hardware"]), load_system(p["system"]), load_model(p["model"])
    tp, rows = int(p["tp"]), int(p["rows"])
    assert system.hardware.name == hw.name
    ops = fc_ops(model, tp, float(rows))
    qkv = next(o for o in ops if isinstance(o, Gemm) and o.name == "qkv")
    rest = [o for o in ops if o.phase == "rest"]
    ar = next(o for o in rest if isinstance(o, AllReduce))
    t = build_tables(model, system, tp, rows, 1)
    g = t.npu["rest"]
    computed = {
        "qkv_cycles": float(systolic_cycles(hw, rows, qkv.k, qkv.n)),
        "qkv_memory_us": npu_cost(qkv, hw).memory_s * 1e6,
        "rest_cycles": float(sum(systolic_cycles(hw, o.set_rows, o.k, o.n, o.weight_sets)
                                 for o in rest if isinstance(o, Gemm))),
        "rest_vector_us": sum(float(o.flops) for o in rest if isinstance(o, Vector)) / hw.npu.vector_flops * 1e6,
        "allreduce_us": link_cost(ar, system.link, hw).time_s * 1e6,
        "rest_stage_npu_us": (max(g.sa_s[rows], g.vec_s[rows], g.mem_s[rows]) + g.link_s[rows]) * 1e6,
    }
    _check(doc, computed, "docs/model/npu.md worked example")


def test_specs_derived_table_matches_presets():
    text = _text(MODEL / "specs.md")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z0-9-]+)` \|(.*)$", text, re.M)}
    for info in list_presets("hardware"):
        assert info.name in rows, f"hardware preset {info.name} missing from docs/model/specs.md derived table"
        cells = [c.strip() for c in rows[info.name].strip().strip("|").split("|")]
        hw = load_hardware(info.name)
        num = [float(re.match(r"[0-9.]+", c).group(0)) if re.match(r"[0-9.]", c) else None for c in cells]
        chb = [int(x) for x in re.findall(r"\d+", cells[2])]
        expect = [hw.npu.peak_flops / 1e12, hw.memory.bw_bytes_per_s / 1e9, None, hw.ridge_flop_per_byte,
                  hw.memory.refresh_derate, hw.pim_peak_flops / 1e12 if hw.pim else None,
                  hw.pim_bw_ratio if hw.pim else None]
        assert chb == [hw.memory.channels, hw.memory.banks_per_channel], (info.name, cells[2])
        for shown, cell, want in zip(num, cells, expect, strict=True):
            if want is None:
                continue
            dec = len(cell.split()[0].split(".")[1]) if "." in cell.split()[0] else 0
            assert abs(shown - want) <= 0.5 * 10.0 ** (-dec) + 1e-9, (info.name, cell, want)


# ---- links -------------------------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", _text(path), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


OWN = [DOCS / "index.md", METRICS, *sorted(MODEL.glob("*.md"))]


@pytest.mark.parametrize("path", OWN, ids=lambda p: str(p.relative_to(DOCS)))
def test_links_between_model_docs_resolve(path):
    text = re.sub(r"```.*?```", "", _text(path), flags=re.S)
    own = {p.resolve() for p in OWN}
    for target, anchor in re.findall(r"\]\(([^)#\s]+\.md)(?:#([^)\s]+))?\)", text):
        dest = (path.parent / target).resolve()
        if dest not in own:
            continue  # pages owned by other parts of the project (cli.md, sweep.md, ...)
        assert dest.is_file(), f"{path.name}: link to missing {target}"
        if anchor:
            assert anchor in _anchors(dest), f"{path.name}: link {target}#{anchor} has no such heading"
