"""DBO: the exact attention sweep, and the stage-time formula DBO predicts with."""

from .dbo import attention_sweep, remaining
from .stage import busiest_channel, channel_times, fc_curves, fc_grid, npu_time

__all__ = ["attention_sweep", "busiest_channel", "channel_times", "fc_curves", "fc_grid", "npu_time", "remaining"]
