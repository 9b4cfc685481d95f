"""One CSV row per step of a simulation's timeline (decode iterations and prefill steps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .files import write_text_atomically
from .timeline import step_table

if TYPE_CHECKING:
    from ..simulate import SimResult

HEADER = ("index", "kind", "start_s", "time_s", "batch", "npu_busy_s", "pim_busy_s", "offload_attention_share",
          "offload_fc_share")


def iterations_csv_text(result: SimResult) -> str:
    """The CSV text: HEADER, then one row per step; floats at full precision (repr)."""
    t = step_table(result)
    cols = [t[c].tolist() for c in HEADER[1:]]
    lines = [",".join(HEADER)]
    lines += [",".join([str(i), *map(str, row)]) for i, row in enumerate(zip(*cols, strict=True))]
    return "\n".join(lines) + "\n"


def write_iterations_csv(result: SimResult, path: str | Path) -> None:
    """Write :func:`iterations_csv_text` to ``path`` atomically."""
    write_text_atomically(path, iterations_csv_text(result))
