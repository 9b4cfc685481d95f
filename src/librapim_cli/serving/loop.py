"""Continuous batching at iteration level (Orca-style) over a request trace (docs/model/serving.md).

The loop repeats, at every step boundary, **admit -> prefill -> decode -> retire** on one clock:

1. **Admit** (the system's admission policy, ``librapim_cli.admission``): first-come first-served, preempted
   requests first, while the batch has room, the request has arrived and the policy's KV accounting lets it
   in. Each admitted request's KV lives in one HBM channel (``placement.kv_channel_policy``).
2. **Prefill** the admitted prompts (serving/prefill.py) as a step of their own; the first output token
   comes out of it (TTFT = end of the first prefill - arrival). A readmitted (preempted) request is
   prefilled over its prompt and the tokens it had generated, producing its next token.
3. **Decode** a *segment* of iterations over the fixed active set: until the next request finishes, until a
   waiting request that could be admitted arrives, or until the active set outgrows the KV cache (then the
   policy preempts its newest requests first).
4. **Retire** the finished requests, freeing their KV and channel load. With nothing active and nothing
   arrived, the clock jumps to the next arrival.

**Speculative chunks.** Who is in a decode iteration depends on the clock only through arrivals. The loop
therefore lays out a *chunk* of steps with predicted decode-iteration times, evaluates all its decode
iterations in one call of the vectorized engine, and walks the chunk again with the true times, checking
every clock-dependent decision (how many arrivals an admission saw, whether the clock passed an arrival
before a segment's end, an idle jump). Everything before the first decision that would have gone
differently is committed; the loop state is restored from that boundary's snapshot and continues from
there with the true clock, so the figures are those of evaluating every step in order (a test compares
them with the step-by-step loop). In a closed loop (every request at t = 0) no decision depends on the
clock and every chunk commits whole.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from .. import admission
from ..admission import PolicyParams
from ..errors import InfeasibleDesign, InputError, ModelError
from ..inputs import Setup, kv_bytes_per_token_per_device, kv_capacity_bytes
from ..metrics import SUMMED, iteration_metrics
from ..result import SimResult
from ..schedule.context import Schedule, schedule_for
from ..schedule.engine import FIELDS, IterationBatch, LazyResults, StageTable, run_iterations_flat
from ..stats import median, percentiles
from ..workload import make_requests
from ..workload.placement import ChannelLoad
from .prefill import prefill_coster

KINDS = ("decode", "prefill")
DECODE, PREFILL = 0, 1
# columns of the per-step record (one row per decode iteration or prefill step)
COLUMNS = ("start_s", "time_s", "batch", "npu_busy_s", "pim_busy_s", "offload_attention_share",
           "offload_fc_share", "kind", "kv_tokens", "finished")
_INT_COLUMNS = ("batch", "kv_tokens", "finished")
_COL = {c: i for i, c in enumerate(COLUMNS)}
FINISHED = _COL["finished"]
# rows of the active-request array: request id, context of its next decode iteration, decode iterations
# left, KV channel; prompt and output tokens only for a policy that reads them (one that preempts or whose
# holding changes while decoding): the fewer rows, the less to move when a request retires
ID, CTX, REM, CH, PROMPT, OUT = range(6)
PROGRESS_EVERY = 1000  # decode iterations between progress callbacks
PERCENTILES = (50, 90, 99)
CHUNK_ROWS = 65_536  # request-iterations per engine call (bounds the temporary arrays; smaller chunks stay in cache)
MAX_CHUNK_ITERATIONS = 8192  # decode iterations laid out per chunk at most
MIN_CHUNK_ITERATIONS = 8
SHORT_SEGMENT = 16  # predicted segments up to this many iterations are laid out in Python floats


class _Steps:
    """Per-step rows in one preallocated float array, doubled when full."""

    def __init__(self, capacity: int) -> None:
        self.data = np.zeros((max(capacity, 16), len(COLUMNS)))
        self.n = 0

    def ensure(self, rows: int) -> np.ndarray:
        """The backing array, grown to hold at least ``rows`` rows."""
        if rows > self.data.shape[0]:
            grown = np.zeros((max(rows, 2 * self.data.shape[0]), len(COLUMNS)))
            grown[: self.data.shape[0]] = self.data
            self.data = grown
        return self.data

    def columns(self) -> dict[str, np.ndarray]:
        """The rows so far as named, typed columns ('kind' as 'decode' / 'prefill')."""
        d = self.data[: self.n]
        out = {c: d[:, i].copy() for i, c in enumerate(COLUMNS)}
        for c in _INT_COLUMNS:
            out[c] = out[c].astype(np.int64)
        out["kind"] = np.asarray(KINDS)[out["kind"].astype(np.int64)]
        return out


@dataclass
class ServeRun:
    """What one serving run produced: per-step arrays, decode iterations, per-request times."""

    steps: dict[str, np.ndarray]  # one row per prefill step or decode iteration, columns COLUMNS
    iterations: Sequence  # the decode iterations in order (IterationResult records, built on access)
    input_len: np.ndarray
    output_len: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray  # end of the request's first prefill
    finish_s: np.ndarray  # end of its last decode iteration (of its prefill if output_len == 1)
    channel: np.ndarray  # HBM channel holding its KV (the last one, if it was preempted)
    kv_capacity_tokens: int  # whole tokens of KV that fit the memory left after weights
    kv_capacity_bytes: float
    kv_bytes_per_token: float
    total_time_s: float
    idle_s: float  # time the clock advanced with nothing to run
    prefill_energy_j: float
    decode_totals: dict[str, float]  # sums of the decode iterations' fields
    policy: str = "reserve"
    preemptions: int = 0
    stages: StageTable | None = None  # the decode iterations' executed stages (keep_stages)


@dataclass(slots=True)
class _State:
    """The loop's state at a step boundary (everything a rollback restores)."""

    act: np.ndarray  # (rows, B) active requests in admission order: first n columns
    n: int
    nxt: int  # next never-admitted request (arrival order)
    front: list  # preempted requests waiting to be readmitted, in order
    used: int  # policy units held by the active set (kept up to date after every change)
    chan: ChannelLoad  # channel load of the active set (and the round-robin position)
    done: int
    t: float  # clock (predicted inside a chunk until committed)
    idle: float
    prefill_e: float
    preemptions: int
    rows: int  # step rows so far
    iters: int  # decode iterations so far

    def copy(self) -> _State:
        """A snapshot."""
        return _State(self.act[:, : self.n].copy(), self.n, self.nxt, list(self.front), self.used, self.chan.copy(),
                      self.done, self.t, self.idle, self.prefill_e, self.preemptions, self.rows, self.iters)


@dataclass(slots=True)
class _Boundary:
    """One step boundary of a chunk: where it started, its snapshot, and the clock-dependent decisions to verify."""

    nxt: int  # next never-admitted request when it started
    rows: int  # step rows before it
    snap: _State | None  # the state it started from (None in a clock-free chunk: nothing there is rolled back)
    k_new: int = 0  # newly arrived requests admitted: nxt, nxt + 1, ..., whose first tokens come out of its prefill
    #                 (at step row ``rows``; a readmitted request had its first token before)
    k_new_max: int = 0  # how many could have been admitted had they all arrived (room, KV, preempted first)
    idle_to: float = 0.0  # > 0: nothing active or arrived, the clock jumped to this arrival
    prefill: bool = False  # a prefill step ran (at step row ``rows``)
    prefill_s: float = 0.0  # its time
    prefill_lens: list | None = None  # its prompt lengths, while its cost waits for the chunk's (_prefill_costs)
    prefill_j: float = 0.0  # its energy, added to the run's in boundary order (_prefill_costs) when deferred
    seg: int = -1  # index of its decode segment in the chunk (-1 if none)
    j_cap: int = 0  # segment iterations without a clock stop
    stop_s: float = np.inf  # the arrival that ends the segment early (inf if none)
    j: int = 0  # segment iterations laid out
    # tuples, most of them empty (fewer objects for the garbage collector to track):
    finished: tuple = ()  # (request ids, step row) of finishes
    gen_undo: tuple = ()  # (request ids, previous generated counts) of preemptions


@dataclass(slots=True)
class _Segment:
    """A decode segment laid out in a chunk: its first step row, contexts (and their sum) and channels, length,
    and its iterations' figures when they were evaluated while laying it out."""

    row: int
    ctx: np.ndarray
    ctx_sum: float
    ch: np.ndarray
    j: int
    known: IterationBatch | None = None


class _Predictor:
    """Predicted decode-iteration time for laying out a speculative chunk: the last committed iteration's
    true time, moved by local slopes per context token and per request (medians of the finite differences
    between recent consecutive committed iterations: per token over pairs with the same batch, per request
    over the pairs whose batch changed). Consecutive iterations differ by ~1e-4 of their time, so a local
    estimate beats any global fit (DBO and the schedule choice bend the time-vs-size curve), and every miss
    costs a rollback of the chunk."""

    WINDOW = 256  # recent committed iterations the slopes are taken from

    def __init__(self) -> None:
        self.n = np.zeros(0)
        self.s = np.zeros(0)
        self.t = np.zeros(0)
        self.k_tok = 0.0
        self.k_req = 0.0
        self.last = (0.0, 0.0, 0.0)  # (n, s, t) of the last committed iteration

    @property
    def seen(self) -> int:
        return int(self.t.shape[0])

    def update(self, n: np.ndarray, s: np.ndarray, t: np.ndarray) -> None:
        if t.size == 0:
            return
        w = self.WINDOW
        self.n = np.concatenate([self.n, n])[-w:]
        self.s = np.concatenate([self.s, s])[-w:]
        self.t = np.concatenate([self.t, t])[-w:]
        self.last = (float(self.n[-1]), float(self.s[-1]), float(self.t[-1]))
        dn, ds, dt = np.diff(self.n), np.diff(self.s), np.diff(self.t)
        same = (dn == 0) & (ds != 0)
        if same.any():
            self.k_tok = median(dt[same] / ds[same])
        moved = dn != 0
        if moved.any():
            self.k_req = median((dt[moved] - self.k_tok * ds[moved]) / dn[moved])

    def times(self, n: int, ctx_sum: float, steps: int) -> np.ndarray:
        """Predicted times of ``steps`` iterations of ``n`` requests whose contexts sum to ``ctx_sum`` first."""
        if self.seen == 0:
            return np.full(steps, 1e-3)
        n0, s0, t0 = self.last
        s = ctx_sum + n * np.arange(steps)
        return np.maximum(t0 + self.k_req * (n - n0) + self.k_tok * (s - s0), 1e-9)

    def segment(self, n: int, ctx_sum: float, t0: float, stop: float, cap: int) -> tuple[int, float]:
        """Predicted length of a segment of at most ``cap`` iterations from ``t0`` that ends with the first
        iteration reaching ``stop`` (``_stop_index`` over :meth:`times`), and its predicted time.

        A segment that ends within a few iterations (the usual one) is walked in Python floats: the operations
        of :meth:`times` and ``_stop_index`` element by element, so the same figures."""
        xs: list[float] = []
        if cap <= SHORT_SEGMENT or math.isfinite(stop):
            seen, k_tok, (n0, s0, t_last) = self.seen, self.k_tok, self.last
            base = t_last + self.k_req * (n - n0)
            cs = 0.0
            for i in range(min(cap, SHORT_SEGMENT)):
                x = max(base + k_tok * ((ctx_sum + n * i) - s0), 1e-9) if seen else 1e-3
                xs.append(x)
                cs += x
                if t0 + cs >= stop:
                    break
            else:
                if cap > SHORT_SEGMENT:  # not reached in a few: as arrays
                    xs = []
        if xs:
            return len(xs), xs[0] if len(xs) == 1 else float(np.sum(xs))
        times = self.times(n, ctx_sum, cap)
        j = _stop_index(t0, times, stop, cap)
        return j, float(times[:j].sum())


def _policy_params(s: Setup, cap_tokens: int) -> PolicyParams:
    sv = s.system.serving
    return PolicyParams(cap_tokens, sv.kv_block_tokens, sv.watermark_fraction)


def run_serving(s: Setup, keep_stages: bool = False, progress=None, policy: str | None = None) -> ServeRun:
    """Serve the setup's requests through continuous batching (module docstring)."""
    pol_name = policy or s.system.serving.admission
    if pol_name not in admission.names():
        raise InputError(f"--policy '{pol_name}' is not an admission policy: choose one of "
                         f"{', '.join(admission.names())}")
    pol = admission.get(pol_name)
    reqs = make_requests(s.workload, s.requests)
    N = len(reqs)
    inp, out, arr = reqs.input_len, reqs.output_len, reqs.arrival_s
    if N > 1 and bool(np.any(np.diff(arr) < 0)):
        raise ModelError("make_requests returned requests out of arrival order; the serving loop needs them sorted")
    kv_tok_bytes = kv_bytes_per_token_per_device(s.model, s.tp, s.pp)
    cap_bytes = kv_capacity_bytes(s)
    cap = int(cap_bytes // kv_tok_bytes)
    pp_ = _policy_params(s, cap)
    need = inp + out  # the most KV tokens a request ever holds
    worst = int(np.argmax(need))
    z = np.zeros(1, dtype=np.int64)
    alone = int(pol.held_units(pp_, need[worst:worst + 1], inp[worst:worst + 1], out[worst:worst + 1])[0])
    if alone > pol.capacity_units(pp_) or int(pol.admission_units(pp_, inp[worst:worst + 1], out[worst:worst + 1],
                                                                    z)[0]) > pol.admission_budget(pp_, 0):
        raise InfeasibleDesign(
            f"request {worst} ({inp[worst]} + {out[worst]} tokens) needs {need[worst] * kv_tok_bytes / 2**30:.2f} GiB "
            f"of KV cache per device but {s.model.name} on {s.system.hardware.name} (tp={s.tp}, pp={s.pp}) leaves "
            f"{max(cap_bytes, 0.0) / 2**30:.2f} GiB after weights; lower workload.max_seq_len or raise tp/pp")
    loop = _Loop(s, pol, pp_, reqs, schedule_for(s, s.batch, int(need.max())), keep_stages, progress)
    return loop.run(cap, cap_bytes, kv_tok_bytes)


class _Loop:
    """One serving run (module docstring)."""

    def __init__(self, s: Setup, pol, params: PolicyParams, reqs, sched: Schedule, keep_stages: bool,
                 progress) -> None:
        self.s, self.pol, self.params, self.sched = s, pol, params, sched
        self.inp, self.out, self.arr = reqs.input_len, reqs.output_len, reqs.arrival_s
        self.N = len(reqs)
        self.B = s.batch
        self.C = sched.tables.channels
        self.kv_policy = s.system.placement.kv_channel_policy
        self.kv_stride = sched.tables.kv_spread  # channels one request's KV spans (head-wise layout)
        self.attn_share_on = s.system.placement.attention == "pim"
        self.prefill = prefill_coster(s.model, s.system, s.tp, s.pp)
        self.prefill.warm(self.inp)  # most prefill micro-batches hold one prompt
        self.keep_stages = keep_stages
        self.report = progress if callable(progress) else None
        self.unit_tokens = params.block_tokens if pol.preempts else 1
        self.gen = np.zeros(self.N, dtype=np.int64)  # tokens generated when last preempted
        self.first_s = np.full(self.N, np.nan)
        self.finish_s = np.full(self.N, np.nan)
        self.channel = np.full(self.N, -1, dtype=np.int64)
        self.rec = _Steps(int(self.out.sum()) // max(self.B, 1) + 2 * (self.N // max(self.B, 1)) + 64)
        self.lazy = LazyResults()
        self.totals = dict.fromkeys(SUMMED, 0.0)
        self.stage_tables: list[StageTable] = []
        self.pred = _Predictor()
        self.arr_l = self.arr.tolist()
        self.inp_l = self.inp.tolist()
        # per-request figures, computed once (the policy's units are per request: element-wise)
        inp, out = self.inp, self.out
        self.need_l = (inp + out).astype(float).tolist()  # channel-load tokens
        self.rows = 6 if pol.preempts or not pol.static_hold else 4  # of the active array
        self.fresh = np.zeros((self.rows, self.N), dtype=np.int64)  # active-array column of a first admission
        self.fresh[ID], self.fresh[CTX], self.fresh[REM] = np.arange(self.N), inp + 1, out - 1
        if self.rows > PROMPT:
            self.fresh[PROMPT], self.fresh[OUT] = inp, out
        units = _whole(pol.admission_units(params, inp, out, np.zeros(self.N, dtype=np.int64)), pol, "admission_units")
        self.fresh_cum = [0, *accumulate(units.tolist())]  # admission units of requests < i (never admitted)
        # a static holding is kept up to date by adding on admission and subtracting on retirement (whole units)
        self.hold = _whole(pol.held_units(params, inp + out, inp, out), pol, "held_units").tolist() \
            if pol.static_hold else None
        self.hold_cum = [0, *accumulate(self.hold)] if self.hold is not None else None  # held units of requests < i
        self.one_cum = [0, *accumulate((out <= 1).tolist())]  # requests < i whose only token comes out of prefill

    # ---- one boundary: admit -> prefill -> (preempt) -> decode segment -> retire -----------------------
    def _admit(self, st: _State, b: _Boundary, defer: bool = False) -> None:
        """Admit what the policy and the clock allow and prefill it. ``defer`` (a clock-free chunk: nothing reads
        the clock until the commit) leaves a prefill the memo does not hold for :meth:`_prefill_costs`."""
        room = self.B - st.n
        if room <= 0:
            return
        pol, p = self.pol, self.params
        budget = pol.admission_budget(p, st.used)
        back: list[int] = []  # readmitted (preempted) requests
        if st.front:  # preempted requests first (they have arrived), head-of-line
            fr = np.asarray(st.front[:room], dtype=np.int64)
            units = pol.admission_units(p, self.inp[fr], self.out[fr], self.gen[fr])
            take = int(np.searchsorted(np.cumsum(units), budget, side="right"))
            back = st.front[:take]
            budget -= int(units[:take].sum())
            room = room - take if take == len(st.front) else 0
            del st.front[:take]
        lo = st.nxt
        if room > 0 and lo < self.N:  # then the next never-admitted requests, as many as the budget allows
            cum = self.fresh_cum
            b.k_new_max = bisect_right(cum, cum[lo] + budget, lo + 1, min(self.N, lo + room) + 1) - (lo + 1)
            if b.k_new_max:  # of those, the ones that have arrived
                b.k_new = bisect_right(self.arr_l, st.t, lo, lo + b.k_new_max) - lo
                st.nxt += b.k_new
        hi = st.nxt
        if not back and hi == lo:
            return
        a = np.asarray(back + list(range(lo, hi)), dtype=np.int64) if back else slice(lo, hi)
        k = len(back) + hi - lo
        need = self.need_l
        chs = st.chan.admit([need[i] for i in back] + need[lo:hi] if back else need[lo:hi])
        self.channel[a] = chs
        cols = st.act[:, st.n:st.n + k]
        cols[:] = self.fresh[:, a]
        cols[CH] = chs
        if back:  # a readmitted request resumes after the g >= 1 tokens it had generated: prefill over P + g
            g = self.gen[a]
            cols[CTX] += g
            cols[REM] -= g
            lens = (cols[CTX] - 1).tolist()
        else:
            lens = self.inp_l[lo:hi]
        cost = self.prefill.of_list(lens, compute=not defer)
        st.n += k
        if self.hold is not None:
            st.used += self.hold_cum[hi] - self.hold_cum[lo] + (sum(self.hold[i] for i in back) if back else 0)
        else:
            self._used(st)
        data = self.rec.ensure(st.rows + 1)
        b.prefill = True
        if cost is None:  # costed with the chunk's other misses, in one pass, before the commit
            b.prefill_lens = lens
            data[st.rows] = (st.t, 0.0, k, 0.0, 0.0, 0.0, 0.0, PREFILL, st.used * self.unit_tokens, 0)
        else:
            data[st.rows] = (st.t, cost.time_s, k, cost.npu_busy_s, 0.0, 0.0, 0.0, PREFILL,
                             st.used * self.unit_tokens, 0)
            st.t += cost.time_s
            b.prefill_s = cost.time_s
            if defer:  # energies add in boundary order (_prefill_costs), as without deferral
                b.prefill_j = cost.energy_j
            else:
                st.prefill_e += cost.energy_j
        st.rows += 1
        # requests whose last token came out of the prefill finish there (a first admission: output_len <= 1)
        if (cols[REM].min() <= 0) if back else self.one_cum[hi] > self.one_cum[lo]:
            self._retire(st, b, st.rows - 1)

    def _prefill_costs(self, st: _State, bounds: list[_Boundary]) -> None:
        """The prefills of a clock-free chunk: the steps whose micro-batch shapes the memo lacked costed in one
        vectorized pass and their figures written, then every step's energy added in boundary order."""
        pf = self.prefill
        waiting = [b.prefill_lens for b in bounds if b.prefill_lens is not None]
        if waiting:
            pf.cost_missing(waiting)
            data, t_col, busy_col = self.rec.data, _COL["time_s"], _COL["npu_busy_s"]
            for b in bounds:
                if b.prefill_lens is not None:
                    cost = pf.of_list(b.prefill_lens)
                    data[b.rows, t_col], data[b.rows, busy_col] = cost.time_s, cost.npu_busy_s
                    b.prefill_s, b.prefill_j = cost.time_s, cost.energy_j
                    b.prefill_lens = None
        e = st.prefill_e
        for b in bounds:
            if b.prefill:
                e += b.prefill_j
        st.prefill_e = e

    def _used(self, st: _State) -> None:
        """Units the active set holds (a policy whose holding grows with the context recomputes it)."""
        act = st.act
        st.used = int(self.pol.held_units(self.params, act[CTX, :st.n], act[PROMPT, :st.n], act[OUT, :st.n]).sum())

    def _release(self, st: _State, ids: list[int], chs: list[int]) -> None:
        """Give back the channel load and the units of the requests ``ids`` (on channels ``chs``), which have left
        the active set."""
        need = self.need_l
        st.chan.release(chs, [need[i] for i in ids])
        if self.hold is not None:
            st.used -= sum(self.hold[i] for i in ids)
        else:
            self._used(st)

    def _retire(self, st: _State, b: _Boundary, row: int) -> None:
        act = st.act
        fin = (act[REM, :st.n] <= 0).nonzero()[0]
        k = fin.shape[0]
        if k <= 4:  # the usual one or two: read each, then close each gap, last first (the rest keep their order)
            fl = fin.tolist()
            gone = [act[:, i].tolist() for i in fl]
            ids, chs = [g[ID] for g in gone], [g[CH] for g in gone]
            for i in reversed(fl):
                act[:, i:st.n - 1] = act[:, i + 1:st.n]
                st.n -= 1
        else:
            gone = act[:, fin].tolist()
            ids, chs = gone[ID], gone[CH]
            m = st.n - k
            act[:, :m] = np.delete(act[:, :st.n], fin, axis=1)
            st.n = m
        b.finished += ((ids, row),)
        st.done += k
        self.rec.data[row, FINISHED] = k
        self._release(st, ids, chs)

    def _preempt(self, st: _State, b: _Boundary) -> None:
        """Preempt the newest active requests until the rest fit (recompute: they wait at the front)."""
        act = st.act
        m = self.pol.victims(self.params, act[CTX, :st.n], act[PROMPT, :st.n], act[OUT, :st.n])
        if m <= 0:
            return
        if m >= st.n:
            raise ModelError(f"serving stalled: the KV cache cannot hold even one request at t={st.t:.6g} s")
        v = act[:, st.n - m:st.n].copy()
        b.gen_undo += ((v[ID], self.gen[v[ID]].copy()),)
        self.gen[v[ID]] = v[CTX] - v[PROMPT]  # tokens generated so far (the latest not yet in the KV)
        st.front[:0] = v[ID].tolist()  # oldest admitted of them first
        st.n -= m
        st.preemptions += m
        self._release(st, v[ID].tolist(), v[CH].tolist())

    def _boundary(self, st: _State, segs: list, room_iters: int, exact: bool, clock_free: bool) -> _Boundary | None:
        """Lay out one boundary (``st`` advances; decode times predicted, or evaluated when ``exact``). In a
        clock-free chunk (every request has arrived) no decision can differ, so there is no snapshot, and
        nothing reads the predicted clock (_commit sets the true one), so decode times are not predicted."""
        if st.done >= self.N:
            return None
        b = _Boundary(st.nxt, st.rows, None if clock_free else st.copy())
        self._admit(st, b, clock_free)
        if st.n == 0:
            if st.done >= self.N or b.prefill:
                return b
            if st.nxt < self.N and self.arr_l[st.nxt] > st.t:  # idle until the next arrival
                b.idle_to = self.arr_l[st.nxt]
                st.idle += b.idle_to - st.t
                st.t = b.idle_to
                return b
            raise ModelError(f"serving stalled at t={st.t:.6g} s: request {st.nxt} waits with nothing active")
        pol = self.pol
        if pol.preempts and st.used > pol.capacity_units(self.params):  # (else they fit: no victims)
            self._preempt(st, b)
        act, n = st.act, st.n
        ctx, ch = act[CTX, :n].copy(), act[CH, :n].copy()
        ctx_sum = 0.0 if clock_free else float(ctx.sum())  # only the predictor reads it
        rem = act[REM, :n]
        rem_min = int(rem[rem.argmin()])  # (argmin costs numpy less than min)
        j_cap = pol.overflow_at(self.params, ctx, act[PROMPT, :n], act[OUT, :n], rem_min) if pol.preempts else rem_min
        j_cap = max(min(j_cap, room_iters), 1)
        stop = math.inf
        nxt = st.nxt
        if n < self.B and nxt < self.N and not st.front:  # the next arrival ends the segment if it fits
            if self.fresh_cum[nxt + 1] - self.fresh_cum[nxt] <= pol.admission_budget(self.params, st.used):
                stop = self.arr_l[nxt]
        known, seg_s = None, 0.0  # its evaluated iterations (exact), its predicted time
        if exact and stop < math.inf:
            known = self._exact(st.t, ctx, ch, stop, j_cap)
            J = _stop_index(st.t, known.time_s, stop, j_cap)
            seg_s = float(known.time_s[:J].sum())
            known = _slice_parts([known], J)
        elif clock_free and stop == math.inf:
            J = j_cap
        else:
            J, seg_s = self.pred.segment(n, ctx_sum, st.t, stop, j_cap)
        b.seg, b.j_cap, b.stop_s, b.j = len(segs), j_cap, stop, J
        i = st.rows
        segs.append(_Segment(i, ctx, ctx_sum, ch, J, known))
        data = self.rec.ensure(i + J)
        data[i:i + J] = (0.0, 0.0, n, 0.0, 0.0, 0.0, 0.0, DECODE, st.used * self.unit_tokens, 0)
        if pol.preempts and J > 1:  # the held units grow with the contexts: record each iteration's
            held = pol.held_units(self.params, ctx[None, :] + np.arange(J)[:, None], act[PROMPT, :n],
                                       act[OUT, :n]).sum(axis=1)
            data[i:i + J, _COL["kv_tokens"]] = held * self.unit_tokens
        st.rows = i + J
        st.iters += J
        st.t += seg_s
        act[CTX, :n] += J
        act[REM, :n] -= J
        if self.hold is None:
            self._used(st)
        if J == rem_min:
            self._retire(st, b, st.rows - 1)
        return b

    def _exact(self, t0: float, ctx, ch, stop: float, cap: int) -> IterationBatch:
        """Evaluate a segment's iterations in growing windows until the true clock reaches ``stop`` (or cap)."""
        n = ctx.shape[0]
        w = min(cap, int(_stop_index(t0, self.pred.times(n, float(ctx.sum()), cap), stop, cap)) + 2)
        got: list[IterationBatch] = []
        done, t = 0, t0
        while True:
            w = min(w, cap - done)
            lens = (ctx[None, :] + np.arange(done, done + w)[:, None]).ravel()
            got.append(run_iterations_flat(self.sched, lens, np.tile(ch, w), np.full(w, n, dtype=np.int64),
                                           keep_stages=self.keep_stages))
            done += w
            t += float(got[-1].time_s.sum())
            if t >= stop or done >= cap:
                return _slice_parts(got, done)
            w *= 2

    # ---- chunks ------------------------------------------------------------------------------------------
    def _evaluate(self, segs: list) -> IterationBatch | None:
        """Every decode iteration of the chunk's segments, in order: known ones as they are, the others in
        engine calls of at most CHUNK_ROWS request-iterations (one more piece's worth when a single iteration
        of a segment does not fit the rest), their lengths and channels written straight into the call's
        arrays."""
        parts: list[IterationBatch] = []
        cap = CHUNK_ROWS + self.B  # a piece of one iteration goes in whole
        lens = chs = None  # the next engine call's request lengths and channels (fresh arrays for every call)
        n_l, j_l, size = [], [], 0  # per piece: requests, iterations; rows written

        def flush() -> None:
            nonlocal lens, chs, n_l, j_l, size
            if n_l:
                parts.append(run_iterations_flat(self.sched, lens[:size], chs[:size],
                                                 np.repeat(np.asarray(n_l, dtype=np.int64), j_l),
                                                 keep_stages=self.keep_stages))
            lens = chs = None
            n_l, j_l, size = [], [], 0

        for sg in segs:
            if sg.known is not None:
                flush()
                parts.append(sg.known)
                continue
            n = sg.ctx.shape[0]
            done = 0
            while done < sg.j:
                take = min(sg.j - done, max(1, (CHUNK_ROWS - size) // max(n, 1)))
                if lens is None:
                    lens, chs = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
                end = size + take * n
                if take == 1:
                    lens[size:end] = sg.ctx + done if done else sg.ctx
                    chs[size:end] = sg.ch
                else:  # iteration i of the piece: every context + done + i
                    np.add(sg.ctx[None, :], np.arange(done, done + take)[:, None], out=lens[size:end].reshape(take, n))
                    chs[size:end].reshape(take, n)[:] = sg.ch
                n_l.append(n)
                j_l.append(take)
                size = end
                done += take
                if size >= CHUNK_ROWS:
                    flush()
        flush()
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else _slice_parts(parts, sum(len(p) for p in parts))

    def run(self, cap: int, cap_bytes: float, kv_tok_bytes: float) -> ServeRun:
        st = _State(np.empty((self.rows, self.B), dtype=np.int64), 0, 0, [], 0,
                    ChannelLoad(self.kv_policy, self.C, self.kv_stride), 0, 0.0, 0.0, 0.0, 0, 0, 0)
        horizon = MIN_CHUNK_ITERATIONS  # speculation grows as the predictor earns it (a miss wastes the chunk)
        next_report = PROGRESS_EVERY
        exact = True  # the first boundary is evaluated exactly: the predictor has seen nothing yet
        while st.done < self.N:
            segs: list[_Segment] = []
            bounds: list[_Boundary] = []
            iters, t0, idle0 = 0, st.t, st.idle
            clock_free = st.nxt >= self.N or self.arr_l[-1] <= st.t  # every request has arrived
            limit = MAX_CHUNK_ITERATIONS if clock_free else horizon
            if self.report is not None:  # a progress bar moves at least every PROGRESS_EVERY iterations
                limit = min(limit, PROGRESS_EVERY)
            while iters < limit:
                b = self._boundary(st, segs, limit - iters, exact and not bounds and not clock_free, clock_free)
                if b is None:
                    break
                bounds.append(b)
                iters += b.j
            if clock_free:
                self._prefill_costs(st, bounds)
            batch = self._evaluate(segs)
            st, kept = self._commit(bounds, segs, batch, t0, idle0, st, not clock_free)
            exact = kept == 0
            if kept == len(bounds):
                horizon = min(MAX_CHUNK_ITERATIONS, horizon * 2)
            else:
                horizon = max(MIN_CHUNK_ITERATIONS, horizon // 2)
            if self.report is not None and st.iters >= next_report:
                self.report(st.done, self.N)
                next_report = (st.iters // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        if self.report is not None:
            self.report(st.done, self.N)
        self.rec.n = st.rows
        stages = _concat_stages(self.stage_tables) if self.keep_stages and self.stage_tables else None
        return ServeRun(self.rec.columns(), self.lazy, self.inp, self.out, self.arr, self.first_s, self.finish_s,
                        self.channel, cap, cap_bytes, kv_tok_bytes, st.t, st.idle, st.prefill_e, self.totals,
                        self.pol.name, st.preemptions, stages)

    def _commit(self, bounds: list[_Boundary], segs: list, batch: IterationBatch | None, t: float, idle: float,
                end: _State, learn: bool = True) -> tuple[_State, int]:
        """Walk the chunk, which started at clock ``t`` (``idle`` so far), with the true times; commit every
        boundary before the first clock-dependent decision that would have gone differently. Returns the state
        to continue from and the boundaries kept. ``learn``: the predictor sees the committed iterations (not
        after a clock-free chunk: every chunk after it is clock-free too, and none predicts)."""
        arr_l, N = self.arr_l, self.N
        times = batch.time_s if batch is not None else np.zeros(0)
        tl = times.tolist()
        offs = [0, *accumulate(sg.j for sg in segs)]
        data = self.rec.data
        keep = len(bounds)
        # the kept boundaries' rows: prefill rows and their starts, decode-iteration starts (one after another from
        # their segment's), and the requests whose first tokens (finishes) a row produced, with that row
        pre_rows, pre_start, dec_start, first_ids, first_rows, fin_ids, fin_rows = [], [], [], [], [], [], []
        n_seg = 0
        for bi, b in enumerate(bounds):
            nxt = b.nxt
            if b.k_new_max and nxt < N:  # how many new arrivals the admission saw
                if bisect_right(arr_l, t, nxt, nxt + b.k_new_max) - nxt != b.k_new:
                    keep = bi
                    break
            t_seg = t + b.prefill_s
            if b.idle_to > 0:
                idle += b.idle_to - t_seg
                t_seg = b.idle_to
            seg_s = 0.0
            if b.seg >= 0:
                o, j = offs[b.seg], b.j
                if j == 1 and b.j_cap == 1:  # the usual segment: one iteration, nothing to check
                    seg_s = tl[o]
                    dec_start.append(t_seg + seg_s - seg_s)  # _starts of one iteration
                else:
                    seg_t = times[o:o + j]
                    if b.stop_s < math.inf and _stop_index(t_seg, seg_t, b.stop_s, b.j_cap) != j:
                        keep = bi
                        break
                    seg_s = tl[o] if j == 1 else float(seg_t.sum())
                    dec_start += _starts(t_seg, seg_t)
                n_seg += 1
            if b.prefill:
                pre_rows.append(b.rows)
                pre_start.append(t)
            if b.k_new:
                first_ids += range(nxt, nxt + b.k_new)
                first_rows += [b.rows] * b.k_new
            for ids, row in b.finished:
                fin_ids += ids
                fin_rows += [row] * len(ids)
            t = t_seg + seg_s
        # commit the kept boundaries: decode figures, clock of every row, first-token and finish times
        n_it = offs[n_seg]
        if n_it:
            kept = _slice_parts([batch], n_it) if n_it < len(batch) else batch
            js = [sg.j for sg in segs[:n_seg]]
            local = np.arange(n_it) - np.repeat(offs[:n_seg], js)  # iteration within its segment
            rows = local + np.repeat([sg.row for sg in segs[:n_seg]], js)
            data[rows, _COL["time_s"]] = kept.time_s
            data[rows, _COL["npu_busy_s"]] = kept.npu_busy_s
            data[rows, _COL["pim_busy_s"]] = kept.pim_busy_s
            if self.attn_share_on:
                data[rows, _COL["offload_attention_share"]] = np.divide(
                    kept.attn_offloaded_bytes, kept.attn_bytes, out=np.zeros(len(kept)), where=kept.attn_bytes > 0)
            data[rows, _COL["offload_fc_share"]] = np.divide(kept.fc_flops_offloaded, kept.fc_flops,
                                                             out=np.zeros(len(kept)), where=kept.fc_flops > 0)
            self.lazy.append_batch(kept)
            for f in SUMMED:
                self.totals[f] += float(getattr(kept, f).sum())
            if kept.stages is not None:
                self.stage_tables.append(kept.stages)
            # context sum of every iteration: its segment's first, plus one token per request per iteration
            if learn:
                ctx_sum = np.repeat([sg.ctx_sum for sg in segs[:n_seg]], js) \
                    + np.repeat([sg.ctx.shape[0] for sg in segs[:n_seg]], js) * local
                self.pred.update(kept.tokens.astype(float), ctx_sum, kept.time_s)
            data[rows, _COL["start_s"]] = dec_start
        data[pre_rows, _COL["start_s"]] = pre_start
        st_col, t_col = _COL["start_s"], _COL["time_s"]
        # a row's end is its start plus its time, for every request it produced a first token (finished) for
        self.first_s[first_ids] = data[first_rows, st_col] + data[first_rows, t_col]
        self.finish_s[fin_ids] = data[fin_rows, st_col] + data[fin_rows, t_col]
        if keep == len(bounds):
            end.t, end.idle = t, idle
            return end, keep
        # the decision at boundary `keep` differed: undo what the discarded boundaries wrote, resume there
        for b in reversed(bounds[keep:]):
            for ids, old in reversed(b.gen_undo):
                self.gen[ids] = old
        st = bounds[keep].snap.copy()
        act = np.empty((self.rows, self.B), dtype=np.int64)
        act[:, :st.n] = st.act
        st.act = act
        st.t, st.idle = t, idle
        data[st.rows:end.rows] = 0.0
        return st, keep


def _stop_index(t0: float, times: np.ndarray, stop: float, cap: int) -> int:
    """Iterations of a segment starting at ``t0``: up to and including the first whose end reaches ``stop``,
    at most ``cap``."""
    if not math.isfinite(stop):
        return cap
    ends = t0 + np.cumsum(times[:cap])
    hit = int(np.searchsorted(ends, stop, side="left"))
    return min(hit + 1, cap)


def _starts(clock: float, tt: np.ndarray) -> list[float]:
    """Start of each iteration of a segment that starts at ``clock`` and whose iterations take ``tt``:
    clock + cumsum(tt) - tt, element by element (a short segment in Python floats, the same additions)."""
    if tt.shape[0] > 16:
        return (clock + np.cumsum(tt) - tt).tolist()
    tl = tt.tolist()
    return [clock + c - x for c, x in zip(accumulate(tl), tl, strict=True)]


def _whole(units: np.ndarray, pol, what: str) -> np.ndarray:
    """A policy's per-request units, which the loop adds up incrementally: whole numbers."""
    if units.dtype.kind not in "iu":
        raise ModelError(f"admission policy '{pol.name}': {what} must return whole units (integers), "
                         f"not {units.dtype}")
    return units


def _slice_parts(parts: list[IterationBatch], n: int) -> IterationBatch:
    """The first ``n`` iterations of the consecutive engine results ``parts``, as one IterationBatch."""
    cols: dict[str, list] = {f: [] for f in ("tokens", *FIELDS)}
    stages = []
    left = n
    base = 0
    for p in parts:
        if left <= 0:
            break
        take = min(left, len(p))
        for f in cols:
            cols[f].append(getattr(p, f)[:take])
        if p.stages is not None:
            st = p.stages
            keep = st.iteration < take
            stages.append(StageTable(**{f: (getattr(st, f)[keep] + base if f == "iteration" else getattr(st, f)[keep])
                                        for f in StageTable.__dataclass_fields__}))
        base += take
        left -= take
    out = {f: np.concatenate(v) for f, v in cols.items()}
    used = parts[:len(cols["tokens"])]
    cand = np.concatenate([p.candidate[:len(c)] for p, c in zip(used, cols["tokens"], strict=True)]) \
        if all(p.candidate is not None for p in used) else None
    return IterationBatch(**out, candidate=cand, stages=_concat_stages(stages) if stages else None)


def _concat_stages(tables: list[StageTable]) -> StageTable:
    base = 0
    cols: dict[str, list] = {f: [] for f in StageTable.__dataclass_fields__}
    for tb in tables:
        for f in cols:
            v = getattr(tb, f)
            cols[f].append(v + base if f == "iteration" else v)
        base += int(tb.iteration.max()) + 1 if len(tb) else 0
    return StageTable(**{f: np.concatenate(v) for f, v in cols.items()})


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
    p = percentiles(x, PERCENTILES)  # np.percentile's figures, without its numpy.ma import
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "mean": float(x.mean())}


def latency_stats(run: ServeRun) -> dict[str, dict[str, float]]:
    """TTFT, TPOT and end-to-end latency: p50 / p90 / p99 (linear interpolation) and mean, seconds.

    TTFT = first token - arrival; TPOT = (finish - first token) / (output_len - 1) over requests with
    more than one output token; e2e = finish - arrival.
    """
    ttft = run.first_token_s - run.arrival_s
    e2e = run.finish_s - run.arrival_s
    multi = run.output_len > 1
    tpot = (run.finish_s[multi] - run.first_token_s[multi]) / (run.output_len[multi] - 1)
    return {"ttft_s": _stats(ttft), "tpot_s": _stats(tpot), "e2e_s": _stats(e2e)}


def serving_metrics(run: ServeRun, s: Setup) -> dict[str, float]:
    """Device metrics of the decode iterations plus run-level serving figures (metrics.registry)."""
    m = iteration_metrics(run.decode_totals, len(run.iterations), s)
    st = run.steps
    dec = st["kind"] == KINDS[DECODE]
    tokens = int(run.output_len.sum())
    T = run.total_time_s
    m.update({
        "throughput_tokens_per_s": tokens / T if T > 0 else 0.0,
        "iterations": float(len(run.iterations)),
        "prefill_steps": float(int((~dec).sum())),
        "preemptions": float(run.preemptions),
        "peak_batch": float(st["batch"][dec].max()) if dec.any() else 0.0,
        "mean_batch": float(st["batch"][dec].mean()) if dec.any() else 0.0,
        "peak_kv_occupancy": float(st["kv_tokens"].max()) * run.kv_bytes_per_token / run.kv_capacity_bytes
        if st["kv_tokens"].size else 0.0,
        "prefill_time_s": float(st["time_s"][~dec].sum()),
        "prefill_energy_j": run.prefill_energy_j,
        "idle_time_s": run.idle_s,
        "total_time_s": T,
        "requests_finished": float(int(np.isfinite(run.finish_s).sum())),
        "output_tokens": float(tokens),
    })
    return m


def per_iteration(run: ServeRun) -> dict[str, np.ndarray]:
    """The per-step arrays of a run with the KV held as a fraction of capacity ('kv_occupancy')."""
    st = dict(run.steps)
    st["kv_occupancy"] = st.pop("kv_tokens") * run.kv_bytes_per_token / run.kv_capacity_bytes
    return st


def serve(setup: Setup, keep_stages: bool = False, progress=None, policy: str | None = None) -> SimResult:
    """Simulate serving the setup's whole request trace; ``progress(done, total)`` is called now and then."""
    run = run_serving(setup, keep_stages=keep_stages, progress=progress, policy=policy)
    return SimResult(setup, serving_metrics(run, setup), run.iterations, latency=latency_stats(run),
                     per_iteration=per_iteration(run), mode="serve", stages=run.stages)

