"""Error handling of the CLI: exact messages, exit codes, one line on stderr, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import librapim_cli.cli.simulate as cli_simulate
from librapim_cli.cli.docgen import command_paths
from librapim_cli.errors import ModelError

FAST = ("--mode", "iteration", "--batch", "16")

UNKNOWN_MODEL = ("error: unknown model preset 'gpt3-8b': did you mean gpt3-7b, gpt3-30b, gpt3-13b? "
                 "see `librapim presets list --kind model`")
BAD_PIM_CLOCK = ("error: invalid system 'librapim': hardware.pim.clock_hz: input should be greater than or equal "
                 "to 1000000, got -1 (allowed: 1e6 to 1e11)")


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "librapim")
def test_every_command_has_help(run, path):
    r = run(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage: librapim" in r.stdout
    assert r.stderr == ""


def test_unknown_preset_exact_line(run, one_line_error):
    assert one_line_error(run("simulate", "--model", "gpt3-8b", *FAST)) == UNKNOWN_MODEL


def test_bad_field_names_dotted_path_and_allowed_range(run, one_line_error):
    line = one_line_error(run("simulate", "--set", "hardware.pim.clock_hz=-1", *FAST))
    assert line == BAD_PIM_CLOCK


def test_bad_field_in_model_and_workload(run, one_line_error):
    line = one_line_error(run("simulate", "--set", "model.layers=0", *FAST))
    assert "layers" in line and "(allowed: 1 to 1024)" in line
    line = one_line_error(run("simulate", "--set", "workload.max_seq_len=1", *FAST))
    assert "max_seq_len" in line and "(allowed: 2 to 1048576)" in line


def test_unknown_set_path(run, one_line_error):
    line = one_line_error(run("simulate", "--set", "system.dbo.enabeld=true", *FAST))
    assert line.startswith("error: --set system.dbo.enabeld: 'enabeld' is not a field of dbo")
    assert "did you mean 'enabled'" in line
    line = one_line_error(run("simulate", "--set", "npu.clock_hz=1e9", *FAST))
    assert "must start with one of" in line


def test_kv_cache_that_does_not_fit(run, one_line_error):
    line = one_line_error(run("simulate", "--mode", "iteration", "--batch", "60000"))
    assert line.startswith("error: the KV cache of a batch of 60000")
    assert "lower --batch" in line


@pytest.mark.parametrize("args", [
    ("simulate", "--model", "gpt3-8b"),
    ("simulate", "--system", "nosuch"),
    ("simulate", "--workload", "missing.toml"),
    ("simulate", "--set", "hardware.pim.clock_hz=-1"),
    ("simulate", "--set", "noequals"),
    ("simulate", "--set", "system.tp=3"),
    ("simulate", "--batch", "0"),
    ("simulate", "--batch", "abc"),
    ("simulate", "--bogus"),
    ("simulate", "--mode", "fast"),
    ("simulate", "--baseline", "neupims"),
    ("simulate", "--compare", "neupims,librapim", "--baseline", "npu-only"),
    ("simulate", "--compare", "neupims,neupims"),
    ("simulate", "--compare", "neupims", "--system", "librapim"),
    ("simulate", "--compare", "neupims,librapim", "--breakdown"),
    ("simulate", "--trace", "/nonexistent-folder/t.json"),
    ("presets", "show", "gpt3-8b"),
    ("presets", "show", "gpt3-7b", "--kind", "models"),
    ("presets", "show", "gpt3-7b", "--set", "layers=-2"),
    ("presets", "list", "--kind", "nope"),
    ("presets", "validate", "/nonexistent/file.toml"),
    ("nosuchcommand",),
], ids=lambda a: " ".join(a))
def test_bad_input_is_one_line_exit_2(run, one_line_error, args):
    extra = FAST if args[0] == "simulate" and "--batch" not in args and "--mode" not in args else ()
    one_line_error(run(*args, *extra))


def test_usage_error_names_the_option_and_the_help(run, one_line_error):
    line = one_line_error(run("simulate", "--batch", "abc"))
    assert "--batch" in line and line.endswith("see `librapim simulate --help`")


def test_unexpected_exception_is_one_line_exit_1(run, one_line_error, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_simulate, "simulate", boom)
    line = one_line_error(run("simulate", *FAST, env={"LIBRAPIM_DEBUG": ""}), code=1)
    assert line.startswith("error: unexpected RuntimeError: boom second line; this is a bug in librapim")
    assert "LIBRAPIM_DEBUG=1" in line


def test_debug_env_shows_the_traceback(run, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_simulate, "simulate", boom)
    r = run("simulate", *FAST, env={"LIBRAPIM_DEBUG": "1"})
    assert r.exit_code == 1
    assert r.stderr.startswith("error: unexpected RuntimeError: boom")
    assert "Traceback" in r.stderr


def test_model_error_exits_1(run, one_line_error, monkeypatch):
    def fail(*args, **kwargs):
        raise ModelError("the schedule diverged; report it")

    monkeypatch.setattr(cli_simulate, "simulate", fail)
    assert one_line_error(run("simulate", *FAST), code=1) == "error: the schedule diverged; report it"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LIBRAPIM_DEBUG"}
    env["COLUMNS"] = "100"
    return env


def test_python_m_is_the_same_program():
    """`python -m librapim_cli` gives the same exit code and bytes as the console script."""
    script = os.path.join(os.path.dirname(sys.executable), "librapim")
    cases = [["simulate", "--model", "gpt3-8b"], ["presets", "list", "--kind", "model", "--json"]]
    for args in cases:
        m = subprocess.run([sys.executable, "-m", "librapim_cli", *args], capture_output=True, text=True,
                           env=_env(), stdin=subprocess.DEVNULL, timeout=120)
        if args[0] == "simulate":  # a real process: exit 2 and the exact line, no traceback
            assert m.returncode == 2 and m.stdout == "" and m.stderr == UNKNOWN_MODEL + "\n"
        else:
            assert m.returncode == 0, m.stderr
        if os.path.exists(script):
            c = subprocess.run([script, *args], capture_output=True, text=True, env=_env(),
                               stdin=subprocess.DEVNULL, timeout=120)
            assert (c.returncode, c.stdout, c.stderr) == (m.returncode, m.stdout, m.stderr)
