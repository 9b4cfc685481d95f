"""Validated specs (pydantic v2, strict and frozen) and preset loading."""

from .base import Spec
from .hardware import EnergySpec, HardwareSpec, MemorySpec, NPUSpec, PIMSpec
from .loading import (
    PresetInfo,
    apply_overrides,
    list_presets,
    load,
    load_hardware,
    load_model,
    load_raw,
    load_system,
    load_workload,
    parse_set,
    presets_root,
    split_overrides,
    validate,
)
from .model import ModelSpec
from .system import ConcurrencySpec, DBOSpec, LinkSpec, PlacementSpec, ServingSpec, SystemSpec
from .workload import LengthStats, WorkloadSpec

__all__ = [
    "Spec", "EnergySpec", "HardwareSpec", "MemorySpec", "NPUSpec", "PIMSpec", "ModelSpec", "ConcurrencySpec",
    "DBOSpec", "LinkSpec", "PlacementSpec", "ServingSpec", "SystemSpec", "LengthStats", "WorkloadSpec", "PresetInfo",
    "apply_overrides", "list_presets", "load", "load_hardware", "load_model", "load_raw", "load_system",
    "load_workload", "parse_set", "presets_root", "split_overrides", "validate",
]
