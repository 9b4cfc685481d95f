"""The sweep package's shape: its modules import each other without cycles (every import counts: module-level,
function-level and TYPE_CHECKING ones), its public names resolve, and optuna is imported only when a sweep
runs (not by `librapim --help` or `librapim simulate`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import librapim_cli.sweep as sweep_pkg

SWEEP = Path(sweep_pkg.__file__).resolve().parent


def _sweep_imports(path: Path) -> set[str]:
    """Sibling modules of the sweep package that ``path`` imports, wherever the import statement is."""
    names = {p.stem for p in SWEEP.glob("*.py")} - {"__init__"}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("librapim_cli.sweep."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("librapim_cli.sweep."):
                    out.add(a.name.split(".")[2])
    return out & names


def _graph() -> dict[str, set[str]]:
    return {p.stem: _sweep_imports(p) - {p.stem} for p in SWEEP.glob("*.py") if p.stem != "__init__"}


def test_the_graph_sees_function_level_imports() -> None:
    # record.py imports optuna's RDB models inside functions, and storage.py its journal backend: the walk
    # must see imports wherever they are, or the cycle test below could pass by not looking
    assert "storage" in _graph()["record"] and "workers" in _graph()["storage"]


def test_no_import_cycles_between_sweep_modules() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n):], n]))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_public_names_resolve() -> None:
    for name in sweep_pkg.__all__:
        assert getattr(sweep_pkg, name) is not None, name
    with pytest.raises(AttributeError):
        sweep_pkg.no_such_name  # noqa: B018


@pytest.mark.parametrize("code", [
    "import librapim_cli.cli.app",
    "from librapim_cli.cli.app import app; from typer.testing import CliRunner; "
    "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output",
    "from librapim_cli.cli.app import app; from typer.testing import CliRunner; "
    "r = CliRunner().invoke(app, ['sweep', '--help']); assert r.exit_code == 0, r.output",
    "from librapim_cli.cli.app import app; from typer.testing import CliRunner; "
    "r = CliRunner().invoke(app, ['simulate', '--mode', 'iteration', '--batch', '8', '--json']); "
    "assert r.exit_code == 0, r.output",
    "import librapim_cli.sweep; from librapim_cli.sweep import validate_sweep_file; validate_sweep_file('pim-design')",
])
def test_optuna_is_imported_only_when_a_sweep_runs(code: str) -> None:
    probe = f"import sys; {code}; print('optuna' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_a_sweep_does_import_optuna() -> None:  # the probe above can tell
    probe = ("import sys; from librapim_cli.sweep import load_sweep, run; "
             "run(load_sweep('batch-model'), trials=1, sampler='random', seed=0); print('optuna' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "True"
