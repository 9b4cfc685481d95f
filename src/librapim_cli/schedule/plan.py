"""The stage plan of a decode iteration: how the batch splits, and which stages run (docs/model/schedule.md).

This module is the one definition of the schedule's structure. The engine (``schedule.engine``) evaluates
the instances it lays out, the breakdown (``schedule.breakdown``) costs the ops of the same instances, so
the two cannot drift apart.

- **Pipeline micro-batches** (pp > 1): the batch splits into ``pp`` micro-batches that follow each other
  through every pipeline stage. The split is channel-aware: each channel's requests (in admission order)
  are dealt to the micro-batches in turn, so every micro-batch gets an equal share of every channel.
- **Sub-batch interleaving** (NeuPIMs ``src/StageProgram.cc``, docs/sources.md#s2.5): each micro-batch splits
  in two, and the stages overlap one sub-batch's FC with the other's attention. Two channel-aware splits:
  ``count`` (NeuPIMs' scheduler, ``Scheduler::group_sub_batches``: each channel's queue split in half, the
  odd channels alternately giving the extra request to either half) and ``context`` (each channel's requests
  by context length, longest first, dealt 0, 1, 1, 0, 0, 1, ...: equal counts and near-equal KV per channel).
- **Candidates**: ``flat`` (no interleaving), ``count`` and ``context``. Under ``scheduler = "rule"`` each
  iteration runs one, by NeuPIMs' rule: ``count`` when the system interleaves and the smallest micro-batch
  holds ``sub_batch_min_batch`` requests, else ``flat``. Under ``scheduler = "runtime"`` every allowed
  candidate is laid out and the engine keeps the one its predictor finds fastest.
- **Stage kinds** (:data:`KINDS`): the interleaved table A..F and the flat table Q, M, R. Each names the FC
  group the NPU runs and over which sub-batch's rows, the sub-batch whose attention runs beside it, its
  repeat count as a function of the layers per pipeline stage, whether DBO balances it, and whether its
  weights may still be in SRAM from the previous sub-batch.
- **LM head** and the activation hand-off close every micro-batch.

:func:`assign` gives every request its micro-batch and, per candidate, its sub-batch; :func:`structure`
turns the candidates' group sizes into stage instances (it depends on nothing else, so it is memoized).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec.system import SystemSpec

# FC groups of the cost tables, by index in the stacked NPU / PIM-FC tables (cost.tables)
FC_GROUPS = ("qkv", "rest", "both", "none", "head")
QKV, REST, BOTH, NONE, HEAD = range(5)
# schedule candidates
CANDIDATES = ("flat", "count", "context")
FLAT_C, COUNT_C, CONTEXT_C = range(3)


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


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where every request of K iterations goes (module docstring).

    Variants are (candidate, iteration) pairs, candidate-major: block b holds one variant per iteration, all
    of candidate ``var_c`` (under the rule scheduler one block, its candidate chosen per iteration). Attention
    rows are the requests once per block (``row_req`` = the request index, block after block), each in its
    group (variant, micro-batch, sub-batch). ``var_ok`` is False for a variant its iteration cannot run (an
    interleaved candidate with a micro-batch of fewer than two requests).
    """

    K: int
    pp: int
    blocks: int
    var_k: np.ndarray  # (V,) iteration of each variant
    var_c: np.ndarray  # (V,) candidate of each variant
    var_ok: np.ndarray  # (V,) bool
    row_group: np.ndarray  # (blocks * R,) group of each attention row
    group_rows: np.ndarray  # (V * pp * SUBS + 1,) requests per group (the last: the empty group)
    mb_rows: np.ndarray  # (K * pp,) requests per micro-batch

    @property
    def n_groups(self) -> int:
        return int(self.group_rows.shape[0] - 1)

    def key(self) -> bytes:
        """Everything the stage structure depends on."""
        return self.var_c.tobytes() + b"|" + self.group_rows.tobytes() + b"|" + self.mb_rows.tobytes()


@dataclass(frozen=True, slots=True)
class Layout:
    """Stage instances of the variants of an :class:`Assignment` (ordered by variant, micro-batch, kind)."""

    K: int
    pp: int
    layers_per_stage: int
    n_groups: int  # G (the empty group is index G)
    group_rows: np.ndarray
    mb_rows: np.ndarray  # (K * pp,)
    var_k: np.ndarray
    var_c: np.ndarray
    inst_var: np.ndarray  # variant
    inst_k: np.ndarray  # iteration
    inst_mb: np.ndarray  # micro-batch (0..pp-1)
    inst_kind: np.ndarray  # index into KINDS
    inst_fc_group: np.ndarray  # index into FC_GROUPS
    inst_rows: np.ndarray  # FC token rows
    inst_ag: np.ndarray  # attention group (n_groups = none)
    inst_cache_frac: np.ndarray  # share of the FC group's weights still in SRAM (0 if none)
    inst_reps: np.ndarray  # float repeats
    inst_balanced: np.ndarray  # bool


def tile(x: np.ndarray, n: int) -> np.ndarray:
    """A 1-D array repeated n times end to end (``np.tile`` without its call overhead)."""
    return np.concatenate([x] * n) if n > 1 else x


def _order(key: np.ndarray, bound: int) -> np.ndarray:
    """The stable sort order of ``key`` (values in 0..bound-1) by radix sorts: one pass over 16-bit keys, two
    (low then high half) over keys below 2**32 (numpy's stable sort is a radix sort only up to 16 bits)."""
    if bound <= 1 << 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    if bound > 1 << 32:
        return np.argsort(key, kind="stable")
    lo = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    return lo[np.argsort((key[lo] >> 16).astype(np.uint16), kind="stable")]


def _ranks(key: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stable sort order of ``key``, each element's rank among the equal keys in index order, count per key)."""
    order = _order(key, bound)
    size = np.bincount(key, minlength=bound)
    first = np.cumsum(size) - size
    rank = np.empty(key.shape[0], dtype=np.int64)
    rank[order] = np.arange(key.shape[0]) - np.repeat(first, size)  # key[order] is every key, size times
    return order, rank, size


def assign(system: SystemSpec, pp: int, n_k: np.ndarray, lens: np.ndarray, ch: np.ndarray, C: int) -> Assignment:
    """Micro-batches, candidates and sub-batches of K iterations of ``n_k[k]`` requests each (requests of
    iteration k follow those of k - 1 in ``lens`` / ``ch``, in admission order; ``C`` channels)."""
    K = int(n_k.shape[0])
    R = int(lens.shape[0])
    kid = np.repeat(np.arange(K), n_k) if K > 1 else np.zeros(R, dtype=np.int64)
    kc = kid * C + ch if K > 1 else ch
    queue_rank = mb = None
    if pp > 1:  # deal each channel's requests (in admission order) to the micro-batches in turn
        starts = np.cumsum(n_k) - n_k
        _, kc_rank, kc_size = _ranks(kc, K * C)
        # a request's place in its iteration, by (channel, admission): its channel's first place there + its rank
        first = (np.cumsum(kc_size) - kc_size).reshape(K, C) - starts[:, None]
        mb = (first.reshape(-1)[kc] + kc_rank) % pp
        mbi = kid * pp + mb
        queue_rank = kc_rank // pp  # a channel's requests dealt in turn: every pp-th one lands in the same queue
    else:
        mbi = kid
    KP = K * pp
    mb_rows = np.bincount(mbi, minlength=KP)
    mb2 = mb_rows.reshape(K, pp)
    live = mb2 > 0
    smallest = np.where(live, mb2, np.iinfo(np.int64).max).min(axis=1)
    if system.scheduler == "runtime":
        blocks = 3 if system.sub_batch_interleaving else 1
        var_c = np.repeat(np.arange(blocks), K)
        var_ok = (var_c == FLAT_C) | tile(smallest >= 2, blocks)
    else:
        blocks = 1
        var_c = np.where(system.sub_batch_interleaving & live.any(axis=1) &
                         (smallest >= system.sub_batch_min_batch), COUNT_C, FLAT_C)
        var_ok = np.ones(K, dtype=bool)
    V = blocks * K
    var_k = tile(np.arange(K), blocks)
    group = mbi * SUBS
    queue = mbi * C + ch
    if blocks == 1:
        if (var_c == COUNT_C).any():
            group = group + np.where(var_c[kid] == COUNT_C, _split_count(queue, KP, C, queue_rank)[0], 0)
    else:
        sub_count, sub_context = _splits(queue, KP, C, lens, queue_rank)
        g3 = np.empty((3, R), dtype=np.int64)  # the candidates' groups, block after block
        g3[0] = group
        np.add(group, KP * SUBS, out=g3[1])
        g3[1] += sub_count
        np.add(group, 2 * KP * SUBS, out=g3[2])
        g3[2] += sub_context
        group = g3.reshape(-1)
    G = V * pp * SUBS
    return Assignment(K, pp, blocks, var_k, var_c, var_ok, group, np.bincount(group, minlength=G + 1), mb_rows)


def _split_count(queue: np.ndarray, KP: int, C: int, rank: np.ndarray | None = None):
    """NeuPIMs' split (``count``): each (micro-batch, channel) queue in admission order, its first half to
    sub-batch 0; odd queues alternately give their extra request to sub-batch 0 and 1, counting afresh in every
    micro-batch (``ceil_turn``). ``rank``: each request's place in its queue, when the caller knows it.
    Returns (sub-batch per request, queue sizes, extra side per queue)."""
    Q = KP * C
    if rank is None:
        _, rank, size = _ranks(queue, Q)
    else:
        size = np.bincount(queue, minlength=Q)
    odd = (size % 2).reshape(KP, C)
    extra = (odd & ((np.cumsum(odd, axis=1) - odd) % 2 == 0)).reshape(-1)  # odd queues before it in its mb
    return (rank >= (size // 2 + extra)[queue]).astype(np.int64), size, extra


def _splits(queue: np.ndarray, KP: int, C: int, lens: np.ndarray, rank: np.ndarray | None = None):
    """Both channel-aware splits (module docstring). ``context``: each queue by context, longest first (ties in
    admission order), dealt 0, 1, 1, 0, 0, 1, ...; an odd queue gives its extra request to the side the count
    split gives it to (the pattern's own extra side is 0 if size % 4 == 1, else 1)."""
    count, size, extra = _split_count(queue, KP, C, rank)
    Lmax = int(lens.max()) + 1 if lens.shape[0] else 1
    by_len = _order(Lmax - 1 - lens, Lmax)
    o = by_len[_order(queue[by_len], KP * C)]  # queue by queue, each by context (ties in admission order)
    flip = (size % 2 == 1) & ((size % 4 == 3) != (extra == 0))  # per queue: natural extra side != wanted
    rank1 = np.arange(queue.shape[0]) - np.repeat(np.cumsum(size) - size - 1, size)  # 1 + the rank in its queue
    out = np.empty(queue.shape[0], dtype=np.int64)
    out[o] = ((rank1 >> 1) & 1) ^ np.repeat(flip, size)  # ranks 0, 1, 2, 3, ... dealt 0, 1, 1, 0, ... (flipped)
    return count, out


def sram_share(weight_bytes: np.ndarray, sram_bytes: float) -> np.ndarray:
    """The share min(1, sram / bytes) of weights of ``weight_bytes`` still in SRAM (0 for no weights)."""
    return np.where(weight_bytes > 0, np.minimum(1.0, sram_bytes / np.where(weight_bytes > 0, weight_bytes, 1.0)), 0.0)


def structure(a: Assignment, layers_per_stage: int, group_bytes: np.ndarray, sram_bytes: float) -> Layout:
    """Stage instances of every variant (depends only on ``a.key()``, so the engine memoizes it).

    ``group_bytes[g, r]`` is the DRAM weight bytes of FC group g (FC_GROUPS) at r rows (MoE: the experts r rows
    touch). The FC group of the second sub-batch was just streamed for the first (A then B, C then D, E then F):
    it finds the share min(1, sram / bytes) of those weights still in SRAM, bytes at the larger sub-batch's
    rows (partial residency: what fits stays, the rest streams again).
    """
    pp, V = a.pp, a.var_k.shape[0]
    G = a.n_groups
    group_rows = a.group_rows
    sub_rows = group_rows[:G].reshape(V * pp, SUBS)  # rows of each (variant, micro-batch)'s sub-batches
    s0, s1 = sub_rows[:, 0], sub_rows[:, 1]
    live = np.flatnonzero(s0 + s1 > 0)
    inter = (a.var_c != FLAT_C)[live // pp]
    counts = np.where(inter, len(INTERLEAVED), len(FLAT))
    inst_vm = np.repeat(live, counts)
    # kinds run through each pair's table: the instance's place minus (its pair's first place - the table's start)
    kind = np.arange(inst_vm.shape[0]) - np.repeat(np.cumsum(counts) - counts - np.where(inter, INTERLEAVED[0],
                                                                                            FLAT[0]), counts)
    fc_sub = _K["fc_sub"][kind]
    attn_sub = _K["attn_sub"][kind]
    fc_group = _K["fc_group"][kind]
    base = inst_vm * SUBS
    rows = group_rows[np.where(fc_sub >= 0, base + fc_sub, G)]  # the empty group G has no rows
    ag = np.where(attn_sub >= 0, base + attn_sub, G)
    b_max = np.maximum(s0, s1)[inst_vm]
    cache = np.where(_K["may_be_cached"][kind], sram_share(group_bytes[fc_group, b_max], sram_bytes), 0.0)
    reps = (_K["per_layer"] * layers_per_stage + _K["extra"]).astype(float)[kind]
    var = inst_vm // pp
    return Layout(a.K, pp, layers_per_stage, G, group_rows, a.mb_rows, a.var_k, a.var_c, var, a.var_k[var],
                  inst_vm % pp, kind, fc_group, rows, ag, cache, reps, _K["balanced"][kind])
