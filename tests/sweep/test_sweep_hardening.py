"""`librapim sweep` against hostile input: every bad option is one line on stderr with exit code 2, checked
before the first trial (nothing written), and signals stop every worker with the resume command printed."""

from __future__ import annotations

import copy
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import cli, cli_inproc, cli_popen, toml_text

from librapim_cli.errors import InputError, SpecError
from librapim_cli.sweep import parse_sweep, trials_table, validate_sweep_file
from librapim_cli.sweep.validate import max_workers

WIDE = [{"path": "batch", "type": "int", "low": 2, "high": 24},
        {"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1.0, "high": 4.0}]


def _spec_file(tmp_path: Path, spec: dict, name: str = "spec.toml") -> str:
    path = tmp_path / name
    path.write_text(toml_text(spec))
    return str(path)


def _one_line_error(r, expected: str) -> None:
    """Exit code 2, nothing on stdout, exactly ``error: <expected>`` on stderr."""
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == f"error: {expected}\n"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---- --workers, --seed ------------------------------------------------------------------------------------
def test_workers_are_capped_at_four_per_cpu(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, small)
    journal = tmp_path / "w.journal"
    limit = 4 * _cpus()
    assert max_workers() == limit
    r = cli_inproc("sweep", spec, "--workers", "1000", "--trials", "3", "--storage", str(journal))
    _one_line_error(r, f"--workers 1000: at most {limit} (4 per CPU, {_cpus()} CPUs here); trials are CPU-bound, "
                       "so more processes only wait for a CPU")
    assert not journal.exists()  # refused before the study was created


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_out_of_range_is_bad_input(small, tmp_path, seed: str) -> None:
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--seed", seed)
    _one_line_error(r, f"--seed {seed}: must be between 0 and 4294967295 (2**32 - 1); give another seed")


def test_largest_seed_runs_with_workers(small, tmp_path) -> None:
    # worker i gets seed + i, wrapped into numpy's range
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--seed", "4294967295", "--trials", "4", "--workers", "2",
                   "--storage", str(tmp_path / "s.journal"), "--json")
    assert r.exit_code == 0, r.stderr


# ---- --out / --export-best, checked before the first trial ------------------------------------------------
def test_out_that_is_a_folder(small, tmp_path) -> None:
    folder = tmp_path / "table.csv"
    folder.mkdir()
    journal = tmp_path / "o.journal"
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--out", str(folder), "--storage", str(journal))
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "is a directory" in r.stderr or "is a folder" in r.stderr, r.stderr
    assert not journal.exists()


def test_out_that_is_a_fifo(small, tmp_path) -> None:
    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)
    journal = tmp_path / "o.journal"
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--out", str(fifo), "--storage", str(journal))
    _one_line_error(r, f"--out {fifo}: is a device, FIFO or socket, not a file; give a file path")
    assert not journal.exists()


def test_out_that_is_a_device(small, tmp_path) -> None:
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--out", "/dev/null")
    _one_line_error(r, "--out /dev/null: the file must end in .csv or .json")


def test_export_best_that_is_a_file(small, tmp_path) -> None:
    target = tmp_path / "best"
    target.write_text("x")
    journal = tmp_path / "e.journal"
    r = cli_inproc("sweep", _spec_file(tmp_path, small), "--export-best", str(target), "--storage", str(journal))
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "is a file" in r.stderr or "exists and is not a folder" in r.stderr, r.stderr
    assert not journal.exists()


def _without_root_override() -> None:
    """preexec_fn: a read-only folder must be read-only for the sweep even when the tests run as root, so drop
    CAP_DAC_OVERRIDE (root's write-anywhere) from the bounding set; the exec'd interpreter then lacks it."""
    if os.getuid() != 0:
        return
    import ctypes

    pr_capbset_drop, cap_dac_override = 24, 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.parametrize("option", ["--out", "--export-best"])
def test_read_only_folder_is_refused_before_the_first_trial(small, tmp_path, option: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    spec = _spec_file(tmp_path, small)
    journal = tmp_path / "r.journal"
    ro.chmod(0o555)
    target = ro / ("all.csv" if option == "--out" else "best")
    try:
        r = subprocess.run([sys.executable, "-m", "librapim_cli", "sweep", spec, option, str(target), "--storage",
                            str(journal)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"}, preexec_fn=_without_root_override)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's CAP_DAC_OVERRIDE here ({exc})")
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr == (f"error: {option} {target}: cannot write to the folder {ro} (Permission denied); "
                        "choose a writable folder\n")
    assert not journal.exists()


def _small_files(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_full_disk_while_writing_out_is_one_line_and_leaves_no_half_file(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, small)
    out = tmp_path / "all.json"
    p = subprocess.run([sys.executable, "-m", "librapim_cli", "sweep", spec, "--sampler", "grid", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
                       preexec_fn=_small_files(2000))  # the 9 trials' JSON is ~20 kB
    assert p.returncode == 2, p.stderr
    # the progress bar (stderr) came first: the sweep ran; the error is the last line
    assert p.stderr.splitlines()[-1] == f"error: --out {out}: cannot write (File too large); nothing was written: " \
                                        "free space or choose another folder"
    assert "Traceback" not in p.stderr
    assert list(tmp_path.glob("all.json*")) == [] and list(tmp_path.glob(".all.json*")) == []


def test_full_disk_while_writing_the_storage_is_one_line(small, tmp_path) -> None:
    spec = _spec_file(tmp_path, {**small, "parameters": WIDE})
    journal = tmp_path / "full.journal"
    p = subprocess.run([sys.executable, "-m", "librapim_cli", "sweep", spec, "--trials", "200", "--storage",
                        str(journal)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"}, preexec_fn=_small_files(60_000))
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines()[-1] == (f"error: --storage {journal}: cannot write the trial (File too large); the "
                                         "trials written so far are kept: fix the storage (free space, permissions) "
                                         "and rerun the same command to resume"), p.stderr
    assert "Traceback" not in p.stderr and "Should not reach" not in p.stderr
    rows = trials_table(str(journal), "small")
    # every finished trial is kept; the write that hit the limit may have left the one trial it was recording
    # half-written (RUNNING in the journal), which a resumed run reaps as stale
    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    assert 0 < len(done) < 200 and len(rows) - len(done) <= 1
    assert all(r["state"] == "RUNNING" for r in rows if r["state"] not in ("COMPLETE", "PRUNED"))


# ---- strict spec, preset names ----------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("low", True, "parameters.0.int.low: input should be a valid integer, got True"),
    ("high", "24", "parameters.0.int.high: input should be a valid integer, got '24'"),
    ("step", 1.0, "parameters.0.int.step: input should be a valid integer, got 1.0"),
])
def test_sweep_spec_does_not_coerce(small, field: str, value, message: str) -> None:
    d = copy.deepcopy(small)
    d["parameters"] = [{"path": "batch", "type": "int", "low": 2, "high": 24, field: value}]
    with pytest.raises(SpecError) as info:
        parse_sweep(d, "t")
    assert str(info.value) == f"invalid sweep 't': {message}"


def test_float_fields_take_integers(small) -> None:  # TOML's 1 is a fine 1.0
    d = copy.deepcopy(small)
    d["parameters"] = [{"path": "hardware.pim.mac_interval_ns", "type": "float", "low": 1, "high": 4}]
    assert parse_sweep(d, "t").parameters[0].low == 1.0


def test_bool_is_not_a_number_in_toml(small, tmp_path) -> None:
    d = copy.deepcopy(small)
    d["parameters"] = [{"path": "batch", "type": "int", "low": True, "high": 8}]
    r = cli_inproc("sweep", _spec_file(tmp_path, d))
    _one_line_error(r, f"invalid sweep '{tmp_path / 'spec.toml'}': parameters.0.int.low: input should be a valid "
                       "integer, got True")


def test_mistyped_preset_in_a_choice_is_refused_before_the_first_trial(small, tmp_path) -> None:
    d = copy.deepcopy(small)
    d["parameters"] = [{"path": "model", "type": "choice", "values": ["gpt3-7b", "gpt3-7bb"]}]
    journal = tmp_path / "p.journal"
    r = cli_inproc("sweep", _spec_file(tmp_path, d), "--storage", str(journal))
    _one_line_error(r, "sweep 'small': parameter model: unknown model preset 'gpt3-7bb': did you mean gpt3-7b, "
                       "gpt3-175b, gpt3-30b? see `librapim presets list --kind model`")
    assert not journal.exists()


def test_mistyped_base_preset_is_refused(small) -> None:
    with pytest.raises(InputError, match=r"^sweep 'small': workload: unknown workload preset 'sharegtp': did you mean "):
        from librapim_cli.sweep import validate_sweep

        validate_sweep(parse_sweep({**small, "workload": "sharegtp"}, "t"))


def test_validate_sweep_file_runs_the_checks_of_the_sweep(small, tmp_path) -> None:
    good = _spec_file(tmp_path, small, "good.toml")
    assert validate_sweep_file(good).name == "small"
    assert validate_sweep_file("pim-design").name == "pim-design"
    bad_path = _spec_file(tmp_path, {**small, "parameters": [
        {"path": "hardware.pim.lanes", "type": "choice", "values": [8]}]}, "path.toml")
    with pytest.raises(SpecError, match="'lanes' is not a field of hardware.pim"):
        validate_sweep_file(bad_path)
    bad_choice = _spec_file(tmp_path, {**small, "parameters": [
        {"path": "system", "type": "choice", "values": ["librapim", "neupmis"]}]}, "choice.toml")
    with pytest.raises(InputError, match="parameter system: unknown system preset 'neupmis': did you mean neupims"):
        validate_sweep_file(bad_choice)
    # the same checks as the command: it refuses the file with the same message
    r = cli_inproc("sweep", bad_choice)
    assert r.exit_code == 2 and "unknown system preset 'neupmis'" in r.stderr


# ---- signals ---------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat_fields[1]) == pid and b"resource_tracker" not in cmd:
            out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _wait_finished(storage: str, n: int, proc, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        try:
            if sum(r["state"] in ("COMPLETE", "PRUNED") for r in trials_table(storage, "small")) >= n:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {n} finished trials after {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to list the worker processes")
@pytest.mark.parametrize("storage_kind", ["journal", "sqlite"])
def test_sigterm_stops_every_worker_keeps_the_trials_and_prints_the_resume_command(small, tmp_path,
                                                                                   storage_kind: str) -> None:
    spec = _spec_file(tmp_path, {**small, "parameters": WIDE})
    storage = str(tmp_path / "t.journal") if storage_kind == "journal" else f"sqlite:///{tmp_path}/t.db"
    proc = cli_popen("sweep", spec, "--trials", "5000", "--storage", storage, "--workers", "2")
    _wait_finished(storage, 10, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # to the parent only, as `kill PID` does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 20
    assert "Traceback" not in err and "Traceback" not in out
    assert "interrupted; everything so far is kept. Resume with:" in out
    deadline = time.monotonic() + 10
    while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(w) for w in workers), "a worker outlived the sweep"
    rows = trials_table(storage, "small")
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    resume = out.split("Resume with:", 1)[1].split()
    assert resume[:3] == ["librapim", "sweep", spec] and "--workers" in resume
    r = cli(*resume[1:], "--trials", str(len(rows) + 3))  # the last --trials wins
    assert r.returncode == 0, r.stderr
    assert sum(x["state"] in ("COMPLETE", "PRUNED") for x in trials_table(storage, "small")) == len(rows) + 3


@pytest.mark.parametrize("workers", ["1", "2"])
def test_double_ctrl_c_stops_at_once_without_a_traceback(small, tmp_path, workers: str) -> None:
    spec = _spec_file(tmp_path, {**small, "parameters": WIDE})
    journal = str(tmp_path / "i.journal")
    proc = cli_popen("sweep", spec, "--trials", "5000", "--storage", journal, "--workers", workers,
                     start_new_session=True)
    _wait_finished(journal, 10, proc)
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the foreground process group
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "interrupted; everything so far is kept. Resume with:" in out
    deadline = time.monotonic() + 10
    while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(w) for w in workers)
    rows = trials_table(journal, "small")
    assert rows and all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
