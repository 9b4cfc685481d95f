"""Plots: data assembly (report.plot_data), figures (report.plots), files written headless in every format."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from librapim_cli.cost.npu import npu_cost
from librapim_cli.cost.pim import pim_cost
from librapim_cli.errors import InputError
from librapim_cli.graph.decode import decode_layer_ops, lm_head_op
from librapim_cli.graph.ops import AllReduce, Attention, KVWrite, Vector
from librapim_cli.report import plot_data as pdata
from librapim_cli.report import plots
from librapim_cli.schedule import plan
from librapim_cli.simulate import simulate
from librapim_cli.units import MS
from librapim_cli.workload import place_channels, steady_state_batch

# batch 16 with interleaving forced on: the A..F stage list of the paper's schedule, in milliseconds of work
SETS = ["system.sub_batch_min_batch=2", "system.scheduler=rule"]  # interleave at batch 16, the NeuPIMs split


@pytest.fixture(scope="module")
def sims():
    return {name: simulate(name, "gpt3-7b", "sharegpt", batch=16, sets=SETS, keep_stages=True, samples=2,
                           breakdown=True)
            for name in ("neupims", "librapim")}


@pytest.fixture(scope="module")
def compare_results():
    return [simulate(s, m, "sharegpt", batch=16, samples=2)
            for m in ("gpt3-7b", "llama2-7b") for s in ("npu-only", "neupims", "librapim")]


def _synthetic_table():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):
        rows.append({"number": i, "state": "COMPLETE", "params": {"batch": int(rng.integers(8, 256))},
                     "values": [float(rng.uniform(1e3, 1e4)), float(rng.uniform(0.01, 0.05))],
                     "metrics": {}, "feasible": i % 9 != 0})
    rows.append({"number": 40, "state": "FAIL", "params": {}, "values": None, "metrics": {}, "feasible": False})
    return rows


def _figure(kind, sims, compare_results):
    if kind == "roofline":
        return plots.roofline_figure(pdata.roofline_points(sims["librapim"]))
    if kind == "timeline":
        return plots.timeline_figure([pdata.timeline_segments(r, layers=2) for r in sims.values()])
    if kind == "compare":
        return plots.compare_figure(pdata.compare_table(compare_results, "neupims"), "neupims")
    data = pdata.pareto_points(_synthetic_table(), ("throughput_tokens_per_s", "energy_j_per_token"),
                               ("maximize", "minimize"), "demo")
    return plots.pareto_figure(data)


def _check_image(path, fmt):
    raw = path.read_bytes()
    assert len(raw) > 5_000, f"{path.name} is only {len(raw)} bytes"
    if fmt == "png":
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    elif fmt == "pdf":
        assert raw.startswith(b"%PDF-")
    else:
        root = ET.fromstring(raw)
        assert root.tag.endswith("svg")


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
@pytest.mark.parametrize("kind", ["roofline", "timeline", "compare", "pareto"])
def test_plot_renders_valid_file_in_each_format(kind, fmt, sims, compare_results, tmp_path):
    fig = _figure(kind, sims, compare_results)
    out = plots.save_figure(fig, tmp_path / f"{kind}.{fmt}")
    _check_image(out, fmt)
    assert [p.name for p in tmp_path.iterdir()] == [f"{kind}.{fmt}"]  # no temporary file left behind
    ax = fig.axes[0]
    assert ax.get_title() or ax.get_title(loc="left")
    assert "(" in fig.axes[-1].get_xlabel() and "(" in ax.get_ylabel() or kind == "timeline"  # units


def test_save_figure_rejects_unknown_extension(sims, tmp_path):
    fig = plots.pareto_figure(pdata.pareto_points(_synthetic_table(), ("a", "b")))
    with pytest.raises(InputError, match=r"unknown image type \('\.jpg'\); use a \.png, \.svg or \.pdf"):
        plots.save_figure(fig, tmp_path / "plot.jpg")
    with pytest.raises(InputError, match="folder .* does not exist"):
        plots.save_figure(fig, tmp_path / "missing" / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_replaces_existing_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    fig = plots.pareto_figure(pdata.pareto_points(_synthetic_table(), ("a", "b")))
    plots.save_figure(fig, target)
    assert target.read_bytes().startswith(b"\x89PNG")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- timeline ----------------------------------------------------------------------------------------


def test_timeline_segment_widths_sum_to_iteration_time(sims):
    for r in sims.values():
        it = r.iterations[0]
        full = pdata.timeline_segments(r, layers=None)
        assert math.isclose(full.shown_s, it.time_s, rel_tol=1e-12)
        assert full.gaps == []
        stages = r.stages.rows(0)
        expected = int(stages.repeats.sum())
        assert len(full.segments) == expected
        short = pdata.timeline_segments(r, layers=2)
        assert math.isclose(short.shown_s + short.skipped_s, it.time_s, rel_tol=1e-12)
        # A, B, (C, D) x 2, E, F, H; the remaining 29 C/D pairs are one gap
        assert [s.label for s in short.segments] == ["A", "B", "C1", "D1", "C2", "D2", "E", "F", "H"]
        assert [(g.reps, g.stages) for g in short.gaps] == [(int(stages.repeats[2]) - 2, "C,D")]
        starts = np.cumsum([0.0] + [s.time_s for s in short.segments[:-1]])
        assert np.allclose([s.start_s for s in short.segments], starts)
        for seg in short.segments:
            j = int(np.flatnonzero(stages.name == seg.stage)[0])
            assert (seg.time_s, seg.npu_s, seg.pim_s) == (stages.time_s[j], stages.npu_s[j], stages.pim_max_s[j])


def test_timeline_without_interleaving_alternates_q_m_r():
    r = simulate("neupims", "gpt3-7b", "sharegpt", batch=8, keep_stages=True, samples=1)
    tl = pdata.timeline_segments(r, layers=2)
    assert [s.label for s in tl.segments] == ["Q1", "M1", "R1", "Q2", "M2", "R2", "H"]
    assert math.isclose(tl.shown_s + tl.skipped_s, r.iterations[0].time_s, rel_tol=1e-12)


def test_timeline_follows_pipeline_micro_batches():
    r = simulate("librapim", "gpt3-7b", "sharegpt", batch=8, sets=[*SETS, "system.pp=2"], keep_stages=True,
                 samples=1)
    tl = pdata.timeline_segments(r, layers=1)
    one = ["A", "B", "C1", "D1", "E", "F", "H"]
    assert [s.label for s in tl.segments] == one + one
    assert [s.micro_batch for s in tl.segments] == [0] * 7 + [1] * 7
    assert tl.micro_batches == 2 and len(tl.gaps) == 2
    assert math.isclose(tl.shown_s + tl.skipped_s, r.iterations[0].time_s, rel_tol=1e-12)
    full = pdata.timeline_segments(r, layers=None)
    assert math.isclose(full.shown_s, r.iterations[0].time_s, rel_tol=1e-12)


def test_timeline_drawn_bars_equal_segments(sims):
    tls = [pdata.timeline_segments(r, layers=2) for r in sims.values()]
    fig = plots.timeline_figure(tls)
    for ax, tl in zip(fig.axes, tls, strict=True):
        # collections per lane: idle slots, then busy bars (PIM: plain, then FC-offloaded)
        slots = ax.collections[0].get_paths()
        widths = [np.ptp(p.vertices[:, 0]) for p in slots]
        assert np.allclose(widths, [s.time_s / MS for s in tl.segments])
        npu = ax.collections[1].get_paths()
        assert np.allclose([np.ptp(p.vertices[:, 0]) for p in npu], [s.npu_s / MS for s in tl.segments if s.npu_s > 0])


def test_timeline_needs_stage_records():
    r = simulate("librapim", "gpt3-7b", "sharegpt", batch=4, samples=1)
    with pytest.raises(InputError, match="keep_stages=True"):
        pdata.timeline_segments(r)


# ---- roofline ----------------------------------------------------------------------------------------


def test_roofline_points_are_the_ops_at_flops_per_byte(sims):
    r = sims["librapim"]
    s = r.setup
    hw = s.system.hardware
    data = pdata.roofline_points(r)
    # the first steady-state batch, split as the schedule splits it: sub-batch #1 takes the first half of every
    # channel's queue (NeuPIMs' split, schedule.plan)
    full = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    C = s.system.hardware.memory.channels
    ch_full = place_channels(full, C, s.system.placement.kv_channel_policy)
    sub = plan._split_count(ch_full, 1, C)[0]
    lens, channels = full[sub == 0], ch_full[sub == 0]
    assert abs(lens.shape[0] - s.batch // 2) <= 1  # sub-batch interleaving: each op sees half the batch
    expected = {}
    # the LM head runs once per micro-batch, on all its rows
    for op in decode_layer_ops(s.model, s.tp, lens) + [lm_head_op(s.model, s.tp, float(s.batch))]:
        if isinstance(op, AllReduce | Vector | KVWrite):
            continue
        c = pim_cost(op, hw, channels) if isinstance(op, Attention) else npu_cost(op, hw)
        expected[op.name] = (float(c.flops) / float(c.bytes), float(c.flops) / float(c.time_s), c.device)
    got = {p.op: (p.intensity, p.rate, p.device) for p in data.points}
    assert got.keys() == expected.keys()
    for name, (x, y, dev) in expected.items():
        assert got[name][2] == dev
        assert math.isclose(got[name][0], x, rel_tol=1e-9)
        assert math.isclose(got[name][1], y, rel_tol=1e-9)
    for p in data.points:
        assert p.intensity == p.flops / p.bytes
    assert {"softmax", "layernorm_1", "kv_write"} <= set(data.omitted)
    npu, pim = data.roofs
    assert (npu.peak_flops, npu.bw_bytes_per_s) == (hw.npu.peak_flops, hw.memory.bw_bytes_per_s)
    assert (pim.peak_flops, pim.bw_bytes_per_s) == (hw.pim_peak_flops, hw.pim_internal_bw_bytes_per_s)
    # the figure's markers sit at the points
    fig = plots.roofline_figure(data)
    offsets = np.vstack([c.get_offsets() for c in fig.axes[0].collections])
    assert np.allclose(offsets, [(p.intensity, p.rate) for p in data.points])


def test_roofline_of_npu_only_system_has_one_roof():
    r = simulate("npu-only", "gpt3-7b", "sharegpt", batch=4, samples=1, breakdown=True)
    data = pdata.roofline_points(r)
    assert [roof.device for roof in data.roofs] == ["npu"]
    assert {p.device for p in data.points} == {"npu"}
    for p in data.points:
        assert p.rate <= data.roofs[0].rate(p.intensity) * (1 + 1e-9)


# ---- compare -----------------------------------------------------------------------------------------


def test_compare_bar_heights_equal_metrics(compare_results):
    rows = pdata.compare_table(compare_results)
    fig = plots.compare_figure(rows)
    heights = [b.get_height() for b in fig.axes[0].patches]
    # bars are drawn system by system, each over the models
    by = {(r.setup.system.name, r.setup.model.name): r.metrics["throughput_tokens_per_s"] for r in compare_results}
    expected = [by[(s, m)] for s in ("npu-only", "neupims", "librapim") for m in ("gpt3-7b", "llama2-7b")]
    assert heights == expected
    for row, r in zip(rows, compare_results, strict=True):
        assert row.npu_utilization == r.metrics["npu_utilization"]
        assert row.pim_utilization == r.metrics["pim_utilization"]


def test_compare_speedup_over_baseline(compare_results):
    rows = pdata.compare_table(compare_results, baseline="neupims")
    base = {r.model: r.throughput_tokens_per_s for r in rows if r.system == "neupims"}
    for row in rows:
        assert row.speedup == row.throughput_tokens_per_s / base[row.model]
    fig = plots.compare_figure(rows, baseline="neupims")
    heights = [b.get_height() for b in fig.axes[0].patches]
    assert heights == [r.speedup for s in ("npu-only", "neupims", "librapim") for r in rows if r.system == s]
    assert "Speedup over neupims" in fig.axes[0].get_ylabel()
    with pytest.raises(InputError, match="--baseline attacc: no result"):
        pdata.compare_table(compare_results, baseline="attacc")


# ---- Pareto ------------------------------------------------------------------------------------------


def _brute_front(vals, directions):
    v = np.array(vals, dtype=float)
    for j, d in enumerate(directions):
        if d == "maximize":
            v[:, j] = -v[:, j]
    out = []
    for i in range(len(v)):
        dominated = any((v[k] <= v[i]).all() and (v[k] < v[i]).any() for k in range(len(v)))
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("directions", [("minimize", "minimize"), ("maximize", "minimize"),
                                        ("maximize", "maximize"), ("minimize", "maximize")])
def test_pareto_mask_matches_brute_force(directions):
    rng = np.random.default_rng(7)
    vals = rng.integers(0, 12, size=(80, 2)).astype(float)  # many ties and duplicates
    assert (pdata.pareto_mask(vals, directions) == _brute_front(vals, directions)).all()


def test_pareto_points_front_and_best():
    table = [
        {"number": 0, "state": "COMPLETE", "values": [10.0, 5.0], "feasible": True, "params": {"x": 1}},
        {"number": 1, "state": "COMPLETE", "values": [20.0, 9.0], "feasible": True, "params": {"x": 2}},
        {"number": 2, "state": "COMPLETE", "values": [15.0, 9.5], "feasible": True, "params": {}},  # dominated
        {"number": 3, "state": "COMPLETE", "values": [30.0, 1.0], "feasible": False, "params": {}},  # infeasible
        {"number": 4, "state": "FAIL", "values": None, "feasible": False, "params": {}},
        {"number": 5, "state": "PRUNED", "values": [99.0, 0.0], "feasible": True, "params": {}},
        {"number": 6, "state": "COMPLETE", "values": [25.0, float("nan")], "feasible": True, "params": {}},
    ]
    d = pdata.pareto_points(table, ("throughput_tokens_per_s", "energy_j_per_token"), ("maximize", "minimize"),
                            study="s")
    assert [p.number for p in d.points] == [0, 1, 2, 3]
    assert d.skipped == 3
    assert [p.number for p in d.front] == [0, 1]
    assert d.best.number == 1  # best throughput on the front; the infeasible trial 3 is not eligible
    fig = plots.pareto_figure(d)
    ax = fig.axes[0]
    assert "Throughput (tokens/s)" in ax.get_xlabel() and "higher is better" in ax.get_xlabel()
    assert "Energy per token (J/token)" in ax.get_ylabel() and "lower is better" in ax.get_ylabel()
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("trial 1\n") for t in texts)


def test_pareto_needs_two_objectives():
    with pytest.raises(InputError, match="two-objective"):
        pdata.pareto_points([], ("throughput_tokens_per_s",), ("maximize",), study="one")


# ---- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from librapim_cli.cli.app import app

    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, list(args))

    return run


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_cli_plot_commands_write_images(cli, fmt, tmp_path):
    small = ["--batch", "16", "--set", "system.sub_batch_min_batch=2"]
    runs = {
        "roofline": ["plot", "roofline", "--system", "librapim", *small],
        "timeline": ["plot", "timeline", "--systems", "neupims,librapim", "--layers", "2", *small],
        "compare": ["plot", "compare", "--systems", "neupims,librapim", "--models", "gpt3-7b", "--baseline",
                    "npu-only", *small],
    }
    for name, args in runs.items():
        out = tmp_path / f"{name}.{fmt}"
        res = cli(*args, "--out", str(out))
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"wrote {out}"
        _check_image(out, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{fmt}" for n in runs)


def _make_study(path, objectives=(("throughput_tokens_per_s", "maximize"), ("energy_j_per_token", "minimize"))):
    import optuna
    from optuna.distributions import IntDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{path}"
    study = optuna.create_study(study_name="demo", storage=storage, directions=[d for _, d in objectives])
    study.set_user_attr("librapim.objectives", [list(o) for o in objectives])
    rng = np.random.default_rng(0)
    for _ in range(12):
        vals = [float(rng.uniform(1e3, 1e4)), float(rng.uniform(0.01, 0.05))][: len(objectives)]
        study.add_trial(optuna.trial.create_trial(
            params={"batch": int(rng.integers(8, 64))}, distributions={"batch": IntDistribution(8, 64)},
            values=vals, user_attrs={"metrics": {}}))
    return storage, study


def test_cli_plot_pareto_from_a_stored_study(cli, tmp_path):
    storage, study = _make_study(tmp_path / "s.db")
    out = tmp_path / "pareto.svg"
    res = cli("plot", "pareto", "--storage", storage, "--study", "demo", "--out", str(out))
    assert res.exit_code == 0, res.output
    _check_image(out, "svg")
    from librapim_cli.sweep.results import trials_table

    data = pdata.pareto_points(trials_table(storage, "demo"), ("throughput_tokens_per_s", "energy_j_per_token"),
                               ("maximize", "minimize"))
    assert {p.number for p in data.front} == {t.number for t in study.best_trials}


def test_cli_plot_pareto_rejects_one_objective_study(cli, tmp_path):
    storage, _ = _make_study(tmp_path / "one.db", objectives=(("throughput_tokens_per_s", "maximize"),))
    res = cli("plot", "pareto", "--storage", storage, "--study", "demo", "--out", str(tmp_path / "p.png"))
    assert res.exit_code == 2
    assert "needs exactly two" in res.output
    res = cli("plot", "pareto", "--storage", storage, "--study", "nope", "--out", str(tmp_path / "p.png"))
    assert res.exit_code == 2 and "no study 'nope'" in res.output


@pytest.mark.parametrize("out, message", [
    ("plot.jpg", "error: --out {out}: unknown image type ('.jpg'); use a .png, .svg or .pdf file name"),
    ("plot", "error: --out {out}: unknown image type (no extension); use a .png, .svg or .pdf file name"),
    ("missing/plot.png", "error: --out {out}: the folder {parent} does not exist; create it or choose another path"),
])
def test_cli_plot_bad_out_is_one_line_exit_2(cli, tmp_path, out, message):
    path = tmp_path / out
    for sub in ("roofline", "timeline", "compare"):
        res = cli("plot", sub, "--out", str(path))
        assert res.exit_code == 2
        assert res.output.strip() == message.format(out=path, parent=path.parent)
    assert not (tmp_path / "plot.jpg").exists()


def test_cli_plot_bad_input_exit_2(cli, tmp_path):
    out = str(tmp_path / "p.png")
    res = cli("plot", "timeline", "--systems", "neupims,neupims", "--out", out)
    assert res.exit_code == 2 and "more than once" in res.output
    res = cli("plot", "roofline", "--system", "no-such-system", "--out", out)
    assert res.exit_code == 2 and res.output.startswith("error:")
    res = cli("plot", "roofline")
    assert res.exit_code == 2 and "--out" in res.output
