"""DBO: the per-stage offload optimizer and the stage it balances."""

from .dbo import attention_order, best_attention_offload, best_fc_offload, decide
from .stage import Decision, StageInput, StageTime, no_offload, stage_time

__all__ = ["Decision", "StageInput", "StageTime", "attention_order", "best_attention_offload", "best_fc_offload",
           "decide", "no_offload", "stage_time"]
