"""The sweep spec: bundled presets load; mistakes are one-line SpecErrors naming the field; storages parse."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from librapim_cli.errors import SpecError
from librapim_cli.spec import list_presets
from librapim_cli.sweep import load_sweep, parse_storage, parse_sweep
from librapim_cli.sweep.space import check_paths, grid, grid_size, point
from librapim_cli.sweep.spec import SweepSpec
from librapim_cli.sweep.storage import StorageError
from librapim_cli.sweep.validate import sampler_name


@pytest.mark.parametrize("name", ["pim-design", "batch-model", "throughput-vs-area"])
def test_bundled_sweeps_load_and_cite_a_source(name: str) -> None:
    spec = load_sweep(name)
    assert spec.name == name
    assert spec.source.strip() and spec.description.strip()
    check_paths(spec)  # every parameter and derived field names a real spec field


def test_every_bundled_sweep_is_one_of_the_documented_three() -> None:
    assert {p.name for p in list_presets("sweep")} >= {"pim-design", "batch-model", "throughput-vs-area"}


def test_every_field_is_described() -> None:
    from librapim_cli.sweep import spec as mod

    for cls in (mod.SweepSpec, mod.IntParam, mod.FloatParam, mod.ChoiceParam, mod.Objective, mod.Constraint,
                mod.Derive):
        for fname, f in cls.model_fields.items():
            assert f.description, f"{cls.__name__}.{fname} has no description"


def test_pim_design_derives_the_area_of_each_mode() -> None:
    spec = load_sweep("pim-design")
    areas = {}
    for mode in ("blocked", "time_interleaved", "dual_row_buffer", "dex"):
        p = point(spec, {"hardware.pim.mac_lanes_per_unit": 16, "hardware.pim.clock_hz": 1e9,
                         "hardware.pim.mac_interval_ns": 2.0, "system.concurrency.mode": mode})
        sets = dict(s.split("=", 1) for s in p.sets)
        areas[mode] = float(sets["system.concurrency.area_overhead_fraction"])
    # the same numbers as the system presets that use each mode
    assert areas == {"blocked": 0.0, "time_interleaved": 0.0, "dual_row_buffer": 0.5, "dex": 0.00032}


def _bad(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_sweep(data, "t")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("invalid sweep 't': ")
    return msg


def _base(small: dict[str, Any], **changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(small)
    d.update(changes)
    return d


def test_unknown_field_is_rejected(small) -> None:
    assert "colour: unknown field" in _bad(_base(small, colour="red"))


def test_missing_objectives(small) -> None:
    d = _base(small)
    del d["objectives"]
    assert "objectives: required field is missing" in _bad(d)


def test_int_range_low_above_high(small) -> None:
    msg = _bad(_base(small, parameters=[{"path": "batch", "type": "int", "low": 9, "high": 3}]))
    assert "low (9) must be <= high (3)" in msg


def test_bad_parameter_path(small) -> None:
    msg = _bad(_base(small, parameters=[{"path": "pim.clock_hz", "type": "float", "low": 1, "high": 2}]))
    assert "'pim.clock_hz' is not a spec field path" in msg


def test_unknown_parameter_type(small) -> None:
    msg = _bad(_base(small, parameters=[{"path": "batch", "type": "range", "low": 1, "high": 2}]))
    assert "parameters.0" in msg


def test_speedup_needs_a_baseline(small) -> None:
    msg = _bad(_base(small, objectives=[{"metric": "speedup", "direction": "maximize"}]))
    assert "'speedup' needs `baseline" in msg


def test_latency_needs_serve_mode(small) -> None:
    msg = _bad(_base(small, constraints=[{"metric": "latency.tpot_s.p99", "max": 0.05}]))
    assert "only with mode = 'serve'" in msg


def test_constraint_needs_a_bound(small) -> None:
    assert "give max and/or min" in _bad(_base(small, constraints=[{"metric": "energy_j_per_token"}]))


def test_derive_must_cover_every_value(small) -> None:
    d = _base(small, parameters=[{"path": "system.concurrency.mode", "type": "choice", "values": ["dex", "blocked"]}],
              derive=[{"parameter": "system.concurrency.mode", "description": "x",
                       "sets": {"dex": {"system.concurrency.area_overhead_fraction": 0.1}}}])
    assert "one entry per value" in _bad(d)


def test_system_choice_must_be_preset_names(small) -> None:
    msg = _bad(_base(small, parameters=[{"path": "system", "type": "choice", "values": [1, 2]}]))
    assert "choice of preset names" in msg


def test_field_that_does_not_exist_is_caught_before_running(small) -> None:
    spec = parse_sweep(_base(small, parameters=[{"path": "hardware.pim.lanes", "type": "choice", "values": [8]}]), "t")
    with pytest.raises(SpecError, match="'lanes' is not a field of hardware.pim"):
        check_paths(spec)


def test_grid_needs_discrete_parameters(small) -> None:
    spec = parse_sweep(_base(small, parameters=[
        {"path": "hardware.pim.clock_hz", "type": "float", "low": 3e8, "high": 1e9}]), "t")
    with pytest.raises(SpecError, match="continuous float; give it a `step`"):
        grid(spec)
    spec = parse_sweep(_base(small, parameters=[
        {"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1.0, "high": 4.0, "step": 0.5},
        {"path": "batch", "type": "int", "low": 4, "high": 16, "step": 4}]), "t")
    g = grid(spec)
    assert g["hardware.pim.mac_interval_ns"] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert g["batch"] == [4, 8, 12, 16]
    assert grid_size(g) == 28


def test_spec_is_frozen(small) -> None:
    spec = parse_sweep(small, "t")
    assert isinstance(spec, SweepSpec)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("text, kind", [
    (None, "memory"), ("memory", "memory"), ("sqlite:///x.db", "rdb"), ("postgresql://u@h/db", "rdb"),
    ("postgres://u@h/db", "rdb"), ("study.journal", "journal"), ("journal:study.txt", "journal"),
])
def test_storage_parsing(text: str | None, kind: str) -> None:
    assert parse_storage(text).kind == kind


def test_postgres_url_names_an_installed_driver() -> None:
    ref = parse_storage("postgres://u:secret@h/db")
    assert ref.target.startswith(("postgresql+psycopg2://", "postgresql+psycopg://"))
    assert "secret" not in ref.display


@pytest.mark.parametrize("text, needle", [
    ("nonsense", "is not a storage"), ("/no/such/dir/s.journal", "does not exist"),
    ("sqlite:////no/such/dir/s.db", "does not exist"),
])
def test_bad_storage_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(StorageError, match=needle) as info:
        parse_storage(text)
    assert "\n" not in str(info.value)


def test_sampler_names() -> None:
    assert sampler_name("brute-force") == "grid"
    assert sampler_name("NSGA2") == "nsga2"
    with pytest.raises(SpecError, match="choose one of tpe, nsga2, random, grid"):
        sampler_name("cmaes")
