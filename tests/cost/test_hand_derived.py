"""Hand-derived cost figures on the NeuPIMs-class preset (HBM2-PIM) and an HBM3-PIM built from the AttAcc preset.

The ``hbm3`` fixture is the attacc-hbm3pim preset in one memory with the PIM options a NeuPIMs-style controller
has (power-limited MAC interval, four group-ACTs per rank under tFAW, one pseudo-channel per all-bank command,
V striped by dimension, data moves serial with the MACs, tRTP = nRTPS): it exercises the generic bank-timing
paths at HBM3 numbers. The preset's own AttAcc options are checked against AttAcc in tests/peers/test_attacc.py.

Every expected number is worked out in the comment next to it from the preset values (which cite
docs/sources.md#s2.2 to #s2.5 and #s3.3) and the layouts written down in
librapim_cli.cost.pim's module docstring -- not from the code under test. Shapes: gpt3-7b at tp=4
(d=4096, 32 heads -> 8 query heads and 8 KV heads per shard, head_dim 128, FFN 16384 -> 4096 per shard).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from librapim_cli.cost import (
    attention_requests,
    bank_timing,
    fc_on_pim,
    link_cost,
    npu_cost,
    pim_cost,
    systolic_cycles,
)
from librapim_cli.graph.decode import attention_ops, fc_ops, shard_heads
from librapim_cli.graph.ops import AllReduce, Attention, Gemm, Vector
from librapim_cli.spec import load_hardware, load_model, load_system

REL = 1e-9
NS = 1e-9


@pytest.fixture(scope="module")
def neupims():
    return load_hardware("neupims-npu-hbm2pim")


@pytest.fixture(scope="module")
def hbm3():
    hw = load_hardware("attacc-hbm3pim")
    pim = hw.pim.model_copy(update={"power_limited": True, "activate_groups_per_rank": 4, "activate_tfaw_paced": True,
                                    "allbank_pseudo_channels": 1, "context_layout": "dim", "io_overlaps_mac": False})
    npu = hw.npu.model_copy(update={"thread_blocks": type(hw.npu.thread_blocks)(), "vector_kernels": type(hw.npu.vector_kernels)()})
    return hw.model_copy(update={"pim": pim, "npu": npu, "xpu_memory": None,
                                 "memory": hw.memory.model_copy(update={"tRTP_ns": 4.614})})


@pytest.fixture(scope="module")
def gpt7b():
    return load_model("gpt3-7b")


def approx(x, rel=REL):
    return pytest.approx(x, rel=rel)


# ---- peak figures (docs/sources.md#s2.2 "Derived peak numbers") -----------------------------------------------------
def test_neupims_peaks(neupims) -> None:
    # NPU: 1 array x 128 x 128 MACs x 2 FLOP x 1 GHz = 32.768 TFLOPS
    assert neupims.npu.peak_flops == approx(32.768e12)
    # HBM2: 32 channels x 128 bit x 2 Gb/s / 8 = 1024 GB/s
    assert neupims.memory.channels == 32
    assert neupims.memory.bw_bytes_per_s == approx(1024e9)
    # PIM: 32 ch x 32 banks = 1024 units x 16 lanes x 2 FLOP / 2 ns = 16.384 TFLOPS
    assert neupims.memory.banks == 1024
    assert neupims.pim_peak_flops == approx(16.384e12)
    # internal: 1024 banks x 32 B / 2 ns = 16 GB/s/bank = 16.384 TB/s = 16x external
    assert neupims.pim_internal_bw_bytes_per_s == approx(16.384e12)
    assert neupims.pim_bw_ratio == approx(16.0)
    # ridge: 32.768e12 / 1.024e12 = 32 FLOP/B
    assert neupims.ridge_flop_per_byte == approx(32.0)


def test_hbm3_peaks(hbm3) -> None:
    # xPU: 432 arrays x 16 x 16 x 2 FLOP x 1.41 GHz = 311.86944 TFLOPS
    assert hbm3.npu.peak_flops == approx(311.86944e12)
    # 5 stacks x 16 ch x 2 pCH = 160 pseudo-channels x 32 bit x 5.2 Gb/s / 8 = 3328 GB/s
    assert hbm3.memory.channels == 160
    assert hbm3.memory.bw_bytes_per_s == approx(3328e9)
    # power-limited MACAB every nCCDAB 6 x 0.769 = 4.614 ns; 160 x 32 = 5120 banks x 16 lanes x 2 / 4.614 ns
    assert hbm3.memory.banks == 5120
    assert hbm3.pim_peak_flops == approx(5120 * 16 * 2 / 4.614e-9)
    # the no-power-limit interval (4 x 0.769 = 3.076 ns) gives exactly 16x the external bandwidth (docs/sources.md#s3.2)
    free = hbm3.model_copy(update={"pim": hbm3.pim.model_copy(update={"power_limited": False})})
    assert free.pim_bw_ratio == approx(5120 * 32 / 3.076e-9 / 3328e9)
    assert free.pim_bw_ratio == approx(16.0, rel=1e-3)


# ---- NPU ------------------------------------------------------------------------------------------------------
def test_gpt7b_tp4_shapes(gpt7b) -> None:
    # per shard: 32/4 = 8 query heads, 8 KV heads; QKV GEMM k = 4096, n = (8 + 2*8) * 128 = 3072
    assert shard_heads(gpt7b, 4) == (8, 8)
    qkv = [o for o in fc_ops(gpt7b, 4, 64.0) if o.name == "qkv"][0]
    assert (qkv.k, qkv.n, qkv.dtype_bytes) == (4096, 3072, 2)
    # weights 4096 x 3072 x 2 B = 25 165 824 B
    assert float(qkv.weight_bytes) == 25_165_824


@pytest.mark.parametrize("m, cycles", [
    # tiles = ceil(4096/128) * ceil(3072/128) = 32 * 24 = 768 on one array; each tile holds the array for
    # max(m, 128) cycles (the next 128-row weight preload hides behind it); fill/drain once 128+128-2 = 254
    (1, 768 * 128 + 254),     # 98 558 cycles: a GEMV still pays the 128-cycle weight preload per tile
    (64, 768 * 128 + 254),    # 98 558
    (256, 768 * 256 + 254),   # 196 862
])
def test_npu_qkv_gemm_neupims(neupims, m: int, cycles: int) -> None:
    op = Gemm("qkv", "qkv", float(m), 4096, 3072, 2)
    assert float(systolic_cycles(neupims, m, 4096, 3072)) == cycles
    c = npu_cost(op, neupims)
    # compute = cycles / 1 GHz / compute_efficiency 1.0
    assert c.compute_s == approx(cycles * 1e-9)
    # memory = 25 165 824 B / (1024e9 x 0.85) = 28.912941 us
    assert c.memory_s == approx(25_165_824 / (1024e9 * 0.85))
    assert c.memory_s == approx(28.912941e-6, rel=1e-6)
    assert c.time_s == approx(max(c.compute_s, c.memory_s))
    assert c.bound == "compute"  # 98.6 us (or 196.9 us) of array time vs 28.9 us of weight streaming
    assert c.flops == approx(2.0 * m * 4096 * 3072)
    assert c.bytes == approx(25_165_824)


@pytest.mark.parametrize("m, per_array_tiles, rows_term, bound", [
    # 16x16 arrays: tiles = ceil(4096/16) * ceil(3072/16) = 256 * 192 = 49 152, over 432 arrays:
    # ceil(49152 / 432) = 114 tiles per array; fill/drain 16 + 16 - 2 = 30 cycles
    (64, 114, 64, "memory"),    # 114*64 + 30 = 7 326 cyc / 1.41 GHz / 0.8 = 6.4947 us < 8.8963 us of weights
    (256, 114, 256, "compute"),  # 114*256 + 30 = 29 214 cyc -> 25.8989 us > 8.8963 us
])
def test_npu_qkv_gemm_hbm3(hbm3, m: int, per_array_tiles: int, rows_term: int, bound: str) -> None:
    c = npu_cost(Gemm("qkv", "qkv", float(m), 4096, 3072, 2), hbm3)
    cycles = per_array_tiles * rows_term + 30
    assert c.compute_s == approx(cycles / 1.41e9 / 0.8)
    # 25 165 824 B / (3328e9 x 0.85) = 8.896290 us
    assert c.memory_s == approx(25_165_824 / (3328e9 * 0.85))
    assert c.time_s == approx(max(c.compute_s, c.memory_s))
    assert c.bound == bound


def test_npu_vector_and_attention_neupims(neupims) -> None:
    # LayerNorm over 64 rows x 4096: 5 FLOP/element -> 1 310 720 FLOP on 8 x 128 lanes at 1 GHz (1.024e12/s)
    c = npu_cost(Vector("layernorm_1", "qkv", 64 * 4096.0, 5.0), neupims)
    assert c.time_s == approx(1_310_720 / 1.024e12)  # 1.28 us
    assert c.bound == "compute"
    # attention score GEMV of one request with L = 300 on the NPU: K bytes = 8 heads x 128 x 2 B x 300 = 614 400 B
    # streamed at 1024e9 x 0.85 -> 0.70588 us; MACs 2 x 8 x 128 x 300 = 614 400 FLOP on the vector units -> 0.6 us
    op = Attention("attn_score", "score", np.array([300]), 8, 8, 128, 2)
    c = npu_cost(op, neupims)
    assert c.memory_s == approx(614_400 / (1024e9 * 0.85))
    assert c.compute_s == approx(614_400 / 1.024e12)
    assert c.time_s == approx(c.memory_s)
    assert c.bound == "memory"


# ---- PIM bank timing ------------------------------------------------------------------------------------------
def test_bank_timing_neupims(neupims) -> None:
    bt = bank_timing(neupims)
    # 16 banks per rank in 4 group-ACTs (G_ACT per bank group), each G_ACT paced by tFAW: spacing = max(tRRD_S 4,
    # tFAW 30 x 4 banks / 4) = 30 ns; t_act = tRCD 14 + 3 x 30 = 104 ns (last group open for MACs)
    assert bt.t_act_s == approx(104 * NS)
    # earliest PRE: tRAS after the last group ACT = 34 + 90 = 124 ns
    assert bt.t_ras_eff_s == approx(124 * NS)
    assert bt.t_rtp_s == approx(4 * NS)
    assert bt.t_rp_s == approx(14 * NS)
    # COMP every max(burst 2 cycles, tCCD_S) = 2 ns (NewtonSim)
    assert bt.t_mac_s == approx(2 * NS)
    # GWRITE: (tCCD_S + tCCD_L) per 32-B column = 3 ns -> 96 ns per 1 KB row (NeuPIMs gwrite_delay = 96)
    assert bt.t_gwrite_per_col_s == approx(3 * NS)
    assert 32 * bt.t_gwrite_per_col_s == approx(96 * NS)
    # channel bus: 128 bit x 2 Gb/s / 8 = 32 GB/s; refresh availability 1 - 260/3900 = 14/15
    assert bt.ch_bw_bytes_per_s == approx(32e9)
    assert bt.derate == approx(14 / 15)


def test_bank_timing_hbm3(hbm3) -> None:
    bt = bank_timing(hbm3)
    # spacing = max(tRRD_S 1.538, tFAW 29.991 x 4/4) = 29.991; t_act = 14.611 + 3 x 29.991 = 104.584 ns
    assert bt.t_act_s == approx(104.584 * NS)
    assert bt.t_ras_eff_s == approx((34.605 + 3 * 29.991) * NS)  # 124.578 ns
    assert bt.t_mac_s == approx(4.614 * NS)  # power-limited nCCDAB 6 cycles
    assert bt.t_gwrite_per_col_s == approx((1.538 + 3.076) * NS)
    assert bt.ch_bw_bytes_per_s == approx(32 * 5.2e9 / 8)  # 20.8 GB/s per pseudo-channel
    assert bt.derate == approx(1 - 350 / 3900)


def _row_ns(t_act, macs_per_row, t_mac, t_rtp, t_ras_eff, t_rp):
    """One all-bank row: max(ACTs + MACs + tRTP, tRAS after the last ACT) + tRP."""
    return max(t_act + macs_per_row * t_mac + t_rtp, t_ras_eff) + t_rp


def test_attention_one_request_neupims(neupims) -> None:
    # one request, L = 300, 8 query / 8 KV heads, head_dim 128: KV dim per token 1024, 32 banks, 512 FP16 per row.
    # K (score): tokens striped over 32 banks -> ceil(300/32) = 10 tokens x 1024 = 10 240 elements per bank
    #   rows_K = ceil(10240 / 512) = 20, MACs_K = ceil(10240 / 16) = 640 -> 32 per row
    # V (context): 1024 dims / 32 banks = 32 dims per bank, each dim's 300 tokens in ceil(300/512) = 1 row
    #   rows_V = 32 x 1 = 32, MACs_V = 32 x ceil(300/16) = 32 x 19 = 608 -> 19 per row
    # (NeuPIMs estimator, docs/sources.md#s2.4: logits 2 chunks x 10 tiles = 20, attend 8 chunks x 4 tiles = 32 rows)
    k_row = _row_ns(104, 32, 2, 4, 124, 14)  # max(104 + 64 + 4, 124) + 14 = 186 ns
    v_row = _row_ns(104, 19, 2, 4, 124, 14)  # max(104 + 38 + 4, 124) + 14 = 160 ns
    assert (k_row, v_row) == (186, 160)
    bank_ns = 20 * k_row + 32 * v_row  # 3720 + 5120 = 8840 ns
    # io: GWRITE q (8 x 128 x 2 = 2048 B = 64 columns x 3 ns = 192 ns) + GWRITE scores (8 x 300 x 2 = 4800 B
    # = 150 columns x 3 ns = 450 ns) + READRES of scores and context (4800 + 2048 B) / 32 GB/s = 214 ns
    io_ns = 192 + 450 + 6848 / 32.0
    assert io_ns == 856
    r = attention_requests(neupims, np.array([300]), 8, 8, 128, 2)
    derate = 14 / 15
    assert r.bank_s[0] == approx(bank_ns * NS / derate)  # 9.4714 us
    assert r.io_s[0] == approx(io_ns * NS / derate)  # 0.9171 us
    assert r.time_s[0] == approx((bank_ns + io_ns) * NS / derate)  # 10.3886 us
    assert r.mac_cmds[0] == 640 + 608
    assert r.flops[0] == 4 * 8 * 128 * 300  # score + context: 2 x 2 x q x dh x L
    assert r.kv_bytes[0] == 2 * 1024 * 2 * 300  # K + V
    assert r.io_bytes[0] == 2 * (2048 + 4800)
    # the scores' round trip to the NPU's softmax: GWRITE back 450 ns + READRES out 4800 B / 32 GB/s = 150 ns
    trip_ns = 450 + 4800 / 32.0
    assert r.softmax_s[0] == approx(trip_ns * NS / derate)
    assert r.softmax_bytes[0] == 2 * 4800
    # pim_cost gives each op its part of the channel time: score = K rows 3720 + GWRITE(q) 192 = 3912 ns, context =
    # V rows 5120 + READRES of the outputs 2048 B / 32 GB/s = 64 ns = 5184 ns (+ the trip's 600 ns: 9696 ns in all)
    ops = attention_ops(load_model("gpt3-7b"), 4, np.array([300]))
    for op, part_ns, bank_part_ns in ((ops[0], 3720 + 192, 3720), (ops[2], 5120 + 64, 5120)):
        c = pim_cost(op, neupims)
        assert c.time_s == approx(part_ns * NS / derate)
        assert c.bank_s == approx(bank_part_ns * NS / derate)
        assert c.memory_s == approx((part_ns - bank_part_ns) * NS / derate)
        assert c.bound == "bank-timing"
    assert 3912 + 5184 + trip_ns == bank_ns + io_ns


def test_attention_one_request_hbm3(hbm3) -> None:
    # same layout, 32 banks per pseudo-channel, 1 KB rows: rows_K 20 (32 MACs/row), rows_V 32 (19 MACs/row)
    bt = dict(t_act=14.611 + 3 * 29.991, t_mac=4.614, t_rtp=4.614, t_ras_eff=34.605 + 3 * 29.991, t_rp=14.611)
    k_row = _row_ns(bt["t_act"], 32, bt["t_mac"], bt["t_rtp"], bt["t_ras_eff"], bt["t_rp"])  # 271.457 ns
    v_row = _row_ns(bt["t_act"], 19, bt["t_mac"], bt["t_rtp"], bt["t_ras_eff"], bt["t_rp"])  # 211.475 ns
    assert k_row == approx(271.457)
    assert v_row == approx(211.475)
    gw = 1.538 + 3.076  # 4.614 ns per 32-B column
    io_ns = 64 * gw + 150 * gw + 6848 / 20.8  # 295.296 + 692.1 + 329.231
    derate = 1 - 350 / 3900
    r = attention_requests(hbm3, np.array([300]), 8, 8, 128, 2)
    assert r.bank_s[0] == approx((20 * k_row + 32 * v_row) * NS / derate)  # 13.3988 us
    assert r.io_s[0] == approx(io_ns * NS / derate)  # 1.4464 us
    assert r.mac_cmds[0] == 1248


def test_fc_on_pim_neupims(neupims) -> None:
    # QKV weights 4096 x 3072 spread over all 1024 banks: 12 288 elements = 24 rows of 512 per bank.
    # Each row: 512 / 16 = 32 MACs per input vector; one input register -> one pass per vector.
    row = _row_ns(104, 32, 2, 4, 124, 14)  # 186 ns
    derate = 14 / 15
    one = fc_on_pim(neupims, 1, 4096, 3072, 2)
    # bank: 24 rows x 186 ns = 4464 ns
    assert float(one.bank_s) == approx(24 * row * NS / derate)  # 4.7829 us
    # io: GWRITE the 4096 x 2 = 8192 B input (256 columns x 3 ns = 768 ns) + READRES this channel's outputs
    # ceil(3072 / 32 channels) = 96 x 2 B = 192 B / 32 GB/s = 6 ns
    assert float(one.io_s) == approx((768 + 6) * NS / derate)
    assert float(one.time_s) == approx((24 * row + 774) * NS / derate)  # 5.6121 us
    assert float(one.mac_cmds) == 24 * 32
    assert float(one.internal_bytes) == 25_165_824
    # 8 rows: 8 passes (one input register), every term x 8
    eight = fc_on_pim(neupims, 8, 4096, 3072, 2)
    assert float(eight.time_s) == approx(8 * float(one.time_s))  # 44.897 us
    assert float(eight.internal_bytes) == 8 * 25_165_824
    c = pim_cost(Gemm("qkv", "qkv", 8.0, 4096, 3072, 2), neupims)
    assert c.time_s == approx(float(eight.time_s))
    assert c.bound == "bank-timing"
    # a decode GEMV is ~17x faster on the PIM than on the single 128x128 array (98.6 us, weight-preload bound)
    assert float(one.time_s) < npu_cost(Gemm("qkv", "qkv", 1.0, 4096, 3072, 2), neupims).time_s / 10


def test_fc_on_pim_hbm3(hbm3) -> None:
    # 12 582 912 elements / 5120 banks = 2457.6 -> 2458 per bank -> ceil(2458/512) = 5 rows per bank
    bt = dict(t_act=14.611 + 3 * 29.991, t_mac=4.614, t_rtp=4.614, t_ras_eff=34.605 + 3 * 29.991, t_rp=14.611)
    derate = 1 - 350 / 3900
    gw = 1.538 + 3.076
    one = fc_on_pim(hbm3, 1, 4096, 3072, 2)
    row1 = _row_ns(bt["t_act"], 32, bt["t_mac"], bt["t_rtp"], bt["t_ras_eff"], bt["t_rp"])  # 271.457 ns
    # io: 8192 B in = 256 columns x 4.614 ns; out ceil(3072/160) = 20 x 2 B = 40 B / 20.8 GB/s
    assert float(one.time_s) == approx((5 * row1 + 256 * gw + 40 / 20.8) * NS / derate)  # 2.7909 us
    # 8 rows: 8 input registers, but the 2 KB global buffer holds only 2 row-sized (1 KB) input slices, so an
    # open row serves 2 vectors: 4 passes of 2 x 32 = 64 MACs per row
    eight = fc_on_pim(hbm3, 8, 4096, 3072, 2)
    row2 = _row_ns(bt["t_act"], 64, bt["t_mac"], bt["t_rtp"], bt["t_ras_eff"], bt["t_rp"])
    assert float(eight.bank_s) == approx(4 * 5 * row2 * NS / derate)
    assert float(eight.io_s) == approx((8 * 256 * gw + 8 * 40 / 20.8) * NS / derate)  # 10.3980 us
    assert float(eight.internal_bytes) == 4 * 25_165_824  # weights read once per pass
    # 9 rows: four passes of 2 plus a pass of 1
    nine = fc_on_pim(hbm3, 9, 4096, 3072, 2)
    assert float(nine.bank_s) == approx(5 * (4 * row2 + row1) * NS / derate)
    assert float(nine.internal_bytes) == 5 * 25_165_824


# ---- link -----------------------------------------------------------------------------------------------------
def test_link_allreduce(neupims) -> None:
    link = load_system("librapim").link  # 300 GB/s per direction, 1 us per hop
    # payload of 64 rows x 4096 x 2 B = 524 288 B; a ring over 4 devices sends 2 x 3/4 of it = 786 432 B
    op = AllReduce("allreduce_attn", "rest", 64 * 4096 * 2.0, 4)
    assert op.bytes == approx(786_432)
    c = link_cost(op, link, neupims)
    # 786 432 / 300e9 = 2.62144 us + 2 x 3 hops x 1 us = 8.62144 us
    assert c.time_s == approx(786_432 / 300e9 + 6e-6)
    assert c.link_s == approx(c.time_s)
    assert c.bound == "link"
    # one device: nothing to reduce
    assert link_cost(AllReduce("x", "rest", 1e6, 1), link, neupims).time_s == 0.0


def test_refresh_derate_matches_sources(neupims, hbm3) -> None:
    # docs/sources.md#s9.3: 6.7 % for HBM2 (260/3900) and 9 % for HBM3 8 Gb (350/3900)
    assert 1 - neupims.memory.refresh_derate == approx(260 / 3900)
    assert math.isclose(1 - hbm3.memory.refresh_derate, 0.0897, rel_tol=1e-3)
