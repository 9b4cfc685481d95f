"""Property-based tests of the CLI (Hypothesis): generated arguments, --set values, preset files, traces and
output paths, run in-process.

Whatever the input: the exit code is 0, 1 or 2; there is never a traceback; a failure prints exactly one
``error:`` line on stderr and nothing on stdout, and bad input is never reported as a bug in librapim; no
partial output file is left and no special file is replaced. Runs are kept small (iteration mode, batches
of at most 64, serve mode only with a few requests) and the examples few and derandomized, so the suite
stays fast and reproducible.
"""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import tempfile
from pathlib import Path

from cli_helpers import leaf_fields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from librapim_cli.cli.app import PROG_NAME, app
from librapim_cli.spec import ModelSpec, SystemSpec, WorkloadSpec, list_presets
from librapim_cli.spec.loading import FOLDERS, presets_root

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def RUN(*args: str):  # noqa: N802 - reads like the `run` fixture, which function-scoped @given tests cannot use
    return CliRunner().invoke(app, list(args), prog_name=PROG_NAME, env={"COLUMNS": "120"})


ROOTS = {"system": SystemSpec, "model": ModelSpec, "workload": WorkloadSpec}
FIELD_PATHS = [f"{root}.{'.'.join(p)}" for root, cls in ROOTS.items() for p, _, _ in leaf_fields(cls)]


def check_clean(r) -> None:
    """The shape every run must have, success or failure."""
    assert r.exit_code in (0, 1, 2), (r.exit_code, r.stdout[-500:], r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    if r.exit_code == 0:
        assert r.stderr == "", r.stderr  # no warnings or stray lines on success
        return
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout == "", r.stdout[-500:]
    assert "this is a bug in librapim" not in lines[0], lines[0]


# ---- values -------------------------------------------------------------------------------------------------
def toml_float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


ints = st.one_of(st.integers(-3, 300), st.sampled_from([0, 1, 2, 4096, 65536, 2**32, 2**32 - 1, -1, 10**20]),
                 st.integers(-(10**30), 10**30))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, 1.0, 1.2e9, 2e-9, -1.0]))
literals = st.one_of(
    ints.map(str),
    floats.map(toml_float),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(st.characters(codec="utf-8", exclude_characters='"\\\n\r'), max_size=8).map(lambda s: f'"{s}"'),
    st.sampled_from(["", "abc", "[1, 2]", "{a = 1}", "1e400", "0x10", "1_000", "'single'", "= =", "2024-01-01"]),
)
paths = st.one_of(st.sampled_from(FIELD_PATHS), st.sampled_from(
    ["hardware.pim.clock_hz", "pim.clock_hz", "model", "system.nosuch", "model.layers.x", "", ".", "workload..seed"]))


# ---- simulate arguments -------------------------------------------------------------------------------------
@st.composite
def simulate_args(draw) -> list[str]:
    args = ["simulate"]
    mode = draw(st.sampled_from(["iteration", "iteration", "iteration", "serve", "fast"]))
    args += ["--mode", mode]
    batch = draw(st.one_of(st.integers(1, 64).map(str), st.integers(-5, 0).map(str),
                           st.integers(65_537, 10**25).map(str), st.sampled_from(["abc", "1.5", "", "1e3"])))
    args += ["--batch", batch]
    if mode == "serve":
        args += ["--requests", str(draw(st.integers(1, 24)))]
    else:
        req = draw(st.one_of(st.none(), st.integers(1, 300), st.integers(-3, 0), st.integers(10**6 + 1, 10**20)))
        if req is not None:
            args += ["--requests", str(req)]
    for flag, kind, extra in (("--system", "system", ["nosuch", ""]), ("--model", "model", ["gpt3-8b"]),
                              ("--workload", "workload", ["missing.toml"])):
        names = [p.name for p in list_presets(kind)] + extra
        if draw(st.booleans()):
            args += [flag, draw(st.sampled_from(names))]
    for path, value in draw(st.lists(st.tuples(paths, literals), max_size=3)):
        if mode == "serve" and path == "workload.num_requests":
            continue  # serve mode takes --requests above; a huge num_requests would only be slow
        args += ["--set", f"{path}={value}"]
    if draw(st.booleans()):
        args.append("--json")
    return args


@SETTINGS
@given(simulate_args())
def test_generated_simulate_runs_are_clean(args):
    with tempfile.TemporaryDirectory() as d:
        r = RUN(*args, "--iterations-csv", os.path.join(d, "its.csv"))
        check_clean(r)
        files = os.listdir(d)
        assert files == (["its.csv"] if r.exit_code == 0 else []), files  # all or nothing, no temporary file
        if r.exit_code == 0 and "--json" in args:
            json.loads(r.stdout)  # one strict JSON document (NaN would not parse as strict JSON figures)


# ---- preset files -------------------------------------------------------------------------------------------
def _flat_model() -> dict[str, object]:
    import tomllib

    return tomllib.loads((presets_root() / FOLDERS["model"] / "gpt3-7b.toml").read_text())


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, float):
        return toml_float(v)
    return json.dumps(v)


@st.composite
def model_files(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # now and then, not text at all
        return draw(st.binary(max_size=200))
    data = _flat_model()
    lines = []
    for key, value in data.items():
        action = draw(st.sampled_from(["keep"] * 6 + ["replace", "drop"]))
        if action == "drop":
            continue
        lines.append(f"{key} = {draw(literals) if action == 'replace' else _toml_value(value)}")
    if draw(st.booleans()):
        lines.append(f"{draw(st.sampled_from(['extra', 'layer', 'Layers']))} = {draw(literals)}")
    text = "\n".join(lines) + "\n"
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16"])))


@SETTINGS
@given(model_files())
def test_generated_model_presets_are_clean(body):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "models" / "m.toml"
        path.parent.mkdir()
        path.write_bytes(body)
        v = RUN("presets", "validate", str(path))
        check_clean(v)
        s = RUN("simulate", "--mode", "iteration", "--batch", "4", "--model", str(path))
        check_clean(s)
        if v.exit_code == 2:
            assert s.exit_code == 2  # validate checks what simulate checks
        assert path.read_bytes() == body


# ---- traces -------------------------------------------------------------------------------------------------
cells = st.one_of(st.integers(-3, 5000).map(str), st.integers(-(10**30), 10**30).map(str),
                  floats.map(lambda x: repr(x) if math.isfinite(x) else str(x)),
                  st.sampled_from(["", " 7 ", "nan", "inf", "-inf", "1e400", "x", '"4"', "4.0"]),
                  st.text(max_size=4))
headers = st.sampled_from(["input_len,output_len,arrival_s", "input_len,output_len", "output_len,input_len",
                           "input_len,arrival_s", "", " input_len , output_len "])


@st.composite
def trace_files(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    rows = draw(st.lists(st.lists(cells, min_size=1, max_size=4), max_size=6))
    good = draw(st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300), st.floats(0, 100)), max_size=6))
    body = [draw(headers)] + [",".join(r) for r in rows] + [f"{i},{o},{a!r}" for i, o, a in good]
    if draw(st.booleans()):
        body = [body[0]] + sorted(body[1:], key=lambda _: draw(st.integers()))
    return "\n".join(body).encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"])),
                                  errors="replace")


@SETTINGS
@given(trace_files(), st.sampled_from(["iteration", "serve"]))
def test_generated_traces_are_clean(body, mode):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "workloads"
        folder.mkdir()
        (folder / "t.csv").write_bytes(body)
        w = folder / "w.toml"
        w.write_text('name = "w"\nsource = "test"\nlengths = "trace"\ntrace_path = "t.csv"\nnum_requests = 8\n'
                     'max_batch = 4\narrival = "trace"\n')
        v = RUN("presets", "validate", str(w))
        check_clean(v)
        s = RUN("simulate", "--mode", mode, "--workload", str(w), "--batch", "4", "--requests", "8")
        check_clean(s)
        if v.exit_code == 2:
            assert s.exit_code == 2 and s.stderr == v.stderr  # the same check, the same line


# ---- output paths -------------------------------------------------------------------------------------------
KINDS = ["new", "regular", "read-only", "symlink", "dangling", "fifo", "folder", "socket", "missing-folder",
         "devnull", "proc", "sys", "dev", "dash", "same-as-other"]


def _make(d: Path, kind: str, name: str, other: str | None) -> str:
    p = d / name
    if kind == "regular":
        p.write_text("keep me")
    elif kind == "read-only":
        p.write_text("keep me")
        p.chmod(0o444)
    elif kind == "symlink":
        (d / f"{name}.real").write_text("keep me")
        p.symlink_to(d / f"{name}.real")
    elif kind == "dangling":
        p.symlink_to(d / f"{name}.made")
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "folder":
        p.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "missing-folder":
        return str(d / "no" / name)
    elif kind == "devnull":
        return "/dev/null"
    elif kind in ("proc", "sys", "dev"):
        return f"/{kind}/librapim-{name}"
    elif kind == "dash":
        return "-"
    elif kind == "same-as-other" and other is not None:
        return other
    return str(p)


def _snapshot(d: Path) -> dict[str, tuple[int, str | None]]:
    out = {}
    for p in sorted(d.rglob("*")):
        mode = os.lstat(p).st_mode
        link = os.readlink(p) if stat.S_ISLNK(mode) else None
        out[p.name] = (stat.S_IFMT(mode), link)
    return out


@SETTINGS
@given(st.sampled_from(KINDS), st.sampled_from(KINDS), st.booleans())
def test_outputs_never_damage_what_they_replace(trace_kind, csv_kind, fail):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        trace = _make(d, trace_kind, "t.json", None)
        csv = _make(d, csv_kind, "i.csv", trace)
        before = _snapshot(d)
        dev_null = os.stat("/dev/null")
        args = ["simulate", "--mode", "iteration", "--batch", "4", "--trace", trace, "--iterations-csv", csv]
        if fail:
            args += ["--set", "model.layers=0"]  # fails after the outputs were checked
        r = RUN(*args)
        check_clean(r)
        after = _snapshot(d)
        for name, (kind, link) in before.items():  # nothing replaced by another kind of file
            assert after[name] == (kind, link), (name, before[name], after[name])
        assert not [n for n in after if n.endswith(".tmp")], after  # no temporary file left
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.stat("/dev/null").st_rdev == dev_null.st_rdev
        for kind in ("proc", "sys", "dev"):
            assert not os.path.exists(f"/{kind}/librapim-t.json") and not os.path.exists(f"/{kind}/librapim-i.csv")
        if r.exit_code != 0:
            for p in d.rglob("*"):
                if p.is_file() and not p.is_symlink() and p.suffix in (".json", ".csv", ".real"):
                    assert p.read_text() == "keep me", p  # a failed command replaced nothing
        for p in d.rglob("*"):
            if p.is_file() and p.stat().st_mode & 0o222 == 0:
                p.chmod(0o644)  # let the temporary folder be removed
