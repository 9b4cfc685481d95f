"""NPU cost: roofline with weight-stationary systolic-array tiling (docs/model/npu.md)."""

from __future__ import annotations

import numpy as np

from ..graph.ops import AllReduce, Attention, Gemm, KVWrite, Op, Vector
from ..spec.hardware import HardwareSpec
from .types import Cost

PJ = 1e-12


def dram_stream_energy_j(hw: HardwareSpec, nbytes):
    """Energy of streaming bytes from DRAM to the NPU: (ACT + cell + bank->IO + TSV/interposer) pJ/bit."""
    e = hw.energy
    return nbytes * 8.0 * (e.dram_act_pj_per_bit + e.dram_cell_read_pj_per_bit + e.dram_bank_to_io_pj_per_bit
                           + e.dram_offchip_pj_per_bit) * PJ


def systolic_cycles(hw: HardwareSpec, rows, k: int, n: int, sets=1.0):
    """Cycles of a weight-stationary GEMM on the NPU's arrays.

    Each weight tile (sa_rows x sa_cols) stays while ``rows`` activation rows stream through it; the next
    tile's weights preload behind it, so a tile occupies max(rows, sa_rows) cycles; the pipeline fills and
    drains once (sa_rows + sa_cols - 2). Tiles are spread over the arrays.
    """
    npu = hw.npu
    rows = np.asarray(rows, dtype=float)
    tiles = np.ceil(k / npu.sa_rows) * np.ceil(n / npu.sa_cols) * np.asarray(sets, dtype=float)
    per_array = np.ceil(tiles / npu.systolic_arrays)
    cyc = per_array * np.maximum(np.ceil(rows), npu.sa_rows) + (npu.sa_rows + npu.sa_cols - 2)
    return np.where(rows > 0, cyc, 0.0)


def npu_cost(op: Op, hw: HardwareSpec, bw_fraction: float = 1.0) -> Cost:
    """Time, FLOPs, DRAM bytes and energy of ``op`` on the NPU of ``hw``.

    ``bw_fraction`` is the share of external bandwidth the concurrency mode leaves the NPU (1 = all).
    """
    npu, mem = hw.npu, hw.memory
    bw = mem.bw_bytes_per_s * npu.bandwidth_efficiency * bw_fraction
    if isinstance(op, Gemm):
        rows = op.set_rows
        cyc = systolic_cycles(hw, rows, op.k, op.n, op.weight_sets)
        compute = cyc / npu.clock_hz / npu.compute_efficiency
        nbytes = op.bytes
        memory = nbytes / bw
        active = np.asarray(op.m) > 0
        overhead = np.where(active, npu.op_overhead_s, 0.0)
        flops = op.flops
        time = np.maximum(compute, memory) + overhead
        energy = flops * hw.energy.npu_pj_per_flop * PJ + dram_stream_energy_j(hw, nbytes)
        return Cost("npu", _s(time), _s(compute), _s(memory), 0.0, 0.0, _s(overhead), _s(flops), _s(nbytes),
                    _s(energy))
    if isinstance(op, Attention):
        # GEMV on the NPU: stream the K or V bytes; the MACs run on the vector units
        nbytes = op.kv_bytes
        memory = nbytes / bw
        compute = op.flops / npu.vector_flops
        active = op.context_lens.size > 0
        overhead = npu.op_overhead_s if active else 0.0
        time = max(compute, memory) + overhead
        energy = op.flops * hw.energy.npu_pj_per_flop * PJ + dram_stream_energy_j(hw, nbytes)
        return Cost("npu", time, compute, memory, 0.0, 0.0, overhead, op.flops, nbytes, energy)
    if isinstance(op, Vector):
        flops = op.flops
        compute = flops / npu.vector_flops
        active = np.asarray(op.elements) > 0
        overhead = np.where(active, npu.op_overhead_s, 0.0)
        time = compute + overhead
        energy = flops * hw.energy.npu_pj_per_flop * PJ
        return Cost("npu", _s(time), _s(compute), 0.0, 0.0, 0.0, _s(overhead), _s(flops), 0.0, _s(energy))
    if isinstance(op, KVWrite):
        # the new K/V leave the NPU for DRAM at the sustained bandwidth; no arithmetic, no fixed op overhead
        # (it trails the QKV GEMM's output stream) [I]
        nbytes = op.bytes
        memory = nbytes / bw
        energy = dram_stream_energy_j(hw, nbytes)
        return Cost("npu", _s(memory), 0.0, _s(memory), 0.0, 0.0, 0.0, 0.0, _s(nbytes), _s(energy))
    if isinstance(op, AllReduce):
        raise TypeError("all-reduce runs on the link: use link_cost(op, system.link, hw)")
    raise TypeError(f"npu_cost: unsupported op {type(op).__name__}")


def _s(x):
    """Unwrap 0-d arrays to floats so scalar ops give scalar costs."""
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a
