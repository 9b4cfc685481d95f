"""Running studies in-process: the grid finds the brute-force optimum, fronts hold only non-dominated feasible
trials, infeasible designs are recorded and never best, counts are exact, seeds reproduce."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter

import pytest

from librapim_cli.errors import InputError, SpecError
from librapim_cli.simulate import simulate
from librapim_cli.sweep import load_sweep, parse_sweep, run, study_rows, trials_table, write_trials


def _brute_force(spec_dict) -> dict[tuple, float | None]:
    """Throughput of every grid point, by calling simulate directly (None where it cannot run)."""
    out: dict[tuple, float | None] = {}
    batches = spec_dict["parameters"][0]["values"]
    lanes = spec_dict["parameters"][1]["values"]
    for b, n in itertools.product(batches, lanes):
        try:
            r = simulate(spec_dict["system"], spec_dict["model"], spec_dict["workload"], batch=b,
                         sets=[f"hardware.pim.mac_lanes_per_unit={n}"], mode="iteration")
            out[(b, n)] = r.metrics["throughput_tokens_per_s"]
        except InputError:
            out[(b, n)] = None
    return out


def _key(params) -> tuple:
    return params["batch"], params["hardware.pim.mac_lanes_per_unit"]


def test_grid_finds_the_brute_force_optimum(small) -> None:
    truth = _brute_force(small)
    best_point = max((k for k, v in truth.items() if v is not None), key=lambda k: truth[k])
    res = run(parse_sweep(small, "small"), sampler="grid", seed=0)
    assert res.target == 9 and res.finished == 9  # the grid size, every point once
    rows = study_rows(res.study)
    assert sorted(_key(r["params"]) for r in rows) == sorted(truth)  # the full grid, no repeats
    for r in rows:
        assert r["values"][0] == pytest.approx(truth[_key(r["params"])], rel=1e-12)
    assert len(res.best) == 1
    assert _key(res.best[0]["params"]) == best_point
    assert res.best[0]["values"][0] == pytest.approx(truth[best_point], rel=1e-12)


def _dominates(a, b, directions) -> bool:
    signs = [1 if d == "maximize" else -1 for d in directions]
    better_eq = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))
    return better_eq and better


def test_pareto_front_is_the_non_dominated_feasible_trials(small) -> None:
    spec = copy.deepcopy(small)
    spec["parameters"].append({"path": "system.concurrency.mode", "type": "choice", "values": ["dex", "blocked"]})
    spec["derive"] = [{"parameter": "system.concurrency.mode", "description": "area per mode (test)",
                       "sets": {"dex": {"system.concurrency.area_overhead_fraction": 0.00032},
                                "blocked": {"system.concurrency.area_overhead_fraction": 0.0}}}]
    spec["objectives"] = [{"metric": "throughput_tokens_per_s", "direction": "maximize"},
                          {"metric": "energy_j_per_token", "direction": "minimize"}]
    spec["constraints"] = [{"metric": "energy_j_per_token", "max": 0.06}]
    directions = ["maximize", "minimize"]
    res = run(parse_sweep(spec, "front"), sampler="grid")
    rows = study_rows(res.study)
    assert res.finished == 18
    feasible = [r for r in rows if r["feasible"]]
    assert any(not r["feasible"] for r in rows if r["state"] == "COMPLETE"), "the constraint should bite"
    front = {r["number"] for r in res.best}
    assert front
    for r in res.best:
        assert r["feasible"]
        assert not any(_dominates(o["values"], r["values"], directions) for o in feasible)
    for r in feasible:  # and every non-dominated feasible trial is on the front
        if not any(_dominates(o["values"], r["values"], directions) for o in feasible):
            assert r["number"] in front


def test_infeasible_designs_are_recorded_and_never_best(small) -> None:
    spec = copy.deepcopy(small)
    # gpt3-13b at batch 512 does not fit its KV cache (it would have the highest throughput if it did)
    spec.update(model="gpt3-13b", workload="sharegpt")
    spec["parameters"] = [{"path": "batch", "type": "choice", "values": [32, 64, 512]}]
    # and a constraint that rules out the best design that does fit
    top = simulate("librapim", "gpt3-13b", "sharegpt", batch=64).metrics["throughput_tokens_per_s"]
    spec["constraints"] = [{"metric": "throughput_tokens_per_s", "max": top * 0.999}]
    res = run(parse_sweep(spec, "infeasible"), sampler="grid")
    rows = {r["params"]["batch"]: r for r in study_rows(res.study)}
    assert rows[512]["state"] == "PRUNED" and not rows[512]["feasible"]
    assert "does not fit" in rows[512]["reason"]
    assert rows[512]["constraints"]["fits"] > 0
    assert rows[64]["state"] == "COMPLETE" and not rows[64]["feasible"]
    assert rows[64]["constraints"]["throughput_tokens_per_s<=" + f"{top * 0.999:g}"] > 0
    assert [r["params"]["batch"] for r in res.best] == [32]
    assert res.finished == 3  # an infeasible trial still counts as finished


def test_a_design_that_cannot_run_does_not_stop_the_study(small) -> None:
    spec = copy.deepcopy(small)
    spec["parameters"] = [{"path": "system.tp", "type": "choice", "values": [3, 4]}]  # 3 does not divide 32 heads
    res = run(parse_sweep(spec, "tp"), sampler="grid")
    by_tp = {r["params"]["system.tp"]: r for r in study_rows(res.study)}
    assert by_tp[3]["state"] == "PRUNED" and "does not divide" in by_tp[3]["reason"]
    assert by_tp[4]["state"] == "COMPLETE"
    assert [r["params"]["system.tp"] for r in res.best] == [4]


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_seed_reproduces_a_single_worker_run(small, sampler: str) -> None:
    spec = copy.deepcopy(small)
    spec["parameters"] = [{"path": "batch", "type": "int", "low": 2, "high": 24},
                          {"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1.0, "high": 4.0}]
    a = run(parse_sweep(spec, "seeded"), trials=14, sampler=sampler, seed=7)
    b = run(parse_sweep(spec, "seeded"), trials=14, sampler=sampler, seed=7)
    pa = [r["params"] for r in study_rows(a.study)]
    assert pa == [r["params"] for r in study_rows(b.study)]
    assert len(pa) == 14 and a.finished == 14


def test_trials_is_the_total_finished_in_the_study(small, tmp_path) -> None:
    storage = str(tmp_path / "total.journal")
    spec = copy.deepcopy(small)
    spec["parameters"] = [{"path": "batch", "type": "int", "low": 2, "high": 24}]
    first = run(parse_sweep(spec, "t"), trials=5, storage=storage, seed=1, study_name="total")
    second = run(parse_sweep(spec, "t"), trials=12, storage=storage, seed=2, study_name="total")  # resume: 7 more
    third = run(parse_sweep(spec, "t"), trials=12, storage=storage, study_name="total")  # already there
    assert (first.new_trials, second.new_trials, third.new_trials) == (5, 7, 0)
    rows = trials_table(storage, "total")
    assert len(rows) == 12 and sorted(r["number"] for r in rows) == list(range(12))


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_local_workers_end_with_exactly_n(small, tmp_path, kind: str) -> None:
    storage = str(tmp_path / "workers.journal") if kind == "journal" else f"sqlite:///{tmp_path}/workers.db"
    spec = copy.deepcopy(small)
    spec["parameters"] = [{"path": "batch", "type": "int", "low": 2, "high": 24}]
    res = run(parse_sweep(spec, "t"), trials=25, storage=storage, workers=3, study_name="workers")
    rows = trials_table(storage, "workers")
    states = Counter(r["state"] for r in rows)
    assert states["COMPLETE"] + states["PRUNED"] == 25 == res.finished
    assert len({r["number"] for r in rows}) == len(rows)
    assert all("surplus" in (r["reason"] or "") for r in rows if r["state"] == "FAIL")


def test_resuming_with_another_spec_is_refused(small, tmp_path) -> None:
    storage = str(tmp_path / "other.journal")
    run(parse_sweep(small, "s"), trials=2, storage=storage, study_name="shared")
    other = copy.deepcopy(small)
    other["objectives"] = [{"metric": "energy_j_per_token", "direction": "minimize"}]
    with pytest.raises(SpecError, match="made by a different sweep spec"):
        run(parse_sweep(other, "s"), trials=2, storage=storage, study_name="shared")


def test_workers_need_a_shared_storage(small) -> None:
    with pytest.raises(SpecError, match="--workers 2 needs a shared storage"):
        run(parse_sweep(small, "s"), workers=2)


def test_unknown_objective_metric_is_a_spec_error(small) -> None:
    spec = copy.deepcopy(small)
    spec["objectives"] = [{"metric": "throughput_tokens_per_sec", "direction": "maximize"}]
    with pytest.raises(SpecError, match="metric 'throughput_tokens_per_sec' is not produced"):
        run(parse_sweep(spec, "s"), trials=1)


def test_speedup_over_a_baseline_keeps_the_non_system_parameters() -> None:
    spec = load_sweep("batch-model")
    res = run(spec, trials=4, sampler="random", seed=3)
    for r in study_rows(res.study):
        if r["state"] != "COMPLETE":
            continue
        p = r["params"]
        base = simulate("neupims", p["model"], "sharegpt", batch=p["batch"]).metrics["throughput_tokens_per_s"]
        assert r["metrics"]["baseline_throughput_tokens_per_s"] == pytest.approx(base, rel=1e-12)
        assert r["values"][0] == pytest.approx(r["metrics"]["throughput_tokens_per_s"] / base, rel=1e-12)


def test_out_files(small, tmp_path) -> None:
    res = run(parse_sweep(small, "files"), sampler="grid")
    rows = study_rows(res.study)
    write_trials(rows, tmp_path / "t.json", study="files", objectives=res.objectives)
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["objectives"] == [{"metric": "throughput_tokens_per_s", "direction": "maximize"}]
    assert len(doc["trials"]) == 9 and doc["trials"][0]["metrics"]["throughput_tokens_per_s"] > 0
    write_trials(rows, tmp_path / "t.csv", study="files", objectives=res.objectives)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert len(lines) == 10
    head = lines[0].split(",")
    assert head[:5] == ["number", "state", "feasible", "reason", "duration_s"]
    assert {"params.batch", "values.throughput_tokens_per_s", "metrics.energy_j_per_token"} <= set(head)
    with pytest.raises(SpecError, match="must end in .csv or .json"):
        write_trials(rows, tmp_path / "t.txt", study="files", objectives=res.objectives)


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_running_trials_of_dead_workers_are_failed(small, tmp_path) -> None:
    import datetime

    import optuna

    from librapim_cli.sweep.storage import open_storage, parse_storage
    from librapim_cli.sweep.workers import reap_stale, worker_identity

    storage = str(tmp_path / "stale.journal")
    spec = parse_sweep(small, "s")
    run(spec, trials=2, storage=storage, study_name="stale")
    st = open_storage(parse_storage(storage))
    study_id = st.get_study_id_from_name("stale")
    me = worker_identity()
    now = datetime.datetime.now()

    def running(user_attrs: dict, age_s: float) -> None:
        st.create_new_trial(study_id, template_trial=optuna.trial.FrozenTrial(
            number=-1, state=optuna.trial.TrialState.RUNNING, value=None,
            datetime_start=now - datetime.timedelta(seconds=age_s), datetime_complete=None, params={},
            distributions={}, user_attrs=user_attrs, system_attrs={}, intermediate_values={}, trial_id=-1))

    running({"worker": {**me, "pid": _dead_pid(), "start": "1"}}, 0)  # #2: a dead process of this machine
    running({}, 30)  # #3: no worker record for 30 s
    running({"worker": {**me, "host": "elsewhere"}}, 30)  # #4: another machine, 30 s: may still be running
    running({"worker": {**me, "host": "elsewhere"}}, 1000)  # #5: another machine, far beyond the limit
    running({"worker": me}, 0)  # #6: this process, which is not running a trial now
    running({}, 1)  # #7: no record yet, 1 s old: may be starting
    assert reap_stale(st, study_id, me) == 4
    rows = {r["number"]: r for r in trials_table(storage, "stale")}
    assert [rows[n]["state"] for n in range(2, 8)] == ["FAIL", "FAIL", "RUNNING", "FAIL", "FAIL", "RUNNING"]
    assert "died before finishing the trial" in rows[2]["reason"]
    assert rows[3]["reason"].startswith("stale: RUNNING for 30 s without a worker record")
    assert rows[5]["reason"].startswith("stale: RUNNING for 1000 s on elsewhere")


def test_a_journal_lock_left_by_a_dead_process_is_taken_over_at_once(small, tmp_path) -> None:
    import os
    import time

    from librapim_cli.sweep.workers import worker_identity

    storage = tmp_path / "locked.journal"
    storage.touch()
    os.symlink(json.dumps({**worker_identity(), "pid": _dead_pid(), "start": "1"}), f"{storage}.lock")
    t0 = time.monotonic()
    res = run(parse_sweep(small, "s"), trials=2, storage=str(storage))
    assert res.finished == 2
    assert time.monotonic() - t0 < 10  # not optuna's 30 s grace period


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_recorded_trials_read_back_through_optuna_field_by_field(tmp_path, kind: str) -> None:
    import math
    import os

    import optuna

    from librapim_cli.sweep.record import make_recorder
    from librapim_cli.sweep.storage import open_storage, parse_storage

    if kind == "postgresql" and not os.environ.get("LIBRAPIM_TEST_PG_URL"):
        pytest.skip("LIBRAPIM_TEST_PG_URL is not set (source .ci/start-postgres.sh)")
    text = {"sqlite": f"sqlite:///{tmp_path}/r.db", "journal": str(tmp_path / "r.journal"),
            "postgresql": os.environ.get("LIBRAPIM_TEST_PG_URL", "")}[kind]
    ref = parse_storage(text)
    st = open_storage(ref)
    name = f"roundtrip-{os.getpid()}-{id(tmp_path)}"
    stored = optuna.create_study(storage=st, study_name=name, directions=["maximize", "minimize"])
    local = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=1))

    def objective(t: optuna.Trial) -> list[float]:
        x = t.suggest_float("x", 0.5, 4.0, log=True)
        n = t.suggest_int("n", 1, 9, step=2)
        t.suggest_categorical("c", ["a", True, 3])
        t.set_constraint("fits", 0.0 if n < 9 else 1.0)
        t.set_user_attr("metrics", {"m": x * n, "deep": {"k": [1, 2.5, None]}})
        if t.number in (3, 11):
            t.set_user_attr("reason", "does not fit")
            raise optuna.TrialPruned("does not fit")
        return [math.inf if t.number == 2 else x * n, -x]

    local.optimize(objective, n_trials=25)
    recorder = make_recorder(ref, st, stored._study_id, None, 20, {"host": "h", "pid": 1})
    for t in local.trials:
        recorder.add(t)
    recorder.flush()
    assert recorder.done == 20 and recorder.surplus == 5  # exactly N: the last 5 did not fit
    back = optuna.load_study(study_name=name, storage=open_storage(ref)).trials
    assert [t.number for t in back if t.state != optuna.trial.TrialState.FAIL] == list(range(20))
    by_number = {t.number: t for t in back}
    for want in local.trials[:20]:
        got = by_number[want.number]
        assert got.state == want.state
        assert got.values == want.values
        assert got.params == want.params and got.distributions == want.distributions
        assert got.user_attrs == {**want.user_attrs, "worker": {"host": "h", "pid": 1}}
        assert got.system_attrs == want.system_attrs
        assert got.datetime_start == want.datetime_start
        if kind == "journal":  # finished by its second append, when it was recorded
            assert want.datetime_complete <= got.datetime_complete
        else:
            assert got.datetime_complete == want.datetime_complete
    assert any(v == math.inf for t in back for v in (t.values or ()))
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in back)
