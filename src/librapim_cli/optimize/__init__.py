"""DBO: the offload decision of every balanced stage instance, and the stage-time formula it predicts with."""

from .dbo import Decisions, Requests, StageProblem, attention_sweep, best_attention, best_fc, decide_attention
from .stage import busiest_channel, channel_times, fc_curves, fc_grid, npu_time

__all__ = ["Decisions", "Requests", "StageProblem", "attention_sweep", "best_attention", "best_fc",
           "busiest_channel", "channel_times", "decide_attention", "fc_curves", "fc_grid", "npu_time"]
