"""The ``facexplain`` command line: a thin shim that parses, calls one library function, formats.

Every failure is one line on stderr, ``facexplain: error: ...``, never a traceback, and the exit
code comes from one mapping, :func:`explainer_service.errors.exit_code`:

    0    success
    1    failure: a model or backend failed in a way retrying will not fix, or a file could not
         be read or written
    2    bad input: a file, an option (argparse's own errors included), an unknown or unusable
         model, a limit exceeded; the line names the file or option and the problem
    75   transient failure (EX_TEMPFAIL): the server is down or did not answer in time; the same
         command may succeed if tried again
    130  interrupted (Ctrl-C) or cancelled
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import EXIT_INPUT, FacexplainError, exit_code, is_retryable
from . import api, client, dashboard, evaluate, explain, methods, models, up, worker
from .common import check_limits

__all__ = ["main", "build_parser", "error_line"]

PROG = "facexplain"


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (exit 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix(PROG).strip()
        context = f"{where}: " if where else ""
        self.exit(EXIT_INPUT, f"{PROG}: error: {context}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (subcommands built with the same one-line error handling)."""
    parser = _Parser(prog=PROG, description="Saliency explanations of face verification (CorrRISE).")
    sub = parser.add_subparsers(dest="command", required=True)
    explain.register_explain(sub)
    explain.register_embed(sub)
    models.register_setup(sub)
    models.register_serve(sub)
    evaluate.register_evaluate(sub)
    evaluate.register_sanity(sub)
    models.register_models(sub)
    methods.register_methods(sub)
    api.register_api(sub)
    client.register_client(sub)
    worker.register_worker(sub)
    up.register_up(sub)
    dashboard.register_dashboard(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line (without the ``facexplain: error:`` prefix) that tells a person what failed."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, FacexplainError):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError):  # a file or folder that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror or exc}"
    else:  # a bug: say what it is without a traceback
        text = f"unexpected {type(exc).__name__}: {exc} (please report this)"
    if is_retryable(exc):
        text += " (a temporary failure: the same command may succeed if tried again)"
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (see the module docstring for the codes)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own one-line error (exit 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_INPUT)
    except Exception as e:  # e.g. a malformed FACEXPLAIN_* variable read for the defaults
        return _fail(e)
    try:
        check_limits(args)
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as e:
        return _fail(e)


def _fail(exc: BaseException) -> int:
    print(f"{PROG}: error: {error_line(exc)}", file=sys.stderr, flush=True)
    return exit_code(exc)
