"""Synthetic request lengths against the published statistics (docs/sources.md#s8), and trace parsing errors."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.errors import TraceError
from librapim_cli.spec import load
from librapim_cli.spec.workload import WorkloadSpec
from librapim_cli.workload.requests import make_requests, read_trace, sample_lengths

# docs/sources.md#s8 (NeuPIMs tokenization, stats.tsv): (mean, median) of input and output tokens
FACTS = {
    "sharegpt": {"input": (80.3, 17), "output": (295.0, 261)},
    "alpaca": {"input": (12.1, 11), "output": (55.8, 40)},
}


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("workload", sorted(FACTS))
@pytest.mark.parametrize("side", ["input", "output"])
def test_sampled_lengths_match_published_mean_and_median(workload, side, seed):
    w = load("workload", workload)
    stats = w.input_stats if side == "input" else w.output_stats
    x = sample_lengths(stats, 20_000, np.random.default_rng(seed))
    mean, median = FACTS[workload][side]
    assert x.mean() == pytest.approx(mean, rel=0.05)
    assert abs(float(np.median(x)) - median) <= 2
    assert x.min() >= stats.min and x.max() <= stats.max
    assert x.dtype == np.int64


@pytest.mark.parametrize("workload", sorted(FACTS))
def test_requests_after_the_sequence_cap_still_match(workload):
    r = make_requests(load("workload", workload), 20_000)
    (im, imed), (om, omed) = FACTS[workload]["input"], FACTS[workload]["output"]
    assert r.input_len.mean() == pytest.approx(im, rel=0.05) and abs(np.median(r.input_len) - imed) <= 2
    assert r.output_len.mean() == pytest.approx(om, rel=0.05) and abs(np.median(r.output_len) - omed) <= 2
    assert ((r.input_len + r.output_len) <= 2048).all() and (r.input_len >= 1).all() and (r.output_len >= 1).all()


@pytest.mark.parametrize(("body", "line"), [
    ("input_len,output_len\n4,3\nfour,3\n", 3),
    ("input_len,output_len\n4,3\n5,2\n6,\n", 4),
    ("input_len,output_len,arrival_s\n4,3,0\n0,3,1\n", 3),
    ("input_len,output_len,arrival_s\n4,3,soon\n", 2),
    ("input_len,output_len,arrival_s\n4,3,-1\n", 2),
])
def test_malformed_rows_name_their_line(tmp_path, body, line):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(TraceError, match=rf"^{p}:{line}: .*fix that line$"):
        read_trace(p)
    w = WorkloadSpec(name="bad", source="test", lengths="trace", trace_path=str(p), num_requests=2, max_batch=2)
    with pytest.raises(TraceError, match=rf":{line}: "):
        make_requests(w)


def test_missing_columns_and_missing_file(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("prompt,output_len\n4,3\n")
    with pytest.raises(TraceError, match="missing column"):
        read_trace(p)
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "nope.csv")
