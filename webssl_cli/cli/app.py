"""The `webssl` console script: a thin shell over the Python API.

Each command lives in its own ``cmd_*.py`` module with a ``register(app)`` function; its
docstring is its ``--help``. No logic here: commands parse options into the typed configs,
call the API, print. Errors derived from WebsslError print one message and exit with its
code (2 usage/input, 1 runtime); click usage errors exit 2.
"""
from __future__ import annotations

import importlib
import sys

import typer

from ..distributed.signals import command_handlers, ignore_stop_signals
from ..errors import Preempted, StopSignal, WebsslError

COMMAND_MODULES = ("cmd_models", "cmd_download", "cmd_extract", "cmd_status", "cmd_bench")

app = typer.Typer(
    name="webssl",
    help="Batch feature extraction with Meta's Web-SSL (Web-DINO, Web-MAE) vision models.\n\n"
         "\b\nExamples:\n"
         "  webssl list-models dino\n"
         "  webssl extract --model dino300m-full2b-224 --input photos/ --out feats/\n"
         "  webssl status feats/\n\n"
         "Each command's --help has its options and an example. An independent tool, not the "
         "official repository. Model weights are CC-BY-NC 4.0.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

def package_version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("webssl-cli")
    except PackageNotFoundError:
        from .. import __version__
        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"webssl {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version (webssl X.Y.Z) and exit.")) -> None:
    """The options before a command; the help text is the app's."""


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:   # a command module not written yet
        if exc.name != f"{__package__}.{_name}":
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run one command (``argv`` without the program name; default ``sys.argv``). A stop
    signal before the command's own handling ends it with exit 4; handlers are restored."""
    with command_handlers():
        try:
            app(args=argv, prog_name="webssl", standalone_mode=True)
        except WebsslError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except (StopSignal, Preempted) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)


def entry() -> None:
    """The console script and ``python -m webssl_cli``: :func:`main`, then stop signals are
    ignored while the interpreter shuts down, so the exit code is the command's."""
    try:
        main()
    finally:
        ignore_stop_signals()
