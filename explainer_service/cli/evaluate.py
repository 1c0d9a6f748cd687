"""``facexplain evaluate`` and ``facexplain sanity``: methods measured on a dataset."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InputError
from .common import (
    add_chip_cache_args,
    add_model_args,
    chip_cache,
    engine_label,
    open_model,
    positive_int,
)

def register_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="Deletion/Insertion of explanation methods on a dataset (Table 1)")
    ev.add_argument("--dataset", required=True,
                    help="lfw:PATH, lfw-aligned:PATH, cfp-fp:PATH, cfp-ff:PATH, cplfw:PATH, calfw:PATH, bin:FILE, csv:FILE")
    ev.add_argument("--occlude", action="store_true", help="occlude image B of each pair (seeded synthetic occluders)")
    ev.add_argument("--methods", default="corrrise,rise,lime,xface,minplus,gradcam,gradcampp",
                    help="comma-separated: corrrise,rise,lime,xface,minplus,gradcam,gradcampp")
    ev.add_argument("--pairs", type=positive_int, default=100, help="matched pairs to evaluate (default 100)")
    ev.add_argument("--out", required=True, help="output folder (table.md, table.csv, curves.png)")
    ev.add_argument("--steps", type=positive_int, default=11, help="curve points from 0 to 100 %% (default 11)")
    ev.add_argument("--substrate", default="zeros", choices=["zeros", "mean", "blur"])
    ev.add_argument("--perturb", default="probe", choices=["probe", "both"], help="perturb B only, or both faces")
    ev.add_argument("--budget", type=positive_int, default=None,
                    help="perturbations per face for CorrRISE/RISE/LIME (default: each method's own, 500)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--no-progress", action="store_true")
    add_chip_cache_args(ev)
    add_model_args(ev)
    ev.set_defaults(func=_cmd_evaluate)


def register_sanity(sub: Any) -> None:
    sa = sub.add_parser("sanity", help="model-randomisation sanity check of explanation methods")
    sa.add_argument("--dataset", required=True, help="a dataset spec, as for evaluate")
    sa.add_argument("--methods", default="corrrise,rise,lime,xface,minplus,gradcam,gradcampp")
    sa.add_argument("--pairs", type=positive_int, default=5)
    sa.add_argument("--budget", type=positive_int, default=None, help="perturbations for CorrRISE/RISE/LIME")
    sa.add_argument("--measure", default="1,2,4,8,16",
                    help="measure after randomising this many top layer groups (comma-separated)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--out", required=True)
    add_chip_cache_args(sa)
    sa.set_defaults(func=_cmd_sanity)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..datasets import read_dataset
    from ..datasets.prepare import prepare_pairs
    from ..evaluation import METHODS, evaluate_methods
    from ..metrics import default_steps
    from ..report import write_evaluation

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"--methods: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(METHODS)})")
    steps = default_steps(args.steps)
    dataset = read_dataset(args.dataset)
    bar = None
    with open_model(args) as model:
        prepared = prepare_pairs(dataset, model, pairs=args.pairs, occlude=args.occlude, seed=args.seed,
                                 cache=chip_cache(args))
        print(f"{dataset.name}: {prepared.summary()}", flush=True)
        if not args.no_progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(methods) * len(prepared.chips_a), unit="pair", file=sys.stderr)

        def progress(method: str, done: int, total: int) -> None:
            if bar is not None:
                bar.set_description(method)
                bar.update(1)

        try:
            results = evaluate_methods(
                prepared.chips_a, prepared.chips_b, model, methods, steps=steps, substrate=args.substrate,
                perturb=args.perturb, seed=args.seed, budget=args.budget, progress=progress,
            )
        finally:
            if bar is not None:
                bar.close()
        meta = {
            "dataset": args.dataset + (" (occluded)" if args.occlude else ""),
            "model": model.spec.name,
            "pairs": len(prepared.chips_a),
            "substrate": args.substrate,
            "perturb": args.perturb,
            "steps": args.steps,
            "threshold": model.spec.threshold,
            "engine": engine_label(args),
            "skipped": prepared.skipped,
        }
    paths = write_evaluation(args.out, results, meta)
    print(paths["md"].read_text())
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['curves']}")
    return 0


def _cmd_sanity(args: argparse.Namespace) -> int:
    from ..datasets import read_dataset
    from ..datasets.prepare import prepare_pairs
    from ..evaluation import METHODS, build_method
    from ..methods.gradcam import DLIB_DEFAULT_LAYER, GradCAM, GradCAMPlusPlus, GradTarget
    from ..models.convert import dlib_source_path
    from ..models.dlib_format import read_dlib_resnet
    from ..models.registry import DEFAULT_MODEL, get_spec
    from ..models.torch_dlib import build_torch
    from ..models.torch_model import TorchFaceModel
    from ..report import write_sanity
    from ..sanity import cascading_randomization, dlib_stages

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"--methods: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(METHODS)})")
    try:
        measure = [int(v) for v in args.measure.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--measure must be comma-separated integers, got {args.measure!r}") from None
    spec = get_spec(DEFAULT_MODEL)
    twin = build_torch(read_dlib_resnet(dlib_source_path()))
    stages = dlib_stages(twin)
    measure = [k for k in measure if k <= len(stages)] or [len(stages)]

    def make(name: str, module: Any) -> Any:
        if name in ("gradcam", "gradcampp"):
            target = GradTarget.for_module(module, DLIB_DEFAULT_LAYER, spec=spec)
            return (GradCAM if name == "gradcam" else GradCAMPlusPlus)(target)
        return build_method(name, TorchFaceModel(module, spec, batch_size=64), seed=args.seed, budget=args.budget)

    dataset = read_dataset(args.dataset)
    prepared = prepare_pairs(dataset, TorchFaceModel(twin, spec), pairs=args.pairs, seed=args.seed,
                             cache=chip_cache(args))
    print(f"{dataset.name}: {prepared.summary()}; randomising {', '.join(stages[: max(measure)])}", flush=True)
    rows = cascading_randomization(
        twin, stages, methods, prepared.chips_a, prepared.chips_b, make, seed=args.seed, measure_at=measure,
        progress=lambda m, st: print(f"  {m}: randomised down to {st}", file=sys.stderr, flush=True),
    )
    paths = write_sanity(args.out, rows, {"dataset": args.dataset, "model": DEFAULT_MODEL, "pairs": len(prepared.chips_a)})
    print(paths["md"].read_text())
    return 0
