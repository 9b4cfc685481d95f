"""Sweep overhead per trial over the simulation itself (run: ``python benchmarks/bench_sweep.py``).

Goal: <= 5 ms per trial for 1,000 trials with in-memory storage and the TPE sampler. Overhead = (wall time of
``librapim_cli.sweep.run`` - time spent inside ``simulate`` by the objective) / trials: everything the sweep
adds around the simulations (optuna's sampling and bookkeeping, suggesting, building the overrides,
constraints, user attributes, the exact-N counting). The space is continuous (PIM clock, MAC interval,
batch), so the sampler rarely revisits a point and the evaluation cache barely helps. TPE's cost grows with
the number of finished trials, so the last rows split the overhead by thirds of the run. Prints a markdown
table; no assertions (timings do not belong in tests).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from librapim_cli.sweep import parse_sweep, run, study_rows

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--sampler", default="tpe")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = parse_sweep(SPEC, "bench")
    run(spec, trials=20, sampler=args.sampler, seed=args.seed)  # warm-up: imports, preset caches
    t0 = time.perf_counter()
    res = run(spec, trials=args.trials, sampler=args.sampler, seed=args.seed)
    wall = time.perf_counter() - t0
    overhead = wall - res.sim_seconds
    rows = study_rows(res.study)
    durations = [r["duration_s"] or 0.0 for r in rows]
    print(f"# librapim sweep overhead ({platform.python_version()}, {platform.machine()}, "
          f"{args.trials} trials, {args.sampler}, in-memory)\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| wall time of run() | {wall:.2f} s |")
    print(f"| inside simulate() ({res.sim_calls} calls) | {res.sim_seconds:.2f} s |")
    print(f"| overhead per trial (goal <= {GOAL_MS:g} ms) | **{overhead / args.trials * 1e3:.2f} ms** |")
    n = len(durations) // 3
    sim_per = res.sim_seconds / max(res.sim_calls, 1)
    for i, label in enumerate(("first", "middle", "last")):
        part = durations[i * n:(i + 1) * n]
        # a trial's duration covers sampling + simulate + bookkeeping inside optuna's trial
        print(f"| {label} third: mean trial duration - mean simulate | "
              f"{(sum(part) / len(part) - sim_per) * 1e3:.2f} ms |")
    print(f"\n(command: {' '.join([sys.executable, *sys.argv])})")


if __name__ == "__main__":
    main()
