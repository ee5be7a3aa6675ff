"""The ``medrun`` command. Parsing and printing only; the work lives in pipelines, manifests and artifacts.

Nothing heavy is imported at start-up: ``--help``, ``list``, ``show`` and ``validate`` never import torch,
Lightning or MONAI. Errors a user can act on print one line and exit with ARCHITECTURE.md's code.
"""

from __future__ import annotations

import json
import os
import sys

import typer

from medrun.errors import INTERRUPTED, MedrunError

app = typer.Typer(
    name="medrun",
    help="Run medical-imaging papers and your own experiments as traceable, verifiable, re-runnable runs.\n\n"
    "Examples:\n\n"
    "  medrun list\n\n"
    "  medrun train ad-lite --dataset oasis --fixture\n\n"
    "  medrun eval ad-lite --dataset oasis --fixture\n\n"
    "  medrun train ad-lite --dataset oasis --data-dir ~/kaggle/imagesoasis/Data -o train.epochs=3",
    no_args_is_help=True,
    add_completion=False,
    suggest_commands=False,  # click already suggests a close command name; typer would add it a second time
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

from . import info, runs, stages  # noqa: E402  (registers the commands)


def _version(value: bool) -> None:
    if value:
        from medrun import __version__

        typer.echo(f"medrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="print medrun's version and exit"),
) -> None:
    """medrun: run, check and re-run medical-imaging deep-learning papers."""


info.register(app)
stages.register(app)
runs.register(app)


def _err(text: str) -> None:
    from rich.markup import escape

    from .output import stderr

    stderr().print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    from typer import Abort, Exit

    try:  # typer ≥ 0.25 carries its own copy of click
        from typer.exceptions import TyperException as ArgumentError
    except ImportError:
        from click import ClickException as ArgumentError

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ["MEDRUN_ARGV"] = " ".join(["medrun", *argv])  # this call's command (tests call main() repeatedly)
    os.environ["MEDRUN_ARGV_JSON"] = json.dumps(argv)  # exactly, for --detach to start the same command again
    try:
        code = app(args=argv, prog_name="medrun", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except MedrunError as e:
        _err(e.line())
        return e.exit_code
    except Exit as e:
        return e.exit_code
    except ArgumentError as e:  # bad arguments: typer's own message, with the usage line
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        return 2
    except (KeyboardInterrupt, Abort):
        _err("interrupted: the run is left incomplete; the same command resumes it")
        return INTERRUPTED
    except Exception as e:  # a full disk or a read-only folder is the environment's problem (exit 4); else a bug
        from medrun.pipelines.runner import env_error

        env = env_error(e)
        if env is None:
            return _bug(e)
        _err(env.line())
        return env.exit_code


def _bug(e: Exception) -> int:
    """A bug: show where (called inside the ``except``, so the traceback is this exception's)."""
    import traceback

    traceback.print_exc()
    _err(f"unexpected {type(e).__name__}: {e} (this is a bug in medrun; the traceback is above)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
