"""Bundled presets: they load, they cite a source, their derived numbers match hand derivations.

Each expected number below is derived by hand in the comment next to it, from the figures in
docs/sources.md (anchors given, e.g. docs/sources.md#s2.2), not from the code under test.
"""

from __future__ import annotations

import csv
import inspect
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import librapim_cli.spec as spec_pkg
from librapim_cli.errors import PresetNotFound, SpecError
from librapim_cli.spec import list_presets, load, load_model

SPEC_KINDS = ["model", "hardware", "system", "workload"]  # "sweep" presets are validated by librapim_cli.sweep
ALL_PRESETS = [(p.kind, p.name) for p in list_presets() if p.kind in SPEC_KINDS]


def _id(kind_name: tuple[str, str]) -> str:
    return f"{kind_name[0]}:{kind_name[1]}"


# ---- (a) + (b): every preset loads, validates and cites a source ---------------------------------------
def test_every_kind_has_presets() -> None:
    kinds = {k for k, _ in ALL_PRESETS}
    assert kinds == set(SPEC_KINDS)


@pytest.mark.parametrize("kind_name", ALL_PRESETS, ids=_id)
def test_preset_loads_and_validates(kind_name: tuple[str, str]) -> None:
    kind, name = kind_name
    spec = load(kind, name)
    assert spec.name == name, "the `name` inside a preset must equal its file name"


@pytest.mark.parametrize("info", [p for p in list_presets() if p.kind in SPEC_KINDS], ids=lambda p: f"{p.kind}:{p.name}")
def test_preset_has_source_and_description(info: spec_pkg.PresetInfo) -> None:
    assert info.source.strip(), f"{info.path} has no `source`"
    assert info.summary.strip(), f"{info.path} has no `description`"


@pytest.mark.parametrize("name", [p.name for p in list_presets("hardware")])
def test_hardware_energy_has_source(name: str) -> None:
    assert load("hardware", name).energy.source.strip()


@pytest.mark.parametrize("name", [p.name for p in list_presets("system")])
def test_system_sources(name: str) -> None:
    s = load("system", name)
    assert s.link.source.strip()
    assert s.concurrency.area_source.strip()


# ---- (c) derived quantities vs hand derivations --------------------------------------------------------
# params/layer = d*H*dh + 2*d*KV*dh + H*dh*d + experts*(2 or 3)*d*f ; KV bytes/token = 2*KV*dh*2 B*layers (docs/sources.md#s7)
MODEL_EXPECTED = {
    # GPT-3 6.7B: 4*4096^2 = 67.11 M + 2*4096*16384 = 134.22 M -> 201.33 M ; KV 2*32*128*2*32 = 524288 B = 512 KiB
    "gpt3-7b": (201.3, 512.0),
    # GPT-3 13B (d 5120): 4*5120^2 = 104.86 M + 2*5120*20480 = 209.72 M -> 314.57 M (docs/sources.md#s7: 315 M) ;
    # KV 2*40*128*2*40 = 819200 B = 800 KiB
    "gpt3-13b": (314.6, 800.0),
    # GPT-3 30B: 12*7168^2 = 616.56 M (docs/sources.md#s7: 617 M) ; KV 2*56*128*2*48 = 1376256 B = 1344 KiB
    "gpt3-30b": (616.6, 1344.0),
    # GPT-3 175B: 12*12288^2 = 1811.94 M (docs/sources.md#s7: 1.81 B) ; KV 2*96*128*2*96 = 4718592 B = 4608 KiB = 4.5 MiB
    "gpt3-175b": (1811.9, 4608.0),
    # LLaMA-2 7B: 4*4096^2 = 67.11 M + 3*4096*11008 = 135.27 M -> 202.38 M (docs/sources.md#s7: 202 M) ; KV 512 KiB
    "llama2-7b": (202.4, 512.0),
    # LLaMA-2 13B: 4*5120^2 = 104.86 M + 3*5120*13824 = 212.34 M -> 317.19 M (docs/sources.md#s7: 317 M) ; KV 800 KiB
    "llama2-13b": (317.2, 800.0),
    # LLaMA-2 70B: 2*8192^2 = 134.22 M + 2*8192*8*128 = 16.78 M + 3*8192*28672 = 704.64 M -> 855.64 M (docs/sources.md#s7: 856 M) ;
    # KV 2*8*128*2*80 = 327680 B = 320 KiB
    "llama2-70b": (855.6, 320.0),
    # OPT-66B: 4*9216^2 = 339.74 M + 2*9216*36864 = 679.48 M -> 1019.22 M (docs/sources.md#s7: 1.02 B) ;
    # KV 2*72*128*2*64 = 2359296 B = 2304 KiB = 2.25 MiB
    "opt-66b": (1019.2, 2304.0),
    # Mixtral 8x7B (all 8 experts): 2*4096^2 = 33.55 M + 2*4096*8*128 = 8.39 M + 8*3*4096*14336 = 1409.29 M -> 1451.23 M
    # (docs/sources.md#s7: not tabulated) ; KV 2*8*128*2*32 = 131072 B = 128 KiB
    "mixtral-8x7b": (1451.2, 128.0),
}


def test_every_model_preset_has_a_hand_derivation() -> None:
    assert {p.name for p in list_presets("model")} == set(MODEL_EXPECTED)


@pytest.mark.parametrize("name", sorted(MODEL_EXPECTED))
def test_model_params_and_kv(name: str) -> None:
    params_m, kv_kib = MODEL_EXPECTED[name]
    m = load_model(name)
    assert abs(m.params_per_layer / 1e6 - params_m) < 0.5
    assert m.kv_bytes_per_token / 1024 == pytest.approx(kv_kib, abs=1e-9)


def test_mixtral_active_params() -> None:
    # attention 41.94 M + top-2 experts 2*3*4096*14336 = 352.32 M -> 394.26 M per layer per token
    m = load_model("mixtral-8x7b")
    assert abs(m.active_params_per_layer / 1e6 - 394.3) < 0.5
    assert m.group_size == 4  # 32 query heads / 8 KV heads


def test_llama2_70b_gqa_group() -> None:
    assert load_model("llama2-70b").group_size == 8  # 64 / 8


def test_neupims_npu_peak() -> None:
    # 128 * 128 MAC * 2 FLOP * 1 GHz = 32.77 TFLOPS (docs/sources.md#s2.2)
    hw = load("hardware", "neupims-npu-hbm2pim")
    assert hw.npu.peak_flops / 1e12 == pytest.approx(32.768, rel=1e-6)


def test_neupims_npu8_peak() -> None:
    # 8 * 128 * 128 * 2 * 1 GHz = 262.1 TFLOPS; ridge 262.1 T / 1024 G = 256 FLOP/B (docs/sources.md#s2.2)
    hw = load("hardware", "neupims-npu8-hbm2pim")
    assert hw.npu.peak_flops / 1e12 == pytest.approx(262.144, rel=1e-6)
    assert hw.ridge_flop_per_byte == pytest.approx(256.0, rel=1e-9)


def test_neupims_hbm2_bandwidth_and_pim() -> None:
    hw = load("hardware", "neupims-npu-hbm2pim")
    # 32 ch x 128 bit x 2 Gb/s / 8 = 1024 GB/s (docs/sources.md#s2.2)
    assert hw.memory.bw_bytes_per_s == pytest.approx(1024e9, rel=1e-9)
    # 32 ch x 32 banks = 1024 banks
    assert hw.memory.banks == 1024
    # 1024 banks x 16 lanes x 2 FLOP / 2 ns = 16.38 TFLOPS (docs/sources.md#s2.2)
    assert hw.pim_peak_flops / 1e12 == pytest.approx(16.384, rel=1e-6)
    # 1024 banks x 32 B / 2 ns = 16.38 TB/s = 16 x 1024 GB/s
    assert hw.pim_bw_ratio == pytest.approx(16.0, rel=1e-9)
    # ridge 32.77 T / 1024 G = 32 FLOP/B (docs/sources.md#s2.2)
    assert hw.ridge_flop_per_byte == pytest.approx(32.0, rel=1e-9)
    # refresh derate 1 - 260/3900 = 0.9333 (docs/sources.md#s9.3)
    assert hw.memory.refresh_derate == pytest.approx(1 - 260 / 3900, rel=1e-12)


def test_samsung_hbm_pim_peak() -> None:
    hw = load("hardware", "samsung-hbm-pim")
    # 16 pCH x 16 banks / 2 banks per PCU = 128 PCUs
    assert hw.pim_units == 128
    # 128 PCUs x 16 lanes x 2 FLOP x 300 MHz = 1.2288 TFLOPS ("1.2 TFLOPS", docs/sources.md#s4.1); the 300 MHz clock caps it
    assert hw.pim_peak_flops == pytest.approx(1.2288e12, rel=1e-6)
    # 16 pCH x 64 bit x 2 Gb/s / 8 = 256 GB/s
    assert hw.memory.bw_bytes_per_s == pytest.approx(256e9, rel=1e-9)


def test_aim_gddr6_peak() -> None:
    hw = load("hardware", "aim-gddr6")
    # 2 channels x 16 banks = 32 PUs
    assert hw.pim_units == 32
    # 32 PUs x 16 lanes x 2 FLOP x 1 GHz = 1.024 TFLOPS (docs/sources.md#s4.2)
    assert hw.pim_peak_flops == pytest.approx(1.024e12, rel=1e-6)
    # 2 ch x 8 bit x 16 Gb/s / 8 = 32 GB/s per chip (docs/sources.md#s4.2)
    assert hw.memory.bw_bytes_per_s == pytest.approx(32e9, rel=1e-9)
    # 8 Gb chip
    assert hw.memory.capacity_bytes == 8 * 2**30 // 8


def test_attacc_hbm3pim() -> None:
    hw = load("hardware", "attacc-hbm3pim")
    # 432 x 16 x 16 x 2 FLOP x 1.41 GHz = 311.87 TFLOPS (A100a 312 TFLOPS, docs/sources.md#s3.1)
    assert hw.npu.peak_flops / 1e12 == pytest.approx(311.87, abs=0.01)
    # PIM stacks: 5 stacks x 16 ch x 2 pCH x 32 bit x 5.2 Gb/s / 8 = 3328 GB/s (AttAcc quotes 3352)
    assert hw.memory.bw_bytes_per_s == pytest.approx(3328e9, rel=1e-9)
    # the GPU's own HBM: AttAcc's 3352 GB/s for A100a (docs/sources.md#s3.1), 80 GiB; it streams the weights
    assert hw.npu_memory is hw.xpu_memory
    assert hw.xpu_memory.bw_bytes_per_s == pytest.approx(3352e9, rel=1e-9)
    assert hw.xpu_memory.capacity_bytes == 80 * 2**30
    # 5 x 16 x 2 pCH x (2 ranks x 16 banks) = 5120 banks = 5 stacks x 1024 (docs/sources.md#s3.3)
    assert hw.memory.banks == 5120
    # one MACAB drives a legacy channel: 2 pCH x 32 banks = 64 banks; 5 x 16 = 80 PIM channels (docs/sources.md#s12.1)
    assert (hw.pim_channels, hw.pim_banks_per_channel) == (80, 64)
    assert hw.pim_channel_bw_bytes_per_s == pytest.approx(2 * 32 * 5.2e9 / 8)
    # 5 x 16 GB = 80 GB
    assert hw.memory.capacity_bytes == 80 * 2**30
    # AttAcc's CLI default runs without the power limit (main.py --powerlimit off, D4):
    # 5120 x 16 x 2 FLOP / (4 x 0.769 ns) = 53.26 TFLOPS
    assert not hw.pim.power_limited
    assert hw.pim_peak_flops / 1e12 == pytest.approx(5120 * 16 * 2 / 3.076e-9 / 1e12, rel=1e-9)
    # ACTAB: one command, no tFAW; MACAB -> PREA = nRTPL 8 x 0.769 (D2, D3)
    assert (hw.pim.activate_groups_per_rank, hw.pim.activate_tfaw_paced) == (1, False)
    assert hw.memory.tRTP_ns == pytest.approx(8 * 0.769)


def test_a100_xpu() -> None:
    hw = load("hardware", "a100-xpu")
    assert hw.pim is None and hw.pim_peak_flops == 0.0
    # 432 x 16 x 16 x 2 x 1.41 GHz = 311.87 TFLOPS
    assert hw.npu.peak_flops / 1e12 == pytest.approx(311.87, abs=0.01)
    # 5 stacks x 8 ch x 128 bit x 3.2 Gb/s / 8 = 2048 GB/s
    assert hw.memory.bw_bytes_per_s == pytest.approx(2048e9, rel=1e-9)
    assert hw.memory.capacity_bytes == 80 * 2**30


def test_h100_xpu() -> None:
    hw = load("hardware", "h100-xpu")
    assert hw.pim is None
    # 528 x 16 x 32 x 2 x 1.83 GHz = 989.43 TFLOPS (docs/sources.md#s3.1: 989.4)
    assert hw.npu.peak_flops / 1e12 == pytest.approx(989.4, abs=0.1)
    # same HBM3 as AttAcc: 3328 GB/s
    assert hw.memory.bw_bytes_per_s == pytest.approx(3328e9, rel=1e-9)


@pytest.mark.parametrize("name", [p.name for p in list_presets("hardware")])
def test_hardware_timing_is_consistent(name: str) -> None:
    m = load("hardware", name).memory
    # tRC = tRAS + tRP within one clock (DRAM definition); tCCD_S <= tCCD_L; tRRD_S <= tRRD_L
    assert abs(m.tRC_ns - (m.tRAS_ns + m.tRP_ns)) <= m.tCK_ns + 1e-9
    assert m.tCCD_S_ns <= m.tCCD_L_ns
    assert m.tRRD_S_ns <= m.tRRD_L_ns
    # capacity = banks x rows x row_bytes must come out as a whole number of rows per bank
    assert m.capacity_bytes % (m.banks * m.row_bytes) == 0


SYSTEM_EXPECTED = {
    # name: (attention, mode, sub-batch interleaving, dbo)
    "npu-only": ("npu", "blocked", False, False),
    "gpu-only": ("npu", "blocked", False, False),
    "npu-pim-blocked": ("pim", "blocked", False, False),
    "neupims": ("pim", "dual_row_buffer", True, False),
    "attacc": ("pim", "separate", False, False),
    "librapim": ("pim", "dex", True, True),
    "librapim-dbo-only": ("pim", "time_interleaved", True, True),
    "librapim-dex-only": ("pim", "dex", True, False),
    "pim-gemv": ("pim", "blocked", False, False),  # placement.fc = "pim" as well (tests/studies)
}


def test_every_system_preset_is_described() -> None:
    assert {p.name for p in list_presets("system")} == set(SYSTEM_EXPECTED)


@pytest.mark.parametrize("name", sorted(SYSTEM_EXPECTED))
def test_system_shape(name: str) -> None:
    attention, mode, sbi, dbo = SYSTEM_EXPECTED[name]
    s = load("system", name)
    assert (s.placement.attention, s.concurrency.mode, s.sub_batch_interleaving, s.dbo.enabled) == (attention, mode, sbi, dbo)
    assert s.uses_pim == (attention == "pim" or dbo)


def test_area_overheads() -> None:
    # DEX 0.032 % (docs/sources.md#s1.1); AttAcc bank-level PIM <= 10 % (docs/sources.md#s3.6)
    assert load("system", "librapim").concurrency.area_overhead_fraction == pytest.approx(0.00032)
    assert load("system", "attacc").concurrency.area_overhead_fraction == pytest.approx(0.10)
    assert load("system", "npu-only").concurrency.area_overhead_fraction == 0.0


def test_trace_preset_resolves_next_to_the_preset() -> None:
    w = load("workload", "sharegpt-trace-sample")
    path = Path(w.trace_path)
    assert path.is_absolute() and path.is_file()
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input_len", "output_len", "arrival_s"]
    assert len(rows) == w.num_requests == 40
    for r in rows:
        assert int(r["input_len"]) >= 1 and int(r["output_len"]) >= 1
        assert int(r["input_len"]) + int(r["output_len"]) <= w.max_seq_len
    arrivals = [float(r["arrival_s"]) for r in rows]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0


def test_fixed_workloads_fit_max_seq_len() -> None:
    for name in ("fixed-2048-128", "fixed-128-128"):
        w = load("workload", name)
        assert w.input_len + w.output_len <= w.max_seq_len


# ---- (d) strictness ---------------------------------------------------------------------------------
def test_unknown_field_is_a_spec_error(tmp_path: Path) -> None:
    src = Path(next(p.path for p in list_presets("model") if p.name == "gpt3-7b")).read_text()
    bad = tmp_path / "bad-model.toml"
    bad.write_text(src + "\nlayerz = 3\n")
    with pytest.raises(SpecError) as exc:
        load("model", str(bad))
    assert str(exc.value) == (f"invalid model '{bad}': layerz: unknown field; remove it or check the spelling "
                              "(see `librapim presets show`)")


def test_unknown_nested_field_is_a_spec_error() -> None:
    data = spec_pkg.load_raw("hardware", "neupims-npu-hbm2pim")
    data["pim"]["lanes"] = 16
    with pytest.raises(SpecError, match=r"pim\.lanes: unknown field"):
        spec_pkg.validate("hardware", data, "x")


def test_specs_are_frozen() -> None:
    m = load_model("gpt3-7b")
    with pytest.raises(ValidationError):
        m.layers = 4  # type: ignore[misc]
    hw = load("hardware", "neupims-npu-hbm2pim")
    with pytest.raises(ValidationError):
        hw.pim.clock_hz = 2e9  # type: ignore[misc, union-attr]


def _nested_models(tp: typing.Any) -> list[type[BaseModel]]:
    """BaseModel classes inside a field annotation (X, X | None, list[X], ...)."""
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return [tp]
    out: list[type[BaseModel]] = []
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
        for arg in typing.get_args(tp):
            out.extend(_nested_models(arg))
    return out


def _all_spec_classes() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    todo = [obj for obj in vars(spec_pkg).values() if inspect.isclass(obj) and issubclass(obj, BaseModel)]
    while todo:
        cls = todo.pop()
        if cls.__qualname__ in seen:
            continue
        seen[cls.__qualname__] = cls
        for field in cls.model_fields.values():
            todo.extend(_nested_models(field.annotation))
    return list(seen.values())


def test_spec_class_discovery_finds_the_spec_tree() -> None:
    names = {c.__name__ for c in _all_spec_classes()}
    assert {"ModelSpec", "HardwareSpec", "NPUSpec", "MemorySpec", "PIMSpec", "EnergySpec", "SystemSpec",
            "LinkSpec", "PlacementSpec", "ConcurrencySpec", "DBOSpec", "WorkloadSpec", "LengthStats"} <= names


@pytest.mark.parametrize("cls", _all_spec_classes(), ids=lambda c: c.__name__)
def test_every_field_is_documented(cls: type[BaseModel]) -> None:
    missing = [n for n, f in cls.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"{cls.__name__} fields without a description: {missing}"


@pytest.mark.parametrize("cls", _all_spec_classes(), ids=lambda c: c.__name__)
def test_every_spec_is_strict_and_frozen(cls: type[BaseModel]) -> None:
    assert cls.model_config.get("extra") == "forbid"
    assert cls.model_config.get("frozen") is True


# ---- (e) error messages, pinned ---------------------------------------------------------------------
def test_unknown_preset_message() -> None:
    with pytest.raises(PresetNotFound) as exc:
        load_model("gpt3-8b")
    assert str(exc.value) == ("unknown model preset 'gpt3-8b': did you mean gpt3-7b, gpt3-30b, gpt3-13b? "
                              "see `librapim presets list --kind model`")


def test_bad_override_message() -> None:
    with pytest.raises(SpecError) as exc:
        load("hardware", "neupims-npu-hbm2pim", [(["pim", "mac_lanes_per_unit"], 0)])
    assert str(exc.value) == ("invalid hardware 'neupims-npu-hbm2pim': pim.mac_lanes_per_unit: "
                              "input should be greater than or equal to 1, got 0 (allowed: 1 to 4096)")


def test_override_naming_no_field_message() -> None:
    with pytest.raises(SpecError) as exc:
        load("hardware", "neupims-npu-hbm2pim", [(["pim", "mac_lane_per_unit"], 8)])
    msg = str(exc.value)
    assert msg.startswith("--set hardware.pim.mac_lane_per_unit: 'mac_lane_per_unit' is not a field of pim "
                          "(did you mean 'mac_lanes_per_unit'?); fields: ")
