"""Shared helpers of the peer cross-checks (docs/model/validation.md): one decode step of a fixed batch, op by op."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from librapim_cli.inputs import setup
from librapim_cli.schedule.breakdown import breakdown_rows, op_records
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import run_iterations
from librapim_cli.spec import SystemSpec, load
from librapim_cli.workload import place_channels

US = 1e-6


@dataclass(frozen=True)
class Step:
    """One decode iteration of ``batch`` requests of context ``L``: per-layer op times (µs, one execution) and the
    simulated time per layer (µs, LM head excluded) and of the LM head."""

    per_layer_us: dict[str, float]
    layer_us: float
    head_us: float
    stages: dict[str, float]  # stage name -> µs of one execution
    cols_to_pim: dict[str, int]  # stage name -> FC column tiles (of 32) on the PIM


def decode_step(system: str | SystemSpec, model: str, batch: int, L: int, sets=()) -> Step:
    """Run one iteration of ``batch`` requests at context ``L`` through the engine and the breakdown."""
    s = setup(system, model, "fixed-2048-128", batch=batch, sets=list(sets))
    sched = schedule_for(s, batch, L)
    lens = np.full(batch, L, dtype=np.int64)
    ch = place_channels(lens, sched.tables.channels, s.system.placement.kv_channel_policy, sched.tables.kv_spread)
    it = run_iterations(sched, [lens], [ch], keep_stages=True)
    ops = op_records(sched, lens, ch, it, 0)
    rows = breakdown_rows(ops, float(it.time_s[0]), s.tp, s.pp)
    layers = s.model.layers // s.pp
    per = {r["op"]: r["time_s"] / r["repeats"] / US for r in rows}
    head = per.pop("lm_head")
    st = it.stages
    stages = {str(n): float(t) / US for n, t in zip(st.name, st.time_s, strict=True)}
    cols = {str(n): int(j) for n, j in zip(st.name, st.fc_cols_to_pim, strict=True)}
    return Step(per, (float(it.time_s[0]) / US - head) / layers, head, stages, cols)


def attacc_gpu() -> SystemSpec:
    """AttAcc's GPU-only system ('dgx'): the A100a of the attacc-hbm3pim preset alone (its own HBM, no PIM), on the
    gpu-only system (AttAcc's all-reduce), tp 8, pp 1."""
    aa = load("hardware", "attacc-hbm3pim")
    gpu = aa.model_copy(update={"name": "a100a", "pim": None, "xpu_memory": None, "memory": aa.xpu_memory})
    return load("system", "gpu-only").model_copy(update={"hardware": gpu, "tp": 8, "pp": 1})


def roofline_gpu(bw_bytes_per_s: float, kernel_tensors: float = 2.0, kernel_fixed_s: float = 0.0) -> SystemSpec:
    """A roofline GPU (no efficiency caps, no occupancy) with memory bandwidth ``bw_bytes_per_s``, on the gpu-only
    system at tp 1, pp 1: the a100-xpu preset (312 TFLOPS as 432 16 x 16 arrays) with its pin rate set to give the
    bandwidth, and every vector op a kernel moving ``kernel_tensors`` tensors of its size at the peak bandwidth
    after ``kernel_fixed_s``."""
    base = load("hardware", "a100-xpu")
    mem = base.memory
    pin = bw_bytes_per_s * 8 / (mem.channels * mem.channel_width_bits)
    kern = {"fixed_s": kernel_fixed_s, "tensors": kernel_tensors, "bw_fraction": 1.0}
    npu = base.npu.model_copy(update={
        "compute_efficiency": 1.0, "bandwidth_efficiency": 1.0, "thread_blocks": type(base.npu.thread_blocks)(),
        "vector_kernels": type(base.npu.vector_kernels).model_validate(
            {k: kern for k in ("layernorm", "activation", "softmax", "residual")})})
    hw = base.model_copy(update={"name": "roofline-gpu", "npu": npu,
                                 "memory": mem.model_copy(update={"pin_rate_bps": pin})})
    return load("system", "gpu-only").model_copy(update={"hardware": hw, "tp": 1, "pp": 1})
