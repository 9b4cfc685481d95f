"""One error hierarchy for the whole library.

The CLI maps :class:`InputError` subclasses to exit code 2 and :class:`ModelError`
subclasses to exit code 1; each message is one line saying what, why and how to fix it.
"""

from __future__ import annotations


class LibrapimError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = 1


class InputError(LibrapimError):
    """The user's input is wrong (exit code 2)."""

    exit_code = 2


class PresetNotFound(InputError):
    """A preset name that matches no bundled preset and no file."""


class SpecError(InputError):
    """A field that fails validation, or an override that names no field."""


class InfeasibleDesign(InputError):
    """A configuration that cannot run, e.g. weights or KV cache that do not fit."""


class TraceError(InputError):
    """A malformed request-trace CSV."""


class ModelError(LibrapimError):
    """The model itself failed (a bug or an unsupported regime), exit code 1."""
