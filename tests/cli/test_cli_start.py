"""A fast start (issue 14): `librapim --help` lists the commands without importing numpy, the specs, the engine,
rich's help renderer or matplotlib; each command loads its own module when it runs. The time goal itself is
measured in benchmarks/bench_start.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from librapim_cli.cli.app import COMMANDS, app, load_command

HEAVY = ("numpy", "pydantic", "librapim_cli.simulate", "librapim_cli.spec", "typer.rich_utils", "matplotlib",
         "scipy", "optuna")


def _modules_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.strip().splitlines()[-1].split())


def test_root_help_loads_nothing_heavy():
    mods = _modules_after("from librapim_cli.cli.app import main; sys.argv = ['librapim', '--help']\n"
                          "try:\n    main()\nexcept SystemExit:\n    pass")
    loaded = sorted(m for m in mods for h in HEAVY if m == h or m.startswith(h + "."))
    assert not loaded, loaded


def test_importing_the_package_loads_nothing_heavy():
    mods = _modules_after("import librapim_cli")
    assert "numpy" not in mods and "librapim_cli.simulate" not in mods


def test_the_package_still_exports_simulate():
    import librapim_cli

    assert callable(librapim_cli.simulate) and librapim_cli.SimResult.__name__ == "SimResult"
    with pytest.raises(AttributeError):
        librapim_cli.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_help_is_the_commands_own(name):
    """The root help shows each command's one-line help from a table: it must be the command's own."""
    cmd = load_command(name)
    assert " ".join(cmd.get_short_help_str(limit=10_000).split()) == " ".join(COMMANDS[name][1].split())


def test_every_command_module_is_listed():
    from pathlib import Path

    import librapim_cli.cli as pkg

    modules = {p.stem for p in Path(pkg.__file__).parent.glob("*.py")} - {"__init__", "app", "docgen"}
    assert modules == {m for m, _ in COMMANDS.values()}
    assert app.registered_commands == [] and app.registered_groups == []  # nothing loads eagerly


def test_the_heap_setting_is_harmless_where_it_does_not_apply(monkeypatch):
    """glibc's malloc thresholds are set when a command runs; elsewhere (no mallopt) nothing happens."""
    import ctypes

    from librapim_cli.cli import app as app_mod

    app_mod._keep_freed_heap()  # this process: glibc on Linux, or a no-op

    def no_libc(*a, **k):
        raise OSError("no libc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    app_mod._keep_freed_heap()
    monkeypatch.setattr(sys, "platform", "darwin")
    app_mod._keep_freed_heap()


def test_root_help_sets_no_malloc_threshold():
    mods = _modules_after("from librapim_cli.cli.app import main; sys.argv = ['librapim', '--help']\n"
                          "try:\n    main()\nexcept SystemExit:\n    pass")
    assert "ctypes" not in mods  # the setting (and its ctypes import) waits for a command


def test_loading_a_command_freezes_its_imports_and_restores_the_collector():
    """load_command imports with the cyclic collector off and then moves what the imports made out of its view
    (gc.freeze): the collector is on again afterwards if it was on, and off if it was off."""
    import gc

    try:
        for enabled in (True, False):
            gc.unfreeze()
            (gc.enable if enabled else gc.disable)()
            load_command("presets")
            assert gc.isenabled() is enabled
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_run_without_a_progress_bar_loads_no_progress_renderer():
    mods = _modules_after("from librapim_cli.cli.app import main; sys.argv = ['librapim', 'simulate', '--mode', "
                          "'iteration']\ntry:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code")
    assert "librapim_cli.simulate" in mods and "rich.progress" not in mods and "rich._emoji_codes" not in mods


def test_the_default_run_loads_no_masked_arrays():
    """np.median, np.percentile and np.unique import numpy.ma on first use (~15 ms a process): the default serve
    run uses librapim_cli.stats instead."""
    mods = _modules_after("from librapim_cli.simulate import simulate; simulate(mode='serve', requests=200)")
    assert "librapim_cli.serving.loop" in mods and "numpy.ma" not in mods
