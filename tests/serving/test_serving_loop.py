"""Continuous-batching loop: a hand-worked schedule, conservation, KV bound, determinism, arrivals, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import librapim_cli.serving.loop as loop
from librapim_cli.errors import InfeasibleDesign
from librapim_cli.inputs import weight_bytes_per_device
from librapim_cli.simulate import setup, simulate
from librapim_cli.spec.workload import WorkloadSpec


def _trace(tmp_path: Path, rows: list[tuple[int, int]], name: str = "t.csv") -> str:
    p = tmp_path / name
    p.write_text("input_len,output_len\n" + "".join(f"{i},{o}\n" for i, o in rows))
    return str(p)


def _recording(monkeypatch) -> list[tuple[list[int], list[int]]]:
    """Record (context lengths, channels) of every decode iteration the loop evaluates."""
    calls: list[tuple[list[int], list[int]]] = []
    real = loop.run_iterations_flat

    def spy(sched, lens, ch, n_k, keep_stages=False):
        at = 0
        for n in np.asarray(n_k).tolist():
            calls.append((np.asarray(lens[at:at + n]).tolist(), np.asarray(ch[at:at + n]).tolist()))
            at += n
        return real(sched, lens, ch, n_k, keep_stages)

    monkeypatch.setattr(loop, "run_iterations_flat", spy)
    return calls


# ---- a tiny trace worked by hand ------------------------------------------------------------------------
# Requests (input, output): A = (4, 3), B = (2, 1), C = (3, 2), all arriving at t = 0; max batch 2.
# KV reserved (input + output): A 7, B 3, C 5 tokens.
#   step 0  prefill [A, B]  batch 2  A's and B's first tokens. B has output 1: it finishes here, freeing
#                           its KV; admission happens once per step boundary, so C waits.
#   step 1  decode  [A]     batch 1  A's context 4 + 1 = 5 (its 2nd token)
#   step 2  prefill [C]     batch 1  C's first token
#   step 3  decode  [A, C]  batch 2  A's context 6 (3rd and last token), C's context 4 (2nd and last token)
# Decode iterations: 2, batches [1, 2]. Output tokens: 2 + 1 + 1 + 2 = 6 = 3 + 1 + 2.
# least_loaded channels: A -> 0 (all empty), B -> 1 (channel 0 holds 7 tokens), B leaves, C -> 1 (empty
# again, lowest index among the empty ones). round_robin: A -> 0, B -> 1, C -> 2.
TINY = [(4, 3), (2, 1), (3, 2)]


def _tiny_setup(tmp_path: Path, policy: str):
    w = WorkloadSpec(name="tiny", source="test", lengths="trace", trace_path=_trace(tmp_path, TINY),
                     num_requests=3, max_batch=2)
    return setup("neupims", "gpt3-7b", w, sets=[f"system.placement.kv_channel_policy={policy}"])


@pytest.mark.parametrize(("policy", "channels"), [("least_loaded", [0, 1]), ("round_robin", [0, 2])])
def test_tiny_trace_schedule_by_hand(tmp_path, monkeypatch, policy, channels):
    calls = _recording(monkeypatch)
    run = loop.run_serving(_tiny_setup(tmp_path, policy))  # closed loop: one chunk, evaluated in one pass
    st = run.steps
    assert st["kind"].tolist() == ["prefill", "decode", "prefill", "decode"]
    assert st["batch"].tolist() == [2, 1, 1, 2]
    assert st["finished"].tolist() == [1, 0, 0, 2]
    assert st["kv_tokens"].tolist() == [7 + 3, 7, 7 + 5, 7 + 5]
    assert len(run.iterations) == 2
    assert calls == [([5], [0]), ([6, 4], channels)]
    # the clock: steps back to back from 0; B finishes with its prefill, A and C with the last iteration
    end = st["start_s"] + st["time_s"]
    np.testing.assert_array_equal(st["start_s"][1:], end[:-1])
    assert run.finish_s.tolist() == [end[3], end[0], end[3]]
    assert run.first_token_s.tolist() == [end[0], end[0], end[2]]
    assert run.total_time_s == end[3]


def test_tiny_trace_latency_by_hand(tmp_path):
    s = _tiny_setup(tmp_path, "least_loaded")
    run = loop.run_serving(s)
    st = run.steps
    end = st["start_s"] + st["time_s"]
    lat = loop.latency_stats(run)
    # TTFT: A, B at the end of step 0, C at the end of step 2; TPOT only for A (2 gaps) and C (1 gap)
    assert lat["ttft_s"]["mean"] == pytest.approx((end[0] + end[0] + end[2]) / 3)
    assert lat["tpot_s"]["mean"] == pytest.approx(((end[3] - end[0]) / 2 + (end[3] - end[2]) / 1) / 2)
    assert lat["e2e_s"]["p50"] == pytest.approx(end[3])
    res = loop.serve(s)
    assert res.metrics["throughput_tokens_per_s"] == pytest.approx(6 / end[3])
    assert res.metrics["output_tokens"] == 6 and res.metrics["requests_finished"] == 3
    assert res.metrics["iterations"] == 2 and res.metrics["peak_batch"] == 2
    assert res.metrics["prefill_time_s"] == pytest.approx(st["time_s"][0] + st["time_s"][2])


# ---- conservation and bounds ----------------------------------------------------------------------------
def _kv_bound_setup(kv_tokens: int, requests: int = 150, batch: int = 48, workload="sharegpt"):
    """gpt3-7b on neupims with memory for the weights plus ``kv_tokens`` tokens of KV per device."""
    s = setup("neupims", "gpt3-7b", "sharegpt")
    cap = int(weight_bytes_per_device(s.model, s.tp, s.pp)) + kv_tokens * 131072 + 1000  # 131072 B/token, 7B TP4
    return setup("neupims", "gpt3-7b", workload, batch=batch, requests=requests,
                 sets=[f"system.hardware.memory.capacity_bytes={cap}"])


@pytest.mark.parametrize("case", ["kv_bound", "batch_bound"])
def test_conservation_and_bounds(case):
    s = _kv_bound_setup(6000) if case == "kv_bound" else setup("librapim", "gpt3-7b", "alpaca", batch=16,
                                                               requests=200)
    run = loop.run_serving(s)
    st = run.steps
    n = len(run.input_len)
    # every request finishes exactly once: each leaves the active set once, and the counts add up
    assert int(st["finished"].sum()) == n
    assert np.isfinite(run.finish_s).all() and np.isfinite(run.first_token_s).all()
    assert (run.first_token_s >= run.arrival_s).all() and (run.finish_s >= run.first_token_s).all()
    # one output token per request per step it takes part in
    assert int(st["batch"].sum()) == int(run.output_len.sum())
    dec = st["kind"] == "decode"
    assert int(st["batch"][dec].sum()) == int((run.output_len - 1).sum())
    assert st["batch"].max() <= s.batch
    assert st["kv_tokens"].max() <= run.kv_capacity_tokens
    assert st["kv_tokens"].max() * run.kv_bytes_per_token <= run.kv_capacity_bytes
    assert len(run.iterations) == int(dec.sum())
    assert [r.tokens for r in run.iterations] == st["batch"][dec].tolist()
    assert (run.channel >= 0).all() and (run.channel < s.system.hardware.memory.channels).all()
    if case == "kv_bound":
        assert st["batch"][dec].max() < s.batch  # the KV cache, not the batch limit, binds
        assert st["kv_tokens"].max() > 0.95 * run.kv_capacity_tokens
    else:
        assert st["batch"][dec].max() == s.batch


def test_serve_through_simulate_matches_loop():
    res = simulate("librapim", "gpt3-7b", "alpaca", batch=16, requests=60, mode="serve")
    assert res.mode == "serve"
    assert res.metrics["requests_finished"] == 60.0
    p = res.per_iteration
    assert p is not None
    assert set(p) >= {"start_s", "time_s", "batch", "npu_busy_s", "pim_busy_s", "offload_attention_share",
                      "offload_fc_share", "kind", "kv_occupancy", "finished"}
    assert (p["kv_occupancy"] <= 1.0).all()
    assert res.metrics["total_time_s"] == pytest.approx(float(p["start_s"][-1] + p["time_s"][-1]))
    assert res.metrics["peak_kv_occupancy"] == pytest.approx(float(p["kv_occupancy"].max()))
    assert set(res.latency) == {"ttft_s", "tpot_s", "e2e_s"}
    for v in res.latency.values():
        assert set(v) == {"p50", "p90", "p99", "mean"}
        assert v["p50"] <= v["p90"] <= v["p99"]


def _dump(res) -> str:
    return json.dumps({"metrics": res.metrics, "latency": res.latency,
                       "per_iteration": {k: v.tolist() for k, v in res.per_iteration.items()}}, sort_keys=True)


def test_same_seed_gives_identical_results():
    a = simulate("librapim", "gpt3-7b", "sharegpt", batch=24, requests=80, mode="serve")
    b = simulate("librapim", "gpt3-7b", "sharegpt", batch=24, requests=80, mode="serve")
    assert _dump(a) == _dump(b)
    c = simulate("librapim", "gpt3-7b", "sharegpt", batch=24, requests=80, mode="serve",
                 sets=["workload.seed=1"])
    assert _dump(c) != _dump(a)


def test_progress_is_reported(monkeypatch):
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 50)
    seen: list[tuple[int, int]] = []
    res = loop.serve(setup("neupims", "gpt3-7b", "alpaca", batch=8, requests=40),
                     progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (40, 40)
    assert len(seen) >= res.metrics["iterations"] // 50
    assert all(t == 40 for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)


# ---- arrivals -------------------------------------------------------------------------------------------
def test_poisson_arrivals_idle_between_requests():
    # 0.5 requests/s; each request is ~8 decode iterations of ~15 ms: the system is mostly idle
    w = WorkloadSpec(name="sparse", source="test", lengths="fixed", input_len=16, output_len=8, num_requests=12,
                     max_batch=4, arrival="poisson", rate_per_s=0.5, seed=3)
    run = loop.run_serving(setup("neupims", "gpt3-7b", w))
    st = run.steps
    assert run.total_time_s >= run.arrival_s[-1]
    assert run.idle_s > 0.5 * run.arrival_s[-1]
    end = st["start_s"] + st["time_s"]
    assert (st["start_s"][1:] > end[:-1]).any()  # the clock jumped over a gap
    assert (st["start_s"][1:] >= end[:-1] - 1e-12).all()
    assert (run.first_token_s > run.arrival_s).all()
    # a lone request is prefilled the moment it arrives: its TTFT is one prefill step
    lone = st["kind"] == "prefill"
    assert lone.sum() >= 2


def test_trace_arrivals_wait_for_their_time(tmp_path):
    p = tmp_path / "arr.csv"
    p.write_text("input_len,output_len,arrival_s\n8,4,0\n8,4,5.0\n8,4,5.0\n")
    w = WorkloadSpec(name="arr", source="test", lengths="trace", trace_path=str(p), num_requests=3, max_batch=4,
                     arrival="trace")
    run = loop.run_serving(setup("neupims", "gpt3-7b", w))
    st = run.steps
    assert st["kind"].tolist() == ["prefill"] + ["decode"] * 3 + ["prefill"] + ["decode"] * 3
    assert st["batch"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    assert st["start_s"][4] == 5.0
    assert run.idle_s == pytest.approx(5.0 - (st["start_s"][3] + st["time_s"][3]))


# ---- errors ---------------------------------------------------------------------------------------------
def test_request_that_can_never_fit_is_infeasible():
    s = _kv_bound_setup(2000, requests=4, workload="fixed-2048-128")  # 2000 tokens of KV; requests need 2176
    with pytest.raises(InfeasibleDesign, match=r"^request \d+ \(\d+ \+ \d+ tokens\) needs .* GiB of KV cache per "
                                               r"device .* lower workload.max_seq_len or raise tp/pp$"):
        loop.run_serving(s)


def test_weights_that_do_not_fit_are_infeasible():
    with pytest.raises(InfeasibleDesign, match="needs .* GiB of weights per device"):
        simulate("neupims", "gpt3-175b", "alpaca", mode="serve", sets=["system.tp=1", "system.pp=1"])


@pytest.mark.parametrize("stride", [1, 3, 8])
@pytest.mark.parametrize("k", [1, 2, 5, 40])
def test_release_channels_gives_back_exactly_the_bincount(stride, k):
    """release_channels forms a few requests' sums in Python: bit for bit the np.bincount it does for many
    (repeated channels, non-integer tokens, every stride)."""
    from librapim_cli.workload import release_channels

    rng = np.random.default_rng(k * 10 + stride)
    C = 16
    for _ in range(20):
        ch = rng.integers(0, C, k)
        need = rng.random(k) * 1e4
        load = rng.random(C) * 1e6
        want = load - np.bincount((np.tile(ch, stride) + np.repeat(np.arange(stride), k)) % C,
                                  weights=np.tile(need, stride), minlength=C)
        for args in ((ch, need), (ch.tolist(), need.tolist())):
            got = load.copy()
            release_channels(got, *args, stride=stride)
            np.testing.assert_array_equal(got, want)
