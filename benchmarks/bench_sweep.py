"""Sweep overhead per trial over the simulation itself, per storage (run: ``python benchmarks/bench_sweep.py``).

Goals (benchmarks/README.md, section "Sweep overhead"):

- in memory, TPE: <= 5 ms per trial over 1,000 trials;
- SQLite, random and NSGA-II: <= 5 ms per trial over 1,000 trials;
- a 200-trial sweep with SQLite takes <= 1.5 x the same sweep in memory (whole wall time, simulations included).

Overhead = (time of ``librapim_cli.sweep.run`` - time spent inside ``simulate`` by the objective) / trials:
everything the sweep adds around the simulations (optuna's sampling and bookkeeping, suggesting, building
the overrides, constraints, writing the trials to the storage, the exact-N counting). It is given in wall-clock
time (what a user waits) and in CPU time of this process (less sensitive to other load on the machine). The
space is continuous (PIM clock, MAC interval, batch), so samplers rarely revisit a point and the evaluation
cache barely helps. Every stored sweep starts from a fresh file (or a fresh study name on PostgreSQL).

Storages: memory, ``sqlite:///FILE.db``, a journal file, and PostgreSQL when ``LIBRAPIM_TEST_PG_URL`` is set
(``source .ci/start-postgres.sh`` starts a throwaway local server). A reference row gives optuna's TPE alone
with a trivial objective over the same space and constraints (optuna's own cost, which grows with the number
of finished trials). Prints markdown tables; no assertions (timings do not belong in tests).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid

import optuna

import librapim_cli.sweep.objective as objective_mod
from librapim_cli.sweep import parse_sweep, run

GOAL_MS = 5.0
GOAL_RATIO = 1.5

SPEC = {
    "name": "bench-sweep",
    "source": "benchmark",
    "system": "librapim",
    "model": "gpt3-7b",
    "workload": "fixed-128-128",
    "mode": "iteration",
    "parameters": [
        {"path": "batch", "type": "int", "low": 2, "high": 64},
        {"path": "hardware.pim.clock_hz", "type": "float", "low": 3e8, "high": 1.3e9, "log": True},
        {"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1.0, "high": 4.0},
    ],
    "objectives": [{"metric": "throughput_tokens_per_s", "direction": "maximize"}],
    "constraints": [{"metric": "energy_j_per_token", "max": 1.0}],
}


class _TimedSimulate:
    """Wraps the objective's simulate() to add up its wall and CPU time."""

    def __init__(self) -> None:
        self.real = objective_mod.simulate
        self.wall = self.cpu = 0.0

    def __call__(self, *args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return self.real(*args, **kwargs)
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c


def storage_for(kind: str, folder: str) -> str | None:
    """A fresh --storage value of ``kind`` (memory, sqlite, journal, postgresql)."""
    tag = uuid.uuid4().hex[:8]
    if kind == "memory":
        return None
    if kind == "sqlite":
        return f"sqlite:///{folder}/bench-{tag}.db"
    if kind == "journal":
        return f"{folder}/bench-{tag}.journal"
    if kind == "postgresql":
        return os.environ["LIBRAPIM_TEST_PG_URL"]
    raise ValueError(kind)


def sweep_time(trials: int, sampler: str, seed: int, storage: str | None) -> tuple[float, float, float]:
    """(overhead wall ms per trial, overhead CPU ms per trial, whole wall s) of one sweep."""
    spec = parse_sweep(SPEC, "bench")
    timer = _TimedSimulate()
    objective_mod.simulate = timer
    try:
        w, c = time.perf_counter(), time.process_time()
        res = run(spec, trials=trials, sampler=sampler, seed=seed, storage=storage,
                  study_name=f"bench-{uuid.uuid4().hex[:8]}")
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    finally:
        objective_mod.simulate = timer.real
    assert res.finished == trials and res.new_trials == trials, (res.finished, res.new_trials)
    return (wall - timer.wall) / trials * 1e3, (cpu - timer.cpu) / trials * 1e3, wall


def optuna_tpe_alone(trials: int, seed: int) -> float:
    """CPU ms per trial of optuna's TPE with a trivial objective over the same space and constraints."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(t: optuna.Trial) -> float:
        b = t.suggest_int("batch", 2, 64)
        c = t.suggest_float("hardware.pim.clock_hz", 3e8, 1.3e9, log=True)
        m = t.suggest_float("hardware.pim.mac_interval_ns", 1.0, 4.0)
        t.set_constraint("fits", 0.0)
        t.set_constraint("energy_j_per_token<=1", -0.5)
        return b * c / m

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    c = time.process_time()
    for _ in range(trials):  # one trial per call, as the sweep runs them
        study.optimize(objective, n_trials=1)
    return (time.process_time() - c) / trials * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000, help="trials of the per-trial overhead sweeps")
    ap.add_argument("--ratio-trials", type=int, default=200, help="trials of the stored-vs-memory comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storages", default="memory,sqlite,journal,postgresql",
                    help="comma-separated; postgresql only runs when LIBRAPIM_TEST_PG_URL is set")
    ap.add_argument("--samplers", default="random,nsga2,tpe")
    ap.add_argument("--no-reference", action="store_true", help="skip optuna's TPE alone")
    args = ap.parse_args()
    storages = [s for s in args.storages.split(",") if s != "postgresql" or os.environ.get("LIBRAPIM_TEST_PG_URL")]
    samplers = args.samplers.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        sweep_time(20, "tpe", args.seed, None)  # warm-up: imports, preset caches
        sweep_time(20, "tpe", args.seed, storage_for("sqlite", folder))
        print(f"# librapim sweep overhead per trial (Python {platform.python_version()}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs, {args.trials} trials)\n")
        print("| storage | sampler | wall ms/trial | CPU ms/trial |")
        print("|---|---|---:|---:|")
        for st in storages:
            for sampler in samplers:
                w, c, _ = sweep_time(args.trials, sampler, args.seed, storage_for(st, folder))
                print(f"| {st} | {sampler} | {w:.2f} | {c:.2f} |", flush=True)
        if not args.no_reference:
            print(f"| memory | optuna TPE alone, trivial objective (no librapim) | - | "
                  f"{optuna_tpe_alone(args.trials, args.seed):.2f} |")
        print(f"\n## {args.ratio_trials}-trial sweep, stored vs in memory (whole wall time; goal <= {GOAL_RATIO:g}x)\n")
        print("| storage | sampler | memory s | stored s | ratio |")
        print("|---|---|---:|---:|---:|")
        for st in [s for s in storages if s != "memory"]:
            for sampler in samplers:
                mem = sweep_time(args.ratio_trials, sampler, args.seed, None)[2]
                stored = sweep_time(args.ratio_trials, sampler, args.seed, storage_for(st, folder))[2]
                print(f"| {st} | {sampler} | {mem:.2f} | {stored:.2f} | {stored / mem:.2f} |", flush=True)
    print(f"\n(command: {' '.join([sys.executable, *sys.argv])})")


if __name__ == "__main__":
    main()
