"""What the system serves: request generation (dataset fits, fixed lengths, traces, arrivals), steady-state
batches, and KV placement over the HBM channels."""

from .placement import admit_channels, place_channels, release_channels, snake_channels
from .requests import Requests, make_requests, read_trace, sample_lengths
from .steady import steady_state_batch

__all__ = ["Requests", "admit_channels", "make_requests", "place_channels", "read_trace", "release_channels",
           "sample_lengths", "snake_channels", "steady_state_batch"]
