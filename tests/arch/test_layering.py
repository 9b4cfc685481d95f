"""Imports point only down the pipeline: presets -> specs -> graph -> cost -> optimize (DBO) -> schedule ->
metrics -> serving -> simulate -> studies/sweep -> report -> cli; typer and rich only in cli/ and report/,
optuna only in sweep/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "librapim_cli"

# stage of each top-level part of the package; a module may import its own stage or lower ones
STAGE = {
    "errors": 0, "units": 0,
    "spec": 1,
    "graph": 2,
    "cost": 3,
    "optimize": 4,
    "schedule": 5,
    "metrics": 6, "result": 6, "inputs": 6,
    "serving": 7,
    "simulate": 8,
    "studies": 9, "sweep": 9,
    "report": 10,
    "cli": 11, "__main__": 11, "__init__": 11,
}
THIRD_PARTY = {"typer": {"cli", "report"}, "rich": {"cli", "report"}, "optuna": {"sweep"},
               "matplotlib": {"report", "cli"}}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        yield rel, path


def _part(rel: Path) -> str:
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path, rel: Path):
    tree = ast.parse(path.read_text())
    type_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                type_only.add(id(sub))
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel.parent.parts)[: len(rel.parent.parts) - (node.level - 1)] if node.level > 1 \
                    else list(rel.parent.parts)
                mod = (base + (node.module.split(".") if node.module else []))
                if mod:
                    yield "librapim_cli", mod[0], node.lineno
                else:  # from . import x  at package top
                    for alias in node.names:
                        yield "librapim_cli", alias.name, node.lineno
            elif node.module:
                parts = node.module.split(".")
                if parts[0] == "librapim_cli":
                    yield "librapim_cli", parts[1] if len(parts) > 1 else "__init__", node.lineno
                else:
                    yield "ext", parts[0], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "librapim_cli":
                    yield "librapim_cli", parts[1] if len(parts) > 1 else "__init__", node.lineno
                else:
                    yield "ext", parts[0], node.lineno


@pytest.mark.parametrize("rel,path", list(_modules()), ids=lambda x: str(x) if isinstance(x, Path) else "")
def test_imports_point_down_the_pipeline(rel, path):
    me = _part(rel)
    assert me in STAGE, f"{rel}: add its package to STAGE in this test"
    for kind, target, line in _imports(path, rel):
        if kind == "librapim_cli":
            if target not in STAGE:
                continue
            assert STAGE[target] <= STAGE[me], (
                f"{rel}:{line} imports librapim_cli.{target} (stage {STAGE[target]}) from stage {STAGE[me]} ({me}); "
                "imports must point down the pipeline")
        elif target in THIRD_PARTY:
            assert me in THIRD_PARTY[target], f"{rel}:{line} imports {target}, allowed only in {THIRD_PARTY[target]}"
