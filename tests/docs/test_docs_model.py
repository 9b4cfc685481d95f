"""docs/ must say what the code does.

- docs/metrics.md is generated from the metric registry and up to date; every metric key of ``simulate``
  (iteration and serve mode, latency keys and per-step columns included) is a registry entry on that page;
- every registered concurrency mode appears in docs/model/concurrency.md and every admission policy in
  docs/model/serving.md; the per-preset area table matches the presets;
- every field and derived property of the specs appears in backticks somewhere in docs/model/;
- the worked examples in docs/model/pim.md and docs/model/npu.md (marked tables) recompute from the code;
- the row-reuse table of docs/model/pim.md matches ``input_vectors_per_row`` for every PIM preset; MAC
  commands are whole per row as pim.md says; the derived-values table of docs/model/specs.md matches;
- the DEX section model of docs/model/concurrency.md holds for the registered ``dex`` mode;
- one interleaving decision per iteration (the worked examples of schedule.md, dbo.md and concurrency.md's
  DEX cases: tests/docs/test_docs_examples.py);
- bundled presets are parsed once per process and presets given by path are re-read;
- iteration mode honours placement.kv_channel_policy, arrivals follow the three arrival modes;
- every ``docs/sources.md#...`` citation in code, presets, tests and docs names an anchor of that page, and
  nothing points to a fact sheet outside the repository;
- no page repeats a statement the code has outgrown (stale phrases); relative links resolve.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from doc_tables import check_values, marked_table
from librapim_cli import admission, concurrency
from librapim_cli.concurrency import ModeParams
from librapim_cli.cost.link import link_cost
from librapim_cli.cost.npu import npu_cost, systolic_cycles
from librapim_cli.cost.pim import (
    _rows_time,
    attention_requests,
    bank_timing,
    input_vectors_per_row,
    mac_commands,
)
from librapim_cli.cost.tables import build_tables
from librapim_cli.graph.decode import fc_ops, shard_heads
from librapim_cli.graph.ops import AllReduce, Gemm, Vector
from librapim_cli.inputs import setup
from librapim_cli.metrics import docgen as metrics_docgen
from librapim_cli.metrics import registry
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import run_iteration
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
    ServingSpec,
    SystemSpec,
    WorkloadSpec,
    list_presets,
    load_hardware,
    load_model,
    load_system,
    load_workload,
)
from librapim_cli.spec.loading import load_bundled, presets_root
from librapim_cli.workload import make_requests, place_channels, read_trace, snake_channels

ROOT = Path(__file__).resolve().parents[2]
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
def test_metrics_page_is_generated_from_the_registry():
    assert _text(METRICS) == metrics_docgen.render(), (
        "docs/metrics.md is out of date: run `python -m librapim_cli.metrics.docgen > docs/metrics.md`")


def test_iteration_metric_keys_are_registry_entries(iteration_result):
    assert tuple(iteration_result.metrics) == registry.keys("iteration")
    spans = _code_spans(_text(METRICS))
    assert all(k in spans for k in iteration_result.metrics)


def test_serve_metric_keys_documented(serve_result):
    assert set(serve_result.metrics) == set(registry.keys("serve"))
    spans = _code_spans(_text(METRICS))
    missing = [k for k in serve_result.metrics if k not in spans]
    assert not missing, f"docs/metrics.md lacks a `key` entry for serve metrics: {missing}"
    assert serve_result.latency is not None
    assert set(serve_result.latency) == {name for name, _, _ in registry.LATENCIES}
    lat = [k for k in serve_result.latency if k not in spans]
    stats = {s for v in serve_result.latency.values() for s in v}
    assert stats == set(registry.LATENCY_STATS)
    lat += [s for s in stats if s not in spans]
    assert not lat, f"docs/metrics.md lacks latency keys: {lat}"
    cols = [c for c in (serve_result.per_iteration or {}) if c not in spans]
    assert not cols, f"docs/metrics.md lacks per-step columns: {cols}"


# ---- concurrency.md ---------------------------------------------------------------------------------------
def test_every_concurrency_mode_documented():
    spans = _code_spans(_text(MODEL / "concurrency.md"))
    missing = [m for m in concurrency.names() if m not in spans]
    assert not missing, f"docs/model/concurrency.md does not name modes {missing}"


def test_every_admission_policy_documented():
    spans = _code_spans(_text(MODEL / "serving.md"))
    missing = [m for m in admission.names() if m not in spans]
    assert not missing, f"docs/model/serving.md does not name admission policies {missing}"


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
    """concurrency.md (and overview.md A3): without offloaded work dex == dual_row_buffer; work moved across
    devices serializes in the other device's section under dex only."""
    def channel_time(mode, *w):
        return concurrency.get(mode).channel_time(ModeParams(), *w)

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
    assert "they serialize" in text and "| Nothing moved | **equal** |" in text
    a3 = next(line for line in _text(MODEL / "overview.md").splitlines() if line.startswith("| A3 "))
    assert "max(pim_attn + npu_kv, pim_fc + npu_w, PIM, NPU + pim_io)" in a3
    assert "without offloaded work `dex` equals `dual_row_buffer`" in a3


# ---- spec fields -------------------------------------------------------------------------------------------
SPECS = (MemorySpec, PIMSpec, NPUSpec, EnergySpec, HardwareSpec, ModelSpec, SystemSpec, LinkSpec, PlacementSpec,
         ConcurrencySpec, DBOSpec, ServingSpec, WorkloadSpec, LengthStats)


@pytest.mark.parametrize("cls", SPECS, ids=lambda c: c.__name__)
def test_spec_fields_and_properties_documented(cls):
    spans = [s for p in sorted(MODEL.glob("*.md")) for s in _code_spans(_text(p))]
    names = list(cls.model_fields)
    names += [k for k, v in vars(cls).items() if isinstance(v, property)]
    missing = [n for n in names if not _in_backticks(n, spans)]
    assert not missing, f"{cls.__name__} fields/properties not documented in docs/model/: {missing}"


# ---- worked examples ---------------------------------------------------------------------------------------
_marked_table = marked_table
_check = check_values


def _doc_mac(e: int, row_elems: int, lanes: int) -> int:
    """pim.md: MAC(e) = floor(e / E_row) * ceil(E_row / lanes) + ceil((e mod E_row) / lanes)."""
    return (e // row_elems) * math.ceil(row_elems / lanes) + math.ceil((e % row_elems) / lanes)


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
    R = max(1, min(pim.input_registers, pim.global_buffer_bytes // mem.row_bytes))
    reopen = math.ceil(group / R)
    kvdim = kv * model.head_dim
    e_k = math.ceil(L / B) * kvdim
    rows_k, macs_k = math.ceil(e_k / e_row) * reopen, _doc_mac(e_k, e_row, lanes) * group * bpu
    d_b = math.ceil(kvdim / B)
    rows_v, macs_v = d_b * math.ceil(L / e_row) * reopen, d_b * _doc_mac(L, e_row, lanes) * group * bpu
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


# ---- PIM row reuse, MAC commands, channel placement ---------------------------------------------------------
def _plain_table(path: Path, tag: str) -> list[list[str]]:
    text = _text(path)
    m = re.search(rf"<!-- {tag} -->\n(.*?)<!-- /{tag} -->", text, re.S)
    assert m, f"{path.name}: no <!-- {tag} --> table"
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in m.group(1).splitlines()]
    return [r for r in rows[2:] if r and r[0]]


def test_pim_row_reuse_table_matches_presets():
    """pim.md: R = max(1, min(input_registers, global_buffer_bytes // row_bytes)), per PIM preset."""
    rows = {r[0]: r[1:] for r in _plain_table(MODEL / "pim.md", "pim-reuse")}
    pim_presets = [i.name for i in list_presets("hardware") if load_hardware(i.name).pim is not None]
    assert sorted(rows) == sorted(pim_presets), "pim.md row-reuse table must list exactly the PIM hardware presets"
    for name in pim_presets:
        hw = load_hardware(name)
        regs, gbuf, row, r = (int(x) for x in rows[name])
        assert (regs, gbuf, row) == (hw.pim.input_registers, hw.pim.global_buffer_bytes, hw.memory.row_bytes), name
        assert r == max(1, min(regs, gbuf // row)) == input_vectors_per_row(hw), name
    # the buffer is a real limit: some preset has more registers than row slices in its buffer
    assert any(hw.pim.input_registers > input_vectors_per_row(hw)
               for hw in map(load_hardware, pim_presets)), "global_buffer_bytes never binds: revisit pim.md"


def test_global_buffer_documented_as_used():
    specs = _text(MODEL / "specs.md")
    row = next(line for line in specs.splitlines() if line.startswith("| `global_buffer_bytes`"))
    assert "not used by the model" not in row and "input_vectors_per_row" in row
    pim_text = _text(MODEL / "pim.md")
    assert "global_buffer_bytes // row_bytes" in pim_text and "never limits" not in pim_text


def test_mac_commands_whole_per_row():
    """pim.md: a MAC command never straddles two rows (MAC(e) formula), also when lanes do not divide E_row."""
    rng = np.random.default_rng(1)
    for row_elems, lanes in ((512, 16), (1024, 16), (500, 16), (100, 7)):
        e = rng.integers(0, 20 * row_elems, size=300)
        got = mac_commands(e, row_elems, lanes)
        want = [_doc_mac(int(x), row_elems, lanes) for x in e]
        np.testing.assert_array_equal(got, want)
        if row_elems % lanes == 0:  # the bundled presets: equal to ceil(e / lanes)
            np.testing.assert_array_equal(got, np.ceil(e / lanes))


def test_kv_channel_policy_as_documented():
    """pim.md: iteration mode honours kv_channel_policy: round_robin = i mod C, least_loaded = snake."""
    lens = np.random.default_rng(2).integers(1, 2000, size=100)
    np.testing.assert_array_equal(place_channels(lens, 32, "round_robin"), np.arange(100) % 32)
    np.testing.assert_array_equal(place_channels(lens, 32, "least_loaded"), snake_channels(lens, 32))
    kw = dict(mode="iteration", batch=64, samples=1)
    rr = simulate("librapim", "gpt3-7b", "sharegpt", sets=["system.placement.kv_channel_policy=round_robin"], **kw)
    ll = simulate("librapim", "gpt3-7b", "sharegpt", sets=["system.placement.kv_channel_policy=least_loaded"], **kw)
    assert rr.metrics["iteration_time_s"] != ll.metrics["iteration_time_s"]
    row = next(line for line in _text(MODEL / "specs.md").splitlines()
               if line.startswith("| `placement.kv_channel_policy`"))
    assert "serve mode only" not in row.lower() and "both modes" in row


# ---- schedule ----------------------------------------------------------------------------------------------
def test_one_interleaving_decision_per_iteration():
    """schedule.md: under the rule, with pp > 1 interleaving is decided once, from the smallest micro-batch."""
    s = setup("neupims", "gpt3-7b", "sharegpt", sets=["system.pp=2"])
    sched = schedule_for(s, 512, 300)
    for n, expect in ((512, "ABCDEF"), (511, "QMR")):
        lens = np.full(n, 300)
        it = run_iteration(sched, lens, place_channels(lens, sched.tables.channels, "least_loaded"),
                           keep_stages=True).stages
        for mb in (0, 1):
            names = "".join(str(x) for x, m in zip(it.name, it.micro_batch, strict=True) if m == mb and x != "H")
            assert names == expect, (n, mb, names)


# ---- workload ----------------------------------------------------------------------------------------------
def test_arrival_modes_as_documented():
    """workload.md: closed = all at 0, poisson = generated, trace = the CSV's arrival_s (needs lengths='trace')."""
    w = load_workload("sharegpt-trace-sample")
    assert w.arrival == "trace"
    base = Path(list_presets("workload")[0].path).parent
    csv = read_trace(base / w.trace_path)
    np.testing.assert_array_equal(make_requests(w).arrival_s, csv.arrival_s)
    closed = make_requests(w.model_copy(update={"arrival": "closed"}))
    assert not closed.arrival_s.any()
    np.testing.assert_array_equal(closed.input_len, make_requests(w).input_len)
    pois = make_requests(w.model_copy(update={"arrival": "poisson", "rate_per_s": 5.0})).arrival_s
    assert np.all(np.diff(pois) > 0) and not np.allclose(pois, csv.arrival_s)
    with pytest.raises(Exception, match="lengths='trace'"):
        WorkloadSpec.model_validate({**load_workload("sharegpt").model_dump(), "arrival": "trace"})


# ---- presets ----------------------------------------------------------------------------------------------
def test_bundled_presets_parsed_once_paths_reread(tmp_path):
    """specs.md: a bundled preset named without overrides is parsed once per process; setup() re-reads a path."""
    assert load_bundled("model", "gpt3-7b") is load_bundled("model", "gpt3-7b")
    a, b = setup("librapim", "gpt3-7b", "sharegpt"), setup("librapim", "gpt3-7b", "sharegpt")
    assert a.model is b.model and a.system is b.system and a.workload is b.workload
    assert setup("librapim", "gpt3-7b", "sharegpt", sets=["model.layers=16"]).model.layers == 16
    src = (presets_root() / "models" / "gpt3-7b.toml").read_text()
    path = tmp_path / "m.toml"
    path.write_text(src)
    assert setup("librapim", str(path), "sharegpt").model.layers == 32
    path.write_text(re.sub(r"(?m)^layers = 32", "layers = 16", src))
    assert setup("librapim", str(path), "sharegpt").model.layers == 16
    assert load_model(str(path)) is not load_model(str(path)), "specs.md says the exported loaders re-read paths"


# ---- stale statements --------------------------------------------------------------------------------------
STALE = ("not consulted", "never binding", "ignored for traces", "never limits the model", "equal** `dual_row_buffer`",
         "Known issue", "simulate.py` `setup", "simulate.py` `kv_capacity_bytes", "simulate.setup",
         "O(rows · C) for time interleaving", "a `ceil` that does not separate", "per-channel\n  for time interleaving",
         "0.24 % of the attention KV bytes", "about 29 %", "schedule/batched.py", "schedule/iteration.py",
         "cost/concurrency.py", "serving/lengths.py", "_channel_max_scalar", "decide_many", "fc_only_memo",
         "supports(", "_evaluate_deferred", "decode_segment", "facts.md", "facts §")


@pytest.mark.parametrize("path", [DOCS / "index.md", METRICS, *sorted(MODEL.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_no_stale_statements(path):
    text = _text(path)
    hits = [p for p in STALE if p in text]
    assert not hits, f"{path.name} still says {hits}"


def test_cli_default_mode_documented():
    """The CLI runs serve mode by default; the library function simulate() defaults to iteration."""
    import inspect

    from librapim_cli.cli import simulate as cli_simulate

    assert cli_simulate.DEFAULT_MODE == "serve"
    assert inspect.signature(simulate).parameters["mode"].default == "iteration"
    for page in (MODEL / "overview.md", MODEL / "serving.md", METRICS):
        assert "--mode serve" in _text(page), page.name


# ---- links -------------------------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", _text(path), flags=re.S)
    return ({_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}
            | set(re.findall(r'<a id="([^"]+)"></a>', text)))


SOURCE_ANCHORS = _anchors(DOCS / "sources.md")


def _repo_files():
    for sub in ("src", "presets", "tests", "docs", "benchmarks"):
        for path in sorted((ROOT / sub).rglob("*")):
            if path.suffix in (".py", ".toml", ".md", ".csv") and path.is_file():
                yield path
    yield ROOT / "README.md"


def test_sources_citations_name_existing_anchors():
    """Every `sources.md#sN` citation (code, presets, tests, docs) names an anchor of docs/sources.md, and
    nothing points to a fact sheet outside the repository."""
    bad, outside = [], []
    for path in _repo_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"sources\.md#(s[0-9][0-9.]*[0-9]|s[0-9]+)", text):
            if m.group(1) not in SOURCE_ANCHORS:
                bad.append(f"{path.relative_to(ROOT)}: #{m.group(1)}")
        if "facts.md" in text and path.name != "test_docs_model.py":
            outside.append(str(path.relative_to(ROOT)))
    assert not bad, f"citations of missing sources.md anchors: {bad[:10]}"
    assert not outside, f"files still citing the external facts.md: {outside}"


OWN = [DOCS / "index.md", METRICS, DOCS / "sources.md", *sorted(MODEL.glob("*.md"))]


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
