"""Serving-loop benchmark: wall time, peak memory and where the time goes.

Run from the repository root:

    python benchmarks/bench_serving.py            # everything (the 100k-request runs take minutes)
    python benchmarks/bench_serving.py --quick    # skip the 100k-request runs

Short cases are repeated and the median run is reported. Every case runs in a fresh Python process, so its peak RSS (``ru_maxrss``) is its own; Python-level
allocations are measured with tracemalloc in a separate run of the same case (tracemalloc slows the run,
so its time is not reported). The time split wraps the decode-iteration engine (``run_iteration``, one at a
time, and ``run_iterations_flat``, the vectorized pass a closed-loop run uses) and the prefill coster's costing
of micro-batch shapes its memo lacks (``PrefillCoster._cost_missing``, the warm-up included) with timers: "loop"
is everything else in ``simulate`` (setup, admission, memo look-ups, bookkeeping, metrics).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date

POISSON = ("workload.arrival=poisson", "workload.rate_per_s=5")
CASES = {
    # name: (system, model, workload, batch, requests, --set overrides)
    "sharegpt-10k-librapim": ("librapim", "gpt3-175b", "sharegpt", 512, 10_000, ()),
    "sharegpt-10k-librapim-poisson": ("librapim", "gpt3-175b", "sharegpt", 512, 10_000, POISSON),
    "sharegpt-10k-neupims": ("neupims", "gpt3-175b", "sharegpt", 512, 10_000, ()),
    "sharegpt-10k-neupims-poisson": ("neupims", "gpt3-175b", "sharegpt", 512, 10_000, POISSON),
    "sharegpt-1k-librapim": ("librapim", "gpt3-175b", "sharegpt", 512, 1_000, ()),
    "sharegpt-100k-librapim": ("librapim", "gpt3-175b", "sharegpt", 512, 100_000, ()),
    "sharegpt-100k-librapim-poisson": ("librapim", "gpt3-175b", "sharegpt", 512, 100_000, POISSON),
    "fixed-2048-128-librapim": ("librapim", "gpt3-175b", "fixed-2048-128", 64, 256, ()),
    "fixed-2048-128-neupims": ("neupims", "gpt3-175b", "fixed-2048-128", 64, 256, ()),
}
SLOW = {"sharegpt-100k-librapim", "sharegpt-100k-librapim-poisson"}
#: cases also timed as a whole CLI process (`librapim simulate ... --json`), imports and all
CLI_CASES = {"sharegpt-10k-librapim", "sharegpt-10k-librapim-poisson", "sharegpt-10k-neupims"}
REPEATS = {"fixed-2048-128-librapim": 21, "fixed-2048-128-neupims": 21, "sharegpt-1k-librapim": 3}


def run_case(name: str, trace_memory: bool) -> dict:
    """One case in this process: best-of-N wall time and its split, or the tracemalloc peak."""
    import librapim_cli.serving.loop as loop
    from librapim_cli.serving.prefill import PrefillCoster
    from librapim_cli.simulate import simulate

    system, model, workload, batch, requests, sets = CASES[name]
    sets = list(sets)
    simulate(system, model, workload, batch=batch, requests=min(requests, 64), mode="serve", sets=sets)  # warm-up
    if trace_memory:
        import tracemalloc

        tracemalloc.start()
        simulate(system, model, workload, batch=batch, requests=requests, mode="serve", sets=sets)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"tracemalloc_peak_bytes": peak}

    clock = {"run_iteration": 0.0, "prefill": 0.0}
    real_iters, real_prefill = loop.run_iterations_flat, PrefillCoster._cost_missing

    def timed_iters(*a, **k):
        t0 = time.perf_counter()
        r = real_iters(*a, **k)
        clock["run_iteration"] += time.perf_counter() - t0
        return r

    def timed_prefill(self, batches):
        t0 = time.perf_counter()
        r = real_prefill(self, batches)
        clock["prefill"] += time.perf_counter() - t0
        return r

    loop.run_iterations_flat = timed_iters
    PrefillCoster._cost_missing = timed_prefill
    runs = []
    for _ in range(REPEATS.get(name, 1)):
        clock.update(run_iteration=0.0, prefill=0.0)
        t0 = time.perf_counter()
        res = simulate(system, model, workload, batch=batch, requests=requests, mode="serve", sets=sets)
        total = time.perf_counter() - t0
        runs.append({"total_s": total, "run_iteration_s": clock["run_iteration"], "prefill_s": clock["prefill"]})
    best = sorted(runs, key=lambda r: r["total_s"])[len(runs) // 2]  # the median run (after the warm-up)
    m = res.metrics
    best.update(
        loop_s=best["total_s"] - best["run_iteration_s"] - best["prefill_s"],
        iterations=int(m["iterations"]), prefill_steps=int(m["prefill_steps"]), requests=requests,
        simulated_s=m["total_time_s"], throughput=m["throughput_tokens_per_s"],
        maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    return best


def cli_seconds(name: str, repeats: int = 3) -> float:
    """Median wall time of the whole `librapim simulate ... --json` process for a case."""
    system, model, workload, batch, requests, sets = CASES[name]
    cmd = [sys.executable, "-m", "librapim_cli", "simulate", "--system", system, "--model", model, "--workload",
           workload, "--batch", str(batch), "--requests", str(requests), "--json"]
    for item in sets:
        cmd += ["--set", item]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _child(name: str, trace_memory: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", name] + (["--tracemalloc"] if trace_memory else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 100k-request runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_case(a.one, a.tracemalloc)))
        return
    names = [n for n in CASES if not (a.quick and n in SLOW)]
    rows = []
    for n in names:
        r = _child(n, False)
        if n.startswith("sharegpt-10k") or n.startswith("fixed"):
            r.update(_child(n, True))
        if n in CLI_CASES:
            r["cli_s"] = cli_seconds(n)
        rows.append((n, r))
        print(f"{n}: {r['total_s'] * 1e3:.2f} ms", file=sys.stderr)
    print(f"Serving benchmark, {date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, one core per case\n")
    print("| case | requests | decode iterations | prefill steps | whole CLI s | wall s | iteration engine s | "
          "µs/decode iteration (engine) | prefill s | loop s | peak RSS MB | tracemalloc peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows:
        tm = f"{r['tracemalloc_peak_bytes'] / 1e6:.1f}" if "tracemalloc_peak_bytes" in r else "-"
        cli = f"{r['cli_s']:.2f}" if "cli_s" in r else "-"
        print(f"| {n} | {r['requests']} | {r['iterations']} | {r['prefill_steps']} | {cli} | {r['total_s']:.3f} | "
              f"{r['run_iteration_s']:.3f} | {r['run_iteration_s'] / max(r['iterations'], 1) * 1e6:.1f} | "
              f"{r['prefill_s']:.3f} | {r['loop_s']:.3f} | {r['maxrss_bytes'] / 1e6:.0f} | {tm} |")


if __name__ == "__main__":
    main()
