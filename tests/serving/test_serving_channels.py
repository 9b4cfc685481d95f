"""ChannelLoad (the serving loop's channel accounting) against admit_channels / release_channels on an array."""

from __future__ import annotations

import numpy as np
import pytest

from librapim_cli.workload import admit_channels, release_channels
from librapim_cli.workload.placement import ChannelLoad


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin"])
@pytest.mark.parametrize(("channels", "stride"), [(16, 1), (7, 1), (16, 3), (80, 12)])
def test_channel_load_matches_the_array_functions(policy, channels, stride):
    """Requests come (a few or many at a time, more than there are channels included) and go (one, several on
    one channel, all): the same channels, round-robin position and load, bit for bit, with non-integer tokens;
    a copy is independent of its original."""
    rng = np.random.default_rng(channels * 100 + stride)
    cl = ChannelLoad(policy, channels, stride)
    load, rr = np.zeros(channels), 0
    active: list[tuple[int, float]] = []  # (channel, tokens)
    for step in range(300):
        k = int(rng.choice([1, 1, 2, 3, 2 * channels + 1]))
        need = (rng.random(k) * 1e4 + rng.integers(1, 4000, k)).tolist()
        want, rr = admit_channels(policy, np.asarray(need), load, rr, stride)
        got = cl.admit(need)
        assert got == want.tolist()
        assert isinstance(got[0], int)
        active += zip(got, need, strict=True)
        if active and step % 3:
            pick = sorted(set(rng.integers(0, len(active), int(rng.integers(1, min(len(active), 40) + 1))).tolist()))
            if step % 7 == 0:
                pick = list(range(len(active)))
            gone = [active[i] for i in pick]
            active = [a for i, a in enumerate(active) if i not in set(pick)]
            chs, toks = [c for c, _ in gone], [x for _, x in gone]
            release_channels(load, np.asarray(chs), np.asarray(toks), stride)
            cl.release(chs, toks)
        assert cl.rr == rr
        np.testing.assert_array_equal(cl.loads(), load)
        if step == 150:
            snap, snap_load = cl.copy(), cl.loads()
    cl.admit([1e6])
    np.testing.assert_array_equal(snap.loads(), snap_load)


def test_channel_load_least_loaded_takes_the_first_minimum():
    cl = ChannelLoad("least_loaded", 4)
    assert cl.admit([5.0, 5.0, 1.0, 1.0, 2.0]) == [0, 1, 2, 3, 2]
    cl.release([0], [5.0])
    assert cl.admit([1.0]) == [0]
    with pytest.raises(ValueError, match="unknown KV channel policy"):
        ChannelLoad("random", 4)
