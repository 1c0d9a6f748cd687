"""The ``facexplain`` command line: a thin shim that parses, calls one library function, formats.

Exit codes: 0 success; 2 bad input (one line on stderr naming the file or option and the
problem); 1 any other failure of a model or backend.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import FacexplainError, InputError, ModelFormatError, ModelNotReadyError
from . import evaluate, explain, models

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facexplain", description="Saliency explanations of face verification (CorrRISE)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    explain.register_explain(sub)
    explain.register_embed(sub)
    models.register_setup(sub)
    models.register_serve(sub)
    evaluate.register_evaluate(sub)
    evaluate.register_sanity(sub)
    models.register_models(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InputError, ModelNotReadyError, ModelFormatError) as e:
        print(f"facexplain: error: {e}", file=sys.stderr)
        return 2
    except FacexplainError as e:
        print(f"facexplain: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or folder that cannot be read or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"facexplain: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facexplain: interrupted", file=sys.stderr)
        return 130
