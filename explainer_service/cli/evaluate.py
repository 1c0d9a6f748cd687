"""``facexplain evaluate`` and ``facexplain sanity``: methods measured on a dataset."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InputError
from ..methods.registry import METHOD_NAMES
from .common import (
    add_chip_cache_args,
    add_detector_arg,
    add_model_args,
    check_dataset_spec,
    check_out_dir,
    chip_cache,
    engine_label,
    open_model,
    positive_int,
)

_ALL_METHODS = ",".join(METHOD_NAMES)


def _methods(text: str) -> list[str]:
    """--methods checked against the registry (InputError naming the unknown and the known ones)."""
    from ..evaluation import check_methods

    return check_methods(text.split(","), "--methods")


def register_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="Deletion/Insertion of explanation methods on a dataset (Table 1)")
    ev.add_argument("--dataset", required=True,
                    help="lfw:PATH, lfw-aligned:PATH, cfp-fp:PATH, cfp-ff:PATH, cplfw:PATH, calfw:PATH, bin:FILE, csv:FILE")
    ev.add_argument("--occlude", action="store_true", help="occlude image B of each pair (seeded synthetic occluders)")
    ev.add_argument("--methods", default=_ALL_METHODS,
                    help=f"comma-separated, of {_ALL_METHODS} (default: all; `facexplain methods` lists them)")
    ev.add_argument("--pairs", type=positive_int, default=100, help="matched pairs to evaluate (default 100)")
    ev.add_argument("--out", required=True, help="output folder (table.md, table.csv, curves.png)")
    ev.add_argument("--steps", type=positive_int, default=11, help="curve points from 0 to 100 %% (default 11)")
    ev.add_argument("--substrate", default="zeros", choices=["zeros", "mean", "blur"])
    ev.add_argument("--perturb", default="probe", choices=["probe", "both"], help="perturb B only, or both faces")
    ev.add_argument("--budget", type=positive_int, default=None,
                    help="perturbations per face for CorrRISE/RISE/LIME (default: each method's own, 500)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--paired-against", default=None, metavar="METHOD",
                    help="add to table.md every other method's paired difference to METHOD (one of --methods) "
                    "on the same pairs, with 95 %% t intervals and verdicts")
    ev.add_argument("--no-progress", action="store_true",
                    help="no progress (default: a bar on a terminal, else a log line every 30 s)")
    add_chip_cache_args(ev)
    add_model_args(ev)
    ev.set_defaults(func=_cmd_evaluate)


def register_sanity(sub: Any) -> None:
    sa = sub.add_parser("sanity", help="model-randomisation sanity check of explanation methods")
    sa.add_argument("--dataset", required=True, help="a dataset spec, as for evaluate")
    sa.add_argument("--methods", default=_ALL_METHODS, help=f"comma-separated, of {_ALL_METHODS} (default: all)")
    sa.add_argument("--pairs", type=positive_int, default=5)
    sa.add_argument("--budget", type=positive_int, default=None, help="perturbations for CorrRISE/RISE/LIME")
    sa.add_argument("--measure", default="1,2,4,8,16",
                    help="measure after randomising this many top layer groups (comma-separated)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--out", required=True)
    add_chip_cache_args(sa)
    add_detector_arg(sa)
    sa.set_defaults(func=_cmd_sanity)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..datasets import read_dataset
    from ..datasets.prepare import prepare_pairs
    from ..evaluation import evaluate_methods
    from ..metrics import default_steps
    from ..progress import LogProgress
    from ..report import write_evaluation

    methods = _methods(args.methods)
    if args.paired_against is not None and (args.paired_against not in methods or args.pairs < 2):
        raise InputError(f"--paired-against needs one of --methods ({', '.join(methods)}) and --pairs >= 2, "
                         f"got {args.paired_against!r} with {args.pairs} pairs")
    steps = default_steps(args.steps)
    check_dataset_spec(args.dataset)
    dataset = read_dataset(args.dataset)
    check_out_dir(args.out)
    bar = None
    with open_model(args) as model:
        prepared = prepare_pairs(dataset, model, pairs=args.pairs, occlude=args.occlude, seed=args.seed,
                                 cache=chip_cache(args), face=args.face,
                                 detector=args.detector)
        print(f"{dataset.name}: {prepared.summary()}", flush=True)
        total = len(methods) * len(prepared.chips_a)
        log = None
        if not args.no_progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="pair", file=sys.stderr)
        elif not args.no_progress:  # under nohup, CI, a worker: periodic log lines
            log = LogProgress("evaluate")
        finished = [0]

        def progress(method: str, done: int, pairs: int) -> None:
            finished[0] += 1
            if bar is not None:
                bar.set_description(method)
                bar.update(1)
            if log is not None:
                log.label = f"evaluate ({method}, pairs x methods)"
                log(finished[0], total)

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
            "detector": args.detector,
            "skipped": prepared.skipped,
            "pairs_report": prepared.report(),
            "pair_names": [list(n) for n in prepared.names],
            "pair_chips_sha256": [_chips_digest(a, b) for a, b in zip(prepared.chips_a, prepared.chips_b, strict=True)],
        }
    paths = write_evaluation(args.out, results, meta)
    if args.paired_against is not None:
        from ..fileio import atomic_write_text
        from ..paired import load_runs, paired_report

        paired = paired_report(load_runs([paths["json"]]), args.paired_against)
        atomic_write_text(paths["md"], paths["md"].read_text() + "\n" + paired)
    print(paths["md"].read_text())
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['curves']}")
    return 0


def _chips_digest(chip_a: Any, chip_b: Any) -> str:
    """The first 16 hex digits of the SHA-256 of a pair's two chips (the same names with other chips,
    e.g. another aligner, are not the same pairs for a paired comparison)."""
    import hashlib

    return hashlib.sha256(chip_a.tobytes() + chip_b.tobytes()).hexdigest()[:16]


def _cmd_sanity(args: argparse.Namespace) -> int:
    from ..datasets import read_dataset
    from ..datasets.drops import describe_drops
    from ..datasets.prepare import prepare_pairs
    from ..methods.base import SaliencyMethod
    from ..models.registry import DEFAULT_MODEL
    from ..models.torch_model import TorchFaceModel
    from ..models.twins import load_twin
    from ..report import write_sanity
    from ..sanity import cascading_randomization, dlib_stages, method_on_twin

    methods = _methods(args.methods)
    try:
        measure = [int(v) for v in args.measure.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--measure must be comma-separated integers, got {args.measure!r}") from None
    if any(k < 1 for k in measure):
        raise InputError(f"--measure counts layer groups and must be >= 1, got {args.measure!r}")
    check_dataset_spec(args.dataset)
    check_out_dir(args.out)
    twin, spec = load_twin(DEFAULT_MODEL)  # shared and never changed: randomising works on copies
    stages = dlib_stages(twin)
    measure = [k for k in measure if k <= len(stages)] or [len(stages)]

    def make(name: str, module: Any) -> SaliencyMethod:
        return method_on_twin(name, module, spec, seed=args.seed, budget=args.budget)

    dataset = read_dataset(args.dataset)
    prepared = prepare_pairs(dataset, TorchFaceModel(twin, spec), pairs=args.pairs, seed=args.seed,
                             cache=chip_cache(args), detector=args.detector)
    print(f"{dataset.name}: {prepared.summary()}; randomising {', '.join(stages[: max(measure)])}", flush=True)
    rows = cascading_randomization(
        twin, stages, methods, prepared.chips_a, prepared.chips_b, make, seed=args.seed, measure_at=measure,
        progress=lambda m, st: print(f"  {m}: randomised down to {st}", file=sys.stderr, flush=True),
    )
    paths = write_sanity(args.out, rows, {"dataset": args.dataset, "model": DEFAULT_MODEL, "pairs": len(prepared.chips_a),
                                                "detector": args.detector,
                                                "dropped": describe_drops(prepared.dropped)})
    print(paths["md"].read_text())
    return 0
