"""The regime finder (studies/finder.py): targets, the sweep it builds, the region it reports."""

from __future__ import annotations

import pytest

from librapim_cli.errors import InputError
from librapim_cli.studies.finder import Space, find_regime, parse_target, sweep_dict
from librapim_cli.sweep import parse_sweep
from librapim_cli.sweep.space import point


def test_parse_ratio_and_metric_targets():
    t = parse_target("librapim/naive >= 6.2x")
    assert (t.system, t.baseline, t.metric, t.op, t.value) == ("librapim", "npu-pim-blocked", "speedup", ">=", 6.2)
    u = parse_target("librapim.npu_compute_utilization>=77%")
    assert (u.baseline, u.metric, u.value) == (None, "npu_compute_utilization", pytest.approx(0.77))
    assert parse_target("neupims/npu<=1").op == "<="


@pytest.mark.parametrize("text", ["", "librapim>2", "librapim/neupims", "librapim/nosuch>=2",
                                  "librapim.nosuch_metric>=1", "neupims/neupims>=1", "librapim/neupims>=x"])
def test_bad_targets_are_input_errors(text):
    with pytest.raises(InputError):
        parse_target(text)


def test_the_baseline_runs_on_the_same_device():
    spec = parse_sweep(sweep_dict(parse_target("librapim/neupims>=2.1"), Space(), 10), "t")
    assert spec.baseline == "neupims" and spec.baseline_same_hardware
    params = {"batch": 4, "model": "gpt3-7b", "workload": "sharegpt", "hardware.npu.systolic_arrays": 8,
              "hardware.pim.input_registers": 4}
    base = point(spec, params, system_params=False, system="neupims", keep_hardware=True)
    assert "hardware.npu.systolic_arrays=8" in base.sets and "hardware.pim.global_buffer_bytes=4096" in base.sets
    plain = point(spec, params, system_params=False, system="neupims")  # the sweep default: none of them
    assert not any(s.startswith("hardware.") for s in plain.sets)


def test_a_small_search_reports_a_consistent_region():
    space = Space(("gpt3-7b",), ("sharegpt",), 1, 16, (1, 8), (1,))
    r = find_regime(parse_target("librapim/neupims>=2.1"), space=space, trials=8, sampler="random", seed=3)
    assert r.trials == 8 and 0 <= r.feasible <= r.ran <= r.trials
    by = {p.path: p for p in r.params}
    assert sum(k for _, k, _ in by["hardware.npu.systolic_arrays"].shares) == r.feasible
    if r.feasible:
        lo, hi = map(int, by["batch"].bounds.split("-"))
        assert 1 <= lo <= hi <= 16
        assert r.best["value"] >= 2.1


def test_commands_that_run_a_sweep_work_whatever_was_imported_first():
    """``run`` is both a function of librapim_cli.sweep and the name of its module: once the module itself is
    imported (here: every module of the package, as a worker process or a tool may), the package attribute is the
    module, so the commands must import the function from the module (a regression: 'module' object is not
    callable)."""
    import subprocess
    import sys

    probe = (
        "import importlib, pkgutil, librapim_cli\n"
        "for m in pkgutil.walk_packages(librapim_cli.__path__, 'librapim_cli.'):\n"
        "    importlib.import_module(m.name)\n"
        "from typer.testing import CliRunner\n"
        "from librapim_cli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['regime', '--target', 'librapim/neupims>=2', '--sampler', 'bogus'])\n"
        "print(r.exit_code)\n"
        "print(r.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    code, err = r.stdout.split("\n", 1)
    assert code == "2", r.stdout + r.stderr
    assert "sampler" in err and "not callable" not in err
