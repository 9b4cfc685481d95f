"""Sweep overhead per trial over the simulation itself (run: ``python benchmarks/bench_sweep.py``).

Goal: <= 5 ms per trial for 1,000 trials with in-memory storage and the TPE sampler.

Overhead = (time of ``librapim_cli.sweep.run`` - time spent inside ``simulate`` by the objective) / trials:
everything the sweep adds around the simulations (optuna's sampling and bookkeeping, suggesting, building
the overrides, constraints, user attributes, the exact-N counting). It is given in wall-clock time (what a
user waits) and in CPU time of this process (less sensitive to other load on the machine). The space is
continuous (PIM clock, MAC interval, batch), so samplers rarely revisit a point and the evaluation cache
barely helps.

Reference rows split the overhead: the same sweep with the random sampler (the sweep layer alone, no
model-based sampling) and with NSGA-II, and optuna's TPE on its own with a trivial objective over the same space and
constraints (optuna's cost, which grows with the number of finished trials). Prints a markdown table; no
assertions (timings do not belong in tests).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import optuna

import librapim_cli.sweep.objective as objective_mod
from librapim_cli.sweep import parse_sweep, run

GOAL_MS = 5.0

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


def sweep_overhead(trials: int, sampler: str, seed: int) -> tuple[float, float]:
    """(wall ms, CPU ms) of overhead per trial of one in-memory sweep."""
    spec = parse_sweep(SPEC, "bench")
    timer = _TimedSimulate()
    objective_mod.simulate = timer
    try:
        w, c = time.perf_counter(), time.process_time()
        res = run(spec, trials=trials, sampler=sampler, seed=seed)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    finally:
        objective_mod.simulate = timer.real
    assert res.finished == trials
    return (wall - timer.wall) / trials * 1e3, (cpu - timer.cpu) / trials * 1e3


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
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sweep_overhead(20, "tpe", args.seed)  # warm-up: imports, preset caches
    tpe_wall, tpe_cpu = sweep_overhead(args.trials, "tpe", args.seed)
    rnd_wall, rnd_cpu = sweep_overhead(args.trials, "random", args.seed)
    ga_wall, ga_cpu = sweep_overhead(args.trials, "nsga2", args.seed)
    alone = optuna_tpe_alone(args.trials, args.seed)
    print(f"# librapim sweep overhead per trial ({platform.python_version()}, {platform.machine()}, "
          f"{args.trials} trials, in-memory storage)\n")
    print("| run | wall ms/trial | CPU ms/trial |")
    print("|---|---|---|")
    print(f"| **sweep, TPE** (goal <= {GOAL_MS:g} ms) | **{tpe_wall:.2f}** | **{tpe_cpu:.2f}** |")
    print(f"| sweep, random sampler (the sweep layer alone) | {rnd_wall:.2f} | {rnd_cpu:.2f} |")
    print(f"| sweep, NSGA-II | {ga_wall:.2f} | {ga_cpu:.2f} |")
    print(f"| optuna TPE alone, trivial objective (no librapim) | - | {alone:.2f} |")
    print(f"\n(command: {' '.join([sys.executable, *sys.argv])})")


if __name__ == "__main__":
    main()
