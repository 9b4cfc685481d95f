"""The regime map (studies/reproduction.py): points, the PIM-for-GEMV baseline's physics, locating a number."""

from __future__ import annotations

import math

import pytest

from librapim_cli.simulate import simulate
from librapim_cli.studies.reproduction import (
    AXES,
    TARGETS,
    Axes,
    Point,
    PointResult,
    RegimeMap,
    evaluate_point,
    factors,
    locate,
    mechanism,
)

SETS1 = Point("gpt3-7b", "sharegpt", 1, 1, 1).sets()


def test_point_key_round_trip_and_sets():
    p = Point("gpt3-13b", "fixed-4096-128", 32, 8, 4)
    assert Point.from_key(p.key) == p
    assert p.sets() == ("hardware.npu.systolic_arrays=8", "hardware.pim.input_registers=4",
                        "hardware.pim.global_buffer_bytes=4096")  # 4 rows of 1 KiB: R = 4 is usable (P9)
    assert len(AXES.points()) == len(set(q.key for q in AXES.points())) == 4 * 5 * 10 * 4 * 4


def test_pim_gemv_wins_at_batch_1_and_loses_by_far_at_large_batch():
    """FC GEMVs on the PIM read each weight once per token: at batch 1 that beats a 1-array NPU bound by
    loading weights; at batch 256 the NPU reads them once for the whole batch."""
    def tput(system, batch, sets=SETS1):
        return simulate(system, "gpt3-7b", "sharegpt", batch=batch, sets=sets, samples=2).metrics[
            "throughput_tokens_per_s"]

    assert tput("pim-gemv", 1) > 3 * tput("npu-pim-blocked", 1)
    assert tput("npu-pim-blocked", 256) > 4 * tput("pim-gemv", 256)
    more_regs = Point("gpt3-7b", "sharegpt", 256, 1, 8).sets()
    # 8 tokens per open row: fewer activations (the MAC rate, not the rows, then bounds it)
    assert tput("pim-gemv", 256, more_regs) > 1.5 * tput("pim-gemv", 256)


def test_pim_gemv_uses_no_dbo_and_blocks_the_banks():
    r = simulate("pim-gemv", "gpt3-7b", "sharegpt", batch=8, samples=2)
    s = r.setup.system
    assert s.placement.fc == "pim" and s.placement.attention == "pim" and s.concurrency.mode == "blocked"
    assert not s.dbo.enabled and r.metrics["offload_fc_share"] == 0.0


def test_evaluate_point_records_every_system_and_what_dbo_moved():
    d = evaluate_point(Point("gpt3-7b", "sharegpt", 4, 1, 1), samples=2)
    assert d["infeasible"] is None and set(d["systems"]) >= {"librapim", "neupims", "neupims+dbo", "pim-gemv"}
    # at batch 4 the 1-array NPU is weight-load bound: DBO moves FC work to the PIM
    assert d["detail"]["fc_rows_share"] + d["detail"]["fc_cols_share"] > 0.1
    assert d["systems"]["librapim"]["offload_fc_share"] > 0.1
    big = evaluate_point(Point("gpt3-7b", "fixed-8192-128", 512, 1, 1), samples=2)
    assert big["infeasible"] and "does not fit" in big["infeasible"] and big["systems"] == {}


def _fake(batch: int, ratio: float, npu: int = 1) -> PointResult:
    base = {"throughput_tokens_per_s": 100.0, "npu_utilization": 0.5, "pim_utilization": 0.2,
            "npu_compute_utilization": 0.1, "pim_mac_utilization": 0.1, "offload_fc_share": 0.0,
            "offload_attention_share": 0.0}
    systems = {name: dict(base) for name in ("npu-only", "npu-pim-blocked", "pim-gemv", "neupims", "neupims+dbo",
                                             "librapim-dex-only", "librapim-dbo-only", "librapim")}
    systems["neupims+dbo"]["throughput_tokens_per_s"] = 100.0 * ratio
    systems["librapim"]["throughput_tokens_per_s"] = 100.0 * ratio
    return PointResult(Point("gpt3-7b", "sharegpt", batch, npu, 1), systems,
                       {"fc_rows_share": 0.0, "fc_cols_share": 0.4, "interleaved_share": 0.0})


def test_locate_finds_the_region_and_the_mechanism():
    axes = Axes(("gpt3-7b",), ("sharegpt",), (1, 2, 4, 8), (1,), (1,))
    m = RegimeMap(axes, [_fake(1, 3.0), _fake(2, 2.2), _fake(4, 1.5), _fake(8, 1.0)])
    t = next(t for t in TARGETS if t.den == "neupims")
    loc = locate(m, t)
    assert [h.point.batch for h in loc.hits] == [1, 2] and loc.best_value == pytest.approx(3.0)
    assert loc.region == ["1 array: batch 1-2; all contexts; all models; R any (2 points of 4)"]
    assert loc.mechanisms == [("DBO: FC columns to the PIM", 2)]
    assert math.prod(v for _, v in factors(loc.best, "librapim", "neupims")) == pytest.approx(3.0)
    assert mechanism(loc.best, t) == "DBO: FC columns to the PIM"


def test_locate_names_the_axis_to_change_when_nothing_reaches_it():
    axes = Axes(("gpt3-7b",), ("sharegpt",), (1, 2, 4), (1,), (1,))
    m = RegimeMap(axes, [_fake(1, 1.0), _fake(2, 1.3), _fake(4, 1.8)])
    loc = locate(m, next(t for t in TARGETS if t.den == "neupims"))
    assert not loc.reached and loc.best.point.batch == 4
    axis, row, gain = loc.trend
    assert axis == "batch" and [v for v, _ in row] == [1, 2, 4] and gain > 1.3
