"""librapim: design-space exploration for PIM-assisted LLM inference (LibraPIM: DEX + DBO).

The library in one call::

    from librapim_cli import simulate
    result = simulate("librapim", "gpt3-7b", "sharegpt", batch=256)
    result.metrics["throughput_tokens_per_s"]
"""

import sys
import types

from .errors import (
    InfeasibleDesign,
    InputError,
    LibrapimError,
    ModelError,
    PresetNotFound,
    SpecError,
    TraceError,
)

#: public names that load on first use (PEP 562), so importing the package (e.g. for ``librapim --help``)
#: does not import numpy, the specs or the engine
_LAZY = {
    "Setup": "simulate", "SimResult": "simulate", "setup": "simulate", "simulate": "simulate",
    "list_presets": "spec", "load_hardware": "spec", "load_model": "spec", "load_system": "spec",
    "load_workload": "spec",
}

__all__ = [
    "InfeasibleDesign", "InputError", "LibrapimError", "ModelError", "PresetNotFound", "SimResult", "Setup",
    "SpecError", "TraceError", "list_presets", "load_hardware", "load_model", "load_system", "load_workload",
    "setup", "simulate",
]


class _Package(types.ModuleType):
    """The package module: importing ``librapim_cli.simulate`` (the module) must not hide the ``simulate``
    function, as ``from .simulate import simulate`` would not have."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # a submodule binding over a lazy export: keep resolving the export
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
