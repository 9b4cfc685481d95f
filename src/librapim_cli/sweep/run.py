"""Running a study to exactly N finished trials: the worker loop, local worker processes, SIGINT/SIGTERM.

Counting. ``N`` is the number of *finished* trials (COMPLETE + PRUNED; PRUNED = infeasible) the study ends
with, however many processes or invocations took part. Each worker loops: stop at N finished; wait while
finished + running >= N (other workers hold the remaining slots); otherwise sample and evaluate one trial in
its local study and hand it to its recorder, which writes it only if it still fits under N (record.py says
how, per storage). ``optuna.study.MaxTrialsCallback`` alone is not exact: it stops each worker after the
trial that reaches N, so trials already running on other workers overshoot.

Signals. The first SIGINT (Ctrl-C) or SIGTERM stops after the running trials: they finish and are kept,
and the run returns ``interrupted`` (the CLI prints the resume command and exits 130 or 143). A second one
stops at once: the trials in flight are dropped (nothing of them was written), the finished ones are
written, and the run returns the same way. Worker processes run in their own process group, so a Ctrl-C in
the terminal reaches only the parent, which stops them through an event (first signal) or SIGINT (second);
a worker whose parent is gone stops after its trial.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import InputError, LibrapimError, ModelError, SpecError
from .objective import Evaluator
from .record import Recorder, make_recorder
from .results import best_rows, objectives_of
from .space import grid, grid_size
from .spec import SweepSpec
from .storage import StorageRef, open_storage, parse_storage
from .study import make_sampler, open_study
from .validate import SEED_MAX, check_seed, check_workers, sampler_name, validate_sweep
from .workers import worker_identity

POLL_S = 0.2
#: exit codes of a run stopped by a signal (128 + the signal number, as shells report it)
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Aborted(BaseException):
    """Raised by a second SIGINT/SIGTERM: stop now (a BaseException, so no ``except Exception`` catches it)."""


class Stopper:
    """SIGINT/SIGTERM handling: the first signal asks to stop after the running trials; the second aborts.

    An abort never interrupts a write to the storage: :meth:`writing` defers it to the end of the write.
    """

    def __init__(self, on_abort: Callable[[], None] | None = None) -> None:
        self.signum: int | None = None
        self.count = 0
        self.aborted = False
        self.on_abort = on_abort
        self._writing = False
        self._pending = False
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        """True once a stop was asked for."""
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Ask to stop after the running trials (what the first signal does)."""
        if self.signum is None:
            self.signum = signum

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.count += 1
        self.request(signum)
        if self.count < 2 or self.aborted:
            return
        if self.on_abort is not None:
            self.on_abort()
        if self._writing:
            self._pending = True
        else:
            self.aborted = True
            raise Aborted

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A block that a second signal does not interrupt (it takes effect at the end of the block)."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending and not self.aborted:
            self._pending, self.aborted = False, True
            raise Aborted

    def quiet(self) -> None:
        """From now on signals are only noted (the run is past its trials: nothing left to abort)."""
        self.aborted = True

    def install(self, signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Handle ``signums`` until :meth:`restore`."""
        for s in signums:
            self._old[s] = signal.signal(s, self._handler)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


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


def work(local: optuna.Study, recorder: Recorder, evaluator: Evaluator, target: int, *,
         stop: Callable[[], bool] = lambda: False, guard: Callable[[], Any] = contextlib.nullcontext,
         on_trial: Callable[[], None] | None = None) -> int:
    """Run trials until the study has ``target`` finished trials (or ``stop()``); returns the trials this
    process evaluated and recorded (surplus ones not counted). ``guard()`` wraps every write, ``recorder``
    holds the counts of the whole study."""
    ran = 0
    finished: list[FrozenTrial] = []

    def collect(_study: optuna.Study, trial: FrozenTrial) -> None:
        finished.append(trial)

    try:
        if recorder.running:  # trials a killed run left RUNNING free their slots now
            with guard():
                recorder.reap()
        while not stop():
            if recorder.done >= target:
                break
            if recorder.done + recorder.running + recorder.pending >= target:
                with guard():
                    recorder.flush()
                    recorder.refresh()
                if recorder.done >= target or recorder.done + recorder.running < target:
                    continue
                with guard():  # the other workers hold the remaining slots (or died holding them)
                    recorder.reap()
                time.sleep(POLL_S)
                continue
            finished.clear()
            # one trial through optimize (not ask/tell): samplers such as GridSampler call study.stop(), which
            # works only inside optimize; the local study is in memory, so this costs no storage round trip
            local.optimize(evaluator.objective, n_trials=1, callbacks=[collect])
            frozen = finished[0]
            if frozen.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                continue  # FAIL without an exception (a NaN objective value): not a finished trial
            ran += 1
            with guard():
                recorder.add(frozen)
            if on_trial is not None:
                on_trial()
    except Aborted:  # a second signal: the trial in flight is dropped (nothing of it was written)
        pass
    finally:
        with guard():
            recorder.flush()
    return ran - recorder.surplus


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
    #: the study as it ends (read it with results.study_rows, export.export_best); for a stored study that no
    #: other process wrote to during the run, an in-memory copy of it (trials, numbers, attributes)
    study: optuna.Study
    notes: list[str] = field(default_factory=list)
    signal: int | None = None  # the signal that interrupted the run

    @property
    def exit_code(self) -> int:
        """0, or 130 / 143 when SIGINT / SIGTERM interrupted the run."""
        return SIGNAL_EXIT.get(self.signal, 130) if self.interrupted else 0


def run(spec: SweepSpec, *, trials: int | None = None, sampler: str = "tpe", seed: int | None = None,
        storage: str | None = None, study_name: str | None = None, workers: int = 1,
        progress: Callable[[Progress], None] | None = None, handle_signals: bool = False,
        handle_sigint: bool = False) -> RunResult:
    """Run (or resume, or join) a study until it has ``trials`` finished trials.

    ``storage``: see :func:`~librapim_cli.sweep.storage.parse_storage`. ``workers`` > 1 starts that many local
    processes (at most :func:`~librapim_cli.sweep.validate.max_workers`), each with its own storage connection (needs a shared storage).
    ``handle_signals``: SIGINT and SIGTERM stop the run as the module docstring says (``interrupted=True``);
    ``handle_sigint`` is its former name.
    """
    handle_signals = handle_signals or handle_sigint
    t0 = time.perf_counter()
    name = sampler_name(sampler)
    ref = parse_storage(storage)
    check_workers(workers, ref.shared)
    check_seed(seed)
    validate_sweep(spec)
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
    stored = open_study(spec, st, study_name, make_sampler(name, spec, seed) if not ref.shared else None, ref.display)
    names = spec.objective_names
    shown = {"at": 0.0, "best": ""}
    procs: list[Any] = []
    stop = Stopper(on_abort=lambda: _signal_workers(procs, signal.SIGINT))
    recorder: Recorder | None = None
    local: optuna.Study | None = None
    evaluator = Evaluator(spec)
    new, sim_s, sim_n = 0, 0.0, 0

    def report(force: bool = False) -> None:
        if progress is None or recorder is None:
            return
        now = time.perf_counter()
        if local is not None and (force or now - shown["at"] > 0.25 or recorder.done >= target):
            shown["at"], shown["best"] = now, best_summary(local, names)  # best_trial(s) scan: throttled
        progress(Progress(recorder.done, target, recorder.running, shown["best"]))

    if handle_signals:
        stop.install()
    try:
        try:
            if workers == 1:
                local = stored if not ref.shared else _local_study(spec, study_name, name, seed)
            elif progress is not None:  # the parent only watches: the finished trials, for "best so far"
                local = optuna.create_study(study_name=study_name, directions=spec.directions)
            recorder = make_recorder(ref, st, stored._study_id, local, target, worker_identity())
            report(force=True)
            if workers == 1:
                new = work(local, recorder, evaluator, target, stop=stop, guard=stop.writing, on_trial=report)
                sim_s, sim_n = evaluator.sim_seconds, evaluator.sim_calls
            elif recorder.done < target:  # a complete study starts no worker
                new, sim_s, sim_n = _run_workers(spec, ref, study_name, name, seed, target,
                                                 min(workers, max(1, target - recorder.done)), stop, procs,
                                                 recorder, report)
        except Aborted:
            pass
        stop.quiet()  # past the trials: later signals are only noted until the run returns
        if recorder is not None:
            recorder.refresh()
        report(force=True)
        if ref.kind == "memory":
            study = stored
        else:  # what this run read and wrote, or (other writers, stale trials) the study read back
            study = (recorder.snapshot(stored) if recorder is not None else None) or \
                optuna.load_study(study_name=study_name, storage=st)
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        interrupted = stop() and done < target
        return RunResult(study_name, ref, name, target, done, new, interrupted, objectives_of(study),
                         best_rows(study), sim_s, sim_n, time.perf_counter() - t0, study, notes,
                         stop.signum if interrupted else None)
    finally:
        stop.restore()


def _local_study(spec: SweepSpec, study_name: str, sampler: str, seed: int | None) -> optuna.Study:
    """The in-memory study a process samples and evaluates in (record.py writes its trials to the storage)."""
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=make_sampler(sampler, spec, seed),
                               study_name=study_name, directions=spec.directions)


# ---- worker processes ------------------------------------------------------------------------
def _signal_workers(procs: list[Any], signum: int) -> None:
    for p in procs:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)


def _worker_main(spec_json: str, storage_text: str, study_name: str, sampler: str, seed: int | None,
                 target: int, stop_event: Any, out: Any, index: int) -> None:
    """Body of one worker process: its own storage connection and local study, the same loop as one worker.

    Own process group (a terminal's Ctrl-C reaches only the parent); SIGTERM or the parent's event: stop
    after the running trial; SIGINT (the parent's second signal): stop at once.
    """
    parent = os.getppid()
    with contextlib.suppress(OSError):
        os.setpgrp()
    stop = Stopper()
    stop.count = 1  # one SIGINT aborts a worker (the parent sends it on its second signal)
    signal.signal(signal.SIGINT, stop._handler)
    signal.signal(signal.SIGTERM, lambda s, f: stop.request(s))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by the parent while it started us
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ev = None
    n = 0
    try:
        spec = SweepSpec.model_validate_json(spec_json)
        ref = parse_storage(storage_text)
        st = open_storage(ref)
        stored = open_study(spec, st, study_name, None, ref.display)
        local = _local_study(spec, study_name, sampler, seed)
        recorder = make_recorder(ref, st, stored._study_id, local, target, worker_identity())
        ev = Evaluator(spec)

        def stopped() -> bool:
            return stop() or stop_event.is_set() or os.getppid() != parent

        n = work(local, recorder, ev, target, stop=stopped, guard=stop.writing)
        out.put((index, None, 0, n, ev.sim_seconds, ev.sim_calls))
    except Aborted:
        out.put((index, None, 0, n, ev.sim_seconds if ev else 0.0, ev.sim_calls if ev else 0))
    except LibrapimError as exc:
        out.put((index, str(exc), exc.exit_code, 0, 0.0, 0))
    except Exception as exc:  # a bug: report it rather than die silently
        out.put((index, f"worker {index} failed: {type(exc).__name__}: {exc}", 1, 0, 0.0, 0))


#: after a second signal, workers still running this long are killed
ABORT_WAIT_S = 30.0


def _join(procs: list[Any], stop: Stopper) -> None:
    """Wait for the workers: after a first signal as long as their running trials take; after a second one
    (they were told to stop at once) at most :data:`ABORT_WAIT_S`, then kill them."""
    deadline: float | None = None
    while True:
        try:
            alive = [p for p in procs if p.is_alive()]
            if not alive:
                return
            if stop.aborted:
                deadline = deadline or time.monotonic() + ABORT_WAIT_S
                if time.monotonic() > deadline:
                    for p in alive:
                        p.kill()
                        p.join()
                    return
            alive[0].join(timeout=POLL_S)
        except Aborted:  # the second signal came while waiting: the workers got SIGINT, the deadline starts
            continue


def _run_workers(spec: SweepSpec, ref: StorageRef, study_name: str, sampler: str, seed: int | None, target: int,
                 workers: int, stop: Stopper, procs: list[Any], recorder: Recorder,
                 tick: Callable[[], None]) -> tuple[int, float, int]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding DB connections or threads
    stop_event = ctx.Event()
    out = ctx.Queue()
    spec_json = spec.model_dump_json()
    # SIGINT and SIGTERM blocked while the workers start: the mask is inherited through exec, so a worker keeps
    # them blocked (pending, not lost) until it has its own handlers; the parent gets its pending ones after
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for i in range(workers):
            p = ctx.Process(target=_worker_main, name=f"librapim-sweep-{i}", daemon=False,
                            args=(spec_json, ref.text, study_name, sampler,
                                  None if seed is None else (seed + i) % (SEED_MAX + 1), target, stop_event, out, i))
            p.start()
            procs.append(p)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    reports: list[tuple] = []
    try:
        while any(p.is_alive() for p in procs):
            while not out.empty():
                reports.append(out.get())
            if (stop() or any(r[1] for r in reports)) and not stop_event.is_set():
                stop_event.set()  # a signal, or a worker failed: the others finish their trial and stop
            with stop.writing():
                recorder.refresh()
            tick()
            time.sleep(POLL_S)
    except Aborted:  # second signal: the workers got SIGINT (Stopper.on_abort); wait for them to write and exit
        stop_event.set()
    finally:
        stop_event.set()
        _join(procs, stop)
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
