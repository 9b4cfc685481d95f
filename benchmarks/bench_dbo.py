"""Time per DBO decision and per decode iteration at batch 512 (run: ``python benchmarks/bench_dbo.py``).

Goals (benchmarks/README.md): DBO's decisions for one iteration <= 50 us; one whole decode iteration
evaluated alone (``run_iteration``) <= 100 us; librapim system, gpt3-7b, ShareGPT, batch 512, on the
NeuPIMs-class device. Every figure is the median and p90 of many single calls timed with
``time.perf_counter`` after a warm-up (the prepared layout of the batch size is then memoized, as it is in
a serving run or a sweep). "DBO" is the time the engine spends inside its per-call DBO step (``_dbo``: the
FC direction over the prepared curves and the attention direction, for every balanced stage with
attention), measured by wrapping it during the same calls. Prints a markdown table; no assertions.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time

import numpy as np

from librapim_cli.inputs import setup
from librapim_cli.schedule import engine
from librapim_cli.schedule.context import schedule_for
from librapim_cli.workload import snake_channels, steady_state_batch

DECIDE_GOAL_US = 50.0
ITERATION_GOAL_US = 100.0


def timed(fn, reps: int, warmup: int = 20) -> tuple[float, float]:
    """(median, p90) of ``reps`` single calls of ``fn``, in microseconds."""
    for _ in range(warmup):
        fn()
    out = np.empty(reps)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps):
            t0 = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()
    return float(np.median(out) * 1e6), float(np.percentile(out, 90) * 1e6)


def dbo_time(fn, reps: int) -> tuple[float, float]:
    """(median, p90) of the time spent inside the engine's DBO step per call of ``fn``, microseconds."""
    real = engine._dbo
    spent: list[float] = []

    def wrapped(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    engine._dbo = wrapped
    try:
        for _ in range(20):
            fn()
        spent.clear()
        for _ in range(reps):
            fn()
    finally:
        engine._dbo = real
    if not spent:
        return 0.0, 0.0
    a = np.asarray(spent)
    return float(np.median(a) * 1e6), float(np.percentile(a, 90) * 1e6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="timed calls per row (default 2000)")
    args = ap.parse_args()
    reps = args.reps
    rows = []
    variants = [
        ("librapim (DEX + DBO)", "librapim", [], 1),
        ("librapim, contexts x4", "librapim", [], 4),
        ("librapim-dbo-only (time interleaved)", "librapim-dbo-only", [], 1),
        ("librapim, 8-array NPU (PIM-bound)", "librapim", ["hardware.npu.systolic_arrays=8"], 4),
        ("neupims (no DBO)", "neupims", [], 1),
    ]
    for label, system, sets, scale in variants:
        s = setup(system, "gpt3-7b", "sharegpt", batch=512, sets=sets)
        lens = steady_state_batch(s, np.random.default_rng(0)) * scale
        sched = schedule_for(s, s.batch, int(lens.max()))
        ch = snake_channels(lens, sched.tables.channels)

        def one(sched=sched, lens=lens, ch=ch):
            return engine.run_iteration(sched, lens, ch)

        r = one()
        res = f"T={r.time_s[0] * 1e3:.3f} ms, FC FLOPs moved {r.fc_flops_offloaded[0] / max(r.fc_flops[0], 1):.2%}, " \
              f"attention moved {r.attn_offloaded_bytes[0] / max(r.attn_bytes[0], 1):.2%}"
        if s.system.dbo.enabled:
            med, p90 = dbo_time(one, reps)
            rows.append(("DBO decisions of one iteration", label, "", med, p90, DECIDE_GOAL_US))
        med, p90 = timed(one, reps)
        rows.append(("run_iteration() alone (batch 512)", label, res, med, p90, ITERATION_GOAL_US))
        if label.startswith(("librapim (DEX", "neupims")):
            rng = np.random.default_rng(1)
            many = [steady_state_batch(s, rng) for _ in range(200)]
            chans = [snake_channels(x, sched.tables.channels) for x in many]
            big = schedule_for(s, s.batch, int(max(x.max() for x in many)))
            def bulk(big=big, many=many, chans=chans):
                return engine.run_iterations(big, many, chans)

            if s.system.dbo.enabled:
                med, p90 = dbo_time(bulk, 10)
                rows.append(("DBO decisions, 200 iterations at once, per iteration", label, "", med / 200,
                             p90 / 200, DECIDE_GOAL_US))
            med, p90 = timed(bulk, 10, warmup=2)
            rows.append(("run_iterations(), 200 at once, per iteration", label, "", med / 200, p90 / 200,
                         ITERATION_GOAL_US))

    print(f"DBO benchmark: gpt3-7b, ShareGPT steady state, batch 512, 32 channels; {reps} reps; "
          f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}\n")
    print("| what | system | result | median (us) | p90 (us) | goal (us) | meets goal |")
    print("|---|---|---|---:|---:|---:|:---:|")
    for what, label, res, med, p90, goal in rows:
        ok = "" if goal is None else ("yes" if med <= goal else "no")
        g = "" if goal is None else f"{goal:.0f}"
        print(f"| {what} | {label} | {res} | {med:.1f} | {p90:.1f} | {g} | {ok} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
