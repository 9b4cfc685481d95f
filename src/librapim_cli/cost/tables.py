"""Cost tables: the pure cost functions evaluated once per run over every row count and context length.

A decode iteration then only gathers from these arrays, which keeps the per-iteration work (and DBO's
predictor) vectorized and cheap. Every entry is exactly ``npu_cost`` / ``pim_cost`` / ``link_cost``
of the corresponding op (tests check this).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from .. import concurrency
from ..concurrency import ConcurrencyMode, ModeParams
from ..graph.decode import attention_ops, fc_ops, lm_head_op, shard_heads
from ..graph.ops import AllReduce, Gemm, KVWrite, Vector
from ..spec.hardware import HardwareSpec
from ..spec.model import ModelSpec
from ..spec.system import ConcurrencySpec, SystemSpec
from .link import link_cost
from .npu import dram_stream_energy_j, npu_cost, occupancy, vector_kernel
from .pim import (
    attention_requests,
    bank_timing,
    fc_on_pim,
    fc_riding_stream,
    input_vectors_per_row,
    riding_mac_s,
)
from .types import Cost

GROUPS = ("qkv", "rest", "both", "head")
#: order of the FC groups in the stacked tables (``npu_stack``, ``pim_fc_stack``); 'none' is all zeros
STACK_GROUPS = ("qkv", "rest", "both", "none", "head")
#: fields of ``npu_stack`` (second axis)
NPU_FIELDS = ("sa_s", "vec_s", "mem_s", "link_s", "flops", "energy_j", "dram_energy_j", "bytes", "write_s",
              "vec_flops")
#: fields of ``pim_fc_stack`` (second axis)
PIM_FC_FIELDS = ("time_s", "io_s", "flops", "energy_j", "ride_s")
#: column-tile offload: an FC group's (or the LM head's) output columns move to the PIM in steps of 1/COLUMN_STEPS
COLUMN_STEPS = 32
#: fields of ``cols_stack`` (second axis): the NPU's share (systolic incl. op overheads, weight stream, FLOPs,
#: energy, of which DRAM streaming), the PIM's share (time, data-bus part, FLOPs, energy), and the column
#: split's own chain: every GEMM waits for both shares before the next op (sum over GEMMs of the slower share)
COL_FIELDS = ("sa_s", "mem_s", "flops", "energy_j", "dram_energy_j", "pim_s", "pim_io_s", "pim_flops",
              "pim_energy_j", "chain_s")
NS = 1e-9


def switch_penalty_s(hw: HardwareSpec) -> float:
    """Mode-switch penalty of time interleaving: precharge + activate (tRP + tRCD)."""
    return (hw.memory.tRP_ns + hw.memory.tRCD_ns) * NS


def quantum_s(spec: ConcurrencySpec) -> float:
    """Slot length between PIM/normal mode switches, seconds."""
    return spec.switch_quantum_ns * NS


@dataclass(frozen=True)
class NPUTable:
    """NPU figures of one FC group for 0..max_rows token rows (arrays indexed by rows)."""

    sa_s: np.ndarray  # systolic-array time (compute term, incl. tiling)
    vec_s: np.ndarray  # vector-unit time
    mem_s: np.ndarray  # weight streaming time at the NPU's sustained bandwidth
    link_s: np.ndarray  # all-reduce time
    flops: np.ndarray  # systolic-array FLOPs
    vec_flops: np.ndarray
    bytes: np.ndarray  # DRAM bytes (weights)
    link_bytes: np.ndarray
    energy_j: np.ndarray
    dram_energy_j: np.ndarray  # of which streaming the weights from DRAM
    write_s: np.ndarray  # DRAM time every row costs whatever moves (never SRAM-cached): the new tokens' K/V writes,
    #   and GPU vector kernels' traffic and fixed time


@dataclass(frozen=True)
class PIMFCTable:
    """PIM figures of offloading 0..max_rows token rows of one FC group."""

    time_s: np.ndarray
    io_s: np.ndarray
    flops: np.ndarray
    energy_j: np.ndarray
    ride_s: np.ndarray  # of time_s: MAC time riding the NPU's weight stream (partial batch offload), else 0


@dataclass(frozen=True)
class AttnTable:
    """Per-request attention figures indexed by context length 0..max_len (one layer, one shard)."""

    pim_s: np.ndarray  # channel-busy seconds on PIM (banks + io)
    pim_io_s: np.ndarray  # of which on the channel data bus
    kv_bytes: np.ndarray  # K + V bytes
    flops: np.ndarray  # score + context FLOPs
    softmax_flops: np.ndarray  # vector-unit FLOPs of the softmax
    pim_energy_j: np.ndarray
    npu_energy_j: np.ndarray  # if run on the NPU (stream KV + vector MACs)

    @property
    def stacked(self) -> np.ndarray:
        """All columns as one (7, max_len + 1) array, rows in field order (one gather per batch)."""
        return np.stack((self.pim_s, self.pim_io_s, self.kv_bytes, self.flops, self.softmax_flops,
                         self.pim_energy_j, self.npu_energy_j))


@dataclass(frozen=True)
class CostTables:
    """Everything one decode iteration needs, precomputed for a (model, system) pair."""

    npu: dict[str, NPUTable]
    pim_fc: dict[str, PIMFCTable]
    attn: AttnTable
    attn_stacked: np.ndarray  # attn.stacked, kept for one-gather lookups
    attn_slopes: np.ndarray  # (7,): per column, the exact slope if the column is proportional to L, else NaN
    max_rows: int
    max_len: int
    channels: int
    sram_bytes: int  # NPU on-chip SRAM: a layer's weights that fit are reused by the second sub-batch
    npu_bw_bytes_per_s: float  # sustained external bandwidth of the NPU
    ch_bw_bytes_per_s: float  # sustained per-channel bandwidth of NPU reads
    vector_flops: float
    sa_peak_flops: float
    pim_peak_flops: float
    npu_pj_per_flop: float  # NPU ALU energy per FLOP (vector ops of FC rows moved to the PIM stay on the NPU)
    mode: ConcurrencyMode  # the system's concurrency mode (librapim_cli.concurrency)
    mode_params: ModeParams
    has_pim: bool
    npu_stack: np.ndarray  # (len(STACK_GROUPS), len(NPU_FIELDS), max_rows + 1): every NPU table in one array
    pim_fc_stack: np.ndarray  # (4, len(PIM_FC_FIELDS), max_rows + 1): PIM-FC tables of qkv, rest, both, none
    pim_fc_ride_stack: np.ndarray | None  # the same with partial batch offload (None without it)
    cols_stack: ColumnTiles | None  # (len(STACK_GROUPS), len(COL_FIELDS), COLUMN_STEPS + 1, max_rows + 1): column-tile
    #   offload of every FC group and the LM head, costed per row count on first use (None when nothing may move
    #   columns)
    movable_by_len: np.ndarray  # (max_len + 1,) bool: mode.attention_move_can_help per context length
    attn_prop_rows: np.ndarray  # columns 2..6 of attn_stacked that are exactly proportional to L (attn_slopes)
    attn_sum_rows: np.ndarray  # the other columns of 2..6
    attn_flops_per_kv_byte: float  # attention FLOPs per KV byte (the same at every context length)
    kv_spread: int  # a request's KV heads sit in this many consecutive channels; attn (and attn_stacked) then
    #   holds one part's figures (kv_heads / kv_spread heads), and a request is kv_spread parts
    softmax_on_npu: bool  # the softmax (and the scores' round trip) runs on the NPU's vector units
    npu_attn_bw_share: np.ndarray  # (max_rows + 1,) share of the NPU's bandwidth an attention kernel over n
    #   requests reaches when attention is placed on the NPU (1: all of it)
    npu_attn_fixed_s: float  # fixed time of the NPU's attention kernels in a stage with attention on the NPU


def _stack(gemms: list[Gemm], rows: np.ndarray) -> Gemm:
    """The GEMMs as one Gemm whose sizes are arrays over them on a new leading axis (m, rows per set and weight sets:
    (len(gemms), len(rows)); k, n: (len(gemms), 1)). The cost functions are elementwise in every size, so one call
    on it gives every GEMM's own figures, bit for bit, at a fraction of the calls. ``rows``: the row counts the
    GEMMs were built for (their m)."""
    dt = {g.dtype_bytes for g in gemms}
    sram = {g.sram_fraction for g in gemms}
    assert len(dt) == 1 and len(sram) == 1 and all(g.streams_weights for g in gemms), "decode GEMMs stack"

    def over_rows(v):
        out = np.empty((len(gemms), rows.shape[0]))
        for i, g in enumerate(gemms):
            out[i] = getattr(g, v)
        return out

    return Gemm("stacked", gemms[0].phase, over_rows("m"), np.array([[g.k] for g in gemms], dtype=np.int64),
                np.array([[g.n] for g in gemms], dtype=np.int64), dt.pop(), over_rows("weight_sets"),
                over_rows("set_rows"), True, sram.pop())


def _rows_of(op: Gemm, sub) -> Gemm:
    """A stacked Gemm (:func:`_stack`) restricted to the row counts at positions ``sub``."""
    return replace(op, m=op.m[:, sub], weight_sets=op.weight_sets[:, sub], rows_per_set=op.rows_per_set[:, sub])


def _npu_group(ops, system: SystemSpec, rows: np.ndarray, gemm: Cost, gemm_pos: dict) -> NPUTable:
    """NPU figures of a group's ops, summed in op order. ``gemm``: the stacked ``npu_cost`` of the GEMMs
    (:func:`_stack`), ``gemm_pos`` each GEMM's position in it (by identity)."""
    hw = system.hardware
    n = rows.shape[0]
    z = np.zeros(n)
    sa, vec, mem, link, flops, vflops, nbytes, lbytes, energy = (z.copy() for _ in range(9))
    dram_e, write = z.copy(), z.copy()
    for op in ops:
        if isinstance(op, AllReduce):
            c = link_cost(op, system.link, hw)
            link = link + c.time_s
            lbytes = lbytes + c.bytes
        elif isinstance(op, Gemm):  # its row of the stacked cost
            i = gemm_pos[id(op)]
            c = Cost("npu", gemm.time_s[i], gemm.compute_s[i], gemm.memory_s[i], 0.0, 0.0, gemm.overhead_s[i],
                     gemm.flops[i], gemm.bytes[i], gemm.energy_j[i])
            sa = sa + c.compute_s + c.overhead_s
            mem = mem + c.memory_s
            flops = flops + c.flops
            nbytes = nbytes + c.bytes
            dram_e = dram_e + dram_stream_energy_j(hw, c.bytes)
        else:
            c = npu_cost(op, hw)
            if isinstance(op, Vector):
                kern = vector_kernel(hw, op)
                if kern is None:
                    vec = vec + c.time_s
                else:  # a GPU kernel runs alone (kernels one after another): its whole time stalls every engine
                    vec = vec + c.time_s
                    sa = sa + c.time_s
                    write = write + c.time_s
                vflops = vflops + c.flops
            elif isinstance(op, KVWrite):
                write = write + c.memory_s
        energy = energy + c.energy_j
    return NPUTable(sa, vec, mem, link, flops, vflops, nbytes, lbytes, energy, dram_e, write)


def _sum(a, b):
    """Field-by-field sum of two tables of one type (every field of a group table is a sum over its ops)."""
    return type(a)(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(a)))


def _pim_stacked(system: SystemSpec, op: Gemm, ride: bool = False) -> tuple:
    """PIM figures of the stacked GEMMs (:func:`_stack`) over their rows: (time, io, flops, energy, riding MAC
    time), each (GEMMs, rows) (``ride``: partial batch offload; the riding time is 0 without it)."""
    hw = system.hardware
    bt = bank_timing(hw)
    args = (hw, op.set_rows, op.k, op.n, op.dtype_bytes, op.weight_sets, bt)
    f = fc_riding_stream(*args) if ride else fc_on_pim(*args)
    if ride:
        R = input_vectors_per_row(hw)
        rd = riding_mac_s(hw, np.minimum(op.set_rows, R), op.k, op.n, op.dtype_bytes, op.weight_sets, bt)
    else:
        rd = None
    return f.time_s, f.io_s, f.flops, f.energy_j, rd


def _pim_group(pos: list[int], stacked: tuple, n: int) -> PIMFCTable:
    """PIM figures of a group's GEMMs (positions ``pos`` in the stacked figures of :func:`_pim_stacked`) over
    0..max_rows offloaded rows, summed in op order."""
    t, io, fl, en, rd = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    ft, fio, ffl, fen, frd = stacked
    for i in pos:
        t, io, fl, en = t + ft[i], io + fio[i], fl + ffl[i], en + fen[i]
        if frd is not None:
            rd = rd + frd[i]
    return PIMFCTable(t, io, fl, en, rd)


def _column_tiles(op: Gemm, movable: np.ndarray, system: SystemSpec) -> np.ndarray:
    """Figures of stacked GEMMs (:func:`_stack`) when column fraction j / COLUMN_STEPS of every GEMM's output
    columns runs on the PIM (the NPU streams and multiplies the other columns), for j = 0..COLUMN_STEPS and the
    stacked row counts: an array (len(COL_FIELDS), GEMMs, COLUMN_STEPS + 1, rows), to be summed over each
    group's GEMMs in op order. The PIM reads its columns' weights itself (``fc_on_pim`` over all rows, every
    channel receiving every input row and returning its outputs). Only the GEMMs ``movable`` (GEMMs, bool)
    marks split their columns (``placement.fc = 'ffn_split'``: the FFN's)."""
    hw = system.hardware
    J = COLUMN_STEPS
    j = np.arange(J + 1, dtype=float)[None, :, None]
    k, n = op.k[:, :, None], op.n[:, :, None]  # (GEMMs, 1, 1)
    m, set_rows, sets = op.m[:, None, :], op.set_rows[:, None, :], op.weight_sets[:, None, :]  # (GEMMs, 1, rows)
    moved = np.where(movable[:, None, None], np.round(n * j / J), 0.0)
    kept = n - moved
    on_npu = (kept > 0) & (m > 0)
    c = npu_cost(replace(op, m=m, k=k, n=kept, weight_sets=sets, rows_per_set=set_rows), hw)
    npu_t = np.where(on_npu, c.time_s, 0.0)
    sa = np.where(on_npu, c.compute_s + c.overhead_s, 0.0)
    fig = [sa, np.where(on_npu, c.memory_s, 0.0), np.where(on_npu, c.flops, 0.0),
           np.where(on_npu, c.energy_j, 0.0), np.where(on_npu, dram_stream_energy_j(hw, c.bytes), 0.0)]
    f = fc_on_pim(hw, set_rows, k, moved, op.dtype_bytes, sets, bank_timing(hw))  # column tiles exist with a PIM
    on_pim = (moved > 0) & (m > 0)
    pim = [np.where(on_pim, v, 0.0) for v in (f.time_s, f.io_s, f.flops, f.energy_j)]
    out = np.empty((len(COL_FIELDS),) + np.broadcast_shapes(sa.shape, kept.shape, m.shape))
    for i, v in enumerate(fig + pim + [np.maximum(npu_t, pim[0])]):
        out[i] = v
    return out


class ColumnTiles:
    """``CostTables.cols_stack``: the column-tile figures of every FC group and the LM head, an array
    (len(STACK_GROUPS), len(COL_FIELDS), COLUMN_STEPS + 1, max_rows + 1) read like one, whose row counts are
    costed on first use: index it with the row counts last (``tiles[g, :, j, rows]``; any other index costs every
    row count). An iteration reads only its stages' row counts; every entry is exactly the sum over the group's
    GEMMs (in op order) of :func:`_column_tiles`, whenever it is costed (tests/cost/test_tables.py)."""

    def __init__(self, op: Gemm, groups: dict[str, list[int]], movable: np.ndarray, system: SystemSpec) -> None:
        self._op, self._groups, self._movable, self._system = op, groups, movable, system
        R = op.m.shape[1]
        self.shape = (len(STACK_GROUPS), len(COL_FIELDS), COLUMN_STEPS + 1, R)
        self.ndim = 4
        self._by_rows = np.zeros((R,) + self.shape[:3])  # a row count's figures contiguous: cheap to fill
        self._a = self._by_rows.transpose(1, 2, 3, 0)  # the view every index reads
        self._a.flags.writeable = False
        self._have = np.zeros(R, dtype=bool)

    def __getitem__(self, idx):
        self._fill(idx[-1] if isinstance(idx, tuple) and len(idx) == self.ndim else slice(None))
        return self._a[idx]

    def at(self, rows) -> np.ndarray:
        """The whole array (a read-only view) with every row count in ``rows`` costed: for many reads of the
        same row counts (only those may be read from it)."""
        self._fill(rows)
        return self._a

    def __array__(self, dtype=None, copy=None):
        self._fill(slice(None))
        return self._a if dtype is None else self._a.astype(dtype)

    def _fill(self, rows) -> None:
        want = np.zeros(self.shape[3], dtype=bool)
        want[rows] = True
        sub = np.flatnonzero(want & ~self._have)
        if not sub.size:
            return
        per_gemm = _column_tiles(_rows_of(self._op, sub), self._movable, self._system)
        out = np.zeros((len(STACK_GROUPS),) + per_gemm.shape[:1] + per_gemm.shape[2:])
        for g, pos in self._groups.items():
            acc = out[STACK_GROUPS.index(g)]
            for i in pos:
                acc += per_gemm[:, i]
        out[STACK_GROUPS.index("both")] = out[STACK_GROUPS.index("qkv")] + out[STACK_GROUPS.index("rest")]
        self._by_rows[sub] = np.moveaxis(out, 3, 0)
        self._have[sub] = True


def ffn_only(op) -> bool:
    """The GEMMs ``placement.fc = 'ffn_split'`` shares with the PIM: the FFN's (AttAcc's --ffopt, layers named ff*)."""
    return op.name.startswith("ffn_")


def kv_parts(kv_heads: int, channels: int) -> int:
    """Channels one request's KV spreads over under the head-wise layout: the largest divisor of the device's
    KV heads that is at most the channel count (each part holds kv_heads / parts heads)."""
    return max(p for p in range(1, min(kv_heads, channels) + 1) if kv_heads % p == 0)


def _slopes(stacked: np.ndarray) -> np.ndarray:
    """Per column, c if the column equals c * L for every context length L (to rounding), else NaN.

    KV bytes, FLOPs, softmax FLOPs and NPU-side energy are proportional to the context, so a batch's sum of
    them is c * sum(L); the PIM-side columns carry per-row ceilings and are not."""
    L = np.arange(stacked.shape[1], dtype=float)
    out = np.full(stacked.shape[0], np.nan)
    if stacked.shape[1] > 1:
        c = stacked[:, 1]
        ok = np.isfinite(c)
        with np.errstate(invalid="ignore", over="ignore"):  # PIM columns are inf without PIM
            for r in np.flatnonzero(ok):  # np.isclose(x, y, rtol=1e-12, atol=0) spelled out (its checks cost more)
                x, y = stacked[r], c[r] * L
                ok[r] = bool(np.all((np.abs(x - y) <= 1e-12 * np.abs(y)) & np.isfinite(y) | (x == y)))
        out[ok] = c[ok]
    return out


def build_tables(model: ModelSpec, system: SystemSpec, tp: int, max_rows: int, max_len: int) -> CostTables:
    """Evaluate the cost functions over rows 0..max_rows and context lengths 0..max_len."""
    hw = system.hardware
    rows = np.arange(max_rows + 1, dtype=float)
    ops = fc_ops(model, tp, rows)
    groups = {
        "qkv": [o for o in ops if o.phase == "qkv"],
        "rest": [o for o in ops if o.phase == "rest"],
    }
    groups["head"] = [lm_head_op(model, tp, rows)]
    # every GEMM of every group costed at once (one call per cost function, :func:`_stack`), summed per group
    gemms = [o for g in ("qkv", "rest", "head") for o in groups[g] if isinstance(o, Gemm)]
    stacked = _stack(gemms, rows)
    pos = {id(o): i for i, o in enumerate(gemms)}
    gpos = {g: [pos[id(o)] for o in groups[g] if isinstance(o, Gemm)] for g in ("qkv", "rest", "head")}
    gemm_npu = npu_cost(stacked, hw)
    # every figure of a group is a sum over its ops, so the 'both' group (qkv + rest) is the sum of the two
    npu = {g: _npu_group(groups[g], system, rows, gemm_npu, pos) for g in ("qkv", "rest", "head")}
    npu["both"] = _sum(npu["qkv"], npu["rest"])
    has_pim = hw.pim is not None
    n = rows.shape[0]
    if has_pim:
        fc = _pim_stacked(system, stacked)
        pim_fc = {g: _pim_group(gpos[g], fc, n) for g in ("qkv", "rest")}
    else:
        pim_fc = {}
    ride = has_pim and system.concurrency.partial_batch_offload and \
        concurrency.get(system.concurrency.mode).rides_weight_stream
    if ride:
        fr = _pim_stacked(system, stacked, ride=True)
        pim_ride = {g: _pim_group(gpos[g], fr, n) for g in ("qkv", "rest")}
    else:
        pim_ride = {}
    for t in (pim_fc, pim_ride):
        if t:
            t["both"] = _sum(t["qkv"], t["rest"])
    # attention per context length
    lens = np.arange(max_len + 1, dtype=np.int64)
    q, kv = shard_heads(model, tp)
    a_ops = attention_ops(model, tp, lens)
    kv_bytes = 2.0 * kv * model.head_dim * model.dtype_bytes * lens
    flops = 4.0 * q * model.head_dim * lens
    softmax = a_ops[1].flops_per_element * q * lens.astype(float)
    e = hw.energy
    stream = (e.dram_act_pj_per_bit + e.dram_cell_read_pj_per_bit + e.dram_bank_to_io_pj_per_bit
              + e.dram_offchip_pj_per_bit)
    npu_energy = (kv_bytes * 8 * stream + (flops + softmax) * e.npu_pj_per_flop) * 1e-12
    # with the head-wise layout every column is one part's (kv / spread heads in one channel)
    n_ch = hw.pim_channels
    spread = kv_parts(kv, n_ch) if system.placement.kv_layout == "head" else 1
    kv_bytes, flops, softmax, npu_energy = (x / spread for x in (kv_bytes, flops, softmax, npu_energy))
    soft_in_pim = system.placement.softmax == "pim"
    if has_pim:
        r = attention_requests(hw, lens, q // spread, kv // spread, model.head_dim, model.dtype_bytes,
                               softmax_in_pim=soft_in_pim)
        soft_pj = e.pim_pj_per_flop if soft_in_pim else e.npu_pj_per_flop
        pim_s, pim_io, pim_e = r.time_s, r.io_s, r.energy_j + softmax * soft_pj * 1e-12
    else:
        pim_s = pim_io = pim_e = np.full(max_len + 1, np.inf)
    attn = AttnTable(pim_s, pim_io, kv_bytes, flops, softmax, pim_e, npu_energy)
    mem = hw.memory
    eff = hw.npu.bandwidth_efficiency
    zeros = np.zeros(max_rows + 1)
    npu_stack = np.stack([np.stack([getattr(npu[g], f) for f in NPU_FIELDS]) if g != "none"
                          else np.zeros((len(NPU_FIELDS), max_rows + 1)) for g in STACK_GROUPS])
    pim_fc_stack = np.stack([np.stack([getattr(pim_fc[g], f) for f in PIM_FC_FIELDS]) if g in pim_fc
                             else np.stack([zeros] * len(PIM_FC_FIELDS)) for g in STACK_GROUPS[:4]])
    ride_stack = np.stack([np.stack([getattr(pim_ride[g], f) for f in PIM_FC_FIELDS]) if g in pim_ride
                           else np.stack([zeros] * len(PIM_FC_FIELDS)) for g in STACK_GROUPS[:4]]) if ride else None
    cols = None
    if has_pim and (system.dbo.enabled and (system.dbo.lm_head or system.dbo.fc_columns)
                    or system.placement.fc != "npu"):
        movable = np.array([ffn_only(o) if system.placement.fc == "ffn_split" else True for o in gemms])
        cols = ColumnTiles(stacked, gpos, movable, system)
    slopes = _slopes(attn.stacked)
    mode = concurrency.get(system.concurrency.mode)
    ch_bw = hw.pim_channel_bw_bytes_per_s * eff  # one (PIM) channel's sustained bandwidth for NPU reads
    params = ModeParams(switch_s=switch_penalty_s(hw) if has_pim else 0.0, quantum_s=quantum_s(system.concurrency),
                        ch_bw_bytes_per_s=ch_bw)
    movable = (np.asarray(mode.attention_move_can_help(params, attn.pim_s, attn.kv_bytes), dtype=bool)
               if has_pim else np.zeros(max_len + 1, dtype=bool))
    return CostTables(
        npu=npu, pim_fc=pim_fc, attn=attn, attn_stacked=attn.stacked, attn_slopes=slopes,
        max_rows=max_rows, max_len=max_len, channels=n_ch, sram_bytes=hw.npu.sram_bytes,
        npu_bw_bytes_per_s=mem.bw_bytes_per_s * eff, ch_bw_bytes_per_s=ch_bw,
        vector_flops=hw.npu.vector_flops, sa_peak_flops=hw.npu.peak_flops, pim_peak_flops=hw.pim_peak_flops,
        npu_pj_per_flop=hw.energy.npu_pj_per_flop, mode=mode, mode_params=params, has_pim=has_pim, npu_stack=npu_stack, pim_fc_stack=pim_fc_stack,
        pim_fc_ride_stack=ride_stack, cols_stack=cols,
        movable_by_len=movable, attn_prop_rows=np.array([c for c in range(2, 7) if np.isfinite(slopes[c])], dtype=np.int64),
        attn_sum_rows=np.array([c for c in range(2, 7) if not np.isfinite(slopes[c])], dtype=np.int64),
        attn_flops_per_kv_byte=float(flops[1] / kv_bytes[1]) if max_len >= 1 else 0.0,
        kv_spread=spread, softmax_on_npu=not soft_in_pim,
        # attention on the NPU: one thread block per (request, query head), so n requests fill n * q SMs
        npu_attn_bw_share=occupancy(hw, rows * q),
        npu_attn_fixed_s=2 * hw.npu.op_overhead_s + hw.npu.vector_kernels.softmax.fixed_s,
    )
