"""SI constants and human formatting. Everything inside the library is SI; convert only at the edges."""

from __future__ import annotations

import math

NS = 1e-9
US = 1e-6
MS = 1e-3
KIB = 1024
MIB = 1024**2
GIB = 1024**3
GB = 1e9
TB = 1e12
GHZ = 1e9
MHZ = 1e6
PJ = 1e-12


def fmt_time(seconds: float) -> str:
    """Format a duration with an SI prefix (``12.3 µs``)."""
    if not math.isfinite(seconds):
        return str(seconds)
    s = abs(seconds)
    for scale, unit in ((1.0, "s"), (MS, "ms"), (US, "µs"), (NS, "ns")):
        if s >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / NS:.3g} ns" if s else "0 s"


def fmt_si(value: float, unit: str = "") -> str:
    """Format a number with a decimal SI prefix (``1.02 T``)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    prefixes = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"),
                (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))
    v = abs(value)
    for scale, p in prefixes:
        if v >= scale:
            return f"{value / scale:.3g} {p}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def fmt_bytes(n: float) -> str:
    """Format a byte count with binary prefixes (``512 KiB``)."""
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.4g} {unit}"
        v /= 1024
    return f"{v:.4g} TiB"
