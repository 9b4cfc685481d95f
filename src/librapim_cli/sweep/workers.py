"""Worker liveness: who runs a trial, whether that process still runs, stale trials, the journal file lock.

A trial written by a sweep names its worker (user attribute ``worker``: host, boot id, pid, process start
time). A RUNNING trial whose worker is gone holds a slot of the study forever, so a sweep fails such trials
(:func:`reap_stale`) when it starts and while it waits for the last slots. The journal file lock names its
owner the same way (:func:`owned_lock`), so a lock left by a killed process is taken over at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from typing import Any

import optuna
from optuna.trial import TrialState

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
#: a RUNNING trial with no worker record (written by another program, or by a process that died between
#: creating the trial and recording itself) is failed after this long
STALE_NO_WORKER_S = 10.0
#: last resort for RUNNING trials of other machines: failed after max(STALE_MIN_S, STALE_FACTOR x longest trial)
STALE_MIN_S = 120.0
STALE_FACTOR = 10.0


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


def alive(pid: int, start: str) -> bool:
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


def dead_here(owner: Any, me: dict[str, Any]) -> bool:
    """True if ``owner`` (a worker record) is a process of this machine that no longer runs."""
    return (isinstance(owner, dict) and owner.get("host") == me["host"] and owner.get("boot") == me["boot"]
            and not alive(int(owner.get("pid", -1)), str(owner.get("start", ""))))


def reap_stale(storage: optuna.storages.BaseStorage, study_id: int, me: dict[str, Any]) -> int:
    """Fail RUNNING trials whose worker is certainly or very probably gone, so their slots free up; returns
    how many were failed.

    - the trial's worker is a process of this machine (same host and boot id) that no longer runs, or this
      very process (which runs no trial while it reaps): dead;
    - no worker record, once :data:`STALE_NO_WORKER_S` old;
    - a worker on another machine: any RUNNING trial older than :data:`STALE_MIN_S` and :data:`STALE_FACTOR`
      times the longest finished trial (a sweep keeps a trial RUNNING only for the moment between its two
      writes, so this is a last resort for processes of older versions or other programs).
    """
    running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    finished = storage.get_all_trials(study_id, deepcopy=False, states=DONE)
    longest = max((t.duration.total_seconds() for t in finished if t.duration), default=0.0)
    limit = max(STALE_MIN_S, STALE_FACTOR * longest)
    now = time.time()
    failed = 0
    for t in running:
        age = now - t.datetime_start.timestamp() if t.datetime_start else 0.0
        w = t.user_attrs.get("worker")
        why = None
        if not isinstance(w, dict):
            if age > STALE_NO_WORKER_S:
                why = f"stale: RUNNING for {age:.0f} s without a worker record (its process died starting it)"
        elif w.get("host") == me["host"] and w.get("boot") == me["boot"]:
            pid = int(w.get("pid", -1))
            if pid == os.getpid() or not alive(pid, str(w.get("start", ""))):
                why = f"worker process {pid} on {me['host']} died before finishing the trial"
        elif age > limit:
            why = f"stale: RUNNING for {age:.0f} s on {w.get('host')} (limit {limit:.0f} s)"
        if why is None:
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError, RuntimeError):
            storage.set_trial_user_attr(t._trial_id, "reason", why)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def owned_lock(path: str) -> Any:
    """A journal file lock that names its owner, so a lock left by a killed process is taken over at once.

    optuna's journal locks only break a stale lock after a grace period (30 s); a sweep killed while it
    held the lock (it holds it for every append + fsync) would make the resuming command wait that long.
    This lock is a symbolic link (as optuna's ``JournalFileSymlinkLock``, so the two exclude each other)
    whose target is the owner's host, boot id, pid and start time, created in one atomic step: a waiter on
    the same host whose owner process is gone removes it immediately; any other lock still expires after
    the grace period.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    me = worker_identity()

    class OwnedLock(JournalFileSymlinkLock):
        def acquire(self) -> bool:
            mine = json.dumps(me)
            sleep_s, first_seen, seen = 0.001, time.monotonic(), None
            while True:
                try:
                    os.symlink(mine, self._lock_file)
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
                expired = self.grace_period is not None and time.monotonic() - first_seen > self.grace_period
                if dead_here(owner, me) or expired:
                    with contextlib.suppress(RuntimeError):
                        self.release()
                    continue
                time.sleep(sleep_s)
                sleep_s = min(sleep_s * 2, 0.05)

    return OwnedLock(path)
