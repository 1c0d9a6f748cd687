"""The ``facexplain`` command line: a thin shim that parses, calls one library function, formats.

Exit codes: 0 success; 2 bad input (one line on stderr naming the file or option and the
problem); 1 any other failure of a model or backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import FacexplainError, InputError, ModelFormatError, ModelNotReadyError

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {v}")
    return v


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .models.registry import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"face model (default {DEFAULT_MODEL})")
    p.add_argument("--engine", default="local", choices=["local"], help="where the model runs")
    p.add_argument("--batch", type=_positive_int, default=32, help="images per model call (default 32)")
    p.add_argument(
        "--face", default="largest", choices=["largest", "refuse"],
        help="with several faces in an image: use the largest, or refuse (default largest)",
    )
    p.add_argument(
        "--aligned", default="auto", choices=["auto", "arcface", "never"],
        help="inputs already aligned to the ArcFace template: auto (112x112 images), arcface (all), never",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facexplain", description="Saliency explanations of face verification (CorrRISE)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("explain", help="explain why the model says match or non-match for A and B")
    ex.add_argument("image_a", help="image A (a photo, or an aligned crop)")
    ex.add_argument("image_b", help="image B")
    ex.add_argument("--out", required=True, help="output folder (summary.json, maps.npz, figure.png)")
    _add_model_args(ex)
    ex.add_argument("--masks", type=_positive_int, default=500, help="number of masks N (paper: 500)")
    ex.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    ex.add_argument("--patches", type=_positive_int, default=10, help="patches per mask (paper: 10)")
    ex.add_argument("--patch-size", type=_positive_int, default=None,
                    help="patch side in chip pixels (default: paper's 30 px on 112 px, scaled)")
    ex.add_argument("--values", default="uniform", choices=["uniform", "binary"],
                    help="patch values: uniform in [0,1] (paper) or binary (0)")
    ex.add_argument("--per-pixel", action="store_true", help="random value per pixel instead of per patch")
    ex.add_argument("--inside", action="store_true", help="keep patches fully inside the chip")
    ex.add_argument("--correlation", default="pearson", choices=["pearson", "spearman"])
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")

    em = sub.add_parser("embed", help="print one JSON line per image with its embedding")
    em.add_argument("images", nargs="+", help="image files")
    _add_model_args(em)

    st = sub.add_parser("setup", help="convert the default model (cached; --force to redo)")
    st.add_argument("--force", action="store_true")
    return parser


def _aligner(args: argparse.Namespace) -> Any:
    from .alignment import Aligner

    return Aligner(multiple_faces=args.face, pre_aligned=args.aligned)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .masks import MaskConfig
    from .methods.corrrise import CorrRISEConfig
    from .pipeline import explain_files, load_face_model
    from .report import write_outputs

    for p in (args.image_a, args.image_b):
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    config = CorrRISEConfig(
        masks=MaskConfig(
            n_masks=args.masks,
            patches=args.patches,
            patch_size=args.patch_size,
            values=args.values,
            per_pixel=args.per_pixel,
            clip_at_border=not args.inside,
            seed=args.seed,
        ),
        correlation=args.correlation,
    )
    model = load_face_model(args.model, engine=args.engine, batch_size=args.batch)
    config.masks.patch_size_for(model.spec.chip.size)  # validate before the work starts
    bar = None
    progress = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.masks, unit="mask", desc="CorrRISE", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

    t0 = time.perf_counter()
    try:
        result = explain_files(args.image_a, args.image_b, model, config, aligner=_aligner(args), progress=progress)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    expl = result.explanation
    extra = {
        "image_a": str(args.image_a),
        "image_b": str(args.image_b),
        "alignment_a": {"method": result.face_a.method, "faces_found": result.face_a.faces_found},
        "alignment_b": {"method": result.face_b.method, "faces_found": result.face_b.faces_found},
        "engine": args.engine,
        "seconds": round(seconds, 3),
    }
    paths = write_outputs(args.out, result.face_a.chip, result.face_b.chip, expl, extra)
    thr = "none" if expl.threshold is None else f"{expl.threshold:.4f}"
    print(f"score {expl.score:.4f}  threshold {thr}  decision {expl.decision}")
    print(f"wrote {paths['summary']}, {paths['maps']}, {paths['figure']} ({seconds:.1f} s)")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .pipeline import embed_files, load_face_model

    model = load_face_model(args.model, engine=args.engine, batch_size=args.batch)
    aligner = _aligner(args)
    # one image at a time, so a bad file is reported after the good ones before it are printed
    for path in args.images:
        (emb,) = embed_files([path], model, aligner=aligner)
        print(json.dumps({"path": path, "embedding": [round(float(v), 7) for v in emb]}), flush=True)
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from .models.convert import default_model_dir, ensure_default_model

    path = ensure_default_model(force=args.force)
    info = json.loads((default_model_dir() / "info.json").read_text())
    print(f"{path} (source sha256 {info['source_sha256'][:16]}..., built {info['created']})")
    return 0


_COMMANDS = {"explain": _cmd_explain, "embed": _cmd_embed, "setup": _cmd_setup}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (InputError, ModelNotReadyError, ModelFormatError) as e:
        print(f"facexplain: error: {e}", file=sys.stderr)
        return 2
    except FacexplainError as e:
        print(f"facexplain: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facexplain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
