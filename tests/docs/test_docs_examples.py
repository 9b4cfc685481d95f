"""The worked examples of the scheduler and DBO pages recompute from the code (issue 11):

- schedule.md: the runtime scheduler's predicted time per candidate and its choice; the two channel-aware
  splits of a small micro-batch;
- dbo.md: the column-tile example at batch 16; the bound on what DBO would add to prefill;
- concurrency.md: DEX against the dual row buffer, case by case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from doc_tables import check_values, marked_table
from librapim_cli import concurrency
from librapim_cli.cost.tables import build_tables
from librapim_cli.inputs import setup
from librapim_cli.optimize.stage import (
    C_LINK,
    C_MEM,
    C_PF,
    C_PFIO,
    C_RIDE,
    C_SA,
    C_VEC,
    MEM,
    PF_TIME,
    SA,
    busiest_channel,
    fc_at,
    fc_cols_at,
    npu_time,
)
from librapim_cli.schedule import plan
from librapim_cli.schedule.context import schedule_for
from librapim_cli.schedule.engine import run_iteration
from librapim_cli.simulate import simulate
from librapim_cli.workload import place_channels, steady_state_batch

MODEL = Path(__file__).resolve().parents[2] / "docs" / "model"
US = 1e6


def _first_sample(system: str, model: str, workload: str, batch: int, sets=()):
    s = setup(system, model, workload, batch=batch, sets=list(sets))
    lens = steady_state_batch(s, np.random.default_rng(s.workload.seed))
    sched = schedule_for(s, s.batch, int(lens.max()))
    ch = place_channels(lens, sched.tables.channels, s.system.placement.kv_channel_policy)
    return s, run_iteration(sched, lens, ch, keep_stages=True)


def test_runtime_choice_example():
    p, doc = marked_table(MODEL / "schedule.md", "runtime-choice")
    _, r = _first_sample(p["system"], p["model"], p["workload"], int(p["batch"]), p["sets"].split(","))
    pred = r.candidate_s[0] * 1e3
    c = int(r.candidate[0])
    assert doc.pop("chosen") == plan.CANDIDATES[c]
    # the choice is the smallest prediction (ties: the simpler candidate); the losers' figures are upper bounds
    assert c == int(np.argmin(pred))
    check_values(doc, {(f"{name}, ms" if i == c else f"{name}, ms (at most)"): float(pred[i])
                       for i, name in enumerate(plan.CANDIDATES)}, "schedule.md")
    # the chosen figure is the candidate's exact prediction: its stage records sum to it
    st = r.stages
    body = st.name != plan.HEAD_STAGE
    assert float((st.time_s[body] * st.repeats[body]).sum()) * 1e3 == pytest.approx(pred[c], rel=1e-12)


def test_split_example():
    p, doc = marked_table(MODEL / "schedule.md", "split-example")
    ch = np.array([int(x) for x in p["channels"].split(",")])
    lens = np.array([int(x) for x in p["lens"].split(",")])
    count, context = plan._splits(ch, 1, int(ch.max()) + 1, lens)
    assert doc == {"count": ",".join(map(str, count)), "context": ",".join(map(str, context))}
    # both splits keep every channel within one request of half (NeuPIMs' rule)
    for sub in (count, context):
        for c in np.unique(ch):
            n1 = int(sub[ch == c].sum())
            n = int((ch == c).sum())
            assert n1 in (n // 2, (n + 1) // 2)


def test_dbo_column_example():
    p, doc = marked_table(MODEL / "dbo.md", "dbo-columns")
    s, r = _first_sample(p["system"], p["model"], p["workload"], int(p["batch"]))
    st = r.stages
    i = int(np.flatnonzero(st.name == p["stage"])[0])
    cols = int(st.fc_cols_to_pim[i])
    rows = int(st.fc_rows[i])
    t = schedule_for(s, s.batch, 64).tables
    x = fc_cols_at(t, 1, rows, 0.0, cols)  # the 'rest' group (stage R), its figures at the chosen tiles
    base = fc_at(t, 1, rows, 0.0, 0)
    neu = simulate("neupims", p["model"], p["workload"], batch=int(p["batch"]), samples=1, mode="iteration")
    computed = {
        "column tiles moved (of 32)": float(cols),
        "stage time, us": float(st.time_s[i]) * US,
        "NPU share alone, us": float(st.npu_s[i]) * US,
        "PIM share, us": float(x[C_PF]) * US,
        # stage R has no attention: max(NPU, the channel streaming the weights), nothing moved
        "stage time with nothing moved, us": float(max(npu_time(base[C_SA], base[C_VEC], base[C_MEM], base[C_LINK]),
                                                        busiest_channel(t, 0.0, 0.0, 0.0, 0.0, base[C_MEM]))) * US,
        "iteration speedup over neupims": float(neu.iterations[0].time_s / r.time_s[0]),
    }
    check_values(doc, computed, "dbo.md")
    assert st.fc_rows_to_pim[i] == 0  # a decision moves rows or columns, not both


def test_prefill_bound_quoted_in_dbo_md():
    """dbo.md: the best row split of a layer's FC GEMMs for one 512-token prefill, against the NPU alone."""
    text = " ".join((MODEL / "dbo.md").read_text(encoding="utf-8").split())
    for arrays, shown in ((1, "1.140x"), (8, "1.016x")):
        s = setup("librapim", "gpt3-7b", "sharegpt", batch=512, sets=[f"hardware.npu.systolic_arrays={arrays}"])
        t = build_tables(s.model, s.system, s.tp, 512, 16)
        y = np.arange(513)
        npu = np.maximum(t.npu_stack[2, SA, 512 - y], t.npu_stack[2, MEM, 512 - y])
        best = np.maximum(npu, t.pim_fc_stack[2, PF_TIME, y]).min()
        assert f"{npu[0] / best:.3f}x" == shown and shown in text


def test_dex_cases_of_concurrency_md():
    p, doc = marked_table(MODEL / "concurrency.md", "dex-cases")
    s = setup("librapim", p["model"], "sharegpt", batch=256)
    assert s.tp == int(p["tp"])
    t = schedule_for(s, 256, 64).tables
    g = plan.FC_GROUPS.index(p["group"])
    rows, io = int(p["rows"]), float(p["pim_io_us"]) / US
    heavy, light = (float(v) / US for v in p["pim_attn_us"].split(","))
    moved_pim, moved_kv = float(p["moved_attn_us"]) / US, float(p["moved_kv_us"]) / US
    m = t.mode_params
    dex, drb = concurrency.get("dex"), concurrency.get("dual_row_buffer")
    base = fc_at(t, g, rows, 0.0, 0)
    ride = fc_at(t, g, rows, 0.0, 1)  # librapim's tables: the row rides the stream
    own = t.pim_fc_stack[g, :, 1]  # the same row with a pass of its own
    col = fc_cols_at(t, g, rows, 0.0, 1)
    w = base[C_MEM]

    def both(a, pf, pio, npu_w, kv, ride_s=0.0, pf_drb=None, pio_drb=None):
        return (float(dex.channel_time(m, a, pf, io + pio, npu_w, kv, ride_s)) * US,
                float(drb.channel_time(m, a, pf if pf_drb is None else pf_drb, io + (pio if pio_drb is None else pio_drb),
                                       npu_w, kv)) * US)

    cases = {
        "no offload, PIM-bound": both(heavy, 0.0, 0.0, w, 0.0),
        "one row, PIM-bound": both(heavy, ride[C_PF], ride[C_PFIO], ride[C_MEM], 0.0, ride[C_RIDE], own[0], own[1]),
        "one column tile, NPU-heavy": both(light, col[C_PF], col[C_PFIO], col[C_MEM], 0.0),
        "attention moved, PIM-bound": both(heavy - moved_pim, 0.0, 0.0, w, moved_kv),
    }
    computed = {}
    for case, (d, r) in cases.items():
        computed[f"{case}, dex"], computed[f"{case}, dual_row_buffer"] = d, r
    check_values(doc, computed, "concurrency.md")
    d0, r0 = cases["no offload, PIM-bound"]
    assert d0 == r0
    assert cases["one row, PIM-bound"][0] < cases["one row, PIM-bound"][1]  # riding: dex faster
    for case in ("one column tile, NPU-heavy", "attention moved, PIM-bound"):
        assert cases[case][0] > cases[case][1]  # work moved across sections: dex slower


@pytest.mark.parametrize("mode", ["dex"])
def test_riding_never_slows_the_weight_section(mode):
    """concurrency.md: riding FC rows proceed with the NPU's stream: the weight section with a riding share is
    never longer than the same work with no ride."""
    m = concurrency.get(mode)
    rng = np.random.default_rng(1)
    npu_w, pf = rng.exponential(1.0, (2, 2000))
    ride = pf * rng.random(2000)
    with_ride = m.channel_time(concurrency.ModeParams(), 0.0, pf, 0.0, npu_w, 0.0, ride)
    without = m.channel_time(concurrency.ModeParams(), 0.0, pf, 0.0, npu_w, 0.0, 0.0)
    assert np.all(with_ride <= without + 1e-15)
