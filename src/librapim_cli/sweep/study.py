"""Studies: storage parsing, samplers, and running a study to exactly N finished trials, with local
worker processes or with other machines sharing one RDB study.

Counting. ``N`` is the number of *finished* trials (COMPLETE + PRUNED; PRUNED = infeasible) the study ends
with, however many processes or invocations took part. Each worker loops: count finished and RUNNING
trials; stop at N finished; wait while finished + running >= N (other workers hold the remaining slots);
otherwise run one trial. Two workers can start a trial at the same moment, so a trial first claims its
slot: it may run only if fewer than N live (finished or running) trials have a smaller number. Trial numbers
come from the storage in creation order, so at most N trials pass the claim; a trial that loses it ends
FAIL with ``reason`` "surplus" and never counts. ``optuna.study.MaxTrialsCallback`` alone is not exact:
it stops each worker after the trial that reaches N, so trials already running on other workers overshoot.

Dead workers. A trial left RUNNING by a killed process would hold a slot forever. The sampler records
who runs each trial as soon as the trial exists (host, boot id, pid, process start); a worker fails RUNNING
trials whose process on its own machine is gone (see :func:`_reap_stale` for the other cases), and RDB
storages also use optuna's heartbeat, which fails trials of dead workers on any machine after
:data:`GRACE_S` seconds. The journal file lock names its owner too (:func:`_owned_lock`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from ..errors import InputError, LibrapimError, ModelError, SpecError
from .objective import Evaluator
from .results import best_rows, objectives_of
from .space import check_paths, grid, grid_size
from .spec import SweepSpec

SAMPLERS = ("tpe", "nsga2", "random", "grid")
SAMPLER_ALIASES = {"brute-force": "grid", "bruteforce": "grid", "nsgaii": "nsga2"}
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: RDB heartbeat: interval and the silence after which a RUNNING trial is failed as stale
HEARTBEAT_S = 5
GRACE_S = 20
#: a RUNNING trial with no worker record (its process died between creating the trial and recording itself,
#: a moment later) is failed after this long
STALE_NO_WORKER_S = 10.0
#: last resort for RUNNING trials of other machines: failed after max(STALE_MIN_S, STALE_FACTOR x longest trial)
STALE_MIN_S = 120.0
STALE_FACTOR = 10.0
POLL_S = 0.2
JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


class StorageError(InputError):
    """A --storage value that is not a storage, or a storage that cannot be opened."""


class SurplusTrial(Exception):
    """Raised inside a trial that lost the race for the last slots (the study already has N live trials)."""


# ---- storages --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageRef:
    """A parsed --storage value."""

    kind: Literal["memory", "rdb", "journal"]
    target: str  # RDB URL or journal file path ('' for memory)
    text: str  # as the user wrote it

    @property
    def shared(self) -> bool:
        """True if other processes can see the study."""
        return self.kind != "memory"

    @property
    def display(self) -> str:
        """The storage for messages, with any password masked."""
        if self.kind == "rdb":
            return _mask_password(self.target)
        return self.text if self.kind == "journal" else "memory"


def _mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def parse_storage(text: str | None) -> StorageRef:
    """Parse --storage: nothing/'memory', an RDB URL (sqlite:///, postgresql://, mysql://), or a journal file
    (``journal:PATH`` or a path ending in .journal/.log/.jsonl)."""
    t = (text or "").strip()
    if t in ("", "memory", ":memory:", "inmemory"):
        return StorageRef("memory", "", "memory")
    if t.startswith("journal:"):
        path = t.removeprefix("journal:")
        _check_parent(path, t)
        return StorageRef("journal", path, t)
    scheme = t.split("://", 1)[0].split("+", 1)[0].lower() if "://" in t else ""
    if scheme in RDB_SCHEMES:
        if scheme in ("postgres", "postgresql"):
            t = _postgres_driver(t)
        if scheme == "sqlite":
            db = t.split(":///", 1)[1] if ":///" in t else ""
            if db and db != ":memory:":
                _check_parent(db, text or t)
        return StorageRef("rdb", t, text or t)
    if t.endswith(JOURNAL_SUFFIXES):
        _check_parent(t, t)
        return StorageRef("journal", t, t)
    raise StorageError(f"--storage '{t}' is not a storage: give sqlite:///FILE.db, a journal file (FILE.journal or "
                       f"journal:FILE), or postgresql://USER@HOST/DB")


def _postgres_driver(url: str) -> str:
    """Name the installed driver in a bare postgresql:// URL.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); librapim's ``postgres`` extra installs
    psycopg2, so a bare URL uses psycopg2 unless psycopg 3 is importable. ``postgres://`` (libpq's
    spelling) is accepted too.
    """
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    import importlib.util

    driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    return f"postgresql+{driver}://{rest}"


def _check_parent(path: str, text: str) -> None:
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise StorageError(f"--storage '{text}': folder {parent} does not exist; create it first")


def open_storage(ref: StorageRef) -> optuna.storages.BaseStorage:
    """An optuna storage object for a parsed --storage (one connection; open one per process)."""
    if ref.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if ref.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = str(Path(ref.target).expanduser())
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path, _owned_lock(path)))
        except (OSError, ValueError) as exc:
            raise StorageError(f"--storage '{ref.text}': cannot open the journal file ({_first_line(exc)})") from None
    try:
        return _rdb_storage(ref.target)
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "the driver"
        raise StorageError(f"--storage {ref.display}: the database driver is not installed ({missing}); "
                           f"for PostgreSQL: pip install 'librapim[postgres]'") from None
    except Exception as exc:  # SQLAlchemy's OperationalError & co: one line, not a traceback
        raise StorageError(f"--storage {ref.display}: cannot connect ({_first_line(exc)})") from None


# workers started together all create the schema on a fresh database; PostgreSQL lets only one CREATE win
# and the others fail with these messages; the schema exists by then, so opening again succeeds
_SCHEMA_RACE = ("duplicate key value", "already exists")


def _rdb_storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """RDBStorage(url), retried with a short backoff when another worker is creating the same schema."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat options are marked experimental
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except Exception as exc:
            if attempt == attempts - 1 or not any(m in str(exc) for m in _SCHEMA_RACE):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _owned_lock(path: str) -> Any:
    """A journal file lock that names its owner, so a lock left by a killed process is taken over at once.

    optuna's journal locks only break a stale lock after a grace period (30 s); a sweep killed while it
    held the lock (it holds it for every append + fsync) would make the resuming command wait that long.
    This lock is a symbolic link (as optuna's ``JournalFileSymlinkLock``, so the two exclude each other)
    whose target is the owner's host, boot id, pid and start time, created in one atomic step: a waiter on
    the same host whose owner process is gone removes it immediately; any other lock still expires after
    the grace period.
    """
    import errno
    import json

    from optuna.storages.journal import JournalFileSymlinkLock

    class OwnedLock(JournalFileSymlinkLock):
        def acquire(self) -> bool:
            me = json.dumps(worker_identity())
            sleep_s, first_seen, seen = 0.001, time.monotonic(), None
            while True:
                try:
                    os.symlink(me, self._lock_file)
                    return True
                except OSError as err:
                    if err.errno != errno.EEXIST:
                        raise
                try:
                    target = os.readlink(self._lock_file)
                except OSError:
                    continue  # released meanwhile
                if target != seen:
                    seen, first_seen = target, time.monotonic()
                try:
                    owner = json.loads(target)
                except ValueError:
                    owner = {}  # another program's lock: wait for the grace period
                dead_here = (isinstance(owner, dict) and owner.get("host") == socket.gethostname()
                             and owner.get("boot") == boot_id()
                             and not _alive(int(owner.get("pid", -1)), str(owner.get("start", ""))))
                if dead_here or (self.grace_period is not None and time.monotonic() - first_seen > self.grace_period):
                    with contextlib.suppress(RuntimeError):
                        self.release()
                    continue
                time.sleep(sleep_s)
                sleep_s = min(sleep_s * 2, 0.05)

    return OwnedLock(path)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- workers ---------------------------------------------------------------------------------
def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host, boot id and pid (to tell a dead local worker's trials from live ones)."""
    return {"host": socket.gethostname(), "boot": boot_id(), "pid": os.getpid(), "start": process_start(os.getpid())}


def boot_id() -> str:
    """Linux boot id ('' elsewhere): with the host name it tells whether a pid is comparable."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """Start time of a live process in clock ticks since boot ('' if unknown or a zombie), so that a reused
    pid or an exited, not yet reaped process is not mistaken for the worker that ran a trial."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]


class _RecordsWorker:
    """Sampler mixin: record who runs a trial the moment the trial is created.

    ``before_trial`` runs right after the storage creates the trial and before the sampler's (possibly slow)
    relative sampling, so a process killed at any later point leaves a RUNNING trial that names it.
    """

    _storage: optuna.storages.BaseStorage | None = None
    _worker: dict[str, Any] | None = None

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().before_trial(study, trial)  # type: ignore[misc]
        if self._storage is not None and self._worker is not None:
            self._storage.set_trial_user_attr(trial._trial_id, "worker", self._worker)


# ---- samplers --------------------------------------------------------------------------------
def sampler_name(name: str) -> str:
    """Canonical sampler name; SpecError for an unknown one."""
    n = SAMPLER_ALIASES.get(name.lower(), name.lower())
    if n not in SAMPLERS:
        raise SpecError(f"--sampler '{name}': choose one of {', '.join(SAMPLERS)} (grid = brute force)")
    return n


_SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler, "grid": optuna.samplers.GridSampler,
}


def make_sampler(name: str, spec: SweepSpec, seed: int | None,
                 storage: optuna.storages.BaseStorage | None = None) -> optuna.samplers.BaseSampler:
    """A sampler by name (constraints reach every sampler through ``trial.set_constraint`` in the objective).

    With ``storage``, the sampler is a subclass that records this process in each trial it starts (the
    ``worker`` user attribute), which lets a later run fail the trials of a killed process.
    """
    cls = _SAMPLER_CLASSES[sampler_name(name)]
    kwargs: dict[str, Any] = {"seed": seed}
    if cls is optuna.samplers.GridSampler:
        kwargs["search_space"] = grid(spec)
    if storage is None:
        return cls(**kwargs)
    sampler = type(f"Recording{cls.__name__}", (_RecordsWorker, cls), {"__module__": __name__})(**kwargs)
    sampler._storage, sampler._worker = storage, worker_identity()
    return sampler


# ---- studies ---------------------------------------------------------------------------------
def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, study_name: str,
               sampler: optuna.samplers.BaseSampler | None = None, where: str = "") -> optuna.Study:
    """Create the study or load it (resume); SpecError if an existing study was made by a different spec."""
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, study_name=study_name,
                                    directions=spec.directions, load_if_exists=True)
    except LibrapimError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot open study '{study_name}' in {where or 'the storage'} ({_first_line(exc)})") from None
    attrs = study.user_attrs
    fingerprint = spec.search_fingerprint()
    if "librapim.search" not in attrs:
        study.set_user_attr("librapim.search", fingerprint)
        study.set_user_attr("librapim.objectives", [[o.metric, o.direction] for o in spec.objectives])
        study.set_user_attr("librapim.spec", spec.model_dump(mode="json"))
    elif attrs["librapim.search"] != fingerprint or [d.name.lower() for d in study.directions] != spec.directions:
        raise SpecError(f"study '{study_name}' in {where or 'the storage'} was made by a different sweep spec "
                        f"(parameters, objectives or base differ); give a new name with --study")
    return study


def _reap_stale(study: optuna.Study, storage: optuna.storages.BaseStorage, me: dict[str, Any]) -> None:
    """Fail RUNNING trials whose worker is certainly or very probably gone, so their slots free up.

    Called when a worker starts and while it waits for the last slots (never while it runs a trial):
    - the trial's worker is a process of this machine (same host and boot id) that no longer runs, or this
      very process: dead;
    - no worker record: its process died between creating the trial and recording itself (milliseconds),
      once it is :data:`STALE_NO_WORKER_S` old;
    - a worker on another machine: RDB storages' heartbeat fails it after :data:`GRACE_S`; as a last resort
      (no heartbeat yet, or a journal shared over NFS) any RUNNING trial older than :data:`STALE_MIN_S` and
      :data:`STALE_FACTOR` times the longest finished trial.
    """
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if not running:
        return
    longest = max((t.duration.total_seconds() for t in trials if t.state in DONE and t.duration), default=0.0)
    limit = max(STALE_MIN_S, STALE_FACTOR * longest)
    now = time.time()
    for t in running:
        age = now - t.datetime_start.timestamp() if t.datetime_start else 0.0
        w = t.user_attrs.get("worker")
        why = None
        if not isinstance(w, dict):
            if age > STALE_NO_WORKER_S:
                why = f"stale: RUNNING for {age:.0f} s without a worker record (its process died starting it)"
        elif w.get("host") == me["host"] and w.get("boot") == me["boot"]:
            pid = int(w.get("pid", -1))
            if pid == os.getpid() or not _alive(pid, str(w.get("start", ""))):
                why = f"worker process {pid} on {me['host']} died before finishing the trial"
        elif age > limit:
            why = f"stale: RUNNING for {age:.0f} s on {w.get('host')} (limit {limit:.0f} s)"
        if why is None:
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError, RuntimeError):
            storage.set_trial_user_attr(t._trial_id, "reason", why)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _alive(pid: int, start: str) -> bool:
    """Is process ``pid`` (started at ``start``, '' if unknown) still running on this host?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not start:  # no /proc to compare start times: trust kill(0)
        return True
    return process_start(pid) == start  # '' for a zombie, another value for a reused pid


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


@dataclass
class Progress:
    """What a progress display shows after each trial (or poll)."""

    done: int
    target: int
    running: int
    best: str


def best_summary(study: optuna.Study, names: list[str]) -> str:
    """'metric=value (#n)' of the best feasible trial, or the Pareto front size; '' if none yet."""
    try:
        if len(names) == 1:
            t = study.best_trial
            return f"{names[0]}={t.values[0]:.4g} (#{t.number})"
        front = study.best_trials
        return f"Pareto front: {len(front)} trial(s)" if front else ""
    except ValueError:
        return ""


def _counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=LIVE)
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    return len(trials) - running, running


def work(study: optuna.Study, storage: optuna.storages.BaseStorage, evaluator: Evaluator, target: int, *,
         shared: bool, stop: Callable[[], bool] = lambda: False,
         on_trial: Callable[[optuna.Study], None] | None = None) -> int:
    """Run trials until the study has ``target`` finished trials (or ``stop()``); returns the trials this
    worker evaluated (surplus trials not counted)."""
    me = worker_identity()
    ran = 0

    def objective(trial: optuna.Trial) -> list[float]:
        nonlocal ran
        if shared:
            ahead = sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number)
            if ahead >= target:
                trial.set_user_attr("reason", f"surplus: {target} trials were already finished or running")
                raise SurplusTrial(trial.number)
        ran += 1
        return evaluator.objective(trial)

    if shared:  # trials a killed run left RUNNING on this host free their slots now
        _reap_stale(study, storage, me)
    while not stop():
        done, running = _counts(study)
        if done >= target:
            break
        if done + running >= target:  # the other workers hold the remaining slots (or died holding them)
            _reap_stale(study, storage, me)
            _fail_stale(study)
            time.sleep(POLL_S)
            continue
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,))
        if on_trial is not None:
            on_trial(study)
    return ran


@dataclass
class RunResult:
    """What a run of ``run()`` did and found."""

    study_name: str
    storage: StorageRef
    sampler: str
    target: int
    finished: int
    new_trials: int
    interrupted: bool
    objectives: list[tuple[str, str]]
    best: list[dict[str, Any]]
    sim_seconds: float
    sim_calls: int
    wall_seconds: float
    study: optuna.Study  # the study itself (read it with results.study_rows, export.export_best)
    notes: list[str] = field(default_factory=list)


class _Stop:
    """Set by SIGINT: finish the running trials, then stop."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None

    def __call__(self) -> bool:
        return self.flag

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.flag:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, self._old or signal.default_int_handler)
            raise KeyboardInterrupt
        self.flag = True

    def install(self) -> None:
        self._old = signal.signal(signal.SIGINT, self._handler)

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run(spec: SweepSpec, *, trials: int | None = None, sampler: str = "tpe", seed: int | None = None,
        storage: str | None = None, study_name: str | None = None, workers: int = 1,
        progress: Callable[[Progress], None] | None = None, handle_sigint: bool = False) -> RunResult:
    """Run (or resume, or join) a study until it has ``trials`` finished trials.

    ``storage``: see :func:`parse_storage`. ``workers`` > 1 starts that many local processes, each with
    its own storage connection (needs a shared storage). ``handle_sigint``: the first Ctrl-C lets running
    trials finish and returns with ``interrupted=True``; a second one stops at once.
    """
    t0 = time.perf_counter()
    name = sampler_name(sampler)
    ref = parse_storage(storage)
    if workers < 1:
        raise SpecError(f"--workers {workers}: must be >= 1")
    if workers > 1 and not ref.shared:
        raise SpecError(f"--workers {workers} needs a shared storage: add --storage sqlite:///sweep.db, "
                        f"--storage sweep.journal or --storage postgresql://USER@HOST/DB")
    check_paths(spec)
    notes: list[str] = []
    target = trials if trials is not None else spec.trials
    if target < 1:
        raise SpecError(f"--trials {target}: must be >= 1")
    if name == "grid":
        size = grid_size(grid(spec))
        if trials is None or target > size:
            if trials is not None:
                notes.append(f"--trials {trials} is more than the {size} grid points; the grid sampler runs {size}")
            target = size
    study_name = study_name or spec.name
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = open_storage(ref)
    study = open_study(spec, st, study_name, make_sampler(name, spec, seed, st if ref.shared else None),
                       ref.display)
    names = spec.objective_names
    stop = _Stop()
    if handle_sigint:
        stop.install()
    evaluator = Evaluator(spec)
    shown = {"at": 0.0, "best": ""}

    def report(s: optuna.Study, force: bool = False) -> None:
        if progress is None:
            return
        done, running = _counts(s)
        now = time.perf_counter()
        if force or now - shown["at"] > 0.25 or done >= target:  # best_trial(s) scans the study: throttle
            shown["at"], shown["best"] = now, best_summary(s, names)
        progress(Progress(done, target, running, shown["best"]))

    try:
        report(study, force=True)
        if workers == 1:
            new = work(study, st, evaluator, target, shared=ref.shared, stop=stop, on_trial=report)
            sim_s, sim_n = evaluator.sim_seconds, evaluator.sim_calls
        else:
            new, sim_s, sim_n = _run_workers(spec, ref, study_name, name, seed, target, workers, stop,
                                             lambda: report(study))
        report(study, force=True)
    finally:
        stop.restore()
    done, _ = _counts(study)
    return RunResult(study_name, ref, name, target, done, new, stop.flag and done < target,
                     objectives_of(study), best_rows(study), sim_s, sim_n, time.perf_counter() - t0, study, notes)


# ---- worker processes ------------------------------------------------------------------------
def _worker_main(spec_json: str, storage_text: str, study_name: str, sampler: str, seed: int | None,
                 target: int, stop_event: Any, out: Any, index: int) -> None:
    """Body of one worker process: its own storage connection, the same loop as a single worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into stop_event
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        spec = SweepSpec.model_validate_json(spec_json)
        ref = parse_storage(storage_text)
        st = open_storage(ref)
        study = open_study(spec, st, study_name, make_sampler(sampler, spec, seed, st), ref.display)
        ev = Evaluator(spec)
        n = work(study, st, ev, target, shared=True, stop=stop_event.is_set)
        out.put((index, None, 0, n, ev.sim_seconds, ev.sim_calls))
    except LibrapimError as exc:
        out.put((index, str(exc), exc.exit_code, 0, 0.0, 0))
    except Exception as exc:  # a bug: report it rather than die silently
        out.put((index, f"worker {index} failed: {type(exc).__name__}: {exc}", 1, 0, 0.0, 0))


def _run_workers(spec: SweepSpec, ref: StorageRef, study_name: str, sampler: str, seed: int | None, target: int,
                 workers: int, stop: _Stop, tick: Callable[[], None]) -> tuple[int, float, int]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding DB connections or threads
    stop_event = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, name=f"librapim-sweep-{i}", daemon=False,
                         args=(spec.model_dump_json(), ref.text, study_name,
                               sampler, None if seed is None else seed + i, target, stop_event, out, i))
             for i in range(workers)]
    for p in procs:
        p.start()
    reports: list[tuple] = []
    try:
        while any(p.is_alive() for p in procs):
            while not out.empty():
                reports.append(out.get())
            if (stop() or any(r[1] for r in reports)) and not stop_event.is_set():
                stop_event.set()  # Ctrl-C, or a worker failed: the others finish their trial and stop
            tick()
            time.sleep(POLL_S)
    finally:
        stop_event.set()
        for p in procs:
            p.join()
    while len(reports) < workers:
        try:
            reports.append(out.get(timeout=1.0))
        except Exception:  # a worker that died without reporting (killed)
            break
    errors = [(r[1], r[2]) for r in reports if r[1]]
    if errors:
        msg, code = errors[0]
        raise (InputError if code == 2 else ModelError)(msg)
    return sum(r[3] for r in reports), sum(r[4] for r in reports), sum(r[5] for r in reports)
