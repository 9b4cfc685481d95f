"""NeuPIMs (casys-kaist/NeuPIMs), op by op (docs/model/validation.md, 'NeuPIMs').

The reference is NeuPIMs' PIM latency estimator, ``Request.estimate_latency``
(``NP:trace-generator/get_distributions.py:L158-L172`` at 1092220f2bf9f7ca96fd2fa939a5760e4f635047), with its memory
constants (``L53-L59``: 32 banks per channel, 512 FP16 per row, gwrite_latency 100, gemv_latency 184 per tile):

    logit  = ceil(E' / 512) x (100 + ceil(L / 32) x 184)                 E' = E / tp
    attend = ceil(L / 512) x nh x (100 + ceil(dk / 32) x 184)

in DRAM cycles of NeuPIMs' 1 GHz HBM2 (``configs/memory_configs/neupims.json`` dram_freq 1000), so ns. The estimator
has no refresh and no READRES term; our figures are compared before the refresh derate, and our READRES (the
scores and the outputs read out) is left out of the comparison. Its attend term counts every head of the model
(nh = 32) while the logit term divides E by tp; a channel holds the tp shard's nh / tp heads, so the attend term is
compared at nh / tp (the estimator's own totals, R13 = 29896 / 65480 / 130760 at L = 256 / 1024 / 2048, follow).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from librapim_cli.cost import attention_requests, bank_timing
from librapim_cli.cost.pim import gwrite_s
from librapim_cli.spec import load

NS = 1e-9


def estimator(L: int, E: int = 4096, tp: int = 4, nh: int = 32, dk: int = 128) -> tuple[int, int]:
    """(logit, attend) of NP:trace-generator/get_distributions.py:L158-L172, for ``nh`` heads in the attend term."""
    logit = math.ceil(E / tp / 512) * (100 + math.ceil(L / 32) * 184)
    attend = math.ceil(L / 512) * nh * (100 + math.ceil(dk / 32) * 184)
    return logit, attend


def test_estimator_reproduces_r13() -> None:
    # 7B tp 4 (notes R13, checked by running the function): 29896 / 65480 / 130760 with the model's 32 heads
    assert [sum(estimator(L)) for L in (256, 1024, 2048)] == [29896, 65480, 130760]


def test_row_and_gwrite_timing() -> None:
    """A full row: our max(t_act 104 + 32 x 2 + tRTP 4, t_ras 124) + tRP 14 = 186 ns against gemv_latency 184: we
    count the MAC interval of the row's last COMP before tRTP, the estimator does not (one MAC interval, 1.1 %).
    GWRITE of a 1 KB row: (tCCD_S + tCCD_L) x 32 = 96 ns (NewtonSim gwrite_delay, docs/sources.md#s2.3) against the
    estimator's rounded 100."""
    hw = load("hardware", "neupims-npu-hbm2pim")
    bt = bank_timing(hw)
    row = max(bt.t_act_s + 32 * bt.t_mac_s + bt.t_rtp_s, bt.t_ras_eff_s) + bt.t_rp_s
    assert row / NS == pytest.approx(186) and row / NS - bt.t_mac_s / NS == pytest.approx(184)
    assert float(gwrite_s(bt, 32, 1024)) / NS == pytest.approx(96)


@pytest.mark.parametrize("L", [512, 1024, 1536, 2048])
def test_logit_and_attend_per_part(L) -> None:
    """GPT-3 7B, tp 4 (8 heads of 128 per shard, E' = 1024): per request on its channel.

    logit <-> our score part: 2 ceil(L/32) K rows (the estimator's chunks x tiles, to the row) + GWRITE of the query
    (2 KB = its 2 chunks). attend <-> our V rows (32 dimensions per bank x ceil(L/512) rows = chunks x tiles at
    nh / tp) + GWRITE of the softmaxed scores (8 x L x 2 B = its chunks of 1 KB). Within 1.5 %: +1.1 % per row
    (above), -4 % per GWRITE."""
    hw = load("hardware", "neupims-npu-hbm2pim")
    bt = bank_timing(hw)
    r = attention_requests(hw, np.array([L]), 8, 8, 128, 2)
    d = bt.derate
    logit, attend = estimator(L, nh=32 // 4)
    score_ns = r.score_s[0] * d / NS
    rd_out = 8 * 128 * 2 / bt.ch_bw_bytes_per_s
    attend_ns = (r.context_s[0] * d - rd_out + float(gwrite_s(bt, 32, 8 * L * 2))) / NS
    assert score_ns == pytest.approx(logit, rel=0.015)
    assert attend_ns == pytest.approx(attend, rel=0.015)
    # the row counts themselves agree exactly: 2 ceil(L/32) K rows and 32 ceil(L/512) V rows per bank
    assert r.mac_cmds[0] == 2 * math.ceil(L / 32) * 32 + 32 * math.ceil(L / 512) * 32


def test_partial_rows_at_short_contexts() -> None:
    """At L = 256 a V row is half full: we issue 16 COMPs to it, the estimator charges a whole 184-cycle tile and a
    whole 1 KB GWRITE per 512-token chunk, so its attend term (6688 at nh / tp) is above ours (a known difference:
    the estimator only balances channels, docs/sources.md#s2.4); the logit term still agrees."""
    hw = load("hardware", "neupims-npu-hbm2pim")
    bt = bank_timing(hw)
    r = attention_requests(hw, np.array([256]), 8, 8, 128, 2)
    logit, attend = estimator(256, nh=8)
    assert r.score_s[0] * bt.derate / NS == pytest.approx(logit, rel=0.015)
    ours = (r.context_s[0] * bt.derate - 2048 / bt.ch_bw_bytes_per_s + float(gwrite_s(bt, 32, 4096))) / NS
    assert ours < attend
    # ours: 32 V rows of max(104 + 16 x 2 + 4, 124) + 14 = 154 ns, + GWRITE of 4 KB = 128 x 3 ns
    assert ours == pytest.approx(32 * 154 + 384)


def test_one_channel_per_request_by_default() -> None:
    # NeuPIMs places each request's whole KV in one channel (Request.set_channel; docs/sources.md#s2.4)
    s = load("system", "neupims")
    assert s.placement.kv_layout == "request" and s.placement.softmax == "npu"
    assert s.hardware.pim.allbank_pseudo_channels == 1 and s.hardware.pim_channels == s.hardware.memory.channels
