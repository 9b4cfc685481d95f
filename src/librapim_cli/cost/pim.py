"""PIM cost from DRAM bank timing (docs/model/pim.md).

Data layout (written down in docs/model/pim.md):
- Each request's KV cache lives in one PIM channel (the banks one all-bank command drives: one (pseudo-)channel,
  or ``allbank_pseudo_channels`` of them in lock-step), or, with the head-wise layout, each of its parts in one.
  K: tokens striped over the channel's banks (token t in bank t mod banks), a token's K row-major within its
  bank. V: head dimensions striped over the banks, each bank row holding consecutive tokens of one dimension
  (NeuPIMs trace-generator layout, docs/sources.md#s2.4), or striped by token like K (AttAcc, docs/sources.md#s12).
- FC weights for PIM GEMV: every bank holds whole K-slices of output columns, spread evenly over all banks.

Per channel, an all-bank GEMV pays for every row: the activation (tRCD plus the group ACTs, tFAW-paced or not),
the MAC commands at the all-bank MAC interval, tRTP, and tRP; plus the input-vector broadcast into the
global buffer (GWRITE) and the result read-out (READRES) on the channel data bus, and the scores' trip to the
softmax and back (over the channel bus to the NPU, or inside the stack); banks and data moves add up, or
overlap when the PIM has a separate data path (``io_overlaps_mac``); all divided by the refresh availability
1 - tRFC/tREFI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph.ops import Attention, Gemm, Op
from ..spec.hardware import HardwareSpec
from ..workload.placement import snake_channels
from .types import Cost

NS = 1e-9
PJ = 1e-12


@dataclass(frozen=True, slots=True)
class BankTiming:
    """Per-row timing constants of one channel's all-bank PIM operation, in seconds."""

    t_act_s: float  # from the first group ACT until the last group's row is open for MACs
    t_ras_eff_s: float  # earliest PRE after the first ACT: tRAS after the last group ACT
    t_rtp_s: float
    t_rp_s: float
    t_mac_s: float  # interval between all-bank MAC commands
    t_gwrite_per_col_s: float  # GWRITE of one column burst into the global buffer
    ch_bw_bytes_per_s: float  # data bus of one PIM channel
    derate: float  # refresh availability
    t_move_per_col_s: float  # one column burst moved inside the stack (softmax buffer and back): tCCD_S
    io_overlaps_mac: bool  # data moves overlap the MAC commands (a separate data path)


def bank_timing(hw: HardwareSpec) -> BankTiming:
    """Timing constants derived from the memory and PIM specs."""
    mem, pim = hw.memory, hw.pim
    assert pim is not None, "bank_timing needs hardware with PIM"
    banks_per_rank = mem.bank_groups * mem.banks_per_group
    groups = min(pim.activate_groups_per_rank, banks_per_rank)
    banks_per_act = banks_per_rank / groups
    window_ns = mem.tFAW_ns * banks_per_act / 4.0 if pim.activate_tfaw_paced else 0.0
    spacing_ns = max(mem.tRRD_S_ns, window_ns)
    t_act_ns = mem.tRCD_ns + (groups - 1) * spacing_ns
    return BankTiming(
        t_act_s=t_act_ns * NS,
        t_ras_eff_s=(mem.tRAS_ns + (groups - 1) * spacing_ns) * NS,
        t_rtp_s=mem.tRTP_ns * NS,
        t_rp_s=mem.tRP_ns * NS,
        t_mac_s=pim.effective_mac_interval_ns * NS,
        t_gwrite_per_col_s=(mem.tCCD_S_ns + mem.tCCD_L_ns) * NS,
        ch_bw_bytes_per_s=hw.pim_channel_bw_bytes_per_s,
        derate=mem.refresh_derate,
        t_move_per_col_s=mem.tCCD_S_ns * NS,
        io_overlaps_mac=pim.io_overlaps_mac,
    )


def _rows_time(bt: BankTiming, rows, macs):
    """Time to open ``rows`` rows in all banks and issue ``macs`` MAC commands spread evenly over them."""
    rows = np.asarray(rows, dtype=float)
    per_row_macs = np.divide(macs, rows, out=np.zeros_like(rows), where=rows > 0)
    per_row = np.maximum(bt.t_act_s + per_row_macs * bt.t_mac_s + bt.t_rtp_s, bt.t_ras_eff_s) + bt.t_rp_s
    return np.where(rows > 0, rows * per_row, 0.0)


def gwrite_s(bt: BankTiming, column_bytes: int, nbytes):
    """GWRITE: ceil(bytes / column) column bursts, each tCCD_S + tCCD_L (NeuPIMs gwrite_delay = 96 for 1 KB)."""
    return np.ceil(np.asarray(nbytes, dtype=float) / column_bytes) * bt.t_gwrite_per_col_s


def input_vectors_per_row(hw: HardwareSpec) -> int:
    """Input vectors one open row serves before it must be reopened: the registers the global buffer can
    fill with row-sized input slices, min(input_registers, global_buffer_bytes // row_bytes), at least 1."""
    pim = hw.pim
    assert pim is not None
    return max(1, min(pim.input_registers, pim.global_buffer_bytes // hw.memory.row_bytes))


def mac_commands(elems, row_elems: int, lanes: int):
    """MAC commands to consume ``elems`` consecutive elements of a bank: a command never straddles two rows,
    so every full row takes ceil(row_elems / lanes) and the last partial row ceil(rest / lanes)."""
    elems = np.asarray(elems, dtype=float)
    full = np.floor(elems / row_elems)
    rest = elems - full * row_elems
    return full * (-(-row_elems // lanes)) + np.ceil(rest / lanes)


@dataclass(frozen=True, slots=True)
class AttentionRequests:
    """Per-request PIM attention figures (arrays aligned with the requests)."""

    time_s: np.ndarray  # channel-busy seconds this request costs (banks and data moves, refresh-derated)
    bank_s: np.ndarray  # activations and MACs (derated)
    io_s: np.ndarray  # GWRITE + READRES on the channel data bus, and in-stack softmax moves (derated)
    mac_cmds: np.ndarray  # all-bank MAC commands issued
    flops: np.ndarray
    kv_bytes: np.ndarray  # K + V bytes read inside the banks
    io_bytes: np.ndarray  # bytes over the channel data bus
    energy_j: np.ndarray  # banks, data moves and MAC lanes (the softmax's own FLOPs not included)
    softmax_s: np.ndarray  # of time_s: what the scores' trip to the softmax and back adds (0 when hidden)
    softmax_bytes: np.ndarray  # bytes of that trip (over the channel bus, or inside the stack)
    softmax_energy_j: np.ndarray  # of energy_j: the trip's data moves
    score_s: np.ndarray  # of time_s: the score GEMV (K rows, and the query's GWRITE when moves are serial)
    context_s: np.ndarray  # of time_s: the context GEMV (V rows, and the output's READRES when serial);
    #   score_s + context_s + softmax_s = time_s
    bank_k_s: np.ndarray  # of bank_s: the K rows (the rest is the V rows)


def attention_requests(hw: HardwareSpec, lens: np.ndarray, q_heads: int, kv_heads: int, head_dim: int,
                       dtype_bytes: int, bt: BankTiming | None = None,
                       softmax_in_pim: bool = False) -> AttentionRequests:
    """PIM time of the score + context GEMVs of each request, on the PIM channel holding its KV cache.

    ``softmax_in_pim``: the softmax runs in the stack (AttAcc), so the scores cross no channel bus: they move
    to the softmax unit and back inside the stack (one column burst per tCCD_S each way) [I]; otherwise they go
    to the NPU by READRES and come back by GWRITE (NeuPIMs).
    """
    mem, pim = hw.memory, hw.pim
    assert pim is not None
    bt = bt or bank_timing(hw)
    L = np.asarray(lens, dtype=float)
    banks = hw.pim_banks_per_channel
    row_elems = mem.row_bytes // dtype_bytes
    lanes = pim.mac_lanes_per_unit
    bpu = pim.banks_per_unit
    group = max(1, q_heads // kv_heads)
    reopen = -(-group // input_vectors_per_row(hw))
    kvdim = kv_heads * head_dim
    # score: tokens striped over banks, one token's K (kvdim elements) contiguous in its bank
    elems_pb = np.ceil(L / banks) * kvdim
    rows_k = np.ceil(elems_pb / row_elems) * reopen
    macs_k = mac_commands(elems_pb, row_elems, lanes) * group * bpu
    if pim.context_layout == "token":  # V striped by token as K: a token's V contiguous in its bank (AttAcc)
        rows_v, macs_v = rows_k, macs_k
    else:  # head dims striped over banks, rows hold consecutive tokens of one dimension (NeuPIMs)
        dims_pb = -(-kvdim // banks)
        rows_v = dims_pb * np.ceil(L / row_elems) * reopen
        macs_v = dims_pb * mac_commands(L, row_elems, lanes) * group * bpu
    bank_k, bank_v = _rows_time(bt, rows_k, macs_k), _rows_time(bt, rows_v, macs_v)
    bank = bank_k + bank_v
    q_bytes = q_heads * head_dim * dtype_bytes
    s_bytes = q_heads * L * dtype_bytes
    live = L > 0
    gw_q = gwrite_s(bt, mem.column_bytes, q_bytes)
    rd_out = q_bytes / bt.ch_bw_bytes_per_s  # READRES of the context outputs
    if softmax_in_pim:  # query in, context out over the bus; the scores move inside the stack, both ways
        trip = 2.0 * np.ceil(s_bytes / mem.column_bytes) * bt.t_move_per_col_s
        io_bytes = np.where(live, 2.0 * q_bytes, 0.0)
    else:  # and the scores out to the NPU (READRES) and back (GWRITE)
        trip = gwrite_s(bt, mem.column_bytes, s_bytes) + s_bytes / bt.ch_bw_bytes_per_s
        io_bytes = np.where(live, 2.0 * (q_bytes + s_bytes), 0.0)
    gw_q, rd_out, trip = (np.where(live, x, 0.0) for x in (gw_q, rd_out, trip))
    base_io = gw_q + rd_out
    io = base_io + trip
    if bt.io_overlaps_mac:  # the parts share the channel time without the trip in proportion to their banks
        time, without = np.maximum(bank, io), np.maximum(bank, base_io)
        k_share = np.divide(bank_k, bank, out=np.full_like(bank, 0.5), where=bank > 0)
        score, context = without * k_share, without * (1.0 - k_share)
    else:
        time, without = bank + io, bank + base_io
        score, context = bank_k + gw_q, bank_v + rd_out
    d = bt.derate
    flops = 4.0 * q_heads * head_dim * L
    kv_bytes = 2.0 * kvdim * dtype_bytes * L
    trip_bytes = np.where(live, 2.0 * s_bytes, 0.0)
    e = hw.energy
    bus = (e.dram_bank_to_io_pj_per_bit + e.dram_offchip_pj_per_bit)
    # in the stack the scores reach the buffer die's softmax unit without leaving it: no interposer I/O [I]
    trip_pj = e.dram_bank_to_io_pj_per_bit if softmax_in_pim else bus
    trip_e = trip_bytes * 8 * trip_pj * PJ
    energy = (kv_bytes * reopen * 8 * (e.dram_act_pj_per_bit + e.dram_cell_read_pj_per_bit)
              + np.where(live, 2.0 * q_bytes, 0.0) * 8 * bus + flops * e.pim_pj_per_flop) * PJ + trip_e
    return AttentionRequests(time / d, bank / d, io / d, macs_k + macs_v, flops, kv_bytes, io_bytes, energy,
                             (time - without) / d, trip_bytes, trip_e, score / d, context / d, bank_k / d)


@dataclass(frozen=True, slots=True)
class FCOnPIM:
    """PIM figures of GEMV-ing ``rows`` token rows through an FC layer (arrays over rows)."""

    time_s: np.ndarray
    bank_s: np.ndarray
    io_s: np.ndarray
    mac_cmds: np.ndarray  # per channel
    flops: np.ndarray
    internal_bytes: np.ndarray
    io_bytes: np.ndarray  # per channel
    energy_j: np.ndarray


def fc_on_pim(hw: HardwareSpec, rows, k: int, n: int, dtype_bytes: int, sets=1.0,
              bt: BankTiming | None = None) -> FCOnPIM:
    """PIM time of ``rows`` tokens through a k x n weight matrix (``sets`` matrices, MoE).

    Weights are spread over all banks of all channels; each open row is reused for up to R input vectors,
    R = min(input_registers, global_buffer_bytes // row_bytes) (at least 1: the global buffer must hold the
    R input slices that match one row), so passes = ceil(rows / R); every channel receives each input
    vector by GWRITE and returns its slice of the outputs by READRES.
    """
    mem, pim = hw.memory, hw.pim
    assert pim is not None
    bt = bt or bank_timing(hw)
    y = np.asarray(rows, dtype=float)
    sets = np.asarray(sets, dtype=float)
    row_elems = mem.row_bytes // dtype_bytes
    elems_pb = np.ceil(k * n * sets / mem.banks)
    rows_pb = np.ceil(elems_pb / row_elems)
    regs = input_vectors_per_row(hw)
    passes = np.ceil(y / regs)
    macs_per_row_vec = (-(-row_elems // pim.mac_lanes_per_unit)) * pim.banks_per_unit
    full = np.maximum(passes - 1, 0)
    last_vecs = y - full * regs
    bank = (_rows_time(bt, rows_pb * full, rows_pb * full * regs * macs_per_row_vec)
            + _rows_time(bt, np.where(y > 0, rows_pb, 0.0), rows_pb * last_vecs * macs_per_row_vec))
    in_bytes = y * sets * k * dtype_bytes  # each weight set (expert) receives its own rows' input vectors
    out_bytes = y * np.ceil(n * sets / hw.pim_channels) * dtype_bytes
    io = gwrite_s(bt, mem.column_bytes, in_bytes) + out_bytes / bt.ch_bw_bytes_per_s
    bank_d, io_d = bank / bt.derate, io / bt.derate
    flops = 2.0 * y * k * n * sets
    internal = passes * k * n * sets * dtype_bytes
    io_bytes = in_bytes + out_bytes
    e = hw.energy
    energy = (internal * 8 * (e.dram_act_pj_per_bit + e.dram_cell_read_pj_per_bit)
              + io_bytes * hw.pim_channels * 8 * (e.dram_bank_to_io_pj_per_bit + e.dram_offchip_pj_per_bit)
              + flops * e.pim_pj_per_flop) * PJ
    time = np.maximum(bank_d, io_d) if bt.io_overlaps_mac else bank_d + io_d
    return FCOnPIM(time, bank_d, io_d, y * rows_pb * macs_per_row_vec, flops, internal, io_bytes, energy)


def fc_riding_stream(hw: HardwareSpec, rows, k: int, n: int, dtype_bytes: int, sets=1.0,
                     bt: BankTiming | None = None) -> FCOnPIM:
    """PIM time of ``rows`` token rows of a k x n FC layer under Partial Batch Offloading (DEX option, Bank-Split
    PIM, docs/sources.md#s1.2): the first R = ``input_vectors_per_row`` rows ride the weight rows the NPU is
    streaming (the alternate I/O buffer holds a copy), so they pay only their MAC commands, with no activation,
    tRTP or precharge of their own; rows beyond R need passes of their own (``fc_on_pim``). GWRITE/READRES as
    ``fc_on_pim``. ``FCOnPIM.bank_s`` holds the riding MAC time plus the own passes' bank time; the riding part
    is returned separately by :func:`riding_mac_s` (the concurrency mode overlaps it with the NPU's stream).
    """
    assert hw.pim is not None
    bt = bt or bank_timing(hw)
    y = np.asarray(rows, dtype=float)
    R = input_vectors_per_row(hw)
    ride_rows = np.minimum(y, R)
    rest = fc_on_pim(hw, y - ride_rows, k, n, dtype_bytes, sets, bt)
    full = fc_on_pim(hw, y, k, n, dtype_bytes, sets, bt)  # for the I/O, FLOPs and the bytes of all rows
    ride = riding_mac_s(hw, ride_rows, k, n, dtype_bytes, sets, bt)
    e = hw.energy
    # the riding rows read the copy in the alternate I/O buffer: cell-read energy again, no activation [I]
    ride_bytes = np.where(ride_rows > 0, k * n * np.asarray(sets, dtype=float) * dtype_bytes, 0.0)
    ride_energy = (ride_bytes * 8 * e.dram_cell_read_pj_per_bit + 2.0 * ride_rows * k * n * sets * e.pim_pj_per_flop) * PJ
    rest_energy_no_io = rest.energy_j - _io_energy(hw, rest.io_bytes)
    energy = ride_energy + rest_energy_no_io + _io_energy(hw, full.io_bytes)
    bank = ride + rest.bank_s
    return FCOnPIM(bank + full.io_s, bank, full.io_s, full.mac_cmds, full.flops, rest.internal_bytes + ride_bytes,
                   full.io_bytes, energy)


def riding_mac_s(hw: HardwareSpec, ride_rows, k: int, n: int, dtype_bytes: int, sets=1.0,
                 bt: BankTiming | None = None):
    """MAC-command time of ``ride_rows`` input vectors over a k x n layer's weights spread over every bank
    (per channel, refresh-derated): rows per bank x vectors x MAC commands per row x the MAC interval."""
    mem, pim = hw.memory, hw.pim
    assert pim is not None
    bt = bt or bank_timing(hw)
    row_elems = mem.row_bytes // dtype_bytes
    elems_pb = np.ceil(k * n * np.asarray(sets, dtype=float) / mem.banks)
    rows_pb = np.ceil(elems_pb / row_elems)
    macs_per_row_vec = (-(-row_elems // pim.mac_lanes_per_unit)) * pim.banks_per_unit
    return np.asarray(ride_rows, dtype=float) * rows_pb * macs_per_row_vec * bt.t_mac_s / bt.derate


def _io_energy(hw: HardwareSpec, io_bytes):
    e = hw.energy
    return io_bytes * hw.pim_channels * 8 * (e.dram_bank_to_io_pj_per_bit + e.dram_offchip_pj_per_bit) * PJ


def part_channels(channels: np.ndarray, parts: int, n_channels: int) -> np.ndarray:
    """The channel of every part of every request under the head-wise KV layout: part p of a request placed in
    channel c sits in channel (c + p) mod C (parts after parts: all requests' part 0, then part 1, ...)."""
    ch = np.asarray(channels, dtype=np.int64)
    return (np.tile(ch, parts) + np.repeat(np.arange(parts), ch.shape[0])) % n_channels


def attention_parts(hw: HardwareSpec, lens: np.ndarray, q_heads: int, kv_heads: int, head_dim: int,
                    dtype_bytes: int, channels: np.ndarray | None = None, kv_parts: int = 1,
                    softmax_in_pim: bool = False) -> dict[str, Cost]:
    """The PIM side of a set of requests' attention as three costs, each on its slowest PIM channel: 'score' (K rows
    and the query's GWRITE), 'context' (V rows and the outputs' READRES) and 'softmax' (what the scores' trip to
    the softmax and back adds: over the channel bus to the NPU and back, or inside the stack). On one channel the
    three add up to its time. When data moves overlap the MACs (``io_overlaps_mac``), score and context share the
    channel's time without the trip in proportion to their bank time.

    ``kv_parts`` > 1: each request's KV heads are split into that many parts of kv_heads / kv_parts heads, part p
    in channel (c + p) mod C (``part_channels``). ``channels``: default the snake least-loaded placement.
    """
    n_ch = hw.pim_channels
    lens = np.asarray(lens, dtype=np.int64)
    ch = snake_channels(lens, n_ch) if channels is None else np.asarray(channels, dtype=np.int64)
    P = max(1, kv_parts)
    r = attention_requests(hw, lens, q_heads // P, kv_heads // P, head_dim, dtype_bytes,
                           softmax_in_pim=softmax_in_pim)
    rows_ch = part_channels(ch, P, n_ch)

    def per_ch(x):
        return np.bincount(rows_ch, weights=np.tile(x, P), minlength=n_ch)

    def worst(x, bank=None):
        """The part's time on its slowest channel, and that channel's bank time of the part."""
        v = per_ch(x)
        if not v.size:
            return 0.0, 0.0
        c = int(np.argmax(v))
        return float(v[c]), (float(per_ch(bank)[c]) if bank is not None else 0.0)

    sc, bk = worst(r.score_s, r.bank_k_s)
    cx, bv = worst(r.context_s, r.bank_s - r.bank_k_s)
    sm, _ = worst(r.softmax_s)
    e_rest = (float(r.energy_j.sum()) - float(r.softmax_energy_j.sum())) * P / 2.0
    fl, kvb = float(r.flops.sum()) * P / 2.0, float(r.kv_bytes.sum()) * P / 2.0
    return {
        "score": Cost("pim", sc, 0.0, max(0.0, sc - bk), min(bk, sc), 0.0, 0.0, fl, kvb, e_rest),
        "context": Cost("pim", cx, 0.0, max(0.0, cx - bv), min(bv, cx), 0.0, 0.0, fl, kvb, e_rest),
        "softmax": Cost("pim", sm, 0.0, sm, 0.0, 0.0, 0.0, 0.0, float(r.softmax_bytes.sum()) * P,
                        float(r.softmax_energy_j.sum()) * P),
    }


def pim_cost(op: Op, hw: HardwareSpec, channels: np.ndarray | None = None, kv_parts: int = 1,
             softmax_in_pim: bool = False) -> Cost:
    """Time, FLOPs, bytes and energy of ``op`` on the PIM units of ``hw``.

    Attention: each request runs on the PIM channel holding its KV (``channels``; default: the snake
    least-loaded placement; ``kv_parts``: the head-wise layout, ``attention_parts``); the slowest channel sets the
    time; the op gets its part of it (the scores' trip to the softmax is ``attention_parts(...)['softmax']``).
    Gemm: FC rows offloaded to PIM.
    """
    if hw.pim is None:
        raise TypeError(f"hardware '{hw.name}' has no PIM")
    if isinstance(op, Attention):
        return attention_parts(hw, op.context_lens, op.q_heads, op.kv_heads, op.head_dim, op.dtype_bytes,
                               channels, kv_parts, softmax_in_pim)[op.part]
    if isinstance(op, Gemm):
        f = fc_on_pim(hw, op.set_rows, op.k, op.n, op.dtype_bytes, op.weight_sets)
        return Cost("pim", _s(f.time_s), 0.0, _s(f.io_s), _s(f.bank_s), 0.0, 0.0, _s(f.flops),
                    _s(f.internal_bytes), _s(f.energy_j))
    raise TypeError(f"pim_cost: PIM runs GEMV work (attention, FC rows), not {type(op).__name__}")


def _s(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a
