"""`librapim simulate`: the JSON documents, --compare, --breakdown, output files."""

from __future__ import annotations

import csv
import json

import pytest

import librapim_cli.report.trace as report_trace
from librapim_cli.cost.types import BOUNDS
from librapim_cli.simulate import SCHEMA_VERSION, simulate

FAST = ("--mode", "iteration", "--batch", "16")
METRIC_KEYS = {"throughput_tokens_per_s", "iteration_time_s", "npu_utilization", "pim_utilization",
               "npu_compute_utilization", "pim_mac_utilization", "energy_j_per_token", "offload_attention_share",
               "offload_fc_share"}
SBI_NOTE_16 = ("sub-batch interleaving never runs: system.sub_batch_min_batch = 256 is above the batch 16; "
               "lower system.sub_batch_min_batch or raise --batch to use it")
BREAKDOWN_KEYS = {"op", "device", "time_s", "bound", "flops", "bytes", "energy_j"}


def _json(r) -> dict:
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)  # exactly one document: json.loads rejects anything after it


def test_json_document(run):
    doc = _json(run("simulate", *FAST, "--json"))
    assert list(doc) == ["schema_version", "inputs", "metrics", "notes"]
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["notes"] == []  # librapim's runtime scheduler has no batch-size gate to warn about
    assert METRIC_KEYS <= set(doc["metrics"])
    assert all(isinstance(v, (int, float)) for v in doc["metrics"].values())
    inputs = doc["inputs"]
    assert (inputs["system"]["name"], inputs["model"]["name"], inputs["workload"]["name"]) == \
        ("librapim", "gpt3-7b", "sharegpt")
    assert (inputs["batch"], inputs["mode"]) == (16, "iteration")
    # the CLI reports what the library computes
    lib = simulate("librapim", "gpt3-7b", "sharegpt", batch=16, mode="iteration")
    assert doc["metrics"]["throughput_tokens_per_s"] == pytest.approx(lib.metrics["throughput_tokens_per_s"],
                                                                       rel=1e-12)


def test_set_reaches_the_simulation(run):
    base = _json(run("simulate", *FAST, "--json"))
    fast = _json(run("simulate", *FAST, "--json", "--set", "hardware.npu.clock_hz=2e9", "--set", "model.layers=16"))
    assert fast["inputs"]["system"]["hardware"]["npu"]["clock_hz"] == 2e9
    assert fast["inputs"]["model"]["layers"] == 16
    assert fast["metrics"]["throughput_tokens_per_s"] > base["metrics"]["throughput_tokens_per_s"]


def test_table_output(run):
    r = run("simulate", *FAST)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    for text in ("librapim", "gpt3-7b", "sharegpt", "Throughput", "tokens/s", "throughput_tokens_per_s"):
        assert text in r.stdout


def test_idle_device_is_called_out(run):
    # at batch 16 NeuPIMs' PIM only runs the short attention of 16 requests: it idles most of the time ...
    doc = _json(run("simulate", "--system", "neupims", *FAST, "--json"))
    idle_pim = 1 - doc["metrics"]["pim_utilization"]
    assert idle_pim > 0.5
    r = run("simulate", "--system", "neupims", *FAST)
    assert f"PIM is idle {100 * idle_pim:.3g} % of the time" in r.stdout
    # ... and LibraPIM's DBO hands it FC work
    lib = _json(run("simulate", *FAST, "--json"))
    assert lib["metrics"]["pim_utilization"] > 1 - idle_pim
    assert lib["metrics"]["offload_fc_share"] > 0
    npu_only = run("simulate", "--system", "npu-only", *FAST)
    assert "PIM is idle" not in npu_only.stdout and "n/a (no PIM work)" in npu_only.stdout


def test_compare(run):
    doc = _json(run("simulate", "--compare", "neupims,librapim,npu-only", "--baseline", "neupims", *FAST, "--json"))
    assert list(doc) == ["schema_version", "inputs", "baseline", "systems", "speedup", "notes"]
    assert doc["notes"] == [f"neupims: {SBI_NOTE_16}"]  # librapim: runtime scheduler; npu-only: no SBI
    assert doc["baseline"] == "neupims"
    assert list(doc["systems"]) == ["neupims", "librapim", "npu-only"]
    assert doc["speedup"]["neupims"] == 1.0
    for name, m in doc["systems"].items():
        assert METRIC_KEYS <= set(m)
        ratio = m["throughput_tokens_per_s"] / doc["systems"]["neupims"]["throughput_tokens_per_s"]
        assert doc["speedup"][name] == pytest.approx(ratio)
    assert doc["inputs"]["batch"] == 16 and doc["inputs"]["model"]["name"] == "gpt3-7b"


def test_compare_baseline_defaults_to_first(run):
    doc = _json(run("simulate", "--compare", "npu-only,librapim", *FAST, "--json"))
    assert doc["baseline"] == "npu-only" and doc["speedup"]["npu-only"] == 1.0
    table = run("simulate", "--compare", "npu-only,librapim", *FAST)
    assert table.exit_code == 0 and "npu-only *" in table.stdout and "librapim" in table.stdout


def test_breakdown(run):
    doc = _json(run("simulate", *FAST, "--json", "--breakdown"))
    records = doc["breakdown"]
    assert records and all(BREAKDOWN_KEYS <= set(r) for r in records)
    ops = [r["op"] for r in records]
    assert ops[-1] == "lm_head" and "qkv" in ops and "ffn_down" in ops
    by_op = {r["op"]: r for r in records}
    assert by_op["attn_score"]["device"] == "pim"  # librapim places attention on the PIM
    assert by_op["allreduce_ffn"]["device"] == "link" and by_op["allreduce_ffn"]["bound"] == "link"
    assert all(r["bound"] in BOUNDS for r in records)
    assert all(r["time_s"] >= 0 and r["share"] >= 0 for r in records)
    assert sum(r["share"] for r in records) > 0.5
    npu_only = _json(run("simulate", "--system", "npu-only", *FAST, "--json", "--breakdown"))
    assert {r["op"]: r for r in npu_only["breakdown"]}["attn_score"]["device"] == "npu"

    table = run("simulate", *FAST, "--breakdown")
    assert table.exit_code == 0
    assert "Per-op breakdown" in table.stdout and "attn_context" in table.stdout and "bank-timing" in table.stdout


def test_iterations_csv_and_trace(run, tmp_path):
    csv_path, trace_path = tmp_path / "its.csv", tmp_path / "trace.json"
    r = run("simulate", *FAST, "--iterations-csv", str(csv_path), "--trace", str(trace_path))
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 8 and {"time_s", "batch", "npu_busy_s", "pim_busy_s"} <= set(rows[0])
    trace = json.loads(trace_path.read_text())
    assert trace["traceEvents"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["its.csv", "trace.json"]  # no temporary files left


def test_output_files_are_all_or_nothing(run, tmp_path, monkeypatch):
    def half_written(result, path):
        with open(path, "w") as f:
            f.write('{"traceEvents": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_trace, "write_chrome_trace", half_written)
    r = run("simulate", *FAST, "--iterations-csv", str(tmp_path / "its.csv"), "--trace", str(tmp_path / "t.json"))
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == f"error: --trace {tmp_path / 't.json'}: cannot write: no space left on the device; free some " \
                       "space or choose another path\n"
    assert list(tmp_path.iterdir()) == []


def test_output_folder_missing(run, one_line_error, tmp_path):
    line = one_line_error(run("simulate", *FAST, "--trace", str(tmp_path / "no" / "t.json")))
    assert line == f"error: --trace {tmp_path / 'no' / 't.json'}: the folder {tmp_path / 'no'} does not exist; " \
                   "create it or choose another path"


def test_serve_mode(run):
    doc = _json(run("simulate", "--mode", "serve", "--batch", "8", "--requests", "24", "--json"))
    assert doc["inputs"]["mode"] == "serve"
    assert METRIC_KEYS <= set(doc["metrics"])
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(doc["latency"][key]) >= {"mean", "p50", "p90", "p99"}
    table = run("simulate", "--mode", "serve", "--batch", "8", "--requests", "24")
    assert table.exit_code == 0 and "Time to first token" in table.stdout
