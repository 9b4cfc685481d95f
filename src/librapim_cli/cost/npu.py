"""NPU cost: roofline with weight-stationary systolic-array tiling (docs/model/npu.md).

GPU-style options of the NPU spec: vector ops as kernels with a fixed time and DRAM traffic
(``npu.vector_kernels``), and occupancy (``npu.thread_blocks``): a kernel's thread blocks run in waves over the
SMs and a partly filled wave slows compute and memory alike (AttAcc's GPU model, docs/sources.md#s12).
"""

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


def occupancy(hw: HardwareSpec, blocks):
    """Share of the SMs a kernel of ``blocks`` thread blocks keeps busy: blocks / (waves x SMs), waves =
    ceil(blocks / SMs) (1 without an occupancy model, or with no blocks)."""
    tb = hw.npu.thread_blocks
    b = np.asarray(blocks, dtype=float)
    if tb.cores == 0:
        return np.ones_like(b)
    waves = np.ceil(b / tb.cores)
    return np.where(b > 0, b / np.maximum(waves * tb.cores, 1.0), 1.0)


def gemm_occupancy(hw: HardwareSpec, rows, k: int, n: int, sets=1.0, dtype_bytes: int = 2):
    """Occupancy of a GEMM of ``rows`` x k x n (``sets`` weight sets) under the thread-block tile a GPU library
    would pick: AttAcc's search (docs/sources.md#s12) over tiles (tm, tn) from ``tile_sizes`` (each clipped to the
    GEMM, fitting ``l1_bytes`` with depth ``tile_k``) minimising L2 traffic / occupancy^2, where the blocks are
    ceil(rows / tm) x ceil(n / tn) x sets and the traffic (ceil(n / tn) rows k + ceil(rows / tm) n k + rows n) x
    dtype x sets; the first minimum in (tm, tn) order wins. 1 without an occupancy model."""
    tb = hw.npu.thread_blocks
    m, n_, k_, sets = np.broadcast_arrays(np.asarray(rows, dtype=float), np.asarray(n, dtype=float),
                                          np.asarray(k, dtype=float), np.asarray(sets, dtype=float))
    if tb.cores == 0:
        return np.ones(m.shape)
    mm = np.maximum(m, 1.0)[..., None]  # candidates on the last axis
    nn, kk, ss = np.maximum(n_, 1.0)[..., None], k_[..., None], sets[..., None]
    tn = np.minimum(np.asarray(tb.tile_sizes, dtype=float), nn)
    best_cost = np.full(m.shape, np.inf)
    best_util = np.ones(m.shape)
    for t in tb.tile_sizes:  # tm outer, tn inner (AttAcc's loop order)
        tm = np.minimum(float(t), mm)
        fits = (tm + tn) * tb.tile_k * dtype_bytes + tm * tn * dtype_bytes <= tb.l1_bytes
        blocks = np.ceil(mm / tm) * np.ceil(nn / tn) * ss
        util = np.where(blocks > 0, blocks / np.maximum(np.ceil(blocks / tb.cores) * tb.cores, 1.0), 1.0)
        traffic = (np.ceil(nn / tn) * mm * kk + np.ceil(mm / tm) * nn * kk + mm * nn) * dtype_bytes * ss
        cost = np.where(fits, traffic / util ** 2, np.inf)
        j = np.argmin(cost, axis=-1)[..., None]
        c = np.take_along_axis(cost, j, axis=-1)[..., 0]
        u = np.take_along_axis(np.broadcast_to(util, cost.shape), j, axis=-1)[..., 0]
        better = c < best_cost
        best_cost, best_util = np.where(better, c, best_cost), np.where(better, u, best_util)
    return np.where(m > 0, best_util, 1.0)


def vector_kernel(hw: HardwareSpec, op: Vector):
    """The GPU kernel spec of a vector op (``npu.vector_kernels``, by the op's class), or None when the op runs on
    the vector units (no class, or a class with no fixed time and no traffic)."""
    k = getattr(hw.npu.vector_kernels, op.kernel) if op.kernel else None
    return k if k is not None and k.is_kernel else None


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
    bw = mem.bw_bytes_per_s * npu.bandwidth_efficiency * bw_fraction  # the KV cache's memory
    w_bw = hw.npu_memory.bw_bytes_per_s * npu.bandwidth_efficiency * bw_fraction  # the weights' memory
    if isinstance(op, Gemm):
        rows = op.set_rows
        cyc = systolic_cycles(hw, rows, op.k, op.n, op.weight_sets)
        occ = gemm_occupancy(hw, rows, op.k, op.n, op.weight_sets, op.dtype_bytes)
        compute = cyc / npu.clock_hz / npu.compute_efficiency / occ
        nbytes = op.bytes
        memory = nbytes / w_bw / occ
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
        # one thread block per (request, query head): at small batch the kernel reaches only that many SMs
        share = float(occupancy(hw, op.context_lens.size * op.q_heads))
        memory = nbytes / (bw * share)
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
        kern = vector_kernel(hw, op)
        if kern is None:  # on the vector units, operands on chip
            overhead = np.where(active, npu.op_overhead_s, 0.0)
            time = compute + overhead
            energy = flops * hw.energy.npu_pj_per_flop * PJ
            return Cost("npu", _s(time), _s(compute), 0.0, 0.0, 0.0, _s(overhead), _s(flops), 0.0, _s(energy))
        # a GPU kernel: fixed time + max(compute, its DRAM traffic at bw_fraction of the peak bandwidth)
        nbytes = np.asarray(op.elements, dtype=float) * (kern.tensors + op.extra_inputs * (kern.tensors > 0)) \
            * op.dtype_bytes
        memory = nbytes / (hw.npu_memory.bw_bytes_per_s * kern.bw_fraction)
        overhead = np.where(active, npu.op_overhead_s + kern.fixed_s, 0.0)
        time = np.maximum(compute, memory) + overhead
        energy = flops * hw.energy.npu_pj_per_flop * PJ + dram_stream_energy_j(hw, nbytes)
        return Cost("npu", _s(time), _s(compute), _s(memory), 0.0, 0.0, _s(overhead), _s(flops), _s(nbytes),
                    _s(energy))
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
