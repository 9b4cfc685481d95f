"""The cost tables are exactly the per-op cost functions summed in op order, bit for bit: build_tables costs every
GEMM of the decode groups in one stacked call (``tables._stack``) and the column tiles per row count on first use
(``tables.ColumnTiles``); the reference here costs each op alone, over every row count at once, as the tables
were first written."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from librapim_cli.cost.link import link_cost
from librapim_cli.cost.npu import dram_stream_energy_j, npu_cost, vector_kernel
from librapim_cli.cost.pim import (
    bank_timing,
    fc_on_pim,
    fc_riding_stream,
    input_vectors_per_row,
    riding_mac_s,
)
from librapim_cli.cost.tables import (
    COL_FIELDS,
    COLUMN_STEPS,
    NPU_FIELDS,
    PIM_FC_FIELDS,
    STACK_GROUPS,
    ColumnTiles,
    build_tables,
    ffn_only,
)
from librapim_cli.graph.decode import fc_ops, lm_head_op
from librapim_cli.graph.ops import AllReduce, Gemm, KVWrite, Vector
from librapim_cli.inputs import setup

CASES = [  # (system, model, --set overrides): PIM with and without the ride, MoE, tp > 1, FFN column split, no PIM
    ("librapim", "gpt3-7b", []),
    ("librapim", "mixtral-8x7b", []),
    ("librapim", "llama2-70b", []),
    ("neupims", "gpt3-30b", []),
    ("attacc", "gpt3-175b", ["system.placement.fc=ffn_split"]),
    ("attacc", "mixtral-8x7b", []),
    ("npu-only", "gpt3-7b", []),
    ("gpu-only", "llama2-13b", []),
]


def ref_npu(ops, system, n: int) -> dict:
    """Each op's npu_cost / link_cost alone, summed in op order (the NPUTable fields)."""
    hw = system.hardware
    acc = {f: np.zeros(n) for f in NPU_FIELDS + ("link_bytes",)}
    for op in ops:
        if isinstance(op, AllReduce):
            c = link_cost(op, system.link, hw)
            acc["link_s"] = acc["link_s"] + c.time_s
            acc["link_bytes"] = acc["link_bytes"] + c.bytes
        else:
            c = npu_cost(op, hw)
            if isinstance(op, Gemm):
                acc["sa_s"] = acc["sa_s"] + c.compute_s + c.overhead_s
                acc["mem_s"] = acc["mem_s"] + c.memory_s
                acc["flops"] = acc["flops"] + c.flops
                acc["bytes"] = acc["bytes"] + c.bytes
                acc["dram_energy_j"] = acc["dram_energy_j"] + dram_stream_energy_j(hw, c.bytes)
            elif isinstance(op, Vector):
                acc["vec_s"] = acc["vec_s"] + c.time_s
                if vector_kernel(hw, op) is not None:
                    acc["sa_s"] = acc["sa_s"] + c.time_s
                    acc["write_s"] = acc["write_s"] + c.time_s
                acc["vec_flops"] = acc["vec_flops"] + c.flops
            elif isinstance(op, KVWrite):
                acc["write_s"] = acc["write_s"] + c.memory_s
        acc["energy_j"] = acc["energy_j"] + c.energy_j
    return acc


def ref_pim(ops, system, n: int, ride: bool) -> dict:
    """Each GEMM's fc_on_pim (or fc_riding_stream) alone, summed in op order (the PIMFCTable fields)."""
    hw = system.hardware
    bt = bank_timing(hw)
    acc = {f: np.zeros(n) for f in PIM_FC_FIELDS}
    for op in ops:
        if isinstance(op, Gemm):
            args = (hw, op.set_rows, op.k, op.n, op.dtype_bytes, op.weight_sets, bt)
            f = fc_riding_stream(*args) if ride else fc_on_pim(*args)
            for name, v in (("time_s", f.time_s), ("io_s", f.io_s), ("flops", f.flops), ("energy_j", f.energy_j)):
                acc[name] = acc[name] + v
            if ride:
                r = np.minimum(op.set_rows, input_vectors_per_row(hw))
                acc["ride_s"] = acc["ride_s"] + riding_mac_s(hw, r, op.k, op.n, op.dtype_bytes, op.weight_sets, bt)
    return acc


def ref_columns(ops, system, rows: np.ndarray, movable) -> np.ndarray:
    """Each GEMM's column split alone (NPU keeps n - round(n j / J) columns, the PIM the rest), summed in op order:
    (len(COL_FIELDS), COLUMN_STEPS + 1, rows)."""
    hw = system.hardware
    J = COLUMN_STEPS
    j = np.arange(J + 1, dtype=float)[:, None]
    out = np.zeros((len(COL_FIELDS), J + 1, rows.shape[0]))
    for op in ops:
        if not isinstance(op, Gemm):
            continue
        moved = np.round(op.n * j / J) if movable(op) else np.zeros_like(j)
        kept = op.n - moved
        on_npu = (kept > 0) & (np.asarray(op.m) > 0)
        c = npu_cost(replace(op, n=kept), hw)
        npu_t = np.where(on_npu, c.time_s, 0.0)
        fig = [np.where(on_npu, c.compute_s + c.overhead_s, 0.0), np.where(on_npu, c.memory_s, 0.0),
               np.where(on_npu, c.flops, 0.0), np.where(on_npu, c.energy_j, 0.0),
               np.where(on_npu, dram_stream_energy_j(hw, c.bytes), 0.0)]
        f = fc_on_pim(hw, op.set_rows, op.k, moved, op.dtype_bytes, op.weight_sets, bank_timing(hw))
        on_pim = (moved > 0) & (np.asarray(op.m) > 0)
        pim = [np.where(on_pim, v, 0.0) for v in (f.time_s, f.io_s, f.flops, f.energy_j)]
        for i, v in enumerate(fig + pim + [np.maximum(npu_t, pim[0])]):
            out[i] += v
    return out


def same(a, b) -> bool:
    """Bit for bit (the same float64 bytes)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


@pytest.mark.parametrize(("system", "model", "sets"), CASES)
def test_tables_are_the_per_op_sums_bit_for_bit(system: str, model: str, sets: list) -> None:
    s = setup(system, model, "sharegpt", batch=96, sets=sets)
    R = 96
    t = build_tables(s.model, s.system, s.tp, R, 50)
    rows = np.arange(R + 1, dtype=float)
    ops = fc_ops(s.model, s.tp, rows)
    groups = {"qkv": [o for o in ops if o.phase == "qkv"], "rest": [o for o in ops if o.phase == "rest"],
              "head": [lm_head_op(s.model, s.tp, rows)]}
    for g in ("qkv", "rest", "head"):
        want = ref_npu(groups[g], s.system, R + 1)
        for f, v in want.items():
            assert same(getattr(t.npu[g], f), v), (g, f)
    if t.has_pim:
        for g in ("qkv", "rest"):
            want = ref_pim(groups[g], s.system, R + 1, ride=False)
            for f, v in want.items():
                assert same(getattr(t.pim_fc[g], f), v), (g, f)
            if t.pim_fc_ride_stack is not None:
                want = ref_pim(groups[g], s.system, R + 1, ride=True)
                for i, f in enumerate(PIM_FC_FIELDS):
                    assert same(t.pim_fc_ride_stack[STACK_GROUPS.index(g), i], want[f]), (g, f)
    if t.cols_stack is None:
        assert not t.has_pim or s.system.placement.fc == "npu"
        return
    movable = ffn_only if s.system.placement.fc == "ffn_split" else (lambda op: True)
    want = {g: ref_columns(groups[g], s.system, rows, movable) for g in ("qkv", "rest", "head")}
    want["both"] = want["qkv"] + want["rest"]
    # read lazily: a few row counts (repeated, unordered), then one group's single entries, then everything
    few = np.array([R, 3, 3, 0, 57])
    for g, v in want.items():
        gi = STACK_GROUPS.index(g)
        assert same(t.cols_stack[gi, :, 5, few], v[:, 5, few].T), g
    assert same(t.cols_stack[STACK_GROUPS.index("rest"), 2, COLUMN_STEPS, 11], want["rest"][2, COLUMN_STEPS, 11])
    full = np.asarray(t.cols_stack)
    assert full.shape == t.cols_stack.shape == (len(STACK_GROUPS), len(COL_FIELDS), COLUMN_STEPS + 1, R + 1)
    for g, v in want.items():
        assert same(full[STACK_GROUPS.index(g)], v), g
    assert not full[STACK_GROUPS.index("none")].any()


def test_column_tiles_cost_only_the_rows_read(monkeypatch) -> None:
    """A read costs only the row counts it names that no earlier read costed; the figures do not depend on the
    order of reads."""
    s = setup("librapim", "gpt3-7b", "sharegpt", batch=64)
    a = build_tables(s.model, s.system, s.tp, 64, 50).cols_stack
    b = build_tables(s.model, s.system, s.tp, 64, 50).cols_stack
    assert isinstance(a, ColumnTiles)
    costed = []
    real = ColumnTiles._fill.__globals__["_column_tiles"]

    def spy(op, movable, system):
        costed.append(op.m.shape[1])
        return real(op, movable, system)

    monkeypatch.setitem(ColumnTiles._fill.__globals__, "_column_tiles", spy)
    x = a[1, :, 7, np.array([[5, 9], [9, 64]])]
    assert costed == [3]  # 5, 9 and 64
    a[0, :, :, np.array([9, 5])]
    assert costed == [3]  # nothing new
    a[0, :, :, 10]
    assert costed == [3, 1]
    whole = np.asarray(b)  # another table, every row count at once
    assert costed == [3, 1, 65]
    assert same(x, whole[1, :, 7, np.array([[5, 9], [9, 64]])])
    assert same(np.asarray(a), whole)
