"""Settings that are clamped or have no effect are said (inputs.setup_notes): console 'note:' lines and
``notes`` in --json; the header shows what runs, not what was asked."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from librapim_cli.errors import ModelError
from librapim_cli.inputs import setup, setup_notes
from librapim_cli.metrics.finite import check_result

FAST = ("--mode", "iteration", "--batch", "16")
lib_simulate = importlib.import_module("librapim_cli.simulate")  # the module (the package exports the function)
PIM_CLOCK = ("hardware.pim.clock_hz = 1.2 GHz has no effect: the MAC command interval (mac_interval_ns = 2 ns) "
             "caps the PIM at 500 MHz; lower hardware.pim.mac_interval_ns to make the PIM faster")


def test_readme_pim_clock_example_says_it_changes_nothing(run):
    r = run("simulate", *FAST, "--set", "hardware.pim.clock_hz=1.2e9")
    assert r.exit_code == 0, r.stderr
    assert f"note: {PIM_CLOCK}\n" in r.stdout
    doc = json.loads(run("simulate", *FAST, "--set", "hardware.pim.clock_hz=1.2e9", "--json").stdout)
    assert doc["notes"][0] == PIM_CLOCK
    base = json.loads(run("simulate", *FAST, "--json").stdout)
    assert doc["metrics"] == base["metrics"]  # the note is right: nothing changed
    slower = run("simulate", *FAST, "--set", "hardware.pim.clock_hz=4e8", "--json")
    assert PIM_CLOCK not in json.loads(slower.stdout)["notes"]  # 400 MHz is below the cap: it matters


def test_requests_beyond_the_trace_rows(run):
    r = run("simulate", "--workload", "sharegpt-trace-sample", "--requests", "600", "--batch", "8")
    assert r.exit_code == 0, r.stderr
    header = r.stdout.splitlines()[0]
    assert header.endswith("mode serve  requests 40")
    assert "note: 600 requests asked but the trace sample.csv has 40 rows: the run uses its 40 requests\n" in r.stdout
    doc = json.loads(run("simulate", "--workload", "sharegpt-trace-sample", "--requests", "600", "--batch", "8",
                         "--json").stdout)
    assert doc["inputs"]["requests"] == 40


def test_sub_batch_note_counts_micro_batches():
    s = setup("neupims", "gpt3-175b", "sharegpt", batch=512)  # gpt3-175b: pp 4 -> micro-batches of 128
    assert s.pp == 4
    assert s.notes == ("sub-batch interleaving never runs: system.sub_batch_min_batch = 256 is above the micro-batch "
                       "128 (batch 512 / pp 4); lower system.sub_batch_min_batch or raise --batch to use it",)
    assert setup("neupims", "gpt3-175b", "sharegpt", batch=1024).notes == ()
    # a runtime scheduler chooses for itself: the rule's gate does not apply
    assert setup("librapim", "gpt3-175b", "sharegpt", batch=512).notes == ()
    assert setup("npu-only", "gpt3-7b", "sharegpt", batch=16).notes == ()  # interleaving off: nothing to say


def test_fixed_lengths_trimmed_by_max_seq_len():
    s = setup("neupims", "gpt3-7b", "fixed-2048-128", sets=["workload.max_seq_len=1024"])
    assert s.notes[-1] == ("input_len + output_len = 2176 is above workload.max_seq_len = 1024: each request is "
                           "trimmed to 896 + 128 tokens")


def test_notes_function_is_pure():
    s = setup("neupims", "gpt3-7b", "sharegpt", batch=16)
    assert setup_notes(s) == list(s.notes) == [s.notes[0]]  # the rule's gate; the preset's own 1 GHz clock: no note
    said = setup_notes(s, overridden=["system.hardware.pim.clock_hz"])  # as if the 1 GHz had been --set
    assert said[0].startswith("hardware.pim.clock_hz = 1 GHz has no effect") and said[1:] == list(s.notes)
    s2 = setup("neupims", "gpt3-7b", "sharegpt", batch=16, sets=["hardware.pim.clock_hz=2e9"])
    assert s2.notes[0].startswith("hardware.pim.clock_hz = 2 GHz has no effect")


def test_compare_prefixes_notes_with_the_system(run):
    r = run("simulate", "--compare", "npu-only,neupims", *FAST)
    assert r.exit_code == 0, r.stderr
    assert "note: neupims: sub-batch interleaving never runs" in r.stdout
    assert "note: npu-only:" not in r.stdout


# ---- non-finite results are model errors ----------------------------------------------------------------
def test_non_finite_metric_is_a_model_error(run, one_line_error, monkeypatch):
    real = lib_simulate.iteration_metrics

    def nan_throughput(*args, **kwargs):
        m = dict(real(*args, **kwargs))
        m["throughput_tokens_per_s"] = float("nan")
        return m

    monkeypatch.setattr(lib_simulate, "iteration_metrics", nan_throughput)
    line = one_line_error(run("simulate", *FAST), code=1)
    assert line == ("error: the model produced a non-finite throughput_tokens_per_s (nan) for librapim / gpt3-7b / "
                    "batch 16: an unsupported regime, e.g. an extreme spec value; bring the values nearer the "
                    "presets' and report it if they are realistic")
    r = run("simulate", *FAST, "--json")
    assert r.exit_code == 1 and r.stdout == ""  # never a document with null in it


def test_check_result_looks_into_latency():
    class R:
        metrics = {"a": 1.0, "b": np.float64(2.0)}
        latency = {"ttft_s": {"p50": 1.0, "p99": float("inf")}}
        setup = None

    with pytest.raises(ModelError, match=r"non-finite latency\.ttft_s\.p99 \(inf\) for this simulation"):
        check_result(R())
    R.latency = {"ttft_s": {"p50": 1.0}}
    assert check_result(R()) is not None
