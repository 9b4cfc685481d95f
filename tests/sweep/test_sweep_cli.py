"""`librapim sweep` as a user runs it (subprocesses): export round trip through `librapim simulate`, a study
killed mid-run resumes to the full count, Ctrl-C keeps everything, PostgreSQL workers share one study."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
import uuid
from collections import Counter

import pytest
from sweep_helpers import cli, cli_inproc, cli_popen, toml_text

from librapim_cli.sweep import trials_table

# a space large enough that a sampler rarely repeats a point
WIDE = [{"path": "batch", "type": "int", "low": 2, "high": 24},
        {"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1.0, "high": 4.0}]


def _spec_file(tmp_path, spec, name="spec.toml"):
    path = tmp_path / name
    path.write_text(toml_text(spec))
    return str(path)


def _finished(rows) -> int:
    return sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows)


def _wait_for(storage: str, study: str, n: int, proc, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, f"the sweep ended before {n} trials: {proc.communicate()}"
        try:
            if _finished(trials_table(storage, study)) >= n:
                return
        except Exception:  # the study does not exist yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {n} finished trials after {timeout} s")


def test_export_best_reruns_to_the_same_metrics(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, small)
    out = tmp_path / "best"
    r = cli_inproc("sweep", spec, "--sampler", "grid", "--export-best", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["finished"] == 9 and len(doc["best"]) == 1
    manifest = json.loads((out / "best.json").read_text())["best"]
    assert [m["trial"] for m in manifest] == [doc["best"][0]["number"]]
    m = manifest[0]
    for kind in ("system", "model", "workload"):
        text = (out / f"small-t{m['trial']}-{kind}.toml").read_text()
        assert "source = \"librapim sweep study 'small' trial" in text
    sim = cli_inproc("simulate", "--system", m["system"], "--model", m["model"], "--workload", m["workload"],
                     "--batch", str(m["batch"]), "--requests", str(m["requests"]), "--mode", m["mode"], "--json")
    assert sim.exit_code == 0, sim.stderr
    got = json.loads(sim.stdout)["metrics"]
    want = doc["best"][0]["metrics"]
    for key in ("throughput_tokens_per_s", "energy_j_per_token", "iteration_time_s", "area_overhead_fraction"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=0), key
    assert got["batch"] == doc["best"][0]["params"]["batch"]


def test_journal_study_killed_mid_run_resumes_to_the_full_count(small, tmp_path) -> None:
    spec_d = copy.deepcopy(small)
    spec_d["parameters"] = WIDE
    spec = _spec_file(tmp_path, spec_d)
    journal = str(tmp_path / "study.journal")
    args = ("sweep", spec, "--trials", "60", "--storage", journal, "--seed", "1")
    proc = cli_popen(*args)
    _wait_for(journal, "small", 5, proc)
    proc.send_signal(signal.SIGKILL)  # as hard as a crash: nothing gets cleaned up
    proc.wait(timeout=30)
    before = trials_table(journal, "small")
    assert 5 <= _finished(before) < 60
    r = cli(*args)  # the same command resumes
    assert r.returncode == 0, r.stderr
    rows = trials_table(journal, "small")
    states = Counter(x["state"] for x in rows)
    assert states["COMPLETE"] + states["PRUNED"] == 60
    assert len({x["number"] for x in rows}) == len(rows)
    assert {x["number"] for x in before if x["state"] == "COMPLETE"} <= {x["number"] for x in rows
                                                                        if x["state"] == "COMPLETE"}
    for x in rows:  # a trial the kill left RUNNING is failed with the reason, never counted
        assert x["state"] != "RUNNING"
        if x["state"] == "FAIL":  # killed after or before it recorded its worker process (study.py)
            assert "died before finishing the trial" in x["reason"] or "its process died starting it" in x["reason"]


def test_ctrl_c_finishes_running_trials_and_prints_how_to_resume(small, tmp_path) -> None:
    spec_d = copy.deepcopy(small)
    spec_d["parameters"] = WIDE
    spec = _spec_file(tmp_path, spec_d)
    journal = str(tmp_path / "int.journal")
    proc = cli_popen("sweep", spec, "--trials", "60", "--storage", journal, start_new_session=True)
    _wait_for(journal, "small", 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; everything so far is kept. Resume with:" in out
    resume = out.split("Resume with:", 1)[1].split()
    assert resume[:3] == ["librapim", "sweep", spec]
    rows = trials_table(journal, "small")
    assert all(x["state"] in ("COMPLETE", "PRUNED") for x in rows)  # the running trial finished
    r = cli(*resume[1:])
    assert r.returncode == 0, r.stderr
    assert _finished(trials_table(journal, "small")) == 60


def test_cli_errors_are_one_line(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, small)
    for args, needle in (
        (("--workers", "2"), "--workers 2 needs a shared storage"),
        (("--out", str(tmp_path / "x.txt")), "must end in .csv or .json"),
        (("--sampler", "cmaes"), "choose one of tpe, nsga2, random, grid"),
        (("--storage", "nonsense"), "is not a storage"),
    ):
        r = cli_inproc("sweep", spec, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert r.stdout == ""
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and needle in r.stderr, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(toml_text({**small, "colour": "red"}))
    r = cli_inproc("sweep", str(bad))
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"error: invalid sweep '{bad}': colour: unknown field; remove it or check the spelling "
        "(see `librapim presets show`)")


def test_table_and_out_file(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, small)
    r = cli_inproc("sweep", spec, "--sampler", "grid", "--out", str(tmp_path / "all.csv"))
    assert r.exit_code == 0, r.stderr
    assert "Best trial of 'small'" in r.stdout and "9/9 trials finished" in r.stdout
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 10


PG_URL = os.environ.get("LIBRAPIM_TEST_PG_URL")


@pytest.mark.skipif(not PG_URL, reason="LIBRAPIM_TEST_PG_URL is not set: no PostgreSQL server to share a study "
                                       "(source .ci/start-postgres.sh to start one)")
def test_postgres_workers_share_one_study_with_exactly_n_trials(small, tmp_path) -> None:
    spec_d = copy.deepcopy(small)
    # serving 200 ShareGPT requests: tens of ms a trial, so that neither process finishes 40 trials alone
    # before the other has started (both must take part)
    spec_d.update(parameters=WIDE, mode="serve", workload="sharegpt", requests=200)
    spec = _spec_file(tmp_path, spec_d)
    study = f"pg-{uuid.uuid4().hex[:8]}"
    args = ("sweep", spec, "--trials", "40", "--storage", PG_URL, "--study", study, "--json")
    procs = [cli_popen(*args) for _ in range(2)]  # the same command on two "machines"
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out)["finished"] == 40
        assert json.loads(out)["new_trials"] >= 1  # both processes took part
    rows = trials_table(PG_URL, study)
    states = Counter(x["state"] for x in rows)
    assert states["COMPLETE"] + states["PRUNED"] == 40  # none lost, none extra
    numbers = [x["number"] for x in rows]
    assert sorted(numbers) == list(range(len(rows)))  # unique, no gaps
    # a trial beyond the 40 can only be a recorded surplus (two workers raced for the last slot)
    assert all("surplus" in (x["reason"] or "") for x in rows if x["state"] == "FAIL")
    assert len({tuple(sorted(x["params"].items())) for x in rows if x["state"] == "COMPLETE"}) >= 30
