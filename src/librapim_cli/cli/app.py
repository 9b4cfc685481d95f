"""The ``librapim`` typer app: subcommand registration and the one place errors become exit codes.

Exit codes: 0 success; 2 bad input (``InputError`` from the library, or a usage error typer/click
detects while parsing); 1 a model error or an unexpected exception (a bug). Every error is one line on
stderr starting with ``error:``; set ``LIBRAPIM_DEBUG=1`` to also get the traceback.
"""

from __future__ import annotations

import errno
import gc
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ..errors import LibrapimError

DEBUG_ENV = "LIBRAPIM_DEBUG"
PROG_NAME = "librapim"
BUG_HINT = ("this is a bug in librapim: please report it with the command you ran "
            f"(rerun with {DEBUG_ENV}=1 for the traceback)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def report_error(exc: BaseException) -> int:
    """Print ``error: <message>`` for ``exc`` on stderr (plus the traceback in debug mode); return the exit code."""
    if isinstance(exc, LibrapimError):
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        code = exc.exit_code
    else:
        typer.echo(f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))}; {BUG_HINT}", err=True)
        code = 1
    if _debug():
        traceback.print_exception(exc, file=sys.stderr)
    return code


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`_keep_freed_heap` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest dynamic threshold
TRIM_THRESHOLD_BYTES = 128 * 2**20


def _keep_freed_heap() -> None:
    """glibc only: serve numpy buffers up to 32 MiB from the heap and keep up to 128 MiB of freed heap for
    reuse. By default a buffer of 128 KiB or more is a fresh ``mmap`` (every page faults in on first touch),
    and freed heap above twice the (dynamically raised) mmap threshold goes back to the OS, so until frees
    raise the thresholds every engine call faults in its few-MB temporaries again (~15 ms of a default
    ``librapim simulate``). Process-wide, so only the CLI sets it, when a command runs (not for the root
    ``--help``); without glibc nothing happens. Changes no result."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc's (or any) malloc
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


class LibrapimGroup(TyperGroup):
    """The root group: library errors and usage errors become one line and an exit code.

    Subcommands load on first use (:data:`COMMANDS`): ``librapim --help`` lists them from the table without
    importing numpy, the specs or the engine, so it starts as fast as typer itself.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:
        _keep_freed_heap()  # a command runs (not the root --help): before it allocates its arrays
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own control flow and usage errors (handled in main)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise
            raise typer.Exit(report_error(exc)) from None
        except Exception as exc:
            raise typer.Exit(report_error(exc)) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # click usage errors: bad option, missing argument, bad value
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(2)  # the help text is already printed
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else (prog_name or PROG_NAME)
            msg = _one_line(exc.format_message()).rstrip(".")
            typer.echo(f"error: {msg}; see `{where} --help`", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            try:  # the reader went away (`| head`): silence the final flush and exit quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("librapim")
        except PackageNotFoundError:  # running from a source tree without an install
            v = "unknown"
        typer.echo(f"librapim {v}")
        raise typer.Exit()


APP_SETTINGS: dict[str, Any] = dict(
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

app = typer.Typer(
    name=PROG_NAME,
    cls=LibrapimGroup,
    help="Design-space exploration for PIM-assisted LLM inference (NPU + HBM-PIM; LibraPIM = DEX + DBO).",
    no_args_is_help=True,
    rich_markup_mode=None,  # the root help is click's plain text: rendering it needs no rich import
    **APP_SETTINGS,
)


@app.callback()
def _root(
    version_: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                           callback=_version_callback)] = False,
) -> None:
    """Design-space exploration for PIM-assisted LLM inference (NPU + HBM-PIM; LibraPIM = DEX + DBO).

    Bad input exits with code 2 and one line on stderr; a model error or a bug exits with code 1.
    """


# ---- subcommands: one line each (name: module in this package, which defines register(app); the one-line help
# the root --help shows, which tests/cli keeps equal to the command's own) --------------------------------
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "Simulate a system on a model and a workload and print its metrics."),
    "reproduce": ("reproduce", "Run the regime map (GPT-3 7B-175B x ShareGPT, Alpaca, 2k/4k/8k contexts x batch 1-512 x "
                               "NPU of 1-8 systolic arrays x PIM input registers 1-8, every system on the "
                               "NeuPIMs-class device) and write where LibraPIM reaches each published number, by "
                               "how much and through which mechanism, with heatmaps."),
    "regime": ("reproduce", "Search the regime map's axes (models, contexts, batch as an integer range, NPU arrays, "
                            "PIM input registers) with Optuna for where a target holds, and report the region: the "
                            "bounds of every parameter over the trials that meet it, the share of trials meeting it "
                            "per value, and overall."),
    "sweep": ("sweep", "Search the spec's parameters with Optuna for the best design (or the Pareto front)."),
    "presets": ("presets", "List, show and validate presets (models, hardware, systems, workloads, sweeps)."),
    "plot": ("plot", "Draw figures: roofline, device timeline, system comparison, Pareto front, regime-map heatmaps "
                     "(PNG/SVG/PDF by --out)."),
}
# ---- end of subcommands -----------------------------------------------------------------------------


def load_command(name: str) -> Any:
    """The click command of subcommand ``name``: its module registers it on a throwaway app."""
    sub = typer.Typer(**APP_SETTINGS)
    # The command's imports (numpy, pydantic and its schemas, the package: ~10^5 objects, alive until exit) run
    # without the cyclic collector, which would find nothing to free (~10 ms of collections), and what they
    # made then leaves its view (gc.freeze), so neither the run's full collections nor the interpreter's exit
    # traverse it again (exit: ~45 ms -> ~10 ms). Changes no result.
    enabled = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module(f"{__package__}.{COMMANDS[name][0]}").register(sub)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return typer.main.get_group(sub).commands[name]


def main() -> None:
    """Console-script entry point (``librapim``), also used by ``python -m librapim_cli``."""
    app(prog_name=PROG_NAME)
