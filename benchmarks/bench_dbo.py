"""Time per DBO decision and per decode iteration at batch 512 (run: ``python benchmarks/bench_dbo.py``).

Goals: one DBO decision (decide() on a steady-state C stage: Proj/FFN#1 + QKV#1 on the NPU beside MHA#2 on
the PIM) <= 50 us; one whole decode iteration (run_iteration) <= 100 us; librapim system, gpt3-7b, ShareGPT.
Each figure is the median and p90 of many single calls timed with time.perf_counter after a warm-up. Other rows
time the same calls on variants (time interleaving, a PIM-bound 8-array NPU where attention offload kicks in)
for context. Prints a markdown table; no assertions (timings do not belong in tests).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from dataclasses import replace

import numpy as np

from librapim_cli.cost.pim import snake_channels
from librapim_cli.optimize import NO_OFFLOAD, StageInput, attention_set, decide, stage_time
from librapim_cli.schedule.batched import run_iterations
from librapim_cli.schedule.iteration import run_iteration
from librapim_cli.simulate import make_schedule, setup, steady_state_batch
from librapim_cli.spec import load_hardware

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


def scenario(system: str, hardware: str | None = None, batch: int = 512, seed: int = 0, scale: int = 1):
    """Schedule, lengths, channels and the steady-state C stage of one setup."""
    s = setup(system, "gpt3-7b", "sharegpt", batch=batch)
    if hardware is not None:
        s = replace(s, system=s.system.model_copy(update={"hardware": load_hardware(hardware)}))
    lens = steady_state_batch(s, np.random.default_rng(seed)) * scale
    sched = make_schedule(s, s.batch, int(lens.max()))
    t = sched.tables
    ch = snake_channels(lens, t.channels)
    # stage C: sub-batch #1's FC rows (requests 0, 2, 4, ...) beside sub-batch #2's attention (1, 3, 5, ...)
    c_stage = StageInput("both", int(lens[0::2].shape[0]), attention_set(t, lens[1::2], ch[1::2]), True)
    return s, sched, lens, ch, c_stage


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="timed calls per row (default 2000)")
    args = ap.parse_args()
    reps = args.reps
    rows = []
    variants = [
        ("librapim (DEX + DBO)", "librapim", None, 1),
        ("librapim, contexts x4", "librapim", None, 4),
        ("librapim-dbo-only (time interleaved)", "librapim-dbo-only", None, 1),
        ("librapim on neupims-npu8 (PIM-bound)", "librapim", "neupims-npu8-hbm2pim", 4),
        ("neupims (no DBO)", "neupims", None, 1),
    ]
    for label, system, hw, scale in variants:
        s, sched, lens, ch, c = scenario(system, hw, scale=scale)
        t, dbo = sched.tables, s.system.dbo.model_copy(update={"enabled": True})
        d = decide(t, c, dbo)
        moved = 0 if d.attn_to_npu is None else int(d.attn_to_npu.sum())
        what = f"y={d.fc_rows_to_pim}, attn moved={moved}"
        if s.system.dbo.enabled:
            med, p90 = timed(lambda t=t, c=c, dbo=dbo: decide(t, c, dbo), reps)
            rows.append(("decide() on stage C", label, what, med, p90, DECIDE_GOAL_US))
            if label.startswith("librapim (DEX"):
                med, p90 = timed(lambda t=t, c=c: stage_time(t, c, NO_OFFLOAD), reps)
                rows.append(("  of which stage_time(no offload)", label, "", med, p90, None))
        its_reps = max(reps // 4, 50)
        med, p90 = timed(lambda sched=sched, lens=lens, ch=ch: run_iteration(sched, lens, ch), its_reps)
        r = run_iteration(sched, lens, ch)
        rows.append(("run_iteration() (batch 512)", label, f"T={r.time_s * 1e3:.3f} ms", med, p90, ITERATION_GOAL_US))
        if label.startswith("librapim (DEX") or label.startswith("neupims"):
            # 200 steady-state batches in one vectorized call, as iteration mode and closed-loop serving do
            rng = np.random.default_rng(1)
            many = [steady_state_batch(s, rng) for _ in range(200)]
            chans = [snake_channels(x, sched.tables.channels) for x in many]
            big = make_schedule(s, s.batch, int(max(x.max() for x in many)))
            med, p90 = timed(lambda big=big, many=many, chans=chans: run_iterations(big, many, chans), 10, warmup=2)
            rows.append(("run_iterations(), 200 at once, per iteration", label, "", med / 200, p90 / 200,
                         ITERATION_GOAL_US))

    print(f"DBO benchmark: gpt3-7b, ShareGPT steady state, batch 512, 32 channels; {reps} reps "
          f"(iterations: {max(reps // 4, 50)}); Python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}\n")
    print("| what | system | decision / result | median (us) | p90 (us) | goal (us) | meets goal |")
    print("|---|---|---|---:|---:|---:|:---:|")
    for what, label, res, med, p90, goal in rows:
        ok = "" if goal is None else ("yes" if med <= goal else "no")
        g = "" if goal is None else f"{goal:.0f}"
        print(f"| {what} | {label} | {res} | {med:.1f} | {p90:.1f} | {g} | {ok} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
