"""The step-by-step serving loop of librapim 0.1 (test oracle): continuous batching at iteration level (Orca-style) over a request trace (docs/model/serving.md).

The loop alternates steps on one clock:

1. **Admission** (at every step boundary). Requests are taken first-come first-served while the batch has
   room (``setup.batch``) and the next *arrived* request's whole KV cache fits the capacity left after
   weights. The KV of input + output tokens is reserved at admission, so a request never has to be
   preempted or swapped: the KV bound holds at every step by construction (paged allocators such as
   vLLM's reserve on demand and preempt instead; reserving up front admits somewhat fewer requests).
   Admission stops at the first request that does not fit (no skipping ahead: FCFS, head-of-line).
   Each admitted request's KV lives in one HBM channel chosen by ``placement.kv_channel_policy``:
   ``round_robin`` (admission order) or ``least_loaded`` (fewest reserved tokens, lowest index on ties).
2. **Prefill** (when something was admitted): the new prompts run on the NPU as a step of their own
   between decode iterations (serving/prefill.py); the first output token comes out of it, so
   TTFT = prefill end - arrival. A request with one output token finishes there.
3. **Decode iteration**: ``run_iteration`` over the active requests; each gains one token. In decode
   iteration ``j`` (1-based) of a request with prompt ``P`` its context is ``P + j`` tokens; a request
   with ``O`` output tokens takes part in ``O - 1`` decode iterations and leaves after the last one,
   freeing its KV and its channel load.
4. **Idle**: nothing active and nothing arrived: the clock jumps to the next arrival.

Between membership changes the loop runs a *segment* of decode iterations with no Python work per
active request: its length is the smallest remaining output, cut short after the iteration in which a
waiting request that would fit arrives. Device metrics (utilization, offload shares, energy per token)
aggregate the decode iterations (``metrics.iteration_metrics``); throughput is output tokens over the
whole wall time, prefill and idle gaps included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from librapim_cli.errors import InfeasibleDesign, ModelError
from librapim_cli.inputs import Setup, kv_bytes_per_token_per_device, kv_capacity_bytes
from librapim_cli.schedule.context import Schedule, schedule_for
from librapim_cli.schedule.engine import IterationResult
from librapim_cli.schedule.engine import run_iteration as _engine_iteration
from librapim_cli.serving.prefill import prefill_coster
from librapim_cli.workload import admit_channels as lib_admit_channels
from librapim_cli.workload import make_requests, release_channels


def run_iteration(sched, ctx, chn, rng, keep_stages):
    """One decode iteration through the engine (a batch of one)."""
    return _engine_iteration(sched, ctx, chn, keep_stages).result(0)

KINDS = ("decode", "prefill")
DECODE, PREFILL = 0, 1
# columns of the per-step record (one row per decode iteration or prefill step)
COLUMNS = ("start_s", "time_s", "batch", "npu_busy_s", "pim_busy_s", "offload_attention_share",
           "offload_fc_share", "kind", "kv_tokens", "finished")
_INT_COLUMNS = ("batch", "kv_tokens", "finished")
_FIN = COLUMNS.index("finished")
# rows of the active-request array: request id, context of its next decode iteration, decode iterations
# left, KV channel, reserved KV tokens
ID, CTX, REM, CH, NEED = range(5)
PROGRESS_EVERY = 1000  # decode iterations between progress callbacks
PERCENTILES = (50, 90, 99)


class _Steps:
    """Per-step rows in one preallocated float array, doubled when full."""

    def __init__(self, capacity: int) -> None:
        self.data = np.zeros((max(capacity, 16), len(COLUMNS)))
        self.n = 0

    def room(self, extra: int) -> np.ndarray:
        """The backing array, grown so that ``extra`` more rows fit."""
        if self.n + extra > self.data.shape[0]:
            grown = np.zeros((max(self.n + extra, 2 * self.data.shape[0]), len(COLUMNS)))
            grown[: self.n] = self.data[: self.n]
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
    iterations: Sequence[IterationResult]  # the decode iterations in order (rows of kind decode); built on access in a closed loop
    input_len: np.ndarray
    output_len: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray  # end of the request's prefill
    finish_s: np.ndarray  # end of its last decode iteration (of its prefill if output_len == 1)
    channel: np.ndarray  # HBM channel holding its KV
    kv_capacity_tokens: int  # whole tokens of KV that fit the memory left after weights
    kv_capacity_bytes: float
    kv_bytes_per_token: float
    total_time_s: float
    idle_s: float  # time the clock advanced with nothing to run
    prefill_energy_j: float
    decode_totals: dict[str, float] | None = None  # sums of the decode iterations' fields, when known


def admit_channels(policy: str, need_tokens: np.ndarray, load: np.ndarray, rr_next: int, stride: int = 1
                   ) -> tuple[np.ndarray, int]:
    """Channels for newly admitted requests, in admission order; adds their tokens to ``load`` in place.

    Returns the channels and the next round-robin position. A request spanning ``stride`` channels (head-wise KV
    layout) takes the library's slot placement (``workload.admit_channels``: shared physics, not the loop).
    """
    if stride > 1:
        return lib_admit_channels(policy, need_tokens, load, rr_next, stride)
    k = need_tokens.shape[0]
    C = load.shape[0]
    if policy == "round_robin":
        ch = (rr_next + np.arange(k, dtype=np.int64)) % C
        load += np.bincount(ch, weights=need_tokens, minlength=C)
        return ch, (rr_next + k) % C
    ch = np.empty(k, dtype=np.int64)
    for i in range(k):  # greedy in admission order: once per request, never per iteration
        c = int(load.argmin())
        ch[i] = c
        load[c] += need_tokens[i]
    return ch, rr_next


def decode_segment(sched: Schedule, ctx: np.ndarray, chn: np.ndarray, steps: int, rng: np.random.Generator,
                   keep_stages: bool, t0_s: float, stop_at_s: float) -> list[IterationResult]:
    """Up to ``steps`` decode iterations of a fixed request set (contexts ``ctx + j`` in the j-th, from 0).

    Ends early after the iteration that brings the clock (``t0_s`` at the start) to ``stop_at_s``.
    """
    out: list[IterationResult] = []
    t = t0_s
    for j in range(steps):
        r = run_iteration(sched, ctx + j if j else ctx, chn, rng, keep_stages)
        out.append(r)
        t += r.time_s
        if t >= stop_at_s:
            break
    return out




def _retire(act: np.ndarray, n: int, used: int, finish_s: np.ndarray, load: np.ndarray, t: float, stride: int = 1
            ) -> tuple[int, int, int]:
    """Remove the active requests with no decode iterations left (finishing at ``t``), keeping order.

    Frees their KV tokens and channel load; returns the new active count, KV tokens in use, requests removed.
    """
    live = act[:, :n]
    fin = live[REM] == 0
    gone = live.compress(fin, axis=1)
    finish_s[gone[ID]] = t
    release_channels(load, gone[CH], gone[NEED], stride)
    m = n - gone.shape[1]
    act[:, :m] = live.compress(~fin, axis=1)
    return m, used - int(gone[NEED].sum()), gone.shape[1]


def run_serving(s: Setup, keep_stages: bool = False, progress=None, vectorize: bool = True) -> ServeRun:
    """Serve the setup's requests through continuous batching (module docstring).

    When every request arrives at t = 0 the order of steps and who is in each does not depend on their
    times, so (with ``vectorize``) the loop first lays out every step and then evaluates all decode
    iterations at once (``schedule.engine.run_iterations``, the same figures as ``run_iteration``); the
    clock, first-token and finish times are filled in afterwards from the step times.
    """
    reqs = make_requests(s.workload, s.requests)
    N = len(reqs)
    inp, out, arr = reqs.input_len, reqs.output_len, reqs.arrival_s
    if N > 1 and bool(np.any(np.diff(arr) < 0)):
        raise ModelError("make_requests returned requests out of arrival order; the serving loop needs them sorted")
    kv_tok_bytes = kv_bytes_per_token_per_device(s.model, s.tp, s.pp)
    cap_bytes = kv_capacity_bytes(s)
    cap = int(cap_bytes // kv_tok_bytes)
    need = inp + out  # KV tokens reserved per request
    worst = int(np.argmax(need))
    if need[worst] > cap:
        raise InfeasibleDesign(
            f"request {worst} ({inp[worst]} + {out[worst]} tokens) needs {need[worst] * kv_tok_bytes / 2**30:.2f} GiB "
            f"of KV cache per device but {s.model.name} on {s.system.hardware.name} (tp={s.tp}, pp={s.pp}) leaves "
            f"{max(cap_bytes, 0.0) / 2**30:.2f} GiB after weights; lower workload.max_seq_len or raise tp/pp")
    B = s.batch
    sched = schedule_for(s, B, int(need.max()))  # longest context any request reaches
    C = sched.tables.channels
    policy = s.system.placement.kv_channel_policy
    attn_share_on = s.system.placement.attention == "pim"
    prefill = prefill_coster(s.model, s.system, s.tp, s.pp)  # shared per configuration: a pure memo
    prefill.warm(inp)  # most prefill micro-batches hold one prompt
    rng = np.random.default_rng(s.system.dbo.seed)
    arr_l, need_l = arr.tolist(), need.tolist()  # scalar look-ups without numpy scalars
    # closed loop: lay the steps out first, evaluate the decode iterations together afterwards; until then
    # first_s / finish_s hold the index of the step that ends at that time
    deferred = False
    totals = None
    pending: list[tuple[int, np.ndarray, np.ndarray, int]] = []  # (first row, contexts, channels, iterations)
    one_token = out == 1

    act = np.empty((5, B), dtype=np.int64)  # the active requests: first n columns, in admission order
    load = np.zeros(C)  # reserved KV tokens per channel (integers, exact in float64)
    first_s = np.full(N, np.nan)
    finish_s = np.full(N, np.nan)
    channel = np.full(N, -1, dtype=np.int64)
    rec = _Steps(int(out.sum()) // B + 2 * (N // B) + 64)
    its: list[IterationResult] = []
    n = nxt = done = used = rr = 0
    t = idle = prefill_e = 0.0
    next_report = PROGRESS_EVERY
    report = progress if callable(progress) else None

    while done < N:
        # -- admission + prefill: requests nxt .. nxt + k - 1 (contiguous: FCFS over arrival order)
        room = B - n
        admitted = False
        if room > 0 and nxt < N and arr_l[nxt] <= t:
            hi = min(N, nxt + room)
            if arr_l[hi - 1] > t:
                hi = nxt + int(np.searchsorted(arr[nxt:hi], t, side="right"))
            cum = np.cumsum(need[nxt:hi])
            k = int(np.searchsorted(cum, cap - used, side="right"))
            if k:
                admitted = True
                a, b = nxt, nxt + k
                nxt = b
                used += int(cum[k - 1])
                chs, rr = admit_channels(policy, need[a:b], load, rr, sched.tables.kv_spread)
                channel[a:b] = chs
                cost = prefill(inp[a:b])
                data = rec.room(1)
                data[rec.n] = (t, cost.time_s, k, cost.npu_busy_s, 0.0, 0.0, 0.0, PREFILL, used, 0)
                rec.n += 1
                t += cost.time_s
                prefill_e += cost.energy_j
                first_s[a:b] = rec.n - 1 if deferred else t
                cols = act[:, n:n + k]
                cols[ID] = np.arange(a, b)
                cols[CTX] = inp[a:b] + 1
                cols[REM] = out[a:b] - 1
                cols[CH] = chs
                cols[NEED] = need[a:b]
                n += k
                if one_token[a:b].any():  # one-token requests finish with their prefill
                    n, used, gone = _retire(act, n, used, finish_s, load, rec.n - 1 if deferred else t,
                                           sched.tables.kv_spread)
                    done += gone
                    data[rec.n - 1, _FIN] = gone
        if n == 0:
            if done >= N or admitted:
                continue
            if arr_l[nxt] > t:  # idle until the next arrival
                idle += arr_l[nxt] - t
                t = arr_l[nxt]
                continue
            raise ModelError(f"serving stalled at t={t:.6g} s: request {nxt} waits with nothing active")
        # -- decode segment: until the next finish, or until a waiting request that fits arrives
        stop = arr_l[nxt] if (n < B and nxt < N and need_l[nxt] <= cap - used) else np.inf
        rem_min = int(act[REM, :n].min())
        if deferred:  # every arrival is at 0: a finite stop has passed, so the segment is one iteration
            J = rem_min if stop == np.inf else 1
            data = rec.room(J)
            i = rec.n
            pending.append((i, act[CTX, :n].copy(), act[CH, :n].copy(), J))
            data[i:i + J] = (0.0, 0.0, n, 0.0, 0.0, 0.0, 0.0, DECODE, used, 0)
            i += J
            rec.n = i
            its.extend([None] * J)
        else:
            seg = decode_segment(sched, act[CTX, :n], act[CH, :n], rem_min, rng, keep_stages, t, stop)
            J = len(seg)
            data = rec.room(J)
            i = rec.n
            for r in seg:
                a_sh = r.attn_offloaded_bytes / r.attn_bytes if (attn_share_on and r.attn_bytes > 0) else 0.0
                f_sh = r.fc_flops_offloaded / r.fc_flops if r.fc_flops > 0 else 0.0
                data[i] = (t, r.time_s, n, r.npu_busy_s, r.pim_busy_s, a_sh, f_sh, DECODE, used, 0)
                t += r.time_s
                i += 1
            rec.n = i
            its.extend(seg)
        act[CTX, :n] += J
        act[REM, :n] -= J
        if J == rem_min:  # the requests with the fewest tokens left are done
            n, used, gone = _retire(act, n, used, finish_s, load, i - 1 if deferred else t, sched.tables.kv_spread)
            done += gone
            data[i - 1, _FIN] = gone
        if report is not None and not deferred and len(its) >= next_report:
            report(done, N)
            next_report = (len(its) // PROGRESS_EVERY + 1) * PROGRESS_EVERY
    if report is not None:
        report(done, N)
    return ServeRun(rec.columns(), its, inp, out, arr, first_s, finish_s, channel, cap, cap_bytes, kv_tok_bytes,
                    t, idle, prefill_e, totals if deferred else None)


