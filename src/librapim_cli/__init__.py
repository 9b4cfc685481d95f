"""librapim: design-space exploration for PIM-assisted LLM inference (LibraPIM: DEX + DBO).

The library in one call::

    from librapim_cli import simulate
    result = simulate("librapim", "gpt3-7b", "sharegpt", batch=256)
    result.metrics["throughput_tokens_per_s"]
"""

from .errors import (
    InfeasibleDesign,
    InputError,
    LibrapimError,
    ModelError,
    PresetNotFound,
    SpecError,
    TraceError,
)
from .simulate import Setup, SimResult, setup, simulate
from .spec import list_presets, load_hardware, load_model, load_system, load_workload

__all__ = [
    "InfeasibleDesign", "InputError", "LibrapimError", "ModelError", "PresetNotFound", "SimResult", "Setup",
    "SpecError", "TraceError", "list_presets", "load_hardware", "load_model", "load_system", "load_workload",
    "setup", "simulate",
]
