"""The step timeline of a result (decode iterations and prefill steps) and atomic text output.

Serve-mode results carry it in ``SimResult.per_iteration``; for iteration-mode results the sampled
iterations are laid back to back from t = 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..simulate import SimResult

STEP_COLUMNS = ("kind", "start_s", "time_s", "batch", "npu_busy_s", "pim_busy_s", "offload_attention_share",
                "offload_fc_share")


def step_table(result: SimResult) -> dict[str, np.ndarray]:
    """Columns STEP_COLUMNS, one row per step in time order."""
    if result.per_iteration is not None:
        p = result.per_iteration
        return {c: np.asarray(p[c]) for c in STEP_COLUMNS}
    its = result.iterations
    time_s = np.array([r.time_s for r in its], dtype=float)
    start_s = np.concatenate([[0.0], np.cumsum(time_s)[:-1]]) if its else np.zeros(0)
    attn = np.array([r.attn_bytes for r in its], dtype=float)
    attn_off = np.array([r.attn_offloaded_bytes for r in its], dtype=float)
    rows = np.array([r.fc_flops for r in its], dtype=float)
    rows_off = np.array([r.fc_flops_offloaded for r in its], dtype=float)
    on_pim = result.setup.system.placement.attention == "pim"
    return {
        "kind": np.full(len(its), "decode"),
        "start_s": start_s,
        "time_s": time_s,
        "batch": np.array([r.tokens for r in its], dtype=np.int64),
        "npu_busy_s": np.array([r.npu_busy_s for r in its], dtype=float),
        "pim_busy_s": np.array([r.pim_busy_s for r in its], dtype=float),
        "offload_attention_share": np.divide(attn_off, attn, out=np.zeros_like(attn), where=attn > 0) if on_pim
        else np.zeros(len(its)),
        "offload_fc_share": np.divide(rows_off, rows, out=np.zeros_like(rows), where=rows > 0),
    }
