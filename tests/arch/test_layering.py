"""Imports point only down the pipeline, one declared order, no exceptions.

Every import counts: module-level, function-level and ``TYPE_CHECKING`` ones. A module may import its own
layer or a lower one; third-party front-end libraries stay at the edges (typer and rich in cli/ and
report/, optuna in sweep/, matplotlib in report/ and cli/). Inside a package, modules import each other
without cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "librapim_cli"

#: the pipeline, bottom to top (docs/model/overview.md); a part may import only parts at or below its layer
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "units", "registry", "stats"),
    ("concurrency", "admission"),  # extension points the specs validate names against
    ("spec",),
    ("inputs",),  # resolved inputs (Setup)
    ("workload",),  # requests, steady-state batches, KV placement
    ("metrics",),  # metric registry and their computation from summed figures
    ("graph",),
    ("cost",),
    ("optimize",),  # DBO
    ("schedule",),  # stage plan, engine, per-op breakdown
    ("result",),
    ("serving",),
    ("simulate",),
    ("studies", "sweep"),
    ("report",),
    ("cli",),
    ("__main__", "__init__"),
)
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
#: what the edges may import of the library: the results, specs, simulate, sweep, and plain helpers
EDGE_ALLOWED = {"errors", "units", "registry", "spec", "inputs", "metrics", "result", "simulate", "studies", "sweep", "report",
                "cli", "concurrency", "admission", "workload"}
EDGES = ("report", "cli")
THIRD_PARTY = {"typer": {"cli", "report"}, "rich": {"cli", "report"}, "optuna": {"sweep"},
               "matplotlib": {"report", "cli"}}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path.relative_to(PKG), path


def _dotted(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["librapim_cli", *parts])


def _imports(path: Path, rel: Path):
    """(absolute module name, line) of every import in the file, relative ones resolved."""
    pkg = ["librapim_cli", *rel.parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    yield mod, node.lineno
                for alias in node.names:
                    yield f"{mod}.{alias.name}", node.lineno
            elif node.module:
                yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "librapim_cli":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


ALL = list(_modules())


def test_every_part_has_a_layer():
    parts = {_part(_dotted(rel)) for rel, _ in ALL}
    assert parts <= set(RANK), f"add these to LAYERS: {sorted(parts - set(RANK))}"


@pytest.mark.parametrize("rel,path", ALL, ids=lambda x: str(x) if isinstance(x, Path) else "")
def test_imports_point_down_the_pipeline(rel, path):
    me = _part(_dotted(rel))
    for mod, line in _imports(path, rel):
        target = _part(mod)
        if target is None:
            top = mod.split(".")[0]
            if top in THIRD_PARTY:
                assert me in THIRD_PARTY[top], f"{rel}:{line} imports {top}, allowed only in {THIRD_PARTY[top]}"
            continue
        if target not in RANK:  # a name imported from the package root, e.g. `from . import x` in __init__
            continue
        assert RANK[target] <= RANK[me], (
            f"{rel}:{line} imports librapim_cli.{target} (layer {RANK[target]}) from {me} (layer {RANK[me]}); "
            "imports must point down the pipeline")
        if me in EDGES:
            assert target in EDGE_ALLOWED, (
                f"{rel}:{line}: {me}/ may import only results, specs, simulate and sweep, not librapim_cli.{target}")


def _module_graph():
    names = {_dotted(rel) for rel, _ in ALL}
    graph: dict[str, set[str]] = {}
    for rel, path in ALL:
        me = _dotted(rel)
        outs = set()
        for mod, _ in _imports(path, rel):
            while mod and mod not in names and "." in mod:
                mod = mod.rsplit(".", 1)[0]
            if mod in names and mod != me and mod.count(".") >= 2 and me.count(".") >= 2 \
                    and mod.split(".")[1] == me.split(".")[1]:
                outs.add(mod)
        graph[me] = outs
    return graph


def test_no_import_cycles_between_modules_of_a_package():
    graph = _module_graph()
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for n in graph.get(m, ()):
            if seen.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in seen:
                visit(n, stack + [n])
        seen[m] = 2

    for m in graph:
        if m not in seen:
            visit(m, [m])


def test_star_imports_of_every_package_work():
    import importlib

    for rel, _ in ALL:
        if rel.name != "__init__.py":
            continue
        mod = importlib.import_module(_dotted(rel))
        for name in getattr(mod, "__all__", ()):
            assert hasattr(mod, name), f"{_dotted(rel)}.__all__ names {name!r}, which it does not define"
