"""docs/metrics.md and docs/model/*.md must say what the code does.

- every metric key of ``simulate(mode="iteration")`` (and of ``mode="serve"``, with its latency keys and
  per-step columns) appears in docs/metrics.md in backticks;
- every concurrency mode appears in docs/model/concurrency.md, and the per-preset area table matches the presets;
- every field and derived property of the specs appears in backticks somewhere in docs/model/;
- the worked examples in docs/model/pim.md and docs/model/npu.md (marked tables) recompute from the code;
- the row-reuse table of docs/model/pim.md (global_buffer_bytes caps input vectors per row) matches
  ``input_vectors_per_row`` for every PIM preset; MAC commands are whole per row as pim.md says;
- the derived-values table of docs/model/specs.md matches the hardware presets;
- the DEX section model of docs/model/concurrency.md holds for the code's formula (dex == dual_row_buffer
  without offloaded work, never faster with it), and DBO's attention skip rule under blocked/dex is exact;
- DBO moves work in one direction per stage, its candidate filter (``movable``) keeps every request a
  brute-force optimum over per-channel prefixes needs, an accepted attention decision moves something, and
  the shares quoted in docs/model/dbo.md recompute;
- ``channel_max`` equals the per-channel maximum of ``channel_time`` in every mode, time interleaving
  included (docs/model/concurrency.md, dbo.md);
- ``run_iterations`` applies where docs/model/schedule.md says (``supports``), and closed-loop serving laid
  out first equals the step-by-step loop (docs/model/serving.md);
- bundled presets are parsed once per process and presets given by path are re-read (docs/model/specs.md);
- iteration mode honours placement.kv_channel_policy (docs/model/pim.md), arrivals follow the three
  arrival modes (docs/model/workload.md), and the interleaving decision is one per iteration
  (docs/model/schedule.md);
- no page repeats a statement the code has outgrown (stale phrases);
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
from librapim_cli.cost.pim import (
    _rows_time,
    attention_requests,
    bank_timing,
    input_vectors_per_row,
    mac_commands,
    place_channels,
    snake_channels,
)
from librapim_cli.cost.tables import build_tables
from librapim_cli.graph.decode import fc_ops, shard_heads
from librapim_cli.graph.ops import AllReduce, Gemm, Vector
from librapim_cli.inputs import make_schedule, setup
from librapim_cli.optimize.dbo import (
    _attention_can_help,
    attention_order,
    best_attention_offload,
    decide_many,
    movable,
)
from librapim_cli.optimize.stage import (
    NO_OFFLOAD,
    Decision,
    StageInput,
    _channel_max_scalar,
    attention_set,
    channel_max,
    stage_time,
)
from librapim_cli.schedule import batched
from librapim_cli.schedule.iteration import run_iteration
from librapim_cli.serving import loop
from librapim_cli.serving.lengths import make_requests, read_trace
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
    load_workload,
)
from librapim_cli.spec.loading import load_bundled, presets_root
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
    """concurrency.md (and overview.md A3): without offloaded work dex == dual_row_buffer; work moved across
    devices serializes in the other device's section under dex only."""
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
    a3 = next(line for line in _text(MODEL / "overview.md").splitlines() if line.startswith("| A3 "))
    assert "max(pim_attn + npu_kv, pim_fc + npu_w, PIM, NPU + pim_io)" in a3
    assert "without offloaded work `dex` equals `dual_row_buffer`" in a3


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


# ---- DBO ---------------------------------------------------------------------------------------------------
def _stage_m(mode: str, lens: np.ndarray):
    """Stage M of the Q/M/R schedule (idle NPU, attention on PIM) under ``mode``."""
    s = setup("librapim", "gpt3-7b", "sharegpt", sets=[f"system.concurrency.mode={mode}"])
    t = make_schedule(s, 8, int(lens.max())).tables
    ch = place_channels(lens, t.channels, "least_loaded")
    return t, StageInput(None, 0, attention_set(t, lens, ch), True)


@pytest.mark.parametrize("mode", ["blocked", "dex"])
def test_attention_skip_rule_is_exact(mode):
    """dbo.md skip rule 2: under blocked/dex, if no request's KV reads faster at BW_ch*eta than its PIM time,
    no attention offload shortens the stage; GPT-3 7B tp 4 on the NeuPIMs-class device crosses at 40 tokens."""
    long_lens = np.random.default_rng(3).integers(40, 2048, size=200)
    t, inp = _stage_m(mode, long_lens)
    assert not _attention_can_help(t, inp)
    base = stage_time(t, inp, NO_OFFLOAD).time_s
    assert best_attention_offload(t, inp).predicted_s >= base * (1 - 1e-12)
    t, inp = _stage_m(mode, np.array([39] * 64 + [1000] * 64))
    assert _attention_can_help(t, inp)
    t, inp = _stage_m("dual_row_buffer", long_lens)
    assert _attention_can_help(t, inp)  # the rule applies to blocked and dex only


def test_dbo_moves_one_direction_per_stage():
    """dbo.md: a decision moves FC rows to the PIM or attention to the NPU, never both."""
    seen_fc = seen_attn = False
    for system, model, batch in (("librapim", "gpt3-7b", 512), ("librapim", "llama2-70b", 64),
                                 ("librapim-dbo-only", "gpt3-7b", 64)):
        r = simulate(system, model, "sharegpt", mode="iteration", batch=batch, samples=1, keep_stages=True)
        for st in r.iterations[0].stages:
            d = st.decision
            moved_attn = d.attn_to_npu is not None and bool(np.any(d.attn_to_npu))
            assert not (d.fc_rows_to_pim > 0 and moved_attn), (system, model, st.name)
            seen_fc |= d.fc_rows_to_pim > 0
            seen_attn |= moved_attn
    assert seen_fc and seen_attn, "the cases should exercise both directions"


def test_decide_many_equals_one_stage_at_a_time():
    """dbo.md: batching stages across micro-batches gives each stage its own one-stage decision."""
    rng = np.random.default_rng(4)
    s = setup("librapim", "llama2-70b", "sharegpt")
    t = make_schedule(s, 8, 2048).tables
    inps = []
    for _ in range(4):
        lens = rng.integers(1, 2048, size=int(rng.integers(5, 60)))
        inps.append(StageInput(None, 0, attention_set(t, lens, place_channels(lens, t.channels, "round_robin")), True))
    bases = [stage_time(t, i, NO_OFFLOAD) for i in inps]
    many = decide_many(t, inps, s.system.dbo, bases)
    for inp, b, d in zip(inps, bases, many, strict=True):
        one = decide_many(t, [inp], s.system.dbo, [b])[0]
        assert d.predicted_s == pytest.approx(one.predicted_s, rel=1e-12)
        assert (d.attn_to_npu is None) == (one.attn_to_npu is None)
        if d.attn_to_npu is not None:
            np.testing.assert_array_equal(d.attn_to_npu, one.attn_to_npu)


def _prefix_masks(t, inp):
    """Every per-channel prefix decision of attention_order, as (mask, moved count)."""
    order, chs, counts, _ = attention_order(inp, t.channels)
    lists = [order[chs == c] for c in range(t.channels) if counts[c]]
    for ks in np.ndindex(*(len(x) + 1 for x in lists)):
        mask = np.zeros(inp.attn.size, dtype=bool)
        for lst, k in zip(lists, ks, strict=True):
            mask[lst[:k]] = True
        yield mask


@pytest.mark.parametrize("mode", ["blocked", "dex"])
def test_movable_keeps_what_a_brute_force_prefix_optimum_moves(mode):
    """dbo.md, candidates: under blocked/dex a request whose KV reads no faster from the NPU than the PIM
    processes it never lowers its channel, so dropping it from any decision never lengthens the stage; the
    smallest optimal per-channel prefixes move only ``movable`` requests, and the sweep finds the optimum."""
    rng = np.random.default_rng(11)
    s = setup("librapim", "gpt3-7b", "sharegpt", sets=[f"system.concurrency.mode={mode}"])
    t = make_schedule(s, 8, 2048).tables
    gained = mixed = 0
    for trial in range(8):
        n = 12
        lens = np.where(rng.random(n) < 0.5, rng.integers(1, 40, n), rng.integers(40, 1500, n))
        ch = rng.integers(0, 3, n)  # three busy channels keep the brute force small
        group, rows = (None, 0) if trial % 2 == 0 else ("qkv", 8)
        inp = StageInput(group, rows, attention_set(t, lens, ch), True)
        keep = movable(t, inp.attn.pim_s, inp.attn.kv_bytes)
        mixed += bool(keep.any() and not keep.all())
        best_t, best = math.inf, []
        for mask in _prefix_masks(t, inp):
            dec = Decision(0, mask if mask.any() else None, math.nan)
            total = stage_time(t, inp, dec).time_s
            kept = mask & keep
            dropped = stage_time(t, inp, Decision(0, kept if kept.any() else None, math.nan)).time_s
            assert dropped <= total * (1 + 1e-12), (mode, trial, "dropping a non-movable request lengthened")
            if total < best_t * (1 - 1e-12):
                best_t, best = total, [mask]
            elif total <= best_t * (1 + 1e-12):
                best.append(mask)
        fewest = min(int(m.sum()) for m in best)
        for m in best:
            if m.sum() == fewest:
                assert not (m & ~keep).any(), (mode, trial, "an optimal prefix needs a request movable drops")
        base = stage_time(t, inp, NO_OFFLOAD).time_s
        gained += best_t < base * (1 - 1e-9)
        assert best_attention_offload(t, inp).predicted_s == pytest.approx(best_t, rel=1e-9)
        d = decide_many(t, [inp], s.system.dbo, [stage_time(t, inp, NO_OFFLOAD)])[0]
        if d.attn_to_npu is not None:  # an accepted attention decision moves something, only candidates
            assert d.attn_to_npu.any() and not (d.attn_to_npu & ~keep).any()
    assert gained and mixed, "the stages should mix movable and non-movable requests, and some should gain"
    for other in ("time_interleaved", "dual_row_buffer"):  # no filter in the other modes
        t2 = make_schedule(setup("librapim", "gpt3-7b", "sharegpt", sets=[f"system.concurrency.mode={other}"]),
                           8, 2048).tables
        a = attention_set(t2, np.array([5, 300, 2000]), np.array([0, 1, 2]))
        assert movable(t2, a.pim_s, a.kv_bytes).all()


@pytest.mark.parametrize("mode", list(typing.get_args(ConcurrencyMode)))
def test_channel_max_is_the_per_channel_maximum(mode):
    """concurrency.md / dbo.md: with nothing moved to the NPU the slowest channel follows from the per-channel
    maxima in every mode; time interleaving is non-decreasing in the channel's PIM time."""
    s = setup("librapim-dbo-only", "gpt3-7b", "sharegpt", sets=[f"system.concurrency.mode={mode}"])
    t = make_schedule(s, 8, 64).tables
    assert t.mode == mode
    rng = np.random.default_rng(12)
    q = t.quantum_s
    for _ in range(20):
        C, Y = 32, 40
        pim_c = rng.exponential(3 * q, C) * (rng.random(C) < 0.9)  # some idle channels
        io_c = pim_c * rng.random(C)
        pf, mem = rng.exponential(q, Y), rng.exponential(3 * q, Y) * (rng.random(Y) < 0.8)
        pfio = pf * rng.random(Y)
        want = channel_time(mode, pim_c[None, :], pf[:, None], io_c[None, :] + pfio[:, None], mem[:, None], 0.0,
                            t.switch_s, t.quantum_s).max(axis=1)
        got = channel_max(t, pim_c.max(), io_c.max(), pf, pfio, mem)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        for y in range(0, Y, 7):
            one = _channel_max_scalar(t, float(pim_c.max()), float(io_c.max()), float(pf[y]),
                                      float(pfio[y]), float(mem[y]))
            assert one == pytest.approx(want[y], rel=1e-12, abs=0)
    text = " ".join(_text(MODEL / "concurrency.md").split())
    assert "is non-decreasing in the channel's PIM time" in text


def test_dbo_quoted_shares_recompute():
    """dbo.md quotes the attention share DBO moves at batch 64 (ShareGPT, iteration mode, default samples)."""
    text = " ".join(_text(MODEL / "dbo.md").split())
    for model, shown, tol in (("gpt3-7b", "0.17 %", 0.005), ("llama2-70b", "about 21 %", 0.5)):
        assert shown in text, shown
        r = simulate("librapim", model, "sharegpt", mode="iteration", batch=64)
        percent = 100 * r.metrics["offload_attention_share"]
        assert abs(percent - float(shown.split()[-2])) <= tol, (model, percent, shown)


# ---- schedule ----------------------------------------------------------------------------------------------
def test_one_interleaving_decision_per_iteration():
    """schedule.md: with pp > 1 interleaving is decided once, from the smallest micro-batch."""
    s = setup("librapim", "gpt3-7b", "sharegpt", sets=["system.pp=2"])
    sched = make_schedule(s, 512, 300)
    for n, expect in ((512, "ABCDEF"), (511, "QMR")):
        lens = np.full(n, 300)
        it = run_iteration(sched, lens, place_channels(lens, sched.tables.channels, "least_loaded"),
                           keep_stages=True)
        for mb in (0, 1):
            names = "".join(st.name for st in it.stages if st.micro_batch == mb and st.name != "H")
            assert names == expect, (n, mb, names)


def test_batched_engine_applies_where_documented():
    """schedule.md: run_iterations covers a schedule unless the DBO predictor is noisy, DBO runs with attention
    placed on the NPU, or stage records are kept; iteration mode evaluates its samples with it."""
    def sched(system="librapim", sets=()):
        return make_schedule(setup(system, "gpt3-7b", "sharegpt", sets=list(sets)), 8, 512)

    assert batched.supports(sched()) and batched.supports(sched("npu-only"))
    assert not batched.supports(sched(), keep_stages=True)
    assert not batched.supports(sched(sets=["system.dbo.prediction_error=0.1"]))
    assert not batched.supports(sched(sets=["system.placement.attention=npu"]))
    assert batched.supports(sched("neupims", ["system.placement.attention=npu"]))  # no DBO there
    lens = [np.array([100, 200, 300]), np.array([50])]
    chans = [np.array([0, 1, 2]), np.array([3])]
    many = batched.run_iterations(sched(), lens, chans).results()
    for r, x, c in zip(many, lens, chans, strict=True):
        one = run_iteration(sched(), x, c)
        assert r.time_s == pytest.approx(one.time_s, rel=1e-9) and r.tokens == one.tokens
    with pytest.raises(ValueError):
        batched.run_iterations(sched(sets=["system.placement.attention=npu"]), lens, chans)


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


# ---- serving: closed loop laid out first ------------------------------------------------------------------
def _spy(monkeypatch, name):
    calls = []
    real = getattr(loop, name)

    def wrapped(*a, **k):
        calls.append(tuple(list(x) if isinstance(x, list) else x for x in a))  # the loop reuses its lists
        return real(*a, **k)

    monkeypatch.setattr(loop, name, wrapped)
    return calls


def test_closed_loop_laid_out_first_equals_step_by_step(tmp_path, monkeypatch):
    """serving.md: with every arrival at 0, run_serving (default) lays the steps out, evaluates all decode
    iterations with run_iterations in chunks, and gives the step-by-step loop's results (one-token requests
    included, which open one-iteration segments); progress is reported per evaluated chunk."""
    rng = np.random.default_rng(13)
    rows = [(int(i), int(o)) for i, o in zip(rng.integers(1, 300, 30), rng.choice([1, 1, 2, 5, 17, 40], 30),
                                           strict=True)]
    csv = tmp_path / "closed.csv"
    csv.write_text("input_len,output_len\n" + "".join(f"{i},{o}\n" for i, o in rows))
    w = WorkloadSpec(name="closed", source="test", lengths="trace", trace_path=str(csv), num_requests=30,
                     max_batch=6)
    s = setup("librapim", "gpt3-7b", w)
    ref = loop.run_serving(s, vectorize=False)
    seg = _spy(monkeypatch, "decode_segment")
    many = _spy(monkeypatch, "run_iterations_flat")
    monkeypatch.setattr(loop, "CHUNK_ROWS", 16)  # several chunks
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 4)
    seen = []
    got = loop.run_serving(s, progress=lambda d, n: seen.append((d, n)))
    assert not seg and len(many) > 2, "the closed loop should be laid out and evaluated in chunks"
    assert sum(len(c[3]) for c in many) == len(ref.iterations)  # (schedule, lens, channels, requests per iteration)
    for k, v in ref.steps.items():
        if v.dtype.kind == "f":
            np.testing.assert_allclose(got.steps[k], v, rtol=1e-9, atol=1e-15, err_msg=k)
        else:
            np.testing.assert_array_equal(got.steps[k], v, err_msg=k)
    np.testing.assert_allclose(got.first_token_s, ref.first_token_s, rtol=1e-9)
    np.testing.assert_allclose(got.finish_s, ref.finish_s, rtol=1e-9)
    assert got.total_time_s == pytest.approx(ref.total_time_s, rel=1e-9) and got.idle_s == 0.0
    assert len(seen) >= len(many) and seen[-1] == (30, 30)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # arrivals after 0 keep the step-by-step loop
    seg.clear()
    many.clear()
    loop.run_serving(setup("librapim", "gpt3-7b", w.model_copy(update={"arrival": "poisson", "rate_per_s": 200.0})))
    assert seg and not many


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
         "0.24 % of the attention KV bytes", "about 29 %")


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
