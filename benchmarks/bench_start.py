"""Start-up and per-configuration cost: what a user pays before the first number (run: ``python
benchmarks/bench_start.py``).

Goals (benchmarks/README.md, issue 14):

- ``librapim --help``, whole process: at most 1.5x ``python -c "import numpy, pydantic"`` measured beside it;
- ``librapim simulate`` with every default, whole process: at most 0.4 s;
- one configuration in-process (``simulate(mode="iteration", samples=1)``): at most 0.3 ms for a configuration
  seen before, at most 1 ms for a new one (a value no earlier call used, so the cost tables are built).

Whole-process figures are the median of ``--reps`` runs, each a fresh interpreter; in-process figures the
median of many calls after a warm-up. Prints a markdown table; no assertions.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import numpy as np

HELP_RATIO_GOAL = 1.5
SIMULATE_GOAL_S = 0.4
SEEN_GOAL_MS = 0.3
NEW_GOAL_MS = 1.0


def whole_process(cmd: list[str], reps: int) -> float:
    """Median wall seconds of ``cmd`` run ``reps`` times."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def in_process(reps: int) -> tuple[float, float]:
    """(median ms of a seen configuration, median ms of a new one)."""
    from librapim_cli.simulate import simulate

    def seen():
        simulate("librapim", "gpt3-7b", "sharegpt", batch=64, mode="iteration", samples=1)

    seen()
    s = []
    for _ in range(reps):
        t0 = time.perf_counter()
        seen()
        s.append(time.perf_counter() - t0)
    n = []
    for i in range(max(reps // 10, 5)):  # a new NPU clock each time: new specs, new cost tables
        t0 = time.perf_counter()
        simulate("librapim", "gpt3-7b", "sharegpt", batch=64, mode="iteration", samples=1,
                 sets=[f"hardware.npu.clock_hz={1e9 + 1000 * (i + 1)}"])
        n.append(time.perf_counter() - t0)
    return float(np.median(s) * 1e3), float(np.median(n) * 1e3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9, help="whole-process runs per row (default 9)")
    args = ap.parse_args()
    py = sys.executable
    base = whole_process([py, "-c", "import numpy, pydantic"], args.reps)
    helps = whole_process([py, "-m", "librapim_cli", "--help"], args.reps)
    sim = whole_process([py, "-m", "librapim_cli", "simulate"], max(args.reps // 3, 3))
    sim_it = whole_process([py, "-m", "librapim_cli", "simulate", "--mode", "iteration"], max(args.reps // 3, 3))
    seen_ms, new_ms = in_process(200)
    print(f"Start-up benchmark; Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}\n")
    print("| what | measured | goal | met |")
    print("|---|---:|---:|:---:|")
    print(f"| `python -c \"import numpy, pydantic\"` | {base:.3f} s | | |")
    print(f"| `librapim --help` | {helps:.3f} s ({helps / base:.2f}x) | {HELP_RATIO_GOAL}x | "
          f"{'yes' if helps <= HELP_RATIO_GOAL * base else 'no'} |")
    print(f"| `librapim simulate` (defaults: serve mode) | {sim:.3f} s | {SIMULATE_GOAL_S} s | "
          f"{'yes' if sim <= SIMULATE_GOAL_S else 'no'} |")
    print(f"| `librapim simulate --mode iteration` | {sim_it:.3f} s | | |")
    print(f"| in-process, configuration seen before | {seen_ms:.2f} ms | {SEEN_GOAL_MS} ms | "
          f"{'yes' if seen_ms <= SEEN_GOAL_MS else 'no'} |")
    print(f"| in-process, new configuration | {new_ms:.2f} ms | {NEW_GOAL_MS} ms | "
          f"{'yes' if new_ms <= NEW_GOAL_MS else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
