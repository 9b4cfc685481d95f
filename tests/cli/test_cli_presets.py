"""`librapim presets list | show | validate`."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import librapim_cli.cli.presets as cli_presets
from librapim_cli.spec import list_presets, load_hardware, load_model, load_system
from librapim_cli.spec.loading import FOLDERS, PresetInfo, presets_root


def test_list_shows_every_kind_and_every_preset(run):
    r = run("presets", "list", "--json")
    assert r.exit_code == 0, r.stderr
    records = json.loads(r.stdout)
    bundled = list_presets()
    assert {(p["kind"], p["name"]) for p in records} == {(p.kind, p.name) for p in bundled}
    assert {"model", "hardware", "system", "workload"} <= {p["kind"] for p in records}
    assert all(set(p) == {"name", "kind", "summary", "source", "path"} for p in records)

    table = run("presets", "list", env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for p in bundled:
        assert p.name in table.stdout
    for kind in {p.kind for p in bundled}:
        assert f" {kind} " in table.stdout


def test_list_one_kind(run):
    r = run("presets", "list", "--kind", "system", "--json")
    assert r.exit_code == 0
    names = [p["name"] for p in json.loads(r.stdout)]
    assert {p["kind"] for p in json.loads(r.stdout)} == {"system"}
    assert "librapim" in names and "neupims" in names


def test_show_model_derived(run):
    r = run("presets", "show", "gpt3-7b", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    m = load_model("gpt3-7b")
    assert (doc["kind"], doc["name"]) == ("model", "gpt3-7b")
    assert doc["values"]["layers"] == 32
    d = doc["derived"]
    # GPT-3 6.7B: 4 d^2 attention + 2 * 4 d^2 FFN = 12 d^2 per layer, d = 4096
    assert d["params_per_layer"] == 12 * 4096**2
    assert d["total_params"] == m.total_params
    assert d["weight_bytes"] == 2 * m.total_params
    # K and V, 32 heads x 128 dims, FP16, 32 layers
    assert d["kv_bytes_per_token"] == 2 * 32 * 128 * 2 * 32


def test_show_with_set_overrides(run):
    doc = json.loads(run("presets", "show", "gpt3-7b", "--set", "layers=48", "--json").stdout)
    assert doc["values"]["layers"] == 48
    assert doc["derived"]["total_params"] == 48 * 12 * 4096**2 + 50304 * 4096
    same = json.loads(run("presets", "show", "gpt3-7b", "--set", "model.layers=48", "--json").stdout)
    assert same == doc


def test_show_hardware_and_system_derived(run):
    hw = json.loads(run("presets", "show", "neupims-npu-hbm2pim", "--json").stdout)
    spec = load_hardware("neupims-npu-hbm2pim")
    d = hw["derived"]
    assert d["npu_peak_flops"] == spec.npu.peak_flops
    assert d["ridge_flop_per_byte"] == pytest.approx(d["npu_peak_flops"] / d["external_bw_bytes_per_s"])
    assert d["pim_bw_ratio"] == pytest.approx(d["pim_internal_bw_bytes_per_s"] / d["external_bw_bytes_per_s"])
    assert 0 < d["refresh_derate"] < 1
    for key in ("bank_column_bw_bytes_per_s", "pim_peak_flops"):
        assert d[key] > 0

    sysdoc = json.loads(run("presets", "show", "librapim", "--json").stdout)
    assert sysdoc["kind"] == "system"
    assert sysdoc["values"]["hardware"]["name"] == load_system("librapim").hardware.name
    assert sysdoc["derived"]["hardware.npu_peak_flops"] == d["npu_peak_flops"]

    clocked = json.loads(run("presets", "show", "librapim", "--set", "hardware.npu.clock_hz=2e9", "--json").stdout)
    assert clocked["derived"]["hardware.npu_peak_flops"] == pytest.approx(d["npu_peak_flops"] * 2e9
                                                                          / spec.npu.clock_hz)


def test_show_table(run):
    r = run("presets", "show", "gpt3-7b")
    assert r.exit_code == 0
    assert "total_params" in r.stdout and "6.65 G" in r.stdout


def test_ambiguous_name_needs_kind(run, one_line_error, monkeypatch):
    real = list_presets()
    model = next(p for p in real if p.name == "gpt3-7b")
    twin = PresetInfo("gpt3-7b", "workload", model.path, "", "")
    monkeypatch.setattr(cli_presets, "list_presets", lambda kind=None: [*real, twin])
    line = one_line_error(run("presets", "show", "gpt3-7b"))
    assert line == "error: 'gpt3-7b' names presets of several kinds (model, workload); add --kind model (or another of them)"
    r = run("presets", "show", "gpt3-7b", "--kind", "model", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["kind"] == "model"


def test_unknown_name_suggests(run, one_line_error):
    line = one_line_error(run("presets", "show", "librapin"))
    assert line.startswith("error: unknown preset 'librapin': did you mean librapim")


# ---- validate ----------------------------------------------------------------------------------
def _copy(kind: str, name: str, dest):
    src = presets_root() / FOLDERS[kind] / f"{name}.toml"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    return dest


@pytest.mark.parametrize("kind,name", [("model", "llama2-7b"), ("hardware", "aim-gddr6"), ("system", "neupims"),
                                       ("workload", "alpaca"), ("sweep", "pim-design")])
def test_validate_ok_by_folder_and_by_keys(run, tmp_path, kind, name):
    by_folder = _copy(kind, name, tmp_path / FOLDERS[kind] / f"{name}.toml")
    r = run("presets", "validate", str(by_folder))
    assert (r.exit_code, r.stdout) == (0, f"ok: {kind} '{name}'\n"), r.stderr
    by_keys = _copy(kind, name, tmp_path / "elsewhere" / "mine.toml")
    r = run("presets", "validate", str(by_keys))
    assert (r.exit_code, r.stdout) == (0, f"ok: {kind} '{name}'\n"), r.stderr


def test_validate_bad_value(run, one_line_error, tmp_path):
    path = _copy("model", "gpt3-7b", tmp_path / "models" / "bad.toml")
    path.write_text(path.read_text().replace("layers = 32", "layers = 0"))
    line = one_line_error(run("presets", "validate", str(path)))
    assert line == f"error: invalid model '{path}': layers: input should be greater than or equal to 1, got 0 (allowed: 1 to 1024)"


def test_validate_unknown_field_and_bad_toml(run, one_line_error, tmp_path):
    path = _copy("model", "gpt3-7b", tmp_path / "models" / "extra.toml")
    path.write_text(path.read_text() + "\nlayer_count = 3\n")
    assert "layer_count: unknown field" in one_line_error(run("presets", "validate", str(path)))
    broken = tmp_path / "models" / "broken.toml"
    broken.write_text("layers = = 3\n")
    assert "not valid TOML" in one_line_error(run("presets", "validate", str(broken)))


def test_validate_kind_cannot_be_told(run, one_line_error, tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n')
    line = one_line_error(run("presets", "validate", str(path)))
    assert "cannot tell which kind of preset" in line and "--kind" in line


def test_validate_with_wrong_kind(run, one_line_error, tmp_path):
    path = _copy("model", "gpt3-7b", tmp_path / "m.toml")
    line = one_line_error(run("presets", "validate", str(path), "--kind", "workload"))
    assert line.startswith("error: invalid workload")


def test_sweep_presets_are_validated(run, one_line_error, tmp_path):
    path = _copy("sweep", "pim-design", tmp_path / "sweeps" / "pim-design.toml")
    path.write_text(re.sub(r"(?m)^trials\s*=.*$", "trials = 0", path.read_text()) if "trials" in path.read_text()
                    else path.read_text().replace("[[parameters]]", "trials = 0\n\n[[parameters]]", 1))
    line = one_line_error(run("presets", "validate", str(path)))
    assert line == f"error: invalid sweep '{path}': trials: input should be greater than or equal to 1, got 0 (allowed: >= 1)"
    doc = json.loads(run("presets", "show", "pim-design", "--set", "trials=3", "--json").stdout)
    assert (doc["kind"], doc["values"]["trials"], doc["derived"]) == ("sweep", 3, {})


# ---- list layout -------------------------------------------------------------------------------------
def test_list_piped_is_one_plain_line_per_preset(run):
    bundled = list_presets()
    r = run("presets", "list", env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(bundled)
    for line, p in zip(lines, bundled, strict=True):
        assert line.split()[:2] == [p.name, p.kind]
        assert line.endswith(p.summary)  # whole, never cut
    assert "…" not in r.stdout and "source" not in r.stdout
    wide = run("presets", "list", "--wide", "--kind", "workload", env={"COLUMNS": "80"}).stdout.splitlines()
    sharegpt = next(p for p in bundled if p.name == "sharegpt")
    assert f"{sharegpt.summary}  [source: {sharegpt.source}]" in next(x for x in wide if x.startswith("sharegpt "))


def test_list_in_a_narrow_terminal_wraps_and_cuts_nothing():
    from rich.console import Console

    from librapim_cli.report.console import render_presets_list

    for wide in (False, True):
        console = Console(force_terminal=True, width=80, color_system=None, record=True)
        render_presets_list(console, list_presets(), wide=wide)
        text = console.export_text()
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
        header = text.splitlines()[1]
        assert header.split() == ["Name", "Kind", "Summary", *(["Source"] if wide else [])]
        words = " ".join(text.split())
        for p in list_presets():  # every word of every summary is there (wrapped, not cut)
            assert all(w in words for w in p.summary.split())


# ---- validate runs the checks the commands run ----------------------------------------------------------
def _trace_preset(tmp_path, body: str | None):
    folder = tmp_path / "workloads"
    folder.mkdir(exist_ok=True)
    if body is not None:
        (folder / "t.csv").write_text(body)
    w = folder / "w.toml"
    w.write_text('name = "w"\nsource = "test"\nlengths = "trace"\ntrace_path = "t.csv"\nnum_requests = 4\n'
                 'max_batch = 2\n')
    return w


def test_validate_reads_the_trace_like_simulate(run, one_line_error, tmp_path):
    w = _trace_preset(tmp_path, None)
    t = tmp_path / "workloads" / "t.csv"
    expected = f"error: trace '{t}' does not exist; give a CSV with columns input_len,output_len[,arrival_s]"
    assert one_line_error(run("presets", "validate", str(w))) == expected
    assert one_line_error(run("presets", "show", str(w))) == expected
    assert one_line_error(run("simulate", "--workload", str(w), "--mode", "iteration")) == expected
    t.write_text("input_len,output_len\n3,4\n5,6\n")
    assert run("presets", "validate", str(w)).stdout == "ok: workload 'w'\n"


def test_validate_negative_seed_and_quoted_numbers(run, one_line_error, tmp_path):
    path = _copy("workload", "alpaca", tmp_path / "workloads" / "a.toml")
    path.write_text(path.read_text().replace("seed = 0", "seed = -1"))
    assert one_line_error(run("presets", "validate", str(path))) == (
        f"error: invalid workload '{path}': seed: input should be greater than or equal to 0, got -1 "
        "(allowed: 0 to 4294967295)")
    m = _copy("model", "gpt3-7b", tmp_path / "models" / "m.toml")
    m.write_text(m.read_text().replace('name = "gpt3-7b"', 'name = ""'))
    assert one_line_error(run("presets", "validate", str(m))) == (
        f"error: invalid model '{m}': name: string should have at least 1 character, got '' "
        "(allowed: a non-empty string)")


def test_bundled_presets_pass_validate(run):
    for p in list_presets():
        r = run("presets", "validate", str(p.path))
        assert (r.exit_code, r.stdout) == (0, f"ok: {p.kind} '{p.name}'\n"), r.stderr


# ---- reproduce's default output ------------------------------------------------------------------------------
def test_reproduce_default_out_outside_a_checkout(tmp_path):
    from librapim_cli.cli.reproduce import default_out

    assert str(default_out(tmp_path)) == "reproduction.md"
    (tmp_path / "docs").mkdir()
    assert str(default_out(tmp_path)) == "docs/reproduction.md"


def test_reproduce_checks_outputs_before_running(run, one_line_error, tmp_path, monkeypatch):
    import librapim_cli.cli.reproduce as cli_reproduce

    def never(*args, **kwargs):
        raise AssertionError("the map ran before the outputs were checked")

    monkeypatch.setattr(cli_reproduce, "run_map", never)
    monkeypatch.chdir(tmp_path)
    line = one_line_error(run("reproduce", "--out", "no/such/folder.md"))
    assert line == "error: --out no/such/folder.md: the folder no/such does not exist; create it or choose another path"
    assert ("From a checkout (a folder with docs/) it rewrites docs/reproduction.md and docs/img/reproduction/; "
            "elsewhere ./reproduction.md") in " ".join(
        run("reproduce", "--help").stdout.split())


def test_validate_runs_the_sweeps_own_checks(run, one_line_error, tmp_path):
    """presets validate checks a sweep as `librapim sweep` does before its first trial (preset names too)."""
    path = _copy("sweep", "pim-design", tmp_path / "sweeps" / "pim-design.toml")
    path.write_text(path.read_text().replace('model = "gpt3-7b"', 'model = "gpt3-7bb"'))
    line = one_line_error(run("presets", "validate", str(path)))
    assert "unknown model preset 'gpt3-7bb'" in line and "did you mean gpt3-7b" in line


def test_show_cuts_nothing_at_80_columns(run):
    for name in ("librapim", "neupims-npu-hbm2pim"):
        r = run("presets", "show", name, env={"COLUMNS": "80"})
        assert r.exit_code == 0 and "…" not in r.stdout
        assert max(len(line) for line in r.stdout.splitlines()) <= 80
