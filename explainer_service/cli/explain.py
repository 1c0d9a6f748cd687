"""``facexplain explain`` and ``facexplain embed``: one pair explained, images embedded."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .common import (
    add_model_args,
    aligner,
    check_input_files,
    check_out_dir,
    engine_label,
    open_model,
    positive_int,
)

def register_explain(sub: Any) -> None:
    ex = sub.add_parser("explain", help="explain why the model says match or non-match for A and B")
    ex.add_argument("image_a", help="image A (a photo, or an aligned crop)")
    ex.add_argument("image_b", help="image B")
    ex.add_argument("--out", required=True, help="output folder (summary.json, maps.npz, figure.png)")
    add_model_args(ex)
    ex.add_argument("--masks", type=positive_int, default=500, help="number of masks N (paper: 500)")
    ex.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    ex.add_argument("--patches", type=positive_int, default=10, help="patches per mask (paper: 10)")
    ex.add_argument("--patch-size", type=positive_int, default=None,
                    help="patch side in chip pixels (default: paper's 30 px on 112 px, scaled)")
    ex.add_argument("--values", default="uniform", choices=["uniform", "binary"],
                    help="patch values: uniform in [0,1] (paper) or binary (0)")
    ex.add_argument("--per-pixel", action="store_true", help="random value per pixel instead of per patch")
    ex.add_argument("--inside", action="store_true", help="keep patches fully inside the chip")
    ex.add_argument("--correlation", default="pearson", choices=["pearson", "spearman"])
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    where = ex.add_mutually_exclusive_group()
    where.add_argument("--client-masks", action="store_true",
                       help="through Triton: send masked chips (default with the embedded server)")
    where.add_argument("--server-masks", action="store_true",
                       help="through Triton: the server makes the masks (default with --triton)")
    ex.set_defaults(func=_cmd_explain)


def register_embed(sub: Any) -> None:
    em = sub.add_parser("embed", help="print one JSON line per image with its embedding")
    em.add_argument("images", nargs="+", help="image files")
    add_model_args(em)
    em.set_defaults(func=_cmd_embed)


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..masks import MaskConfig
    from ..methods.corrrise import CorrRISEConfig
    check_input_files([args.image_a, args.image_b])
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
    check_out_dir(args.out)
    with open_model(args) as model:
        return _explain_with(args, model, config)


def _explain_with(args: argparse.Namespace, model: Any, config: Any) -> int:
    from ..pipeline import explain_files
    from ..report import write_outputs

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
        result = explain_files(args.image_a, args.image_b, model, config, aligner=aligner(args), progress=progress)
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
        "engine": engine_label(args),
        "server_masks": bool(getattr(model, "server_masks", False)),
        "seconds": round(seconds, 3),
    }
    paths = write_outputs(args.out, result.face_a.chip, result.face_b.chip, expl, extra)
    thr = "none" if expl.threshold is None else f"{expl.threshold:.4f}"
    print(f"score {expl.score:.4f}  threshold {thr}  decision {expl.decision}")
    print(f"wrote {paths['summary']}, {paths['maps']}, {paths['figure']} ({seconds:.1f} s)")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..pipeline import embed_files

    face_aligner = aligner(args)
    with open_model(args) as model:
        # one image at a time, so a bad file is reported after the good ones before it are printed
        for path in args.images:
            check_input_files([path])
            (emb,) = embed_files([path], model, aligner=face_aligner)
            print(json.dumps({"path": path, "embedding": [round(float(v), 7) for v in emb]}), flush=True)
    return 0
