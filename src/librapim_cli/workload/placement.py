"""KV placement: the HBM channel holding each request's KV cache (docs/model/pim.md, 'Channel placement').

- :func:`snake_channels`: least-loaded placement of a whole batch at once (longest first, snake order);
- :func:`place_channels`: a batch's channels under ``placement.kv_channel_policy``;
- :func:`admit_channels`: channels of requests admitted one by one while serving (greedy in admission order);
- :func:`release_channels`: the channel load a retired or preempted request gives back;
- :class:`ChannelLoad`: both over a serving run's channel load (Python floats when a request takes one channel).

With the head-wise KV layout a request spans ``stride`` consecutive channels (its parts, from the channel it is
given): the policies then hand out start channels ``stride`` apart, so that the batch's parts fill the channels
as one flat list of heads (AttAcc's mapping, docs/sources.md#s12) instead of piling up on neighbours.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

FEW = 32  # request-channel parts up to which release_channels updates the load channel by channel


def snake_channels(lens: np.ndarray, channels: int) -> np.ndarray:
    """Vectorized least-loaded placement for a whole batch: longest first, channels in snake order."""
    n = len(lens)
    order = np.argsort(-np.asarray(lens), kind="stable")
    pos = np.arange(n)
    lap, off = np.divmod(pos, channels)
    ch_sorted = np.where(lap % 2 == 0, off, channels - 1 - off)
    out = np.empty(n, dtype=np.int64)
    out[order] = ch_sorted
    return out


def slot_starts(channels: int, stride: int) -> np.ndarray:
    """Start channel of each slot when requests span ``stride`` consecutive channels: slot j starts at
    (j * stride) mod channels, for the channels / gcd(stride, channels) slots after which the starts repeat (one
    cycle of slots covers every channel stride / gcd times)."""
    n = channels // math.gcd(stride, channels)
    return (np.arange(n, dtype=np.int64) * stride) % channels


def place_channels(lens: np.ndarray, channels: int, policy: str, stride: int = 1) -> np.ndarray:
    """Channel of each request's KV for a whole batch: 'round_robin' (request i -> i mod channels) or
    'least_loaded' (the vectorized snake placement); with ``stride`` > 1 (a request spans that many channels)
    the same over the slots of :func:`slot_starts` (request i of round robin -> (i * stride) mod channels)."""
    if stride > 1:
        starts = slot_starts(channels, stride)
        return starts[place_channels(lens, starts.shape[0], policy)]
    if policy == "round_robin":
        return np.arange(len(lens), dtype=np.int64) % channels
    if policy == "least_loaded":
        return snake_channels(lens, channels)
    raise ValueError(f"unknown KV channel policy {policy!r}")


def admit_channels(policy: str, need_tokens: np.ndarray, load: np.ndarray, rr_next: int,
                   stride: int = 1) -> tuple[np.ndarray, int]:
    """Channels for newly admitted requests, in admission order; adds their tokens to ``load`` in place.

    Returns the channels and the next round-robin position. With ``stride`` > 1 (a request spans that many
    channels) a request takes a slot of :func:`slot_starts` (round robin: the next slot; least loaded: the slot
    whose channels hold the fewest tokens, lowest on ties) and adds its tokens to each of its channels.
    """
    k = need_tokens.shape[0]
    C = load.shape[0]
    if stride > 1:
        starts, span = _slot_spans(C, stride)
        ch = np.empty(k, dtype=np.int64)
        for i in range(k):
            j = rr_next % starts.shape[0] if policy == "round_robin" else int(load[span].sum(axis=1).argmin())
            ch[i] = starts[j]
            load[span[j]] += need_tokens[i]
            rr_next = (j + 1) % starts.shape[0] if policy == "round_robin" else rr_next
        return ch, rr_next
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


def release_channels(load: np.ndarray, channels, need_tokens, stride: int = 1) -> None:
    """Give back the channel load of retired or preempted requests (in place): each request's tokens from each
    of the ``stride`` channels it spans from its channel (as :func:`admit_channels` added them).

    ``channels`` and ``need_tokens``: arrays or lists of numbers. Each channel gives back the sum of its requests'
    tokens, added up in order (part s of every request, then part s + 1); for a few requests (the usual
    retirement) that sum is formed in Python, channel by channel, with the same additions as ``np.bincount``."""
    C = load.shape[0]
    if len(channels) * stride <= FEW:
        for c, x in _per_channel(_as_list(channels, np.int64), _as_list(need_tokens, float), stride, C).items():
            load[c] -= x
        return
    ch = np.asarray(channels, dtype=np.int64)
    span = (np.tile(ch, stride) + np.repeat(np.arange(stride), ch.shape[0])) % C
    load -= np.bincount(span, weights=np.tile(np.asarray(need_tokens, dtype=float), stride), minlength=C)


class ChannelLoad:
    """The channel load of a serving run's active set, with :func:`admit_channels` and :func:`release_channels`
    over it and the round-robin position.

    With ``stride`` 1 the load is a list of Python floats and a request's channel is found and its tokens added
    and given back in Python, with the same comparisons and additions as those functions make on their array
    (a first minimum, sums per channel in order): admissions and retirements come a few requests at a time,
    where numpy's per-call cost dominates. With ``stride`` > 1 they run on an array. Either way the same
    channels come out and the load holds the same numbers.
    """

    __slots__ = ("policy", "stride", "load", "rr")

    def __init__(self, policy: str, channels: int, stride: int = 1) -> None:
        if policy not in ("round_robin", "least_loaded"):
            raise ValueError(f"unknown KV channel policy {policy!r}")
        self.policy, self.stride, self.rr = policy, stride, 0
        self.load: list[float] | np.ndarray = [0.0] * channels if stride == 1 else np.zeros(channels)

    def copy(self) -> ChannelLoad:
        """An independent copy (a snapshot)."""
        c = ChannelLoad.__new__(ChannelLoad)
        c.policy, c.stride, c.rr = self.policy, self.stride, self.rr
        c.load = self.load.copy()
        return c

    def loads(self) -> np.ndarray:
        """The load per channel, as an array."""
        return np.array(self.load, dtype=float)

    def admit(self, need_tokens: list[float]) -> list[int]:
        """Channels for requests admitted in this order (:func:`admit_channels`), their tokens added."""
        load = self.load
        if self.stride > 1:
            ch, self.rr = admit_channels(self.policy, np.asarray(need_tokens, dtype=float), load, self.rr,
                                         self.stride)
            return ch.tolist()
        C = len(load)
        if self.policy == "round_robin":  # each channel's requests summed in order, then added (np.bincount)
            rr = self.rr
            chs = [(rr + i) % C for i in range(len(need_tokens))]
            self.rr = (rr + len(need_tokens)) % C
            for c, x in _per_channel(chs, need_tokens, 1, C).items():
                load[c] += x
            return chs
        chs = []
        for x in need_tokens:  # least loaded: the first channel holding the fewest tokens (argmin)
            c = load.index(min(load))
            chs.append(c)
            load[c] += x
        return chs

    def release(self, channels: list[int], need_tokens: list[float]) -> None:
        """Give back the load of requests leaving the active set (:func:`release_channels`)."""
        if self.stride > 1:
            release_channels(self.load, channels, need_tokens, self.stride)
            return
        load = self.load
        if len(channels) == 1:  # the usual retirement (one request: its tokens are the channel's sum)
            load[channels[0]] -= need_tokens[0]
            return
        for c, x in _per_channel(channels, need_tokens, 1, len(load)).items():
            load[c] -= x


def _per_channel(channels: list[int], need_tokens: list[float], stride: int, C: int) -> dict[int, float]:
    """Tokens per channel of requests at ``channels`` spanning ``stride`` channels each: part s of every request,
    then part s + 1, added up in that order (``np.bincount``'s additions)."""
    back: dict[int, float] = {}
    pairs = list(zip(channels, need_tokens, strict=True))
    for s in range(stride):
        for c, x in pairs:
            c = (c + s) % C
            back[c] = back.get(c, 0.0) + x
    return back


def _as_list(x, dtype) -> list:
    """``x`` as a list of Python numbers of ``dtype`` (a list is taken as it is)."""
    return x if isinstance(x, list) else np.asarray(x, dtype=dtype).tolist()


@lru_cache(maxsize=64)
def _slot_spans(channels: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`slot_starts` and the channels of each slot, (slots, stride); read-only, shared."""
    starts = slot_starts(channels, stride)
    span = (starts[:, None] + np.arange(stride)[None, :]) % channels
    starts.flags.writeable = span.flags.writeable = False
    return starts, span
