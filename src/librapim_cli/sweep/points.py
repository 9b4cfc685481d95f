"""A fixed list of points evaluated once each, stored per point, shared by every process that runs it.

The regime map of ``librapim reproduce`` (studies/reproduction.py) is not a search: it is a known list of
points, each simulated once. This module runs such a list on the sweep's storages (storage.py: memory, a
journal file, SQLite, PostgreSQL) so that a stopped run resumes and several machines share the work:

- The list is an optuna study (named by the caller, who puts a fingerprint of everything that shapes the
  results in the name). Each point is one trial; its user attribute ``key`` names the point, ``result``
  holds what the evaluation returned (plain JSON).
- **Claims.** A process claims a chunk of points it has not seen done or claimed by creating RUNNING trials
  that name their worker (host, boot id, pid, start time, as sweeps do: workers.py). After the chunk's
  writes it reads the study again: where two live trials hold the same key, the lower trial number wins and
  the other claim is dropped (FAIL, reason "duplicate claim"), so two machines never evaluate the same point
  for long, whatever the timing.
- **Results.** An evaluated point's trial becomes COMPLETE with its ``result``. A stopped process marks its
  unfinished claims FAIL ("interrupted"); a killed one leaves them RUNNING, and the next run fails them with
  ``workers.reap_stale`` (same rules as a sweep's stale trials) before it claims again.
- **Local cores.** One process (the parent) talks to the storage; ``workers`` processes evaluate (a
  ``ProcessPoolExecutor`` with the spawn start method, SIGINT ignored in the children so that a Ctrl-C
  reaches only the parent, which stops cleanly).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .storage import StorageError, StorageRef, first_line, open_storage, parse_storage
from .workers import reap_stale, worker_identity

#: claims made at once per evaluating process (more: fewer storage round trips; fewer: less lost on a kill)
CHUNK_PER_WORKER = 4
#: the parent re-reads the study for other machines' results at most this often while it waits
POLL_S = 0.5


class Interrupted(Exception):  # noqa: N818 - a state, not an error
    """The run was stopped by SIGINT/SIGTERM; every finished point is stored."""

    def __init__(self, signum: int, done: int, total: int):
        super().__init__(f"stopped by signal {signum}: {done} of {total} points stored")
        self.signum, self.done, self.total = signum, done, total


@dataclass
class PointsRun:
    """What :func:`run_points` did."""

    results: dict[str, Any]  # key -> stored result, every point of the list that is stored
    evaluated: int  # points this process evaluated
    reused: int  # points found stored (by an earlier run or another machine)
    wall_seconds: float
    storage: StorageRef


class PointStore:
    """One list's study in a storage: stored results, claims, completion."""

    def __init__(self, storage: str | None, study_name: str):
        self.ref = parse_storage(storage)
        self.storage = open_storage(self.ref)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            study = optuna.create_study(storage=self.storage, study_name=study_name, direction="minimize",
                                        load_if_exists=True)
        except Exception as exc:
            raise StorageError(f"cannot open study '{study_name}' in {self.ref.display} ({first_line(exc)})") from None
        self.study_id = study._study_id
        self.name = study_name
        self.me = worker_identity()

    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        """Trials of the study (all, or those in ``states``)."""
        return self.storage.get_all_trials(self.study_id, deepcopy=False,
                                           states=tuple(states) if states is not None else None)

    def results(self) -> dict[str, Any]:
        """Every stored result by key."""
        out: dict[str, Any] = {}
        for t in self.trials((TrialState.COMPLETE,)):
            key = t.user_attrs.get("key")
            if isinstance(key, str) and "result" in t.user_attrs and key not in out:
                out[key] = t.user_attrs["result"]
        return out

    def taken(self) -> set[str]:
        """Keys stored or claimed by a live process."""
        return {t.user_attrs.get("key") for t in self.trials((TrialState.COMPLETE, TrialState.RUNNING))}

    def reap(self) -> int:
        """Fail the claims of processes that died (workers.reap_stale)."""
        return reap_stale(self.storage, self.study_id, self.me)

    def claim(self, keys: Sequence[str]) -> dict[str, int]:
        """Claim ``keys``; returns key -> trial id of the claims this process won."""
        mine: dict[str, int] = {}
        for key in keys:
            template = optuna.trial.create_trial(state=TrialState.RUNNING,
                                                 user_attrs={"key": key, "worker": self.me})
            mine[key] = self.storage.create_new_trial(self.study_id, template_trial=template)
        if not mine:
            return mine
        first: dict[str, tuple[int, int]] = {}  # key -> (number, trial id) of the lowest live trial
        for t in self.trials((TrialState.COMPLETE, TrialState.RUNNING)):
            key = t.user_attrs.get("key")
            if key in mine and (key not in first or t.number < first[key][0]):
                first[key] = (t.number, t._trial_id)
        won: dict[str, int] = {}
        for key, trial_id in mine.items():
            if first.get(key, (0, trial_id))[1] == trial_id:
                won[key] = trial_id
            else:
                self.drop(trial_id, "duplicate claim: another process holds this point")
        return won

    def finish(self, trial_id: int, result: Any) -> None:
        """Store an evaluated point."""
        self.storage.set_trial_user_attr(trial_id, "result", result)
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.0])

    def drop(self, trial_id: int, reason: str) -> None:
        """Give a claim up (FAIL with ``reason``)."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError, RuntimeError):
            self.storage.set_trial_user_attr(trial_id, "reason", reason)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_points(keys: Sequence[str], evaluate: Callable[[str], Any], *, storage: str | None, study_name: str,
               workers: int = 1, progress: Callable[[int, int], None] | None = None,
               handle_signals: bool = False) -> PointsRun:
    """Evaluate every key not stored yet (``evaluate(key)`` returns plain JSON data) and return all results.

    ``evaluate`` must be a module-level function when ``workers`` > 1 (it is pickled to spawned processes).
    ``handle_signals``: SIGINT/SIGTERM stop after the points being evaluated are dropped, claims released,
    and :class:`Interrupted` is raised (every finished point stays stored: rerun to resume).
    """
    t0 = time.perf_counter()
    keys = list(dict.fromkeys(keys))
    total = len(keys)
    store = PointStore(storage, study_name)
    store.reap()
    results = {k: v for k, v in store.results().items() if k in set(keys)}
    reused = len(results)
    evaluated = 0
    stop: dict[str, int] = {}
    old: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        stop.setdefault("signum", signum)  # noted; the loop stops at its next step (never inside a write)

    if handle_signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, on_signal)
    pool: cf.ProcessPoolExecutor | None = None
    inflight: dict[Any, tuple[str, int]] = {}  # future (or key, in-process) -> (key, trial id)
    wanted = set(keys)
    try:
        if progress is not None:
            progress(len(results), total)
        if workers > 1 and len(results) < total:
            pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_ignore_sigint)
        chunk = CHUNK_PER_WORKER * max(1, workers)
        while len(results) < total and "signum" not in stop:
            taken = store.taken() | set(results)
            todo = [k for k in keys if k not in taken]
            if not todo and not inflight:  # everything left is claimed by other live processes: wait for them
                time.sleep(POLL_S)
                store.reap()
                results.update({k: v for k, v in store.results().items() if k in wanted})
                if progress is not None:
                    progress(len(results), total)
                continue
            claims = store.claim(todo[: max(0, chunk - len(inflight))]) if todo else {}
            if pool is None:
                inflight.update({key: (key, trial_id) for key, trial_id in claims.items()})
                for key, trial_id in claims.items():
                    if "signum" in stop:
                        break
                    value = evaluate(key)
                    store.finish(trial_id, value)
                    del inflight[key]
                    results[key] = value
                    evaluated += 1
                    if progress is not None:
                        progress(len(results), total)
                continue
            for key, trial_id in claims.items():
                inflight[pool.submit(evaluate, key)] = (key, trial_id)
            if not inflight:
                continue
            done, _ = cf.wait(list(inflight), timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                key, trial_id = inflight.pop(fut)
                value = fut.result()
                store.finish(trial_id, value)
                results[key] = value
                evaluated += 1
            if progress is not None:
                progress(len(results), total)
        if "signum" in stop and len(results) < total:
            raise Interrupted(stop["signum"], len(results), total)
    except BaseException as exc:
        for _key, trial_id in list(inflight.values()):
            store.drop(trial_id, "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt))
                       else "the run failed")
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for s, h in old.items():
            signal.signal(s, h)
    return PointsRun(results, evaluated, reused, time.perf_counter() - t0, store.ref)
