"""The time of stage instances under a decision: the one formula the engine and DBO's predictor share.

A stage instance is one row of the stage arrays (docs/model/schedule.md): the NPU runs an FC group (index
``gi`` into ``cost.tables.STACK_GROUPS``) over ``rows`` token rows, beside the attention of a set of
requests. A decision moves ``y`` of those rows to the PIM and/or some requests' attention to the NPU.

    stage time = max( NPU,  slowest channel under the concurrency mode )
    NPU        = max( systolic[rows - y],  vector[rows - y] + vec_extra,  stream[rows - y] + mem_extra ) + link[rows]

``vec_extra`` holds the softmax (and, with attention on the NPU, its MACs) on the vector units;
``mem_extra`` the KV the NPU streams for attention it runs. Weights already in SRAM (``cached``) stream no
bytes. Every function here takes arrays of instances (or instances x offload sizes) and returns arrays.
"""

from __future__ import annotations

import numpy as np

from ..cost.tables import CostTables

# columns of CostTables.npu_stack
SA, VEC, MEM, LINK, FLOPS, ENERGY, DRAM_ENERGY, BYTES, WRITE, VEC_FLOPS = range(10)
# columns of CostTables.pim_fc_stack
PF_TIME, PF_IO, PF_FLOPS, PF_ENERGY, PF_RIDE = range(5)
# fields of CostTables.cols_stack
CL_SA, CL_MEM, CL_FLOPS, CL_ENERGY, CL_DRAM_E, CL_PIM, CL_PIM_IO, CL_PIM_FLOPS, CL_PIM_E, CL_CHAIN = range(10)


def npu_time(sa, vec, mem, link):
    """NPU busy time of a stage: its three engines overlap, the all-reduce follows."""
    return np.maximum(np.maximum(sa, vec), mem) + link


def busiest_channel(t: CostTables, pim_attn_max, pim_io_max, pf, pfio, mem, ride=0.0):
    """The slowest channel's busy time when no attention moved to the NPU (``ConcurrencyMode``)."""
    return t.mode.busiest_channel_time(t.mode_params, pim_attn_max, pim_io_max, pf, pfio, mem, ride)


def channel_times(t: CostTables, pim_attn, pim_fc, pim_io, npu_w, npu_kv, ride=0.0):
    """Every channel's busy time (arrays over channels)."""
    return t.mode.channel_time(t.mode_params, pim_attn, pim_fc, pim_io, npu_w, npu_kv, ride)


# rows of fc_curves (per instance, per y)
(C_SA, C_VEC, C_MEM, C_LINK, C_FLOPS, C_ENERGY, C_PF, C_PFIO, C_PF_FLOPS, C_PF_ENERGY, C_RIDE,
 C_CHAIN) = range(12)
N_CURVES = 12


def fc_at(t: CostTables, gi, rows, cache_frac, y):
    """The figures of moving ``y`` of an FC group's ``rows`` token rows to the PIM (arrays broadcast), with
    the figures on the last axis (N_CURVES).

    NPU side: the systolic arrays and the weight stream over the rows - y left (the stream shrunk by the
    share of the weights still in SRAM, plus the new tokens' K/V writes of every row), the vector ops
    (norms, activation, residuals) of **every** row (the PIM has no vector units for them), the all-reduce
    of every row. PIM side at y (partial batch offload when the system has it and the NPU streams the
    weights). ``C_CHAIN``: the moved rows' own chain, which hands off between PIM and NPU at every vector op
    and cannot overlap itself: PIM FC time + their vector time + the all-reduce (0 at y = 0). y > rows gives
    an infinite systolic time (never chosen).
    """
    out = np.empty(np.broadcast(np.asarray(rows) - y, np.asarray(cache_frac)).shape + (N_CURVES,))
    _fc_at_into(np.moveaxis(out, -1, 0), t, gi, rows, cache_frac, y)
    return out


def _fc_at_into(out: np.ndarray, t: CostTables, gi, rows, cache_frac, y) -> None:
    """:func:`fc_at`, written to ``out`` with the figures on the first axis (``out[C_SA]`` ...): each table
    field gathered on its own, so every figure is computed and written as one contiguous array."""
    nb = rows - y
    nbc = np.maximum(nb, 0)
    npu = t.npu_stack

    def n(field):
        return npu[gi, field, nbc]

    def full(field):
        return npu[gi, field, rows]

    gp = np.minimum(gi, 3)
    pim = t.pim_fc_stack
    if t.pim_fc_ride_stack is not None:  # partial batch offload rides the NPU's stream: only while it streams
        rides = (nb >= 1) & (np.asarray(cache_frac) == 0)
        gp = np.where(rides, gp + pim.shape[0], gp)  # the riding tables follow the others
        pim = np.concatenate([pim, t.pim_fc_ride_stack])

    def p(field):
        return pim[gp, field, y]

    f = np.asarray(cache_frac)
    link = full(LINK)
    pf = p(PF_TIME)
    out[C_SA] = np.where(nb >= 0, n(SA), np.inf)
    out[C_VEC] = full(VEC)
    out[C_MEM] = n(MEM) * (1.0 - f) + full(WRITE)
    out[C_LINK] = link
    out[C_FLOPS] = n(FLOPS)
    out[C_ENERGY] = (n(ENERGY) - n(DRAM_ENERGY) * f
                     + (full(VEC_FLOPS) - n(VEC_FLOPS)) * t.npu_pj_per_flop * 1e-12)
    out[C_PF] = pf
    out[C_PFIO] = p(PF_IO)
    out[C_PF_FLOPS] = p(PF_FLOPS)
    out[C_PF_ENERGY] = p(PF_ENERGY)
    out[C_RIDE] = p(PF_RIDE)
    out[C_CHAIN] = np.where(y > 0, pf + npu[gi, VEC, np.minimum(y, rows)] + link, 0.0)


def fc_cols_at(t: CostTables, gi, rows, cache_frac, j):
    """The figures of moving column fraction ``j`` / COLUMN_STEPS of every GEMM of an FC group to the PIM (arrays
    broadcast; figures on the last axis, as :func:`fc_at`). The NPU streams and multiplies the other columns
    over every row (its stream shrunk by the SRAM-resident share), runs every vector op and the all-reduce; the
    PIM reads its columns' weights itself (no ride). ``C_CHAIN``: every GEMM waits for both shares, so the
    group lasts at least the sum over GEMMs of the slower share, plus the vector ops and the all-reduce (the
    NPU share taken with its weights streamed: an upper bound when part of them sits in SRAM)."""
    out = np.empty(np.broadcast(np.asarray(rows), np.asarray(cache_frac), np.asarray(j)).shape + (N_CURVES,))
    _fc_cols_at_into(np.moveaxis(out, -1, 0), t, gi, rows, cache_frac, j)
    return out


def _fc_cols_at_into(out: np.ndarray, t: CostTables, gi, rows, cache_frac, j) -> None:
    """:func:`fc_cols_at`, written to ``out`` with the figures on the first axis (as :func:`_fc_at_into`)."""
    cols, npu = t.cols_stack.at(rows), t.npu_stack  # the row counts costed once, then plain gathers

    def col(field):
        return cols[gi, field, j, rows]

    def full(field):
        return npu[gi, field, rows]

    f = np.asarray(cache_frac)
    vec, link = full(VEC), full(LINK)
    out[C_SA] = col(CL_SA)
    out[C_VEC] = vec
    out[C_MEM] = col(CL_MEM) * (1.0 - f) + full(WRITE)
    out[C_LINK] = link
    out[C_FLOPS] = col(CL_FLOPS)
    out[C_ENERGY] = full(ENERGY) - cols[gi, CL_ENERGY, 0, rows] + col(CL_ENERGY) - col(CL_DRAM_E) * f
    out[C_PF] = col(CL_PIM)
    out[C_PFIO] = col(CL_PIM_IO)
    out[C_PF_FLOPS] = col(CL_PIM_FLOPS)
    out[C_PF_ENERGY] = col(CL_PIM_E)
    out[C_RIDE] = 0.0
    out[C_CHAIN] = np.where(j > 0, col(CL_CHAIN) + vec + link, 0.0)


def fc_figures(t: CostTables, gi, rows, cache_frac, y, j):
    """The figures of a decision: ``y`` token rows (:func:`fc_at`) or, where ``j`` > 0, column fraction
    ``j`` / COLUMN_STEPS (:func:`fc_cols_at`) moved to the PIM (a decision moves one or the other)."""
    out = fc_at(t, gi, rows, cache_frac, y)
    if t.cols_stack is not None and np.any(j > 0):
        out = np.where((np.asarray(j) > 0)[..., None], fc_cols_at(t, gi, rows, cache_frac, j), out)
    return out


#: FC token rows move in steps of 1/ROW_STEPS of a stage's rows (every row count up to ROW_STEPS rows)
ROW_STEPS = 64
#: the fields of :func:`fc_curves` that :func:`fc_grid` reads per decision (the others are constant in it or
#: only needed for the chosen decision)
GRID_FIELDS = (C_SA, C_MEM, C_PF, C_PFIO, C_RIDE, C_CHAIN)


def row_steps(rows, i):
    """Token rows of row step ``i`` (0..ROW_STEPS) of a stage with ``rows`` rows: round(rows * i / ROW_STEPS)."""
    return (np.asarray(rows) * np.asarray(i) * 2 + ROW_STEPS) // (2 * ROW_STEPS)


def fc_decisions(t: CostTables, columns: bool = True) -> int:
    """U, the FC decisions of :func:`fc_curves`: the row steps 0..ROW_STEPS, then (with ``columns`` and column
    tables) the column steps 1..COLUMN_STEPS."""
    return ROW_STEPS + 1 + (t.cols_stack.shape[2] - 1 if columns and t.cols_stack is not None else 0)


def fc_curves(t: CostTables, gi, rows, cache_frac, columns: bool = True, out: np.ndarray | None = None):
    """Every FC decision of every instance, as (n, N_CURVES, U): :func:`fc_at` at row steps i = 0..ROW_STEPS
    (index u = i, y = :func:`row_steps`), then, with ``columns`` and column tables, :func:`fc_cols_at` for
    j = 1..COLUMN_STEPS (index u = ROW_STEPS + j). :func:`decode` turns an index back into (y, j). Each figure
    is written straight into its place in ``out`` (a new array if None; no (n, U, N_CURVES) intermediate)."""
    R = ROW_STEPS + 1
    U = fc_decisions(t, columns)
    if out is None:
        out = np.empty((gi.shape[0], N_CURVES, U))
    elif out.shape != (gi.shape[0], N_CURVES, U):
        raise ValueError(f"fc_curves: out must have shape {(gi.shape[0], N_CURVES, U)}, not {out.shape}")
    g, r, f = gi[:, None], rows[:, None], cache_frac[:, None]
    _fc_at_into(np.moveaxis(out[:, :, :R], 1, 0), t, g, r, f, row_steps(r, np.arange(R)[None, :]))
    if U > R:
        _fc_cols_at_into(np.moveaxis(out[:, :, R:], 1, 0), t, g, r, f, np.arange(1, U - R + 1)[None, :])
    return out


def decode(u: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows y, column steps j) of curve indices ``u`` of :func:`fc_curves` for stages of ``rows`` rows."""
    row = u <= ROW_STEPS
    return np.where(row, row_steps(rows, np.minimum(u, ROW_STEPS)), 0), np.where(row, 0, u - ROW_STEPS)


def fc_grid(t: CostTables, g: np.ndarray, vec, link, vec_x, mem_x, pmax, iomax):
    """Stage time (and NPU time) of every instance under every FC decision: ``g`` (n, len(GRID_FIELDS), U) its
    curves' grid fields, ``vec`` / ``link`` (n,) its NPU vector time and all-reduce (the same for every
    decision), with per-instance NPU extras and per-channel attention maxima (arrays over instances):
    max(NPU, slowest channel, the moved work's chain)."""
    mem = g[:, 1] + mem_x[:, None]
    npu = np.maximum(np.maximum(g[:, 0], (vec + vec_x)[:, None]), mem) + link[:, None]
    chan = busiest_channel(t, pmax[:, None], iomax[:, None], g[:, 2], g[:, 3], mem, g[:, 4])
    return np.maximum(np.maximum(npu, chan), g[:, 5]), npu
