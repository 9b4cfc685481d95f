"""Chrome trace and per-iteration CSV of serving (and iteration-mode) results."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from librapim_cli.report.iterations_csv import HEADER, write_iterations_csv
from librapim_cli.report.trace import write_chrome_trace
from librapim_cli.simulate import simulate


@pytest.fixture(scope="module")
def served():
    return simulate("librapim", "gpt3-7b", "alpaca", batch=8, requests=20, mode="serve")


@pytest.fixture(scope="module")
def served_stages():
    return simulate("librapim", "gpt3-7b", "alpaca", batch=8, requests=20, mode="serve", keep_stages=True)


def _events(path):
    doc = json.loads(path.read_text())
    assert set(doc) == {"traceEvents", "displayTimeUnit"}
    return doc["traceEvents"]


def _threads(events):
    return {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}


def test_trace_without_stages_has_one_event_per_iteration_per_unit(tmp_path, served):
    p = tmp_path / "t.json"
    write_chrome_trace(served, p)
    ev = _events(p)
    procs = [e for e in ev if e["ph"] == "M" and e["name"] == "process_name"]
    assert [e["args"]["name"] for e in procs] == ["system"]
    th = _threads(ev)
    assert sorted(th.values()) == ["NPU", "PIM", "steps"]
    by_name = {v: k for k, v in th.items()}
    x = [e for e in ev if e["ph"] == "X"]
    per = served.per_iteration
    n_dec = int((per["kind"] == "decode").sum())
    n_pf = int((per["kind"] == "prefill").sum())
    assert sum(e["tid"] == by_name["steps"] for e in x) == n_dec + n_pf
    assert sum(e["tid"] == by_name["NPU"] and e["cat"] == "decode" for e in x) == n_dec
    assert sum(e["tid"] == by_name["NPU"] and e["cat"] == "prefill" for e in x) == n_pf
    assert sum(e["tid"] == by_name["PIM"] for e in x) == int((per["pim_busy_s"][per["kind"] == "decode"] > 0).sum())
    steps = [e for e in x if e["tid"] == by_name["steps"]]
    assert [e["ts"] for e in steps] == pytest.approx((per["start_s"] * 1e6).tolist(), abs=1e-3)
    assert [e["dur"] for e in steps] == pytest.approx((per["time_s"] * 1e6).tolist(), abs=1e-3)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_trace_with_stages_lays_stages_end_to_end(tmp_path, served_stages):
    p = tmp_path / "stages.json"
    write_chrome_trace(served_stages, p)
    ev = _events(p)
    by_name = {v: k for k, v in _threads(ev).items()}
    stage = [e for e in ev if e["ph"] == "X" and e["cat"] == "stage"]
    first = served_stages.stages.rows(0)  # the first decode iteration's stages
    per = served_stages.per_iteration
    i0 = int((per["kind"] == "decode").argmax())
    its0 = [e for e in stage if e["args"]["step"] == i0 and e["tid"] == by_name["NPU"]]
    assert len(its0) == int((first.npu_s > 0).sum())
    last = its0[-1]
    j = int(np.flatnonzero(first.npu_s > 0)[-1])
    end = last["ts"] + first.repeats[j] * first.time_s[j] * 1e6
    assert end == pytest.approx((per["start_s"][i0] + per["time_s"][i0]) * 1e6, abs=2e-3)  # ts rounded to ns
    assert any(e["tid"] == by_name["PIM"] for e in stage)


def test_iterations_csv(tmp_path, served):
    p = tmp_path / "it.csv"
    write_iterations_csv(served, p)
    rows = list(csv.reader(p.open()))
    assert tuple(rows[0]) == HEADER
    per = served.per_iteration
    assert len(rows) - 1 == per["time_s"].shape[0]
    assert [r[1] for r in rows[1:]] == per["kind"].tolist()
    assert [float(r[3]) for r in rows[1:]] == per["time_s"].tolist()  # full precision round trip
    assert [int(r[4]) for r in rows[1:]] == per["batch"].tolist()
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    assert not list(tmp_path.glob(".*"))


def test_iteration_mode_results_get_a_back_to_back_timeline(tmp_path):
    res = simulate("librapim", "gpt3-7b", "alpaca", batch=8, samples=3)
    write_iterations_csv(res, tmp_path / "i.csv")
    rows = list(csv.DictReader((tmp_path / "i.csv").open()))
    assert len(rows) == 3 and float(rows[0]["start_s"]) == 0.0
    assert float(rows[1]["start_s"]) == pytest.approx(res.iterations[0].time_s)
    write_chrome_trace(res, tmp_path / "i.json")
    assert sum(e["ph"] == "X" and e["cat"] == "decode" for e in _events(tmp_path / "i.json")) >= 3
