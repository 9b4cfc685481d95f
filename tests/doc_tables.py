"""Marked tables of the docs: ``<!-- tag: k=v ... -->`` then a ``| quantity | value |`` table, then
``<!-- /tag -->``. Tests recompute every value from the code."""

from __future__ import annotations

import re
from pathlib import Path


def marked_table(path: Path, tag: str) -> tuple[dict[str, str], dict[str, str]]:
    """(parameters of the opening comment, {quantity: shown value}) of the table ``tag`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {tag}: (.*?) -->\n(.*?)<!-- /{tag} -->", text, re.S)
    assert m, f"{path.name}: no <!-- {tag}: ... --> table"
    params = dict(kv.split("=", 1) for kv in m.group(1).split())
    values = {}
    for line in m.group(2).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("quantity", "---"):
            values[cells[0]] = cells[1]
    return params, values


def check_values(doc: dict[str, str], computed: dict[str, float], where: str) -> None:
    """Every shown number equals the computed one to the decimals shown; the same rows on both sides."""
    assert set(doc) == set(computed), f"{where}: rows {sorted(doc)} vs checked {sorted(computed)}"
    for key, shown in doc.items():
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        tol = 0.5 * 10.0 ** (-decimals) + 1e-9 * abs(computed[key])
        assert abs(float(shown) - computed[key]) <= tol, f"{where}: {key} shown {shown}, code gives {computed[key]!r}"
