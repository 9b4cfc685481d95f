"""Recording finished trials in the study's storage, and the study's counts, without re-reading the study.

Each process samples and evaluates its trials in a *local* in-memory optuna study (the sampler reads only
memory) and writes each finished trial to the storage whole, with the storage's counts kept incrementally:

- memory: the local study is the study; nothing to write.
- journal file (and any other storage, through optuna's public storage API): two appends per trial. The
  trial is created RUNNING with everything (params, distributions, user and system attributes, naming its
  worker), which claims a slot: trial numbers come from the storage in creation order, so a trial numbered
  below N always passes; one numbered N or more passes only if fewer than N live (finished or running)
  trials have a smaller number, which reads only the failed trials. A trial that loses the claim ends FAIL
  with ``reason`` "surplus: ..." and never counts; the winner is finished with its state and values.
- RDB (SQLite, PostgreSQL, MySQL): finished trials are written in one transaction per batch (a batch is
  flushed at least every :data:`FLUSH_S` seconds and whenever the study may be complete). The transaction
  locks the study's row (SQLite: the database), counts the live trials, and inserts only as many as still
  fit under N, numbered as optuna numbers them: exact N with one write and no surplus rows. It inserts
  rows with SQLAlchemy Core into the tables of optuna's own models (``optuna.storages._rdb.models``), the
  schema ``RDBStorage`` checked when it opened the database, converting values as optuna's models do;
  tests/sweep read written trials back through optuna and compare them field by field.

Counts: finished (COMPLETE + PRUNED) and running trials of the whole study, as of the last write or
:meth:`Recorder.refresh`. Trials other processes finished are added to the local study when they are seen,
so a sampler learns from every worker.
"""

from __future__ import annotations

import copy
import datetime
import json
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .storage import StorageError, StorageRef, first_line, rdb_backend
from .workers import reap_stale

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
OPEN = (TrialState.RUNNING, TrialState.WAITING)
#: an RDB recorder writes its finished trials at least this often (a killed process loses at most this much)
FLUSH_S = 0.25
#: attempts of an RDB write that another worker's lock or a deadlock made fail
RDB_ATTEMPTS = 4


def surplus_reason(target: int) -> str:
    """The ``reason`` of a trial that lost the race for the last slots."""
    return f"surplus: {target} trials were already finished or running"


class Recorder:
    """The in-memory storage: the local study is the study; counts are the local trials'."""

    def __init__(self, local: optuna.Study | None, target: int) -> None:
        self.local = local
        self.target = target
        self.done = 0
        self.running = 0
        self.surplus = 0  # evaluated trials that did not fit under N (not counted, not stored as finished)

    @property
    def pending(self) -> int:
        """Finished trials not written yet."""
        return 0

    def add(self, trial: FrozenTrial) -> None:
        """Record one finished (COMPLETE or PRUNED) trial of the local study."""
        if trial.state in DONE:
            self.done += 1

    def flush(self) -> None:
        """Write what is pending."""

    def refresh(self) -> None:
        """Re-read the counts (and trials other processes finished) from the storage."""

    def reap(self) -> int:
        """Fail RUNNING trials of dead workers; returns how many."""
        return 0

    def snapshot(self, study: optuna.Study) -> optuna.Study | None:
        """The stored study as this recorder knows it for certain, without reading it back (None if it cannot
        vouch for every trial: load the study instead)."""
        return None


def _stored_copy(trial: FrozenTrial, worker: dict[str, Any]) -> FrozenTrial:
    t = copy.copy(trial)
    t.user_attrs = {**trial.user_attrs, "worker": worker}
    t.system_attrs = dict(trial.system_attrs)
    return t


def _write_error(ref: StorageRef, exc: BaseException) -> StorageError:
    return StorageError(f"--storage {ref.display}: cannot write the trial ({first_line(exc)}); the trials written "
                        f"so far are kept: fix the storage (free space, permissions) and rerun the same command "
                        f"to resume")


class GenericRecorder(Recorder):
    """Journal files (and any storage) through optuna's public storage API: two appends per trial."""

    def __init__(self, ref: StorageRef, storage: optuna.storages.BaseStorage, study_id: int,
                 local: optuna.Study | None, target: int, worker: dict[str, Any]) -> None:
        super().__init__(local, target)
        self.ref, self.storage, self.study_id, self.worker = ref, storage, study_id, worker
        self.mine: set[int] = set()  # numbers of the trials this process wrote
        self.open: dict[int, int] = {}  # number -> trial id of trials not finished when last seen
        trials = storage.get_all_trials(study_id, deepcopy=False)
        self.next_number = len(trials)
        for t in trials:
            self._see(t)

    def _see(self, t: FrozenTrial) -> None:
        if t.state in OPEN:
            self.open[t.number] = t._trial_id
            self.running += 1
        elif t.state in DONE:
            self.done += 1
            if self.local is not None and t.number not in self.mine:
                self.local.add_trial(t)

    def refresh(self) -> None:
        for number, trial_id in list(self.open.items()):
            t = self.storage.get_trial(trial_id)
            if t.state not in OPEN:
                del self.open[number]
                self.running -= 1
                self._see(t)
        while True:
            try:
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, self.next_number)
            except KeyError:
                return
            self.next_number += 1
            self._see(self.storage.get_trial(trial_id))

    def add(self, trial: FrozenTrial) -> None:
        template = _stored_copy(trial, self.worker)
        template.state, template.values = TrialState.RUNNING, None
        try:
            trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
            number = self.storage.get_trial_number_from_id(trial_id)
            self.mine.add(number)
            if number >= self.target and self._live_ahead(number) >= self.target:
                self.storage.set_trial_user_attr(trial_id, "reason", surplus_reason(self.target))
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                self.surplus += 1
            else:
                self.storage.set_trial_state_values(trial_id, trial.state, trial.values)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _write_error(self.ref, exc) from None
        self.refresh()

    def _live_ahead(self, number: int) -> int:
        """Live trials numbered below ``number``: ``number`` minus the failed (and waiting) ones among them."""
        gone = self.storage.get_all_trials(self.study_id, deepcopy=False,
                                           states=(TrialState.FAIL, TrialState.WAITING))
        return number - sum(1 for t in gone if t.number < number)

    def reap(self) -> int:
        n = reap_stale(self.storage, self.study_id, self.worker)
        self.refresh()
        return n


class RDBRecorder(Recorder):
    """SQLite / PostgreSQL / MySQL: finished trials in batches, one transaction each, exact N under a lock."""

    def __init__(self, ref: StorageRef, storage: optuna.storages.BaseStorage, study_id: int,
                 local: optuna.Study | None, target: int, worker: dict[str, Any]) -> None:
        super().__init__(local, target)
        from optuna.storages._rdb import models  # noqa: F401 - fail here, not at the first write

        rdb = rdb_backend(storage)
        assert rdb is not None
        self.ref, self.storage, self.rdb, self.study_id, self.worker = ref, storage, rdb, study_id, worker
        self.sqlite = rdb.engine.dialect.name == "sqlite"
        self.buffer: list[FrozenTrial] = []
        self.seen: set[int] = set()  # numbers of the trials in the local study (or counted)
        self.total = 0  # trials of the study (any state) as of the last read
        self.last_flush = time.monotonic()
        self.known: dict[int, FrozenTrial] = {}  # every trial of the study by number, while `exact`
        self.exact = True  # no other writer seen: `known` is the whole study
        self._sync()
        self.known = {t.number: t for t in self.storage.get_all_trials(self.study_id, deepcopy=False)}

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def _sync(self) -> None:
        """Counts, and the finished trials not seen yet into the local study (reads only new and unfinished
        trials from the database: optuna's _CachedStorage)."""
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        self.total = len(trials)
        self.done = self.running = 0
        for t in trials:
            if t.state in DONE:
                self.done += 1
                if t.number not in self.seen:
                    self.seen.add(t.number)
                    if self.local is not None:
                        self.local.add_trial(t)
            elif t.state in OPEN:
                self.running += 1

    def add(self, trial: FrozenTrial) -> None:
        self.buffer.append(_stored_copy(trial, self.worker))
        if (self.done + self.running + len(self.buffer) >= self.target
                or time.monotonic() - self.last_flush >= FLUSH_S):
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.buffer:
            return
        for attempt in range(RDB_ATTEMPTS):
            try:
                counts, total, accepted = self._insert(self.buffer)
                break
            except Exception as exc:  # SQLAlchemy's OperationalError (locked, deadlock, disk full) & co
                if attempt == RDB_ATTEMPTS - 1 or not _retryable(exc):
                    raise _write_error(self.ref, exc) from None
                time.sleep(0.05 * 2**attempt)
        self.surplus += len(self.buffer) - accepted
        others = total != self.total  # another process wrote since we last looked
        self.seen.update(range(total, total + accepted))
        self.buffer.clear()
        if others:
            self.exact = False
            self._sync()
        else:
            self.total = total + accepted
            self.done = sum(n for s, n in counts.items() if s in DONE) + accepted
            self.running = counts.get(TrialState.RUNNING, 0) + counts.get(TrialState.WAITING, 0)

    def refresh(self) -> None:
        counts, total = self._counts()
        if total != self.total:
            self.exact = False
            self._sync()

    def snapshot(self, study: optuna.Study) -> optuna.Study | None:
        """An in-memory copy of the stored study built from the trials this process read and wrote, when no
        other process wrote meanwhile (saves reading every trial back at the end of a run)."""
        if not self.exact or self.running or len(self.known) != self.total:
            return None
        copy_ = optuna.create_study(study_name=study.study_name, directions=study.directions)
        for key, value in study.user_attrs.items():
            copy_.set_user_attr(key, value)
        copy_.add_trials([self.known[n] for n in sorted(self.known)])
        return copy_

    def _counts(self) -> tuple[dict[TrialState, int], int]:
        from optuna.storages._rdb import models
        from sqlalchemy import func

        session = self.rdb.scoped_session()
        try:
            rows = (session.query(models.TrialModel.state, func.count(models.TrialModel.trial_id))
                    .filter(models.TrialModel.study_id == self.study_id).group_by(models.TrialModel.state).all())
            session.commit()
        finally:
            session.close()
        counts = {TrialState(s) if not isinstance(s, TrialState) else s: n for s, n in rows}
        return counts, sum(counts.values())

    def _insert(self, trials: list[FrozenTrial]) -> tuple[dict[TrialState, int], int, int]:
        """One transaction: lock the study, count, insert the trials that fit under N; returns (counts by
        state before, trials before, trials inserted)."""
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models
        from sqlalchemy import func, insert, update

        session = self.rdb.scoped_session()
        try:
            if self.sqlite:  # the first write opens the transaction (BEGIN IMMEDIATE: the database's write lock)
                session.execute(update(models.StudyModel).where(models.StudyModel.study_id == self.study_id)
                                .values(study_name=models.StudyModel.study_name))
            else:  # as optuna numbers trials: the study's row locked until commit
                models.StudyModel.find_or_raise_by_id(self.study_id, session, for_update=True)
            rows = (session.query(models.TrialModel.state, func.count(models.TrialModel.trial_id))
                    .filter(models.TrialModel.study_id == self.study_id).group_by(models.TrialModel.state).all())
            counts = {s if isinstance(s, TrialState) else TrialState(s): n for s, n in rows}
            total = sum(counts.values())
            live = sum(n for s, n in counts.items() if s in LIVE)
            fit = trials[: max(0, self.target - live)]
            written: list[tuple[int, int, FrozenTrial]] = []
            # SQLAlchemy Core on optuna's tables: one INSERT per trial (its id), one executemany per child table
            rows: dict[Any, list[dict[str, Any]]] = {m: [] for m in (
                models.TrialParamModel, models.TrialValueModel, models.TrialUserAttributeModel,
                models.TrialSystemAttributeModel)}
            for i, ft in enumerate(fit):
                trial_id = session.execute(insert(models.TrialModel.__table__).values(
                    number=total + i, study_id=self.study_id, state=ft.state,
                    datetime_start=_utc(ft.datetime_start), datetime_complete=_utc(ft.datetime_complete),
                )).inserted_primary_key[0]
                written.append((total + i, trial_id, ft))
                for name, value in ft.params.items():
                    dist = ft.distributions[name]
                    rows[models.TrialParamModel].append({
                        "trial_id": trial_id, "param_name": name, "param_value": dist.to_internal_repr(value),
                        "distribution_json": distribution_to_json(dist)})
                for objective, value in enumerate(ft.values or ()):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    rows[models.TrialValueModel].append({
                        "trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
                for model, attrs in ((models.TrialUserAttributeModel, ft.user_attrs),
                                     (models.TrialSystemAttributeModel, ft.system_attrs)):
                    rows[model] += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                    for k, v in attrs.items()]
            for model, batch in rows.items():
                if batch:
                    session.execute(insert(model.__table__), batch)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        for number, trial_id, ft in written:
            ft.number, ft._trial_id = number, trial_id
            self.known[number] = ft
        return counts, total, len(fit)

    def reap(self) -> int:
        self.flush()
        n = reap_stale(self.storage, self.study_id, self.worker)
        self.exact = self.exact and n == 0
        self._sync()
        return n


def _utc(t: datetime.datetime | None) -> datetime.datetime | None:
    """A trial time as optuna's RDB schema stores it: naive UTC (optuna's TrialModel does the same)."""
    return None if t is None else t.astimezone(datetime.UTC).replace(tzinfo=None)


def _retryable(exc: BaseException) -> bool:
    text = first_line(exc).lower()
    return any(m in text for m in ("locked", "deadlock", "could not serialize", "busy"))


def make_recorder(ref: StorageRef, storage: optuna.storages.BaseStorage, study_id: int,
                  local: optuna.Study | None, target: int, worker: dict[str, Any]) -> Recorder:
    """The recorder of a storage (``local`` None: only count, e.g. to show the progress of other processes)."""
    if ref.kind == "memory":
        return Recorder(local, target)
    if rdb_backend(storage) is not None:
        return RDBRecorder(ref, storage, study_id, local, target, worker)
    return GenericRecorder(ref, storage, study_id, local, target, worker)
