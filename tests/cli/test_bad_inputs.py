"""A corpus of bad inputs, generated from tables: every one is a clean failure.

Every case runs the real CLI in-process and must exit with code 2 (bad input) with exactly one line on
stderr starting with ``error:``, nothing on stdout and no traceback. The cases:

- every spec field (system, hardware, model, workload; walked from the spec classes) given out-of-range,
  wrong-type and non-finite values with ``--set``: the line names the preset and the field's dotted path;
- every option of simulate / presets / plot / reproduce with bad values;
- bad preset TOML files (syntax, types, ranges, encodings) for every kind, checked by ``presets validate``
  and used by ``simulate``;
- bad request-trace CSV files, checked by ``presets validate`` and used by ``simulate``.

``EXACT`` pins the whole message of a representative case of each category.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
import types
import typing
from pathlib import Path

import pytest
from cli_helpers import leaf_fields
from pydantic import BaseModel

from librapim_cli.spec import ModelSpec, SystemSpec, WorkloadSpec
from librapim_cli.spec.limits import MAX_BATCH, MAX_REQUESTS
from librapim_cli.spec.loading import FOLDERS, presets_root

FAST = ("--mode", "iteration", "--batch", "4")
DEFAULTS = {"system": "librapim", "model": "gpt3-7b", "workload": "sharegpt"}
#: optional sub-specs the default preset lacks: their fields are tried on a preset that has them
HOLDERS = {"hardware.xpu_memory.": "attacc"}


def _preset_for(kind: str, path: str) -> str:
    return next((name for prefix, name in HOLDERS.items() if kind == "system" and path.startswith(prefix)),
                DEFAULTS[kind])
ROOT_SPECS: dict[str, type[BaseModel]] = {"system": SystemSpec, "model": ModelSpec, "workload": WorkloadSpec}


# ---- spec fields ------------------------------------------------------------------------------------------
def _base_type(ann) -> object:
    args = [a for a in typing.get_args(ann) if a is not type(None)] if isinstance(ann, types.UnionType) else [ann]
    return args[0] if len(args) == 1 else ann


def _bounds(metadata) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metadata:
        for key in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(m, key, None) is not None:
                out[key] = getattr(m, key)
    return out


def _lit(v) -> str:
    """A Python value as the TOML literal --set parses back."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return f'"{v}"'


def _bad_values(ann, metadata) -> list[tuple[str, str]]:
    """(label, TOML literal) of values the field must reject."""
    base = _base_type(ann)
    b = _bounds(metadata)
    out: list[tuple[str, str]] = []
    if base is int or base is float:
        lo = b.get("ge", b.get("gt"))
        hi = b.get("le", b.get("lt"))
        if "gt" in b:
            out.append(("at-exclusive-low", _lit(base(b["gt"]))))
        if lo is not None:
            below = lo - 1 if base is int else (lo / 2 if lo > 0 else -1.0)
            out.append(("below", _lit(base(below))))
        if "lt" in b:
            out.append(("at-exclusive-high", _lit(base(b["lt"]))))
        if hi is not None:
            out.append(("above", _lit(base(hi) + 1 if base is int else float(hi) * 10)))
        out += [("negative-huge", "-1e300"), ("quoted", '"7"'), ("bool", "true"), ("array", "[1, 2]")]
        if base is int:
            out += [("float", "1.5"), ("integral-float", "8.0"), ("huge-int", str(10**30))]
        else:
            out += [("inf", "inf"), ("minus-inf", "-inf"), ("nan", "nan"), ("overflow", "1e400")]
    elif base is bool:
        out += [("int", "1"), ("quoted", '"true"'), ("float", "0.0")]
    elif typing.get_origin(base) is typing.Literal:
        out += [("unknown", '"bogus"'), ("int", "3")]
    elif base is str:
        out += [("int", "5"), ("bool", "false")]
        if b.get("min_length"):
            out.append(("empty", '""'))
    elif typing.get_origin(base) is tuple:  # a list of bounded integers (thread_blocks.tile_sizes)
        out += [("not-array", "7"), ("quoted-items", '["8"]'), ("float-items", "[8.5]"), ("zero-item", "[0]")]
    return out


# fields whose registered-name validators accept only known names (str typed, checked by a validator)
NAMED = {("concurrency", "mode"), ("serving", "admission")}

SPEC_CASES: list[tuple[str, str, str, str]] = []  # (id, kind, dotted path below the kind, literal)
for _kind, _cls in ROOT_SPECS.items():
    for _path, _ann, _md in leaf_fields(_cls):
        values = _bad_values(_ann, _md)
        if _path[-2:] in NAMED:
            values = [("unknown", '"bogus"'), ("int", "3")]
        for _label, _value in values:
            _dotted = ".".join(_path)
            SPEC_CASES.append((f"{_kind}.{_dotted}={_label}", _kind, _dotted, _value))


@pytest.mark.parametrize("kind,path,value", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_bad_spec_field(run, one_line_error, kind, path, value):
    preset = _preset_for(kind, path)
    extra = () if preset == DEFAULTS[kind] else (f"--{kind}", preset)
    line = one_line_error(run("simulate", *FAST, *extra, "--set", f"{kind}.{path}={value}"))
    assert line.startswith(f"error: invalid {kind} '{preset}': {path}"), line


def test_spec_corpus_covers_every_field():
    covered = {(c[1], c[2]) for c in SPEC_CASES}
    for kind, cls in ROOT_SPECS.items():
        for path, _, _ in leaf_fields(cls):
            assert (kind, ".".join(path)) in covered, (kind, path)


# ---- options ------------------------------------------------------------------------------------------------
OPTION_CASES: list[tuple[str, ...]] = [
    ("simulate", "--batch", "0"),
    ("simulate", "--batch", "-1"),
    ("simulate", "--batch", str(MAX_BATCH + 1)),
    ("simulate", "--batch", "99999999999999999999"),
    ("simulate", "--batch", "1.5"),
    ("simulate", "--batch", "abc"),
    ("simulate", "--batch", ""),
    ("simulate", "--requests", "0"),
    ("simulate", "--requests", "-5"),
    ("simulate", "--requests", str(MAX_REQUESTS + 1)),
    ("simulate", "--requests", "1000000000"),
    ("simulate", "--requests", "nan"),
    ("simulate", "--mode", "fast"),
    ("simulate", "--mode", ""),
    ("simulate", "--policy", "lifo", "--mode", "serve", "--requests", "8"),
    ("simulate", "--policy", "paged", "--mode", "iteration"),
    ("simulate", "--system", "nosuch"),
    ("simulate", "--system", ""),
    ("simulate", "--model", "gpt3-8b"),
    ("simulate", "--model", "missing.toml"),
    ("simulate", "--model", "/"),
    ("simulate", "--model", "/dev/null"),
    ("simulate", "--workload", "nosuch"),
    ("simulate", "--workload", "./missing/w.toml"),
    ("simulate", "--set", "noequals"),
    ("simulate", "--set", "=1"),
    ("simulate", "--set", "model=1"),
    ("simulate", "--set", "pim.clock_hz=1e9"),
    ("simulate", "--set", "model.layerz=3"),
    ("simulate", "--set", "system.hardware.pim.lanes=3"),
    ("simulate", "--set", "system.tp=3"),
    ("simulate", "--set", "system.pp=7"),
    ("simulate", "--set", "model.layers"),
    ("simulate", "--set", "system.dbo.enabled=true", "--system", "gpu-only"),
    ("simulate", "--set", "system.placement.attention=\"pim\"", "--system", "gpu-only"),
    ("simulate", "--set", "system.hardware.memory.capacity_bytes=1024"),
    ("simulate", "--set", "system.hardware.memory.column_bytes=33"),
    ("simulate", "--set", "system.hardware.memory.tRFC_ns=5000"),
    ("simulate", "--set", "model.kv_heads=5"),
    ("simulate", "--set", "model.moe_top_k=2"),
    ("simulate", "--set", "workload.lengths=\"trace\""),
    ("simulate", "--set", "workload.arrival=\"poisson\""),
    ("simulate", "--set", "workload.input_stats.min=3000"),
    ("simulate", "--set", "workload.input_stats.median=4000"),
    ("simulate", "--workload", "fixed-2048-128", "--batch", "2000", "--mode", "iteration"),
    ("simulate", "--batch", "60000", "--mode", "iteration"),
    ("simulate", "--compare", ","),
    ("simulate", "--compare", "neupims,neupims"),
    ("simulate", "--compare", "neupims,nosuch"),
    ("simulate", "--compare", "neupims", "--system", "librapim"),
    ("simulate", "--compare", "neupims,librapim", "--baseline", "npu-only"),
    ("simulate", "--compare", "neupims,librapim", "--trace", "t.json"),
    ("simulate", "--compare", "neupims,librapim", "--iterations-csv", "i.csv"),
    ("simulate", "--compare", "neupims,librapim", "--breakdown"),
    ("simulate", "--baseline", "neupims"),
    ("simulate", "--bogus"),
    ("simulate", "extra-argument"),
    ("simulate", "--trace", "/proc/t.json"),
    ("simulate", "--trace", "/proc/version"),
    ("simulate", "--trace", "/sys/t.json"),
    ("simulate", "--trace", "/dev/t.json"),
    ("simulate", "--trace", "/nonexistent-folder/t.json"),
    ("simulate", "--trace", "/"),
    ("simulate", "--trace", ""),
    ("simulate", "--trace", "/dev/fd/987"),
    ("simulate", "--iterations-csv", "/proc/self/status"),
    ("simulate", "--trace", "same.json", "--iterations-csv", "same.json"),
    ("simulate", "--trace", "-", "--iterations-csv", "-"),
    ("simulate", "--trace", "-", "--json"),
    ("simulate", "--trace", "/dev/stdout", "--json"),
    ("presets", "list", "--kind", "nope"),
    ("presets", "list", "--kind", ""),
    ("presets", "list", "--bogus"),
    ("presets", "show", "gpt3-8b"),
    ("presets", "show", "gpt3-7b", "--kind", "models"),
    ("presets", "show", "gpt3-7b", "--set", "layers=-2"),
    ("presets", "show", "gpt3-7b", "--set", "layers=inf"),
    ("presets", "show", "gpt3-7b", "--set", "layers=\"32\""),
    ("presets", "show", "gpt3-7b", "--set", "layers"),
    ("presets", "show", "librapim", "--set", "hardware.pim.clock_hz=nan"),
    ("presets", "show", "missing.toml"),
    ("presets", "show", "/dev/null"),
    ("presets", "show"),
    ("presets", "validate", "/nonexistent/file.toml"),
    ("presets", "validate", "/"),
    ("presets", "validate", "/dev/null"),
    ("presets", "validate", "x.toml", "--kind", "nope"),
    ("presets", "nosuch"),
    ("plot", "roofline"),
    ("plot", "roofline", "--out", "fig.bmp"),
    ("plot", "roofline", "--out", "fig"),
    ("plot", "roofline", "--out", "/proc/fig.png"),
    ("plot", "roofline", "--out", "/nonexistent-folder/fig.png"),
    ("plot", "roofline", "--out", "fig.png", "--dpi", "0"),
    ("plot", "roofline", "--out", "fig.png", "--dpi", "100000"),
    ("plot", "roofline", "--out", "fig.png", "--batch", "0"),
    ("plot", "roofline", "--out", "fig.png", "--set", "model.layers=0"),
    ("plot", "roofline", "--out", "fig.png", "--system", "nosuch"),
    ("plot", "timeline", "--out", "fig.png", "--systems", ",,"),
    ("plot", "timeline", "--out", "fig.png", "--systems", "neupims,neupims"),
    ("plot", "timeline", "--out", "fig.png", "--layers", "0"),
    ("plot", "timeline", "--out", "fig.png", "--layers", "100000"),
    ("plot", "compare", "--out", "fig.png", "--models", ","),
    ("plot", "compare", "--out", "fig.png", "--batch", str(MAX_BATCH + 1)),
    ("reproduce", "--samples", "0"),
    ("reproduce", "--samples", "1001"),
    ("reproduce", "--out", "/proc/r.md"),
    ("reproduce", "--out", "r.md", "--golden", "r.md"),
    ("reproduce", "--golden", "/nonexistent-folder/g.json"),
    ("reproduce", "--batches", "0"),
    ("reproduce", "--batches", "1,1"),
    ("reproduce", "--npu-arrays", "a"),
    ("reproduce", "--models", "nosuch"),
    ("reproduce", "--workloads", ","),
    ("reproduce", "--data", "map.txt"),
    ("reproduce", "--golden", "g.json", "--models", "gpt3-13b"),
    ("reproduce", "--models", "gpt3-7b", "--storage", "bogus-storage"),
    ("reproduce", "--workers", "0"),
    ("regime",),
    ("regime", "--target", "x"),
    ("regime", "--target", "librapim/nosuch>=2"),
    ("regime", "--target", "librapim.nosuch_metric>=1"),
    ("regime", "--target", "librapim/neupims>=2", "--batch-min", "9", "--batch-max", "2"),
    ("regime", "--target", "librapim/neupims>=2", "--sampler", "bogus"),
    ("regime", "--target", "librapim/neupims>=2", "--workers", "2"),
    ("regime", "--target", "librapim/neupims>=2", "--json", "/nonexistent-folder/r.json"),
    ("plot", "regime", "--out", "fig.png", "--baseline", "nosuch"),
    ("plot", "regime", "--out", "fig.png", "--rows", "x"),
    ("plot", "regime", "--out", "fig.bmp"),
    ("plot", "utilization", "--out", "fig.png", "--npu-arrays", "0"),
    ("nosuchcommand",),
    ("--bogus",),
]


@pytest.mark.parametrize("args", OPTION_CASES, ids=lambda a: " ".join(a) or "''")
def test_bad_option(run, one_line_error, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)  # relative output names land in a scratch folder
    extra = FAST if args[0] == "simulate" and not {"--batch", "--mode"} & set(args) else ()
    one_line_error(run(*args, *extra))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


# ---- special outputs that need a file system object -----------------------------------------------------
def test_outputs_that_are_special_files(run, one_line_error, tmp_path):
    sock = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        line = one_line_error(run("simulate", *FAST, "--trace", str(sock)))
        assert line == (f"error: --trace {sock}: is a socket, not a file; give a file path (or - for standard "
                        "output)")
    fifo = tmp_path / "f.fifo"
    os.mkfifo(fifo)
    line = one_line_error(run("simulate", *FAST, "--trace", str(fifo)))
    assert line == f"error: --trace {fifo}: is a FIFO that no process is reading; start the reader first or give a file path"
    assert fifo.is_fifo()


# ---- preset files -------------------------------------------------------------------------------------------
NUMERIC_KEY = {"model": "layers", "hardware": "sa_rows", "system": "sub_batch_min_batch", "workload": "num_requests"}
REQUIRED_KEY = {"model": "layers", "hardware": "sa_rows", "system": "sub_batch_interleaving", "workload": "num_requests"}
PRESET_FOR = {"model": "gpt3-7b", "hardware": "neupims-npu-hbm2pim", "system": "librapim", "workload": "sharegpt"}


def _set_key(text: str, key: str, value: str) -> str:
    new, n = re.subn(rf"(?m)^{key}\s*=\s*[^\n#]*", f"{key} = {value} ", text, count=1)
    assert n == 1, key
    return new


def _drop_key(text: str, key: str) -> str:
    return re.sub(rf"(?m)^{key}\s*=.*\n", "", text, count=1)


TOML_MUTATIONS = {
    "syntax": lambda t, kind: t + "\nbroken = = 1\n",
    "unknown-field": lambda t, kind: "bogus_field = 1\n" + t,
    "quoted-number": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], '"32"'),
    "bool-number": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "true"),
    "float-for-int": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "2.5"),
    "inf": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "inf"),
    "nan": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "nan"),
    "overflow": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "1e400"),
    "huge-int": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], str(10**40)),
    "negative": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "-1"),
    "zero": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "0"),
    "empty-name": lambda t, kind: _set_key(t, "name", '""'),
    "name-as-int": lambda t, kind: _set_key(t, "name", "3"),
    "missing-key": lambda t, kind: _drop_key(t, REQUIRED_KEY[kind]),
    "empty-file": lambda t, kind: "",
    "table-for-value": lambda t, kind: _set_key(t, NUMERIC_KEY[kind], "{ a = 1 }"),
}
TOML_BYTES = {
    "binary": bytes(range(256)) * 4,
    "utf16": 'name = "x"\nlayers = 3\n'.encode("utf-16"),
    "latin1": 'name = "caf\xe9"\n'.encode("latin-1"),
    "nul": b'name = "x\x00"\n',
}
USE = {"model": ("--model",), "hardware": None, "system": ("--system",), "workload": ("--workload",)}
TOML_CASES = [(kind, m, cmd) for kind in PRESET_FOR for m in [*TOML_MUTATIONS, *TOML_BYTES]
              for cmd in ("validate", "simulate") if cmd == "validate" or USE[kind]]


def _preset_file(tmp_path: Path, kind: str, mutation: str) -> Path:
    src = presets_root() / FOLDERS[kind] / f"{PRESET_FOR[kind]}.toml"
    dest = tmp_path / FOLDERS[kind] / f"bad-{kind}.toml"  # the folder name tells presets validate the kind
    dest.parent.mkdir(parents=True)
    if mutation in TOML_BYTES:
        dest.write_bytes(TOML_BYTES[mutation])
    else:
        text = src.read_text()  # a system's hardware is a bundled name: it resolves from any folder
        dest.write_text(TOML_MUTATIONS[mutation](text, kind))
    return dest


@pytest.mark.parametrize("kind,mutation,cmd", TOML_CASES, ids=lambda x: str(x))
def test_bad_preset_file(run, one_line_error, tmp_path, kind, mutation, cmd):
    path = _preset_file(tmp_path, kind, mutation)
    if cmd == "validate":
        line = one_line_error(run("presets", "validate", str(path)))
    else:
        line = one_line_error(run("simulate", *FAST, USE[kind][0], str(path)))
    assert str(path) in line or "--set" in line, line


# ---- trace files --------------------------------------------------------------------------------------------
HEADER = "input_len,output_len,arrival_s\n"
TRACES: dict[str, bytes] = {
    "nan-arrival": (HEADER + "4,3,0\n5,2,nan\n").encode(),
    "inf-arrival": (HEADER + "4,3,inf\n").encode(),
    "minus-inf-arrival": (HEADER + "4,3,-inf\n").encode(),
    "huge-arrival": (HEADER + "4,3,1e300\n").encode(),
    "negative-arrival": (HEADER + "4,3,-1\n").encode(),
    "nan-length": (HEADER + "nan,3,0\n").encode(),
    "inf-length": (HEADER + "4,inf,0\n").encode(),
    "zero-length": (HEADER + "0,3,0\n").encode(),
    "negative-length": (HEADER + "4,-3,0\n").encode(),
    "float-length": (HEADER + "4.5,3,0\n").encode(),
    "huge-length": (HEADER + f"{10**30},3,0\n").encode(),
    "empty-length": (HEADER + ",3,0\n").encode(),
    "short-row": (HEADER + "4\n").encode(),
    "missing-column": b"input_len,arrival_s\n4,0\n",
    "no-header": b"",
    "header-only": HEADER.encode(),
    "binary": bytes(range(256)) * 8,
    "utf16": (HEADER + "4,3,0\n").encode("utf-16"),
    "utf16-le-no-bom": (HEADER + "4,3,0\n").encode("utf-16-le"),
    "latin1": (HEADER.rstrip("\n") + ",note\n4,3,0,caf\xe9\n").encode("latin-1"),
    "nul": (HEADER + "4,3\x00,0\n").encode(),
    "unterminated-quote": (HEADER + '"4,3,0\n').encode(),
    "words": (HEADER + "four,three,zero\n").encode(),
}
TRACE_CASES = [(name, cmd) for name in TRACES for cmd in ("validate", "simulate")]


def _trace_workload(tmp_path: Path, body: bytes | None, trace_name: str = "t.csv") -> Path:
    folder = tmp_path / "workloads"
    folder.mkdir(exist_ok=True)
    if body is not None:
        (folder / trace_name).write_bytes(body)
    w = folder / "w.toml"
    w.write_text(f'name = "w"\nsource = "test"\nlengths = "trace"\ntrace_path = "{trace_name}"\n'
                 'num_requests = 4\nmax_batch = 2\narrival = "trace"\n')
    return w


@pytest.mark.parametrize("name,cmd", TRACE_CASES, ids=lambda x: str(x))
def test_bad_trace(run, one_line_error, tmp_path, name, cmd):
    w = _trace_workload(tmp_path, TRACES[name])
    args = ("presets", "validate", str(w)) if cmd == "validate" else ("simulate", *FAST, "--workload", str(w))
    line = one_line_error(run(*args))
    assert str(tmp_path / "workloads" / "t.csv") in line, line


@pytest.mark.parametrize("what", ["missing", "folder", "fifo"])
def test_trace_path_that_is_not_a_file(run, one_line_error, tmp_path, what):
    w = _trace_workload(tmp_path, None)
    t = tmp_path / "workloads" / "t.csv"
    if what == "folder":
        t.mkdir()
    elif what == "fifo":
        os.mkfifo(t)  # never opened: reading it would block
    for args in (("presets", "validate", str(w)), ("simulate", *FAST, "--workload", str(w))):
        line = one_line_error(run(*args))
        assert line.startswith(f"error: trace '{t}'"), line


# ---- exact messages: one representative per category --------------------------------------------------------
EXACT = {
    # spec fields (--set)
    ("simulate", *FAST, "--set", "system.hardware.npu.clock_hz=inf"):
        "error: invalid system 'librapim': hardware.npu.clock_hz: input should be a finite number, got inf "
        "(allowed: a finite number, 1e6 to 1e11)",
    ("simulate", *FAST, "--set", "hardware.pim.clock_hz=1e-300"):
        "error: invalid system 'librapim': hardware.pim.clock_hz: input should be greater than or equal to 1000000, "
        "got 1e-300 (allowed: 1e6 to 1e11)",
    ("simulate", *FAST, "--set", "system.link.bw_bytes_per_s=1e-300"):
        "error: invalid system 'librapim': link.bw_bytes_per_s: input should be greater than or equal to 1000000, "
        "got 1e-300 (allowed: 1e6 to 1e15)",
    ("simulate", *FAST, "--set", "workload.seed=-1"):
        "error: invalid workload 'sharegpt': seed: input should be greater than or equal to 0, got -1 "
        "(allowed: 0 to 4294967295)",
    ("simulate", *FAST, "--set", "system.dbo.seed=4294967296"):
        "error: invalid system 'librapim': dbo.seed: input should be less than or equal to 4294967295, "
        "got 4294967296 (allowed: 0 to 4294967295)",
    ("simulate", *FAST, "--set", 'model.layers="32"'):
        "error: invalid model 'gpt3-7b': layers: input should be a valid integer, got '32' (allowed: an integer, "
        "1 to 1024); write the value without quotes",
    ("simulate", *FAST, "--set", "hardware.pim.mac_lanes_per_unit=true"):
        "error: invalid system 'librapim': hardware.pim.mac_lanes_per_unit: input should be a valid integer, "
        "got True (allowed: an integer, 1 to 4096)",
    ("simulate", *FAST, "--set", 'model.name=""'):
        "error: invalid model 'gpt3-7b': name: string should have at least 1 character, got '' "
        "(allowed: a non-empty string)",
    ("simulate", *FAST, "--set", "system.sub_batch_interleaving=1"):
        "error: invalid system 'librapim': sub_batch_interleaving: input should be a valid boolean, got 1 "
        "(allowed: true or false)",
    # options
    ("simulate", "--mode", "iteration", "--batch", "99999999999999999999"):
        "error: --batch 99999999999999999999: the batch must be from 1 to 65536 (the limit keeps a typo from "
        "exhausting memory); give a value in that range",
    ("simulate", "--mode", "iteration", "--requests", "1000000000"):
        "error: --requests 1000000000: the request count must be from 1 to 1000000 (the limit keeps a typo from "
        "exhausting memory); give a value in that range",
    ("simulate", "--set", "pim.clock_hz=1e9", *FAST):
        "error: --set 'pim.clock_hz=1e9': the path must start with one of system., model., workload., hardware. "
        "(did you mean --set hardware.pim.clock_hz=1e9?)",
    ("simulate", "--set", "noequals", *FAST):
        "error: --set 'noequals' is not of the form dotted.path=value (e.g. --set hardware.pim.mac_interval_ns=1.0)",
    ("simulate", "--policy", "paged", "--mode", "iteration"):
        "error: --policy applies to --mode serve only (admission); drop --policy or use --mode serve",
    ("simulate", "--workload", "fixed-2048-128", "--mode", "iteration", "--batch", "2000"):
        "error: the KV cache of a batch of 2000 does not fit even at the shortest context (2049 tokens per "
        "request): it needs at least 500.2 GiB per device but 28.9 GiB are left after weights; lower --batch "
        "(at most 115 fit) or raise tp/pp",
    ("simulate", *FAST, "--trace", "/proc/t.json"):
        "error: --trace /proc/t.json: is in /proc, a kernel file system, not a place for output files; "
        "choose another path",
    ("simulate", *FAST, "--trace", "same.json", "--iterations-csv", "same.json"):
        "error: --iterations-csv and --trace both name same.json; give each output its own file",
    ("simulate", *FAST, "--trace", "-", "--json"):
        "error: --trace and --json both write to standard output; give each output its own file",
    ("reproduce", "--out", "r.md", "--golden", "r.md"):
        "error: --out and --golden both name r.md; give each output its own file",
    ("plot", "timeline", "--out", "fig.png", "--layers", "0"):
        "error: Invalid value for '--layers': Input should be greater than or equal to 1; see "
        "`librapim plot timeline --help`",
}


@pytest.mark.parametrize("args", list(EXACT), ids=lambda a: " ".join(a))
def test_exact_message(run, one_line_error, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    assert one_line_error(run(*args)) == EXACT[args]


def test_exact_message_preset_file_and_trace(run, one_line_error, tmp_path):
    bad = _preset_file(tmp_path, "model", "quoted-number")
    assert one_line_error(run("presets", "validate", str(bad))) == (
        f"error: invalid model '{bad}': layers: input should be a valid integer, got '32' (allowed: an integer, "
        "1 to 1024); write the value without quotes")
    binary = _preset_file(tmp_path, "workload", "binary")
    assert one_line_error(run("simulate", *FAST, "--workload", str(binary))) == (
        f"error: {binary}: not UTF-8 text (binary, or another encoding such as UTF-16); save it as a UTF-8 TOML file")
    w = _trace_workload(tmp_path, TRACES["nan-arrival"])
    t = tmp_path / "workloads" / "t.csv"
    assert one_line_error(run("presets", "validate", str(w))) == (
        f"error: {t}:3: arrival_s must be a finite number of seconds, got 'nan'; fix that line")
    w = _trace_workload(tmp_path, TRACES["utf16"])
    assert one_line_error(run("simulate", *FAST, "--workload", str(w))) == (
        f"error: {t}: contains NUL bytes, so it is binary or UTF-16, not a CSV text file; save it as UTF-8 CSV "
        "with columns input_len,output_len[,arrival_s]")
    w = _trace_workload(tmp_path, TRACES["negative-length"])
    assert one_line_error(run("presets", "validate", str(w))) == (
        f"error: {t}:2: lengths must be 1 to 1048576 tokens and arrival_s 0 to 1e9 s, got input_len=4, "
        "output_len=-3, arrival_s=0; fix that line")


def test_corpus_size():
    n = len(SPEC_CASES) + len(OPTION_CASES) + len(TOML_CASES) + len(TRACE_CASES) + 3 + 2 + len(EXACT)
    assert n >= 300, n


def test_full_disk(run, one_line_error):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    before = os.stat("/dev/full")
    line = one_line_error(run("simulate", *FAST, "--trace", "/dev/full"))
    assert line == "error: --trace /dev/full: cannot write: no space left on the device; free some space or choose another path"
    after = os.stat("/dev/full")
    assert (after.st_mode, after.st_rdev) == (before.st_mode, before.st_rdev)  # still the device node


def test_read_only_folder(run, one_line_error, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        line = one_line_error(run("simulate", *FAST, "--trace", str(ro / "t.json")))
        assert line == f"error: --trace {ro / 't.json'}: the folder {ro} is not writable; choose another path"
    finally:
        ro.chmod(0o755)


def test_stream_output_leaves_no_staging_file(run):
    staged = set(Path(tempfile.gettempdir()).glob("librapim-*.out"))
    r = run("simulate", *FAST, "--trace", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith('{"traceEvents":[')
    assert set(Path(tempfile.gettempdir()).glob("librapim-*.out")) == staged
