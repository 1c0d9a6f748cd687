"""What the commands share: option types, the model/engine options, the chip cache options, and
the front-door checks every command runs before any work or server start (input files, output
folder, limits)."""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError, LimitExceededError
from ..settings import DEFAULT_BATCH_LOCAL, DEFAULT_BATCH_TRITON, DEFAULT_MODEL_NAME, get_settings

#: Numeric options checked by :func:`check_limits`: namespace attribute -> (option, ``Limits`` field).
LIMITED_OPTIONS: dict[str, tuple[str, str]] = {
    "masks": ("--masks", "max_masks"),
    "budget": ("--budget", "max_masks"),
    "batch": ("--batch", "max_batch"),
    "patches": ("--patches", "max_patches"),
    "patch_size": ("--patch-size", "max_patch_size"),
    "pairs": ("--pairs", "max_pairs"),
    "steps": ("--steps", "max_steps"),
    "threads": ("--threads", "max_threads"),
}
#: Seeds are non-negative integers below this bound.
SEED_BOUND = 2**63


def check_input_files(paths: Sequence[str]) -> None:
    """InputError naming the first path that is not a readable, non-empty regular file.

    Only ``os.stat`` and ``os.access`` are used, never ``open``: a FIFO, a device or a socket is
    refused at once instead of blocking the command.
    """
    for path in paths:
        text = os.fspath(path)
        if not text:
            raise InputError("empty file name")
        try:
            st = os.stat(text)
        except FileNotFoundError:
            raise InputError(f"{text}: no such file") from None
        except NotADirectoryError:
            raise InputError(f"{text}: no such file (a folder on its path is a file)") from None
        except OSError as e:
            raise InputError(f"{text}: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{text}: is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{text}: not a regular file ({_file_kind(st.st_mode)})")
        if not os.access(text, os.R_OK):
            raise InputError(f"{text}: not readable (permission denied)")
        if st.st_size == 0:
            raise InputError(f"{text}: empty file (0 bytes)")


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def check_out_dir(path: str, option: str = "--out") -> Path:
    """The output folder ``path``, created if missing and proved writable (a temporary file is
    written there and removed); InputError naming it and why it cannot be used."""
    text = os.fspath(path)
    if not text:
        raise InputError(f"{option}: empty folder name")
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {text}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except NotADirectoryError:
        raise InputError(f"{option} {text}: cannot create the folder (a folder on its path is a file)") from None
    except OSError as e:
        raise InputError(f"{option} {text}: cannot create the folder ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".facexplain-probe-")
    except OSError as e:
        raise InputError(f"{option} {text}: not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
    return out


def check_dataset_spec(spec: str, option: str = "--dataset") -> None:
    """InputError if the path of a ``KIND:PATH`` dataset spec exists but is neither a folder nor a
    readable regular file (a FIFO would block the reader). Unknown kinds and missing paths are
    left to the dataset reader, which names them."""
    _kind, sep, path = str(spec).partition(":")
    if not sep or not path:
        return
    if os.path.isdir(path) or not os.path.lexists(path):
        return
    try:
        check_input_files([path])
    except InputError as e:
        raise InputError(f"{option} {spec}: {e}") from None


def check_limits(args: argparse.Namespace) -> None:
    """LimitExceededError (or InputError) for the first numeric option of ``args`` over its limit
    in ``get_settings().limits`` (see :data:`LIMITED_OPTIONS`); InputError for a seed outside
    [0, 2**63), a port outside [1, 65535] or a threshold outside [-1, 1] (nan included)."""
    limits = get_settings().limits
    for attr, (option, field) in LIMITED_OPTIONS.items():
        value = getattr(args, attr, None)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            raise InputError(f"{option} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{option} must be a finite number, got {value!r}")
        if value < 0:
            raise InputError(f"{option} must be >= 0, got {value}")
        limit = getattr(limits, field)
        if value > limit:
            raise LimitExceededError(
                f"{option} {value} is over the limit {limit} (set FACEXPLAIN_{field.upper()} to change it)"
            )
    seed = getattr(args, "seed", None)
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < SEED_BOUND):
        raise InputError(f"--seed must be an integer in [0, 2**63), got {seed!r}")
    for attr in ("grpc_port", "http_port"):
        port = getattr(args, attr, None)
        if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
            raise InputError(f"--{attr.replace('_', '-')} must be a port in [1, 65535], got {port!r}")
    threshold = getattr(args, "threshold", None)
    if threshold is not None and not (isinstance(threshold, (int, float)) and -1.0 <= threshold <= 1.0):
        raise InputError(f"--threshold must be a cosine in [-1, 1], got {threshold!r}")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {v}")
    return v


def triton_address(text: str) -> str:
    """``--triton`` as an argparse type: ``HOST[:PORT]`` checked and written ``HOST:PORT`` (a missing
    port is Triton's 8001; a bad one is refused, never dialled as another port)."""
    from ..serving.address import format_grpc_address, parse_grpc_address

    try:
        return format_grpc_address(*parse_grpc_address(text))
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_triton_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--triton", metavar="HOST:PORT", type=triton_address, default=None,
                   help="gRPC address of a running Triton (port 8001 when not given; "
                   "default: FACEXPLAIN_TRITON_URL)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    settings = get_settings()
    p.add_argument("--model", default=settings.default_model,
                   help=f"face model (default: FACEXPLAIN_MODEL, else {DEFAULT_MODEL_NAME})")
    p.add_argument(
        "--engine", default="auto", choices=["auto", "triton", "local"],
        help="auto: the Triton server given by --triton/FACEXPLAIN_TRITON_URL, else an embedded one "
        "started for this call; local: in-process onnxruntime",
    )
    add_triton_arg(p)
    p.add_argument("--batch", type=positive_int, default=None,
                   help=f"images per model request (default: {DEFAULT_BATCH_LOCAL} in-process, "
                   f"{DEFAULT_BATCH_TRITON} through Triton)")
    p.add_argument(
        "--face", default="largest", choices=["largest", "refuse"],
        help="with several faces in an image: use the largest, or refuse (default largest)",
    )
    p.add_argument(
        "--aligned", default="auto", choices=["auto", "arcface", "never"],
        help="inputs already aligned to the ArcFace template: auto (112x112 images), arcface (all), never",
    )
    add_detector_arg(p)


def add_detector_arg(p: argparse.ArgumentParser) -> None:
    """``--detector NAME``: the face detector of the aligner (choices and default: the alignment
    package's ``DETECTORS`` and ``DEFAULT_DETECTOR``)."""
    from ..alignment import DEFAULT_DETECTOR, DETECTORS

    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS),
                   help=f"face detector for photos, one of {', '.join(DETECTORS)} (default {DEFAULT_DETECTOR}); "
                   "pre-aligned 112x112 crops are not detected")


def add_chip_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chip-cache", default=None,
                   help="folder of cached aligned chips (default: FACEXPLAIN_HOME/chips, ~/.cache/facexplain/chips)")
    p.add_argument("--no-chip-cache", action="store_true", help="align every image now, store nothing")


def aligner(args: argparse.Namespace) -> Any:
    from ..alignment import Aligner

    return Aligner(multiple_faces=args.face, pre_aligned=args.aligned, detector=args.detector)


def chip_cache(args: argparse.Namespace) -> Any:
    if args.no_chip_cache:
        return None
    from ..chip_cache import ChipCache

    return ChipCache(args.chip_cache)


def triton_url(args: argparse.Namespace) -> str | None:
    """The Triton server to use: ``--triton``, else FACEXPLAIN_TRITON_URL (checked like
    ``--triton``: InputError naming the variable), else None (an embedded server)."""
    if getattr(args, "triton", None):
        return str(args.triton)
    url = get_settings().triton_url
    if url is None:
        return None
    from ..serving.address import format_grpc_address, parse_grpc_address

    try:
        return format_grpc_address(*parse_grpc_address(url))
    except InputError as e:
        raise InputError(f"FACEXPLAIN_TRITON_URL: {e}") from None


def engine_of(args: argparse.Namespace) -> str:
    """The engine asked for: ``auto`` with a Triton address is ``triton``."""
    if args.engine == "auto" and triton_url(args):
        return "triton"
    return str(args.engine)


def engine_label(args: argparse.Namespace) -> str:
    """How the summary names the engine: ``local``, ``triton HOST:PORT`` or ``triton-embedded``."""
    if engine_of(args) == "local":
        return "local"
    url = triton_url(args)
    return f"triton {url}" if url else "triton-embedded"


def open_model(args: argparse.Namespace) -> Any:
    """The face model of ``args`` as a context manager (see ``pipeline.open_face_model``); the
    numeric options are checked against the limits first, before any server starts."""
    from ..pipeline import open_face_model

    check_limits(args)
    engine = engine_of(args)
    batch = args.batch or (DEFAULT_BATCH_LOCAL if engine == "local" else DEFAULT_BATCH_TRITON)
    server_masks = False if getattr(args, "client_masks", False) else (True if getattr(args, "server_masks", False) else None)
    return open_face_model(
        args.model, engine=engine, triton_url=triton_url(args), batch_size=batch, server_masks=server_masks
    )


@contextmanager
def terminal_progress(args: argparse.Namespace, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A terminal progress bar, or None (``--no-progress`` or stderr not a terminal)."""
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="step", desc=label, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()
