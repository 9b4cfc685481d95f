"""The stage plan of a decode iteration: how the batch splits, and which stages run (docs/model/schedule.md).

This module is the one definition of the schedule's structure. The engine (``schedule.engine``) evaluates
the instances it lays out, the breakdown (``schedule.breakdown``) costs the ops of the same instances, so
the two cannot drift apart.

- **Pipeline micro-batches**: with pipeline parallelism the batch splits into ``pp`` micro-batches that
  follow each other through every pipeline stage (request i -> micro-batch i mod pp).
- **Sub-batch interleaving** (NeuPIMs ``src/StageProgram.cc``, docs/sources.md#s2.5): each micro-batch
  splits in two (even / odd positions), and the stages overlap one sub-batch's FC with the other's
  attention. It is used when the system enables it and the smallest micro-batch has at least
  ``sub_batch_min_batch`` requests; the decision is taken once per iteration, so every micro-batch runs
  the same stage list.
- **Stage kinds** (:data:`KINDS`): the interleaved table A..F and the flat table Q, M, R. Each names the FC
  group the NPU runs and over which sub-batch's rows, the sub-batch whose attention runs beside it, its
  repeat count as a function of the layers per pipeline stage, whether DBO balances it, and whether its
  weights may still be in SRAM from the previous sub-batch.
- **LM head** and the activation hand-off close every micro-batch.

:func:`layout` turns K iterations (their requests' context lengths and KV channels, concatenated) into flat
arrays: a group per (iteration, micro-batch, sub-batch) of requests, and a stage instance per (iteration,
micro-batch, stage kind), ordered by iteration, then micro-batch, then execution order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec.system import SystemSpec

# FC groups of the cost tables, by index in the stacked NPU / PIM-FC tables (cost.tables)
FC_GROUPS = ("qkv", "rest", "both", "none", "head")
QKV, REST, BOTH, NONE, HEAD = range(5)


@dataclass(frozen=True, slots=True)
class StageKind:
    """One row of a stage table."""

    name: str
    npu_work: str  # label of the NPU's work
    pim_work: str  # label of the PIM's work
    fc_group: int  # index into FC_GROUPS (NONE: no FC work)
    fc_sub: int  # sub-batch whose token rows the FC group runs over (-1: none)
    attn_sub: int  # sub-batch whose attention runs in this stage (-1: none)
    per_layer: int  # repeats = per_layer * L + extra, L = layers per pipeline stage
    extra: int
    balanced: bool  # DBO rebalances this stage
    may_be_cached: bool  # the FC weights were just streamed for the other sub-batch (SRAM reuse)


#: every stage kind; INTERLEAVED and FLAT index into it
KINDS: tuple[StageKind, ...] = (
    StageKind("A", "QKV#1", "-", QKV, 0, -1, 0, 1, False, False),
    StageKind("B", "QKV#2", "MHA#1", QKV, 1, 0, 0, 1, False, True),
    StageKind("C", "Proj/FFN#1+QKV#1", "MHA#2", BOTH, 0, 1, 1, -1, True, False),
    StageKind("D", "Proj/FFN#2+QKV#2", "MHA#1", BOTH, 1, 0, 1, -1, True, True),
    StageKind("E", "Proj/FFN#1", "MHA#2", REST, 0, 1, 0, 1, False, False),
    StageKind("F", "Proj/FFN#2", "-", REST, 1, -1, 0, 1, False, True),
    StageKind("Q", "QKV", "-", QKV, 0, -1, 1, 0, True, False),
    StageKind("M", "-", "MHA", NONE, -1, 0, 1, 0, True, False),
    StageKind("R", "Proj/FFN", "-", REST, 0, -1, 1, 0, True, False),
)
INTERLEAVED = (0, 1, 2, 3, 4, 5)
FLAT = (6, 7, 8)
#: the head stage's name in stage records
HEAD_STAGE = "H"
SUBS = 2  # sub-batches per micro-batch (a flat micro-batch uses sub-batch 0 only)

_K = {f: np.array([getattr(k, f) for k in KINDS]) for f in
      ("fc_group", "fc_sub", "attn_sub", "per_layer", "extra", "balanced", "may_be_cached")}


def kind_table(field: str) -> np.ndarray:
    """One column of :data:`KINDS` as an array indexed by kind."""
    return _K[field]


@dataclass(frozen=True, slots=True)
class Layout:
    """K iterations laid out as groups of requests and stage instances (module docstring).

    Requests (R, in the input order): ``group`` of each. Groups (G + 1; the last is an empty group that
    stage instances without attention point to): ``group_rows``. Micro-batches (K * pp): ``mb_rows``,
    ``mb_k``, ``mb_live``, ``interleave``. Stage instances (S): the rest.
    """

    K: int
    pp: int
    layers_per_stage: int
    group: np.ndarray  # (R,) group of each request
    n_groups: int  # G (the empty group is index G)
    group_rows: np.ndarray  # (G + 1,) requests per group
    mb_rows: np.ndarray  # (K * pp,) requests per micro-batch
    mb_interleaved: np.ndarray  # (K * pp,) bool
    interleave: np.ndarray  # (K,) bool: the iteration runs the interleaved table
    # stage instances
    inst_k: np.ndarray  # iteration
    inst_mb: np.ndarray  # micro-batch (0..pp-1)
    inst_kind: np.ndarray  # index into KINDS
    inst_fc_group: np.ndarray  # index into FC_GROUPS
    inst_rows: np.ndarray  # FC token rows
    inst_ag: np.ndarray  # attention group (n_groups = none)
    inst_cached: np.ndarray  # bool: FC weights already in SRAM
    inst_reps: np.ndarray  # float repeats
    inst_balanced: np.ndarray  # bool

    @property
    def mb_k(self) -> np.ndarray:
        """Iteration of each micro-batch."""
        return np.arange(self.K * self.pp) // self.pp


def interleave_rule(system: SystemSpec, mb_rows: np.ndarray) -> np.ndarray:
    """Per iteration (rows of ``mb_rows``, shape (K, pp)): does it run the interleaved table?

    The system must enable it and the smallest non-empty micro-batch must hold ``sub_batch_min_batch``.
    """
    live = mb_rows > 0
    smallest = np.where(live, mb_rows, np.iinfo(np.int64).max).min(axis=1)
    return system.sub_batch_interleaving & live.any(axis=1) & (smallest >= system.sub_batch_min_batch)


def layout(system: SystemSpec, pp: int, layers_per_stage: int, n_k: np.ndarray, both_bytes: np.ndarray,
           sram_bytes: float) -> Layout:
    """Lay out K iterations of ``n_k[k]`` requests each (requests of iteration k follow those of k - 1).

    ``both_bytes[r]`` is the DRAM weight bytes of the 'both' FC group at r rows (its MoE-dependent part),
    which decides SRAM reuse: sub-batch #2 reuses the weights sub-batch #1 just streamed when the layer's
    weights its rows touch fit ``sram_bytes``.
    """
    K = int(n_k.shape[0])
    R = int(n_k.sum())
    starts = np.cumsum(n_k) - n_k
    kid = np.repeat(np.arange(K), n_k)
    r = np.arange(R) - starts[kid]
    mb, pos = (r % pp, r // pp) if pp > 1 else (np.zeros(R, dtype=np.int64), r)
    mb_rows2 = (n_k[:, None] - np.arange(pp)[None, :] + pp - 1) // pp  # (K, pp)
    inter = interleave_rule(system, mb_rows2)
    sub = np.where(inter[kid], pos % SUBS, 0)
    mbi_of_req = kid * pp + mb
    group = mbi_of_req * SUBS + sub
    G = K * pp * SUBS
    group_rows = np.bincount(group, minlength=G + 1)
    mb_rows = mb_rows2.reshape(-1)
    mb_inter = np.repeat(inter, pp)
    live = np.flatnonzero(mb_rows > 0)
    counts = np.where(mb_inter[live], len(INTERLEAVED), len(FLAT))
    inst_mbi = np.repeat(live, counts)
    first = np.cumsum(counts) - counts
    within = np.arange(inst_mbi.shape[0]) - np.repeat(first, counts)
    kind = within + np.where(mb_inter[inst_mbi], INTERLEAVED[0], FLAT[0])
    fc_sub = _K["fc_sub"][kind]
    attn_sub = _K["attn_sub"][kind]
    rows = np.where(fc_sub >= 0, group_rows[inst_mbi * SUBS + np.maximum(fc_sub, 0)], 0)
    ag = np.where(attn_sub >= 0, inst_mbi * SUBS + np.maximum(attn_sub, 0), G)
    # SRAM reuse: the weights both sub-batches' rows touch (MoE: the experts max(b1, b2) rows hit)
    b_max = np.maximum(group_rows[inst_mbi * SUBS], group_rows[inst_mbi * SUBS + 1])
    cached = _K["may_be_cached"][kind] & (both_bytes[b_max] <= sram_bytes)
    reps = (_K["per_layer"][kind] * layers_per_stage + _K["extra"][kind]).astype(float)
    return Layout(K, pp, layers_per_stage, group, G, group_rows, mb_rows, mb_inter, inter,
                  inst_mbi // pp, inst_mbi % pp, kind, _K["fc_group"][kind], rows, ag, cached, reps,
                  _K["balanced"][kind])
