"""What the commands share: option types, the model/engine options, the chip cache options."""

from __future__ import annotations

import argparse
import os
from typing import Any


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {v}")
    return v


def add_model_args(p: argparse.ArgumentParser) -> None:
    from ..models.registry import DEFAULT_MODEL

    default = os.environ.get("FACEXPLAIN_MODEL", DEFAULT_MODEL)
    p.add_argument("--model", default=default, help=f"face model (default: FACEXPLAIN_MODEL, else {DEFAULT_MODEL})")
    p.add_argument(
        "--engine", default="auto", choices=["auto", "triton", "local"],
        help="auto: the Triton server given by --triton/FACEXPLAIN_TRITON_URL, else an embedded one "
        "started for this call; local: in-process onnxruntime",
    )
    p.add_argument("--triton", metavar="HOST:PORT", default=None, help="gRPC address of a running Triton")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="images per model request (default: 32 in-process, 16 through Triton)")
    p.add_argument(
        "--face", default="largest", choices=["largest", "refuse"],
        help="with several faces in an image: use the largest, or refuse (default largest)",
    )
    p.add_argument(
        "--aligned", default="auto", choices=["auto", "arcface", "never"],
        help="inputs already aligned to the ArcFace template: auto (112x112 images), arcface (all), never",
    )


def add_chip_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chip-cache", default=None,
                   help="folder of cached aligned chips (default: FACEXPLAIN_HOME/chips, ~/.cache/facexplain/chips)")
    p.add_argument("--no-chip-cache", action="store_true", help="align every image now, store nothing")


def aligner(args: argparse.Namespace) -> Any:
    from ..alignment import Aligner

    return Aligner(multiple_faces=args.face, pre_aligned=args.aligned)


def chip_cache(args: argparse.Namespace) -> Any:
    if args.no_chip_cache:
        return None
    from ..chip_cache import ChipCache

    return ChipCache(args.chip_cache)


def engine_of(args: argparse.Namespace) -> str:
    return "triton" if args.triton and args.engine == "auto" else args.engine


def engine_label(args: argparse.Namespace) -> str:
    if engine_of(args) == "local":
        return "local"
    url = args.triton or os.environ.get("FACEXPLAIN_TRITON_URL")
    return f"triton {url}" if url else "triton-embedded"


def open_model(args: argparse.Namespace) -> Any:
    from ..pipeline import open_face_model

    engine = engine_of(args)
    batch = args.batch or (32 if engine == "local" else 16)
    server_masks = False if getattr(args, "client_masks", False) else (True if getattr(args, "server_masks", False) else None)
    return open_face_model(
        args.model, engine=engine, triton_url=args.triton, batch_size=batch, server_masks=server_masks
    )
