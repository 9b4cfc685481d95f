"""`librapim reproduce`, `librapim regime` and the regime-map plots, end to end on a small map."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from librapim_cli.cli.app import app

SMALL = ["--models", "gpt3-7b", "--workloads", "sharegpt,fixed-2048-128", "--batches", "1,256",
         "--npu-arrays", "1,8", "--registers", "1", "--samples", "2", "-j", "1"]


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_reproduce_writes_the_document_pictures_and_data_then_resumes(tmp_path):
    out, store = tmp_path / "r.md", f"sqlite:///{tmp_path}/map.db"
    res = run("reproduce", *SMALL, "--out", str(out), "--storage", store, "--data", str(tmp_path / "m.csv"))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith("# Where LibraPIM wins")
    assert "| published number | where we reach it | mechanism | assumptions |" in text
    imgs = sorted(p.name for p in (tmp_path / "img" / "reproduction").iterdir())
    assert "speedup-context-neupims.png" in imgs and "utilization-npu1.png" in imgs
    for name in imgs:
        assert f"(img/reproduction/{name})" in text
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("model,workload,batch,npu_arrays,registers,infeasible,system")
    assert "8 points simulated" in res.output.replace("\n", " ")
    again = run("reproduce", *SMALL, "--out", str(out), "--storage", store)
    assert again.exit_code == 0 and "0 points simulated, 8 reused" in again.output.replace("\n", " ")
    assert out.read_text() == text  # the same document from the stored points


def test_reproduce_golden_needs_the_golden_subset(tmp_path):
    res = run("reproduce", *SMALL, "--out", str(tmp_path / "r.md"), "--golden", str(tmp_path / "g.json"))
    assert res.exit_code == 2 and "golden subset" in res.output
    assert not (tmp_path / "r.md").exists()


def test_regime_reports_a_region(tmp_path):
    res = run("regime", "--target", "librapim/neupims>=2.1", "--models", "gpt3-7b", "--workloads", "sharegpt",
              "--batch-max", "8", "--npu-arrays", "1", "--registers", "1", "-n", "6", "--sampler", "random",
              "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    assert "target librapim/neupims>=2.1:" in res.output and "best: librapim/neupims = " in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["trials"] == 6 and data["quantity"] == "librapim/neupims"
    # with a 1-array NPU and batch <= 8, DBO's FC offload beats NeuPIMs by more than 2.1x everywhere
    assert data["meeting"] == data["ran"] == 6


@pytest.mark.parametrize("sub, extra", [("regime", ["--baseline", "pim-gemv"]),
                                        ("regime", ["--rows", "npu", "--npu-arrays", "1,8", "--registers", "1"]),
                                        ("utilization", ["--npu-arrays", "8"])])
def test_plot_regime_subcommands(tmp_path, sub, extra):
    out = tmp_path / "h.png"
    res = run("plot", sub, "--out", str(out), "--models", "gpt3-7b", "--workloads", "sharegpt",
              "--batches", "1,64", "--storage", "memory", "-j", "1", *extra)
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(b"\x89PNG")


def test_reproduce_stopped_by_sigint_exits_130_and_resumes(tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "map.db"
    args = [sys.executable, "-m", "librapim_cli", "reproduce", "--models", "gpt3-7b,gpt3-13b", "--workloads",
            "sharegpt,alpaca", "--batches", "1,4,16,64,256", "--npu-arrays", "1,8", "--registers", "1",
            "--samples", "2", "-j", "1",
            "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r.md")]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
        try:
            done = sqlite3.connect(db).execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except sqlite3.Error:
            continue
        if done >= 3:
            break
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted:" in err and "rerun the same command to resume" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()  # nothing half-written
    running = sqlite3.connect(db).execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    assert running == 0  # claims released
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert " reused from the storage" in res.stderr and ", 0 reused" not in res.stderr
