"""Per-op costs of one decode iteration, as the schedule ran it (docs/model/schedule.md, 'Per-op breakdown').

The stage plan's instances of one iteration, for the schedule candidate it ran (``schedule.plan``), are
expanded into the ops of the op graph, each costed on its home device under the system's static placement
(before DBO moves anything):

- FC GEMMs, vector ops (norms, activations, residuals) and the new tokens' K/V writes (``kv_write``) of a
  stage's FC group, over that stage's token rows: the NPU (``cost.npu_cost``); the share of a group's weights
  the previous sub-batch left in SRAM is not streamed again (the same SRAM reuse as the engine);
- decode attention (score and context GEMVs) of the stage's sub-batch: the PIM when attention's home is
  the PIM (``cost.attention_parts`` with the requests' KV channels and the head-wise layout's parts, so the
  slowest channel sets the time), else the NPU; the softmax runs on the NPU's vector units, and the scores'
  round trip to it over the channel bus is its own record (``softmax_transfer``, PIM), or, with the softmax in
  the stack (``placement.softmax = 'pim'``), the softmax is a PIM record (the in-stack moves it adds);
- a GPU vector kernel's fixed time (``npu.vector_kernels``) is its own record, ``<op>_fixed`` (bound 'fixed'),
  beside the op's own record (compute and traffic);
- all-reduces: the device-to-device link (``cost.link_cost``);
- the LM head of every micro-batch on the NPU, and with pipeline parallelism the activation hand-off.

:func:`op_records` returns one :class:`OpRecord` per op per stage instance (figures of one execution, one
device); :func:`breakdown_rows` sums them per op name into the rows ``simulate --breakdown`` prints, with
``share`` = op time / the iteration's simulated time (with DBO when the system runs it). Shares are not a
partition: they sum above 1 when stages overlap NPU and PIM work, and below 1 when contention for the banks
stretches a stage beyond its ops' standalone costs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cost.link import link_cost
from ..cost.npu import npu_cost, vector_kernel
from ..cost.pim import attention_parts
from ..cost.types import BOUNDS, Cost
from ..graph.decode import attention_ops, fc_ops, lm_head_op
from ..graph.ops import AllReduce, Attention, Gemm, Vector
from .context import Schedule
from .engine import IterationBatch
from .plan import FC_GROUPS, HEAD_STAGE, KINDS

RECORD_KEYS = ("op", "phase", "device", "repeats", "time_s", "share", "bound", "flops", "bytes", "energy_j")
_GROUP_PHASES = {"qkv": ("qkv",), "rest": ("rest",), "both": ("rest", "qkv")}


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One op in one stage instance: figures of one execution on one device."""

    op: str
    phase: str
    device: str  # npu | pim | link
    stage: str  # stage name (A..F, Q/M/R, H)
    micro_batch: int
    sub_batch: int  # 0 or 1 (-1 for the LM head and hand-off)
    rows: int  # token rows (FC, head) or requests (attention)
    repeats: int
    time_s: float
    compute_s: float
    memory_s: float
    bank_s: float
    link_s: float
    flops: float
    bytes: float
    energy_j: float
    weights_in_sram: float = 0.0  # share of a GEMM's weights still in SRAM from the previous sub-batch
    overhead_s: float = 0.0  # fixed time (a GPU kernel's launch, an op overhead)

    @property
    def devices_scale(self) -> str:
        """How its energy scales to the system: 'layer' ops run on all tp x pp devices, the head on tp."""
        return "head" if self.phase in ("head", "pipeline") else "layer"


def _record(op: Any, c: Any, stage: str, mb: int, sub: int, rows: int, reps: int, in_sram: float = 0.0,
            name: str | None = None) -> OpRecord:
    phase = "attention" if isinstance(op, Attention) else str(op.phase)
    return OpRecord(name or op.name, phase, c.device, stage, mb, sub, rows, reps, float(c.time_s),
                    float(c.compute_s), float(c.memory_s), float(c.bank_s), float(c.link_s), float(c.flops),
                    float(c.bytes), float(c.energy_j), in_sram, float(c.overhead_s))


def _npu_records(op: Any, c: Cost, hw, stage: str, mb: int, sub: int, rows: int, reps: int,
                 in_sram: float = 0.0) -> list[OpRecord]:
    """An NPU op's record, and for a GPU vector kernel a second one, ``<op>_fixed``, for its fixed time."""
    kern = vector_kernel(hw, op) if isinstance(op, Vector) else None
    if kern is None or kern.fixed_s == 0 or float(c.time_s) == 0:
        return [_record(op, c, stage, mb, sub, rows, reps, in_sram)]
    own = Cost(c.device, float(c.time_s) - kern.fixed_s, c.compute_s, c.memory_s, 0.0, 0.0,
               float(c.overhead_s) - kern.fixed_s, c.flops, c.bytes, c.energy_j)
    fixed = Cost(c.device, kern.fixed_s, overhead_s=kern.fixed_s)
    return [_record(op, own, stage, mb, sub, rows, reps, in_sram),
            _record(op, fixed, stage, mb, sub, rows, reps, name=f"{op.name}_fixed")]


def op_records(s: Schedule, lens: np.ndarray, channels: np.ndarray, batch: IterationBatch, k: int = 0) -> list[OpRecord]:
    """One record per op of every stage instance of iteration ``k`` of ``batch`` (run with ``keep_stages``), as
    its schedule candidate ran (module docstring).

    ``lens`` / ``channels`` are the requests of all iterations of the batch, concatenated as the engine
    received them. Records come in execution order: micro-batch, stage, op.
    """
    a, lay = batch.assignment, batch.layout
    assert a is not None and lay is not None and batch.candidate is not None, "run the engine with keep_stages"
    system, model, hw = s.system, s.model, s.system.hardware
    tp = s.tp
    on_pim = s.on_pim
    soft_in_pim = system.placement.softmax == "pim"
    R = lens.shape[0]
    v = int(np.flatnonzero((a.var_k == k) & (a.var_c == batch.candidate[k]))[0])
    n_k = lay.mb_rows.reshape(lay.K, s.pp).sum(axis=1)
    lo = int(n_k[:k].sum())
    mine = np.arange(lo, lo + int(n_k[k]))
    block = v // a.K
    groups = a.row_group[block * R + mine]
    members = {}
    for g in np.unique(groups):
        idx = mine[groups == g]
        members[int(g)] = (np.asarray(lens[idx], dtype=np.int64), np.asarray(channels[idx], dtype=np.int64))
    out: list[OpRecord] = []
    insts = np.flatnonzero((lay.inst_var == v) & (lay.inst_reps > 0))
    for mb in range(s.pp):
        mbi = k * s.pp + mb
        rows_mb = int(lay.mb_rows[mbi])
        if rows_mb == 0:
            continue
        for i in insts[lay.inst_mb[insts] == mb]:
            kind = KINDS[int(lay.inst_kind[i])]
            reps = int(lay.inst_reps[i])
            in_sram = float(lay.inst_cache_frac[i])
            rows = int(lay.inst_rows[i])
            group = FC_GROUPS[int(lay.inst_fc_group[i])]
            if group in _GROUP_PHASES and rows > 0:
                ops = fc_ops(model, tp, float(rows))
                for phase in _GROUP_PHASES[group]:
                    for op in ops:
                        if op.phase != phase:
                            continue
                        if isinstance(op, AllReduce):
                            out.append(_record(op, link_cost(op, system.link, hw), kind.name, mb, kind.fc_sub,
                                               rows, reps))
                            continue
                        if in_sram > 0 and isinstance(op, Gemm):
                            op = dataclasses.replace(op, sram_fraction=in_sram)
                        out += _npu_records(op, npu_cost(op, hw), hw, kind.name, mb, kind.fc_sub, rows, reps,
                                            in_sram if isinstance(op, Gemm) else 0.0)
            ag = int(lay.inst_ag[i])
            if ag < lay.n_groups and ag in members:
                glens, gch = members[ag]
                n_req = int(glens.shape[0])
                ops = attention_ops(model, tp, glens)
                if not on_pim:
                    for op in ops:
                        out += _npu_records(op, npu_cost(op, hw), hw, kind.name, mb, kind.attn_sub, n_req, reps)
                    continue
                a0 = ops[0]
                parts = attention_parts(hw, glens, a0.q_heads, a0.kv_heads, a0.head_dim, a0.dtype_bytes, gch,
                                        s.tables.kv_spread, soft_in_pim)
                out.append(_record(ops[0], parts["score"], kind.name, mb, kind.attn_sub, n_req, reps))
                sm = ops[1]
                if soft_in_pim:  # the softmax unit in the stack: the moves it adds, its FLOPs at PIM energy
                    c = parts["softmax"]
                    c = Cost("pim", c.time_s, 0.0, c.memory_s, 0.0, 0.0, 0.0, float(sm.flops), c.bytes,
                             c.energy_j + float(sm.flops) * hw.energy.pim_pj_per_flop * 1e-12)
                    out.append(_record(sm, c, kind.name, mb, kind.attn_sub, n_req, reps))
                else:  # on the NPU's vector units, after the scores' trip over the channel bus
                    out += _npu_records(sm, npu_cost(sm, hw), hw, kind.name, mb, kind.attn_sub, n_req, reps)
                    out.append(_record(sm, parts["softmax"], kind.name, mb, kind.attn_sub, n_req, reps,
                                       name="softmax_transfer"))
                out.append(_record(ops[2], parts["context"], kind.name, mb, kind.attn_sub, n_req, reps))
        head = lm_head_op(model, tp, float(rows_mb))
        out.append(_record(head, npu_cost(head, hw), HEAD_STAGE, mb, -1, rows_mb, 1))
        if s.pp > 1:  # activations handed from the previous pipeline stage (link time, no energy charged)
            t_s = s.p2p_latency_s + rows_mb * s.p2p_s_per_row
            out.append(OpRecord("pipeline_send", "pipeline", "link", HEAD_STAGE, mb, -1, rows_mb, 1, t_s, 0.0, 0.0,
                                0.0, t_s, 0.0, float(rows_mb * model.d_model * model.dtype_bytes), 0.0))
    return out


def breakdown_rows(ops: list[OpRecord], iteration_s: float, tp: int, pp: int) -> list[dict[str, Any]]:
    """Per op name, in first-execution order: repeats, time, share, bound, FLOPs, bytes and energy summed
    over every execution in the iteration (time, FLOPs and bytes per device; energy over all devices)."""
    acc: dict[str, dict[str, Any]] = {}
    for r in ops:
        row = acc.setdefault(r.op, {"op": r.op, "phase": r.phase, "device": r.device, "repeats": 0, "time_s": 0.0,
                                    "flops": 0.0, "bytes": 0.0, "energy_j": 0.0, "_terms": np.zeros(5)})
        row["repeats"] += r.repeats
        row["time_s"] += r.time_s * r.repeats
        row["flops"] += r.flops * r.repeats
        row["bytes"] += r.bytes * r.repeats
        row["energy_j"] += r.energy_j * r.repeats * (tp if r.devices_scale == "head" else tp * pp)
        row["_terms"] += np.array([r.compute_s, r.memory_s, r.bank_s, r.link_s, r.overhead_s]) * r.repeats
    out = []
    for row in acc.values():
        terms = row.pop("_terms")
        row["bound"] = BOUNDS[int(np.argmax(terms))]
        row["share"] = row["time_s"] / iteration_s if iteration_s > 0 else 0.0
        out.append({key: row[key] for key in RECORD_KEYS})
    return out
