"""The per-point store of fixed lists (sweep/points.py): resume, claims, dead workers, several processes."""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

from librapim_cli.sweep.points import PointStore, run_points
from librapim_cli.sweep.workers import worker_identity

KEYS = [f"k{i}" for i in range(7)]
CALLS: list[str] = []


def _evaluate(key: str) -> dict:
    CALLS.append(key)
    return {"key": key, "n": int(key[1:]) ** 2}


def _storages(tmp_path):
    out = {"sqlite": f"sqlite:///{tmp_path}/p.db", "journal": str(tmp_path / "p.journal")}
    if os.environ.get("LIBRAPIM_TEST_PG_URL"):
        out["postgresql"] = os.environ["LIBRAPIM_TEST_PG_URL"]
    return out


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_every_point_once_then_reused(tmp_path, kind):
    storage = _storages(tmp_path).get(kind)
    if storage is None:
        pytest.skip("LIBRAPIM_TEST_PG_URL is not set (source .ci/start-postgres.sh)")
    name = f"pts-{os.getpid()}-{id(tmp_path)}"
    CALLS.clear()
    seen = []
    run = run_points(KEYS, _evaluate, storage=storage, study_name=name, progress=lambda d, t: seen.append((d, t)))
    assert sorted(CALLS) == sorted(KEYS) and run.evaluated == len(KEYS) and run.reused == 0
    assert run.results == {k: {"key": k, "n": int(k[1:]) ** 2} for k in KEYS}
    assert seen[-1] == (len(KEYS), len(KEYS))
    CALLS.clear()
    again = run_points([*KEYS, "k9"], _evaluate, storage=storage, study_name=name)
    assert CALLS == ["k9"] and again.reused == len(KEYS) and again.evaluated == 1


def test_dead_workers_claims_are_redone(tmp_path):
    storage = f"sqlite:///{tmp_path}/d.db"
    store = PointStore(storage, "dead")
    me = worker_identity()
    dead = {**me, "pid": 2**22 + 12345, "start": "1"}  # no such process
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"key": "k1", "worker": dead})
    store.storage.create_new_trial(store.study_id, template_trial=template)
    CALLS.clear()
    run = run_points(["k1", "k2"], _evaluate, storage=storage, study_name="dead")
    assert sorted(CALLS) == ["k1", "k2"] and set(run.results) == {"k1", "k2"}
    states = [t.state for t in store.trials() if t.user_attrs.get("key") == "k1"]
    assert states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING not in states


def test_two_processes_claiming_the_same_point_only_one_wins(tmp_path):
    storage = str(tmp_path / "race.journal")
    a, b = PointStore(storage, "race"), PointStore(storage, "race")
    won_a = a.claim(["x", "y"])
    won_b = b.claim(["y", "z"])  # y is already held by a live process (a): b's claim loses
    assert set(won_a) == {"x", "y"} and set(won_b) == {"z"}
    failed = [t for t in a.trials((TrialState.FAIL,))]
    assert [t.user_attrs["key"] for t in failed] == ["y"]
    assert "duplicate" in failed[0].user_attrs["reason"]


def test_worker_processes_evaluate_in_parallel(tmp_path):
    run = run_points(["ab", "cd", "ef"], str.upper, storage=f"sqlite:///{tmp_path}/w.db", study_name="w",
                     workers=2)
    assert run.results == {"ab": "AB", "cd": "CD", "ef": "EF"} and run.evaluated == 3


def test_a_failing_evaluation_releases_its_claims(tmp_path):
    storage = f"sqlite:///{tmp_path}/f.db"

    def boom(key):
        raise ValueError("bug")

    with pytest.raises(ValueError):
        run_points(["a", "b"], boom, storage=storage, study_name="f")
    store = PointStore(storage, "f")
    assert not store.trials((TrialState.RUNNING,)) and not store.results()
