"""DBO: the per-stage offload optimizer and the stage it balances."""

from .dbo import (
           attention_order,
           best_attention_offload,
           best_attention_offload_many,
           best_fc_offload,
           decide,
           decide_many,
)
from .stage import (
           NO_OFFLOAD,
           AttentionSet,
           Decision,
           StageInput,
           StageTime,
           attention_set,
           no_offload,
           stage_time,
)

__all__ = ["NO_OFFLOAD", "AttentionSet", "Decision", "StageInput", "StageTime", "attention_order", "attention_set",
           "best_attention_offload", "best_attention_offload_many", "best_fc_offload", "decide", "decide_many",
           "no_offload", "stage_time"]
