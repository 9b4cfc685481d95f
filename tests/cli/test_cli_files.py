"""report/files.py: outputs never damage what they replace (docs/cli.md, 'Output files').

Regular files are replaced atomically, symlinks are followed (the link stays a link), character devices
and FIFOs are streamed in place, anything else is refused, and a failed write leaves every target as it was.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from librapim_cli.errors import InputError
from librapim_cli.report.files import check_distinct, target, write_atomically, write_text_atomically

FAST = ("--mode", "iteration", "--batch", "4")


def _kind(p: Path) -> int:
    return stat.S_IFMT(os.lstat(p).st_mode)


def test_regular_file_is_replaced_and_keeps_its_mode(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    out.chmod(0o640)
    write_text_atomically(out, "new")
    assert out.read_text() == "new"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomically(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640


def test_symlink_is_followed_and_stays_a_link(run, tmp_path):
    real = tmp_path / "data" / "trace.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    r = run("simulate", *FAST, "--trace", str(link))
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text())["traceEvents"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["trace.json"]  # no temporary file left


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "made.csv")
    write_text_atomically(link, "a,b\n")
    assert link.is_symlink() and (tmp_path / "made.csv").read_text() == "a,b\n"


def test_fifo_with_a_reader_is_streamed_in_place(run, tmp_path):
    fifo = tmp_path / "t.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    try:
        r = run("simulate", *FAST, "--trace", str(fifo))
    finally:
        if reader.is_alive() and not got:  # unblock the reader if the command never opened the FIFO
            with open(fifo, "wb"):
                pass
        reader.join(timeout=30)
    assert r.exit_code == 0, r.stderr
    assert _kind(fifo) == stat.S_IFIFO  # still a FIFO, not replaced by a file
    assert json.loads(got[0])["traceEvents"]


def test_character_device_is_written_in_place(run):
    before = os.stat("/dev/null")
    r = run("simulate", *FAST, "--iterations-csv", "/dev/null")
    assert r.exit_code == 0, r.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert r.stdout.rstrip().endswith("wrote /dev/null")


def test_dash_is_standard_output(run):
    r = run("simulate", *FAST, "--iterations-csv", "-")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("index,kind,start_s,time_s,")
    assert len(lines[1:9]) == 8 and all(line.split(",")[1] == "decode" for line in lines[1:9])  # 8 samples
    assert "wrote -" not in r.stdout


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "is a folder, not a file; give a file path (or - for standard output)"),
])
def test_refused_kinds(tmp_path, make, message):
    p = tmp_path / "x"
    make(p)
    with pytest.raises(InputError) as exc:
        target("--out", p)
    assert str(exc.value) == f"--out {p}: {message}"


def test_symlink_to_a_folder_is_refused_and_kept(tmp_path):
    (tmp_path / "d").mkdir()
    link = tmp_path / "l"
    link.symlink_to(tmp_path / "d")
    with pytest.raises(InputError, match="is a folder"):
        write_text_atomically(link, "x")
    assert link.is_symlink() and (tmp_path / "d").is_dir()


def test_symlink_loop_is_an_input_error(tmp_path):
    a = tmp_path / "a"
    a.symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(a)
    with pytest.raises(InputError) as exc:
        target("--trace", a)
    assert str(exc.value).startswith(f"--trace {a}: cannot use this path (")


def test_failed_write_replaces_nothing(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError) as exc:
        write_atomically([(keep, lambda tmp: tmp.write_text("new")), (tmp_path / "b.txt", fail, "--golden")])
    assert str(exc.value) == (f"--golden {tmp_path / 'b.txt'}: cannot write: no space left on the device; free some "
                              "space or choose another path")
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_read_only_file_system_message(tmp_path):
    def ro(tmp: Path) -> None:
        raise OSError(30, "Read-only file system")

    with pytest.raises(InputError) as exc:
        write_atomically([(tmp_path / "x.json", ro, "--trace")])
    assert str(exc.value) == f"--trace {tmp_path / 'x.json'}: cannot write: the file system is read-only; choose another path"


def test_same_file_under_two_names(tmp_path):
    real = tmp_path / "a.csv"
    real.write_text("")
    (tmp_path / "l.csv").symlink_to(real)
    with pytest.raises(InputError) as exc:
        check_distinct([("--iterations-csv", real), ("--trace", tmp_path / "l.csv")])
    assert str(exc.value) == f"--iterations-csv and --trace both name {tmp_path / 'l.csv'}; give each output its own file"
    check_distinct([("--iterations-csv", real), ("--trace", tmp_path / "other.json"), ("--json", None)])
