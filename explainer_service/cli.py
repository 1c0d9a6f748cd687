"""The ``facexplain`` command line: a thin shim that parses, calls one library function, formats.

Exit codes: 0 success; 2 bad input (one line on stderr naming the file or option and the
problem); 1 any other failure of a model or backend.
"""

from __future__ import annotations

import argparse
import json
import os
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

    default = os.environ.get("FACEXPLAIN_MODEL", DEFAULT_MODEL)
    p.add_argument("--model", default=default, help=f"face model (default: FACEXPLAIN_MODEL, else {DEFAULT_MODEL})")
    p.add_argument(
        "--engine", default="auto", choices=["auto", "triton", "local"],
        help="auto: the Triton server given by --triton/FACEXPLAIN_TRITON_URL, else an embedded one "
        "started for this call; local: in-process onnxruntime",
    )
    p.add_argument("--triton", metavar="HOST:PORT", default=None, help="gRPC address of a running Triton")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="images per model request (default: 32 in-process, 16 through Triton)")
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
    where = ex.add_mutually_exclusive_group()
    where.add_argument("--client-masks", action="store_true",
                       help="through Triton: send masked chips (default with the embedded server)")
    where.add_argument("--server-masks", action="store_true",
                       help="through Triton: the server makes the masks (default with --triton)")

    em = sub.add_parser("embed", help="print one JSON line per image with its embedding")
    em.add_argument("images", nargs="+", help="image files")
    _add_model_args(em)

    st = sub.add_parser("setup", help="convert the default model (cached; --force to redo), write the Triton configs")
    st.add_argument("--force", action="store_true")
    st.add_argument("--gpu-tensorrt", choices=["none", "fp32", "fp16"], default="none",
                    help="GPU configs: add TensorRT as onnxruntime's accelerator (fp16 only where bench/gpu.py "
                    "shows it keeps fidelity)")

    sv = sub.add_parser("serve", help="run the embedded Triton server in the foreground until Ctrl-C")
    sv.add_argument("--grpc-port", type=int, default=8001)
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: default)")

    ev = sub.add_parser("evaluate", help="Deletion/Insertion of explanation methods on a dataset (Table 1)")
    ev.add_argument("--dataset", required=True,
                    help="lfw:PATH, lfw-aligned:PATH, cfp-fp:PATH, cfp-ff:PATH, cplfw:PATH, calfw:PATH, bin:FILE, csv:FILE")
    ev.add_argument("--occlude", action="store_true", help="occlude image B of each pair (seeded synthetic occluders)")
    ev.add_argument("--methods", default="corrrise,rise,lime,xface,minplus,gradcam,gradcampp",
                    help="comma-separated: corrrise,rise,lime,xface,minplus,gradcam,gradcampp")
    ev.add_argument("--pairs", type=_positive_int, default=100, help="matched pairs to evaluate (default 100)")
    ev.add_argument("--out", required=True, help="output folder (table.md, table.csv, curves.png)")
    ev.add_argument("--steps", type=_positive_int, default=11, help="curve points from 0 to 100 %% (default 11)")
    ev.add_argument("--substrate", default="zeros", choices=["zeros", "mean", "blur"])
    ev.add_argument("--perturb", default="probe", choices=["probe", "both"], help="perturb B only, or both faces")
    ev.add_argument("--budget", type=_positive_int, default=None,
                    help="perturbations per face for CorrRISE/RISE/LIME (default: each method's own, 500)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--no-progress", action="store_true")
    _add_chip_cache_args(ev)
    _add_model_args(ev)

    sa = sub.add_parser("sanity", help="model-randomisation sanity check of explanation methods")
    sa.add_argument("--dataset", required=True, help="a dataset spec, as for evaluate")
    sa.add_argument("--methods", default="corrrise,rise,lime,xface,minplus,gradcam,gradcampp")
    sa.add_argument("--pairs", type=_positive_int, default=5)
    sa.add_argument("--budget", type=_positive_int, default=None, help="perturbations for CorrRISE/RISE/LIME")
    sa.add_argument("--measure", default="1,2,4,8,16",
                    help="measure after randomising this many top layer groups (comma-separated)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--out", required=True)
    _add_chip_cache_args(sa)

    md = sub.add_parser("models", help="list, import and calibrate face models")
    msub = md.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="every model, its threshold and whether it is ready")
    im = msub.add_parser("import", help="check, convert and place a face model in the repository")
    im.add_argument("file", help="official checkpoint (.pth/.ckpt) or an ONNX face model")
    im.add_argument("--name", required=True, help="model name (e.g. arcface_r50)")
    im.add_argument("--family", required=True, choices=["arcface", "magface", "adaface", "onnx"])
    im.add_argument("--arch", default=None, help="expected architecture (default: read from the file)")
    im.add_argument("--preset", default=None,
                    help="input convention: arcface, adaface, magface, paddle-bgr128, imagenet (default: the family's)")
    im.add_argument("--channels", choices=["rgb", "bgr"], default=None, help="channel order the network expects")
    im.add_argument("--mean", default=None, help="mean on the 0..255 scale (one value or three, network order)")
    im.add_argument("--std", default=None, help="std on the 0..255 scale (one value or three)")
    im.add_argument("--threshold", type=float, default=None, help="cosine verification threshold")
    im.add_argument("--force", action="store_true", help="replace a model of that name holding another file")
    ca = msub.add_parser("calibrate", help="set a model's threshold by the 10-fold LFW protocol")
    ca.add_argument("name")
    ca.add_argument("--dataset", required=True,
                    help="lfw:PATH (pairs.txt + images/ or aligned112/), lfw-aligned:PATH, cfp-fp:PATH, bin:FILE, csv:FILE, ...")
    ca.add_argument("--images", default=None, choices=["images", "aligned112"],
                    help="for lfw: the raw photos (images) or the aligned crops (aligned112)")
    ca.add_argument("--engine", default="local", choices=["auto", "triton", "local"])
    ca.add_argument("--triton", metavar="HOST:PORT", default=None)
    ca.add_argument("--dry-run", action="store_true", help="print the result, keep the threshold")
    return parser


def _aligner(args: argparse.Namespace) -> Any:
    from .alignment import Aligner

    return Aligner(multiple_faces=args.face, pre_aligned=args.aligned)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .masks import MaskConfig
    from .methods.corrrise import CorrRISEConfig
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
    with _open_model(args) as model:
        return _explain_with(args, model, config)


def _engine(args: argparse.Namespace) -> str:
    return "triton" if args.triton and args.engine == "auto" else args.engine


def _engine_label(args: argparse.Namespace) -> str:
    if _engine(args) == "local":
        return "local"
    url = args.triton or os.environ.get("FACEXPLAIN_TRITON_URL")
    return f"triton {url}" if url else "triton-embedded"


def _open_model(args: argparse.Namespace) -> Any:
    from .pipeline import open_face_model

    engine = _engine(args)
    batch = args.batch or (32 if engine == "local" else 16)
    server_masks = False if getattr(args, "client_masks", False) else (True if getattr(args, "server_masks", False) else None)
    return open_face_model(
        args.model, engine=engine, triton_url=args.triton, batch_size=batch, server_masks=server_masks
    )


def _explain_with(args: argparse.Namespace, model: Any, config: Any) -> int:
    from .pipeline import explain_files
    from .report import write_outputs

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
        "engine": _engine_label(args),
        "server_masks": bool(getattr(model, "server_masks", False)),
        "seconds": round(seconds, 3),
    }
    paths = write_outputs(args.out, result.face_a.chip, result.face_b.chip, expl, extra)
    thr = "none" if expl.threshold is None else f"{expl.threshold:.4f}"
    print(f"score {expl.score:.4f}  threshold {thr}  decision {expl.decision}")
    print(f"wrote {paths['summary']}, {paths['maps']}, {paths['figure']} ({seconds:.1f} s)")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .pipeline import embed_files

    aligner = _aligner(args)
    with _open_model(args) as model:
        # one image at a time, so a bad file is reported after the good ones before it are printed
        for path in args.images:
            (emb,) = embed_files([path], model, aligner=aligner)
            print(json.dumps({"path": path, "embedding": [round(float(v), 7) for v in emb]}), flush=True)
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from .models.convert import ensure_default_model
    from .models.registry import DEFAULT_MODEL
    from .serving.repository import read_record, write_gpu_configs

    path = ensure_default_model(force=args.force)
    write_gpu_configs(tensorrt=None if args.gpu_tensorrt == "none" else args.gpu_tensorrt)
    source = read_record(DEFAULT_MODEL).source  # type: ignore[union-attr]
    print(f"{path} (source sha256 {source['sha256'][:16]}..., built {source['created']})")
    return 0


def _add_chip_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chip-cache", default=None,
                   help="folder of cached aligned chips (default: FACEXPLAIN_HOME/chips, ~/.cache/facexplain/chips)")
    p.add_argument("--no-chip-cache", action="store_true", help="align every image now, store nothing")


def _chip_cache(args: argparse.Namespace) -> Any:
    if args.no_chip_cache:
        return None
    from .chip_cache import ChipCache

    return ChipCache(args.chip_cache)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import read_dataset
    from .evaluation import METHODS, evaluate_methods, prepare_pairs
    from .metrics import default_steps
    from .report import write_evaluation

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"--methods: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(METHODS)})")
    steps = default_steps(args.steps)
    dataset = read_dataset(args.dataset)
    bar = None
    with _open_model(args) as model:
        prepared = prepare_pairs(dataset, model, pairs=args.pairs, occlude=args.occlude, seed=args.seed,
                                 cache=_chip_cache(args))
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
            "engine": _engine_label(args),
            "skipped": prepared.skipped,
        }
    paths = write_evaluation(args.out, results, meta)
    print(paths["md"].read_text())
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['curves']}")
    return 0


def _cmd_sanity(args: argparse.Namespace) -> int:
    from .datasets import read_dataset
    from .evaluation import METHODS, build_method, prepare_pairs
    from .methods.gradcam import DLIB_DEFAULT_LAYER, GradCAM, GradCAMPlusPlus, GradTarget
    from .models.convert import dlib_source_path
    from .models.dlib_format import read_dlib_resnet
    from .models.registry import DEFAULT_MODEL, get_spec
    from .models.torch_dlib import build_torch
    from .models.torch_model import TorchFaceModel
    from .report import write_sanity
    from .sanity import cascading_randomization, dlib_stages

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
                             cache=_chip_cache(args))
    print(f"{dataset.name}: {prepared.summary()}; randomising {', '.join(stages[: max(measure)])}", flush=True)
    rows = cascading_randomization(
        twin, stages, methods, prepared.chips_a, prepared.chips_b, make, seed=args.seed, measure_at=measure,
        progress=lambda m, st: print(f"  {m}: randomised down to {st}", file=sys.stderr, flush=True),
    )
    paths = write_sanity(args.out, rows, {"dataset": args.dataset, "model": DEFAULT_MODEL, "pairs": len(prepared.chips_a)})
    print(paths["md"].read_text())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from .models.convert import ensure_default_model
    from .serving.embedded import EmbeddedTriton

    ensure_default_model()
    server = EmbeddedTriton(grpc_port=args.grpc_port, http_port=args.http_port, intra_op_threads=args.threads)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.start()
        print(f"Triton ready: gRPC 127.0.0.1:{server.grpc_port}, HTTP 127.0.0.1:{server.http_port}; "
              f"models: {', '.join(server.served)} (Ctrl-C stops)", flush=True)
        code = server.wait()
        print(f"facexplain: error: tritonserver exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Triton", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()


def _cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        return _models_list()
    if args.models_command == "calibrate":
        return _models_calibrate(args)
    if args.models_command == "import":
        return _models_import(args)
    raise InputError(f"unknown models command {args.models_command!r}")


def _models_list() -> int:
    from .models.registry import DEFAULT_MODEL
    from .serving.repository import SLOTS, list_records, onnx_path

    rows = []
    records = {r.name: r for r in list_records()}
    if DEFAULT_MODEL not in records:
        rows.append((DEFAULT_MODEL, "dlib", "-", "not built (run `facexplain setup`)"))
    for r in records.values():
        ready = "ready" if onnx_path(r.name).is_file() else "missing model.onnx"
        thr = "none" if r.threshold is None else f"{r.threshold:.4f}"
        rows.append((r.name, r.family, thr, ready))
    for slot in SLOTS:
        if slot.name not in records:
            rows.append((slot.name, slot.family, "-", f"slot: import with --name {slot.name} --family {slot.family}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'model':<{width}}  {'family':<8}  {'threshold':<9}  status")
    for name, family, thr, status in rows:
        print(f"{name:<{width}}  {family:<8}  {thr:<9}  {status}")
    return 0


def _models_import(args: argparse.Namespace) -> int:
    from .models.importer import import_model
    from .serving.repository import write_gpu_configs

    result = import_model(
        args.file, name=args.name, family=args.family, arch=args.arch, preset=args.preset,
        channels=args.channels, mean=args.mean, std=args.std, threshold=args.threshold, force=args.force,
    )
    if result.unchanged:
        print(f"{args.name}: already imported from this file (sha256 {result.sha256[:16]}...)")
        return 0
    write_gpu_configs()
    print(f"{args.name}: imported {args.file} -> {result.path} ({result.chip}x{result.chip} in, "
          f"{result.embedding_dim}-d out; min cosine vs source {result.min_cosine:.6f}; sha256 {result.sha256[:16]}...)")
    return 0


def _models_calibrate(args: argparse.Namespace) -> int:
    from .alignment import Aligner
    from .calibration import calibrate, score_pairs
    from .pipeline import open_face_model
    from .serving.repository import read_record, write_record

    from .datasets import read_dataset

    spec = args.dataset
    if args.images == "aligned112" and spec.startswith("lfw:"):
        spec = "lfw-aligned:" + spec[4:]
    dataset = read_dataset(spec)
    pairs = list(dataset.pairs)
    root, images = spec, ("aligned" if dataset.aligned else "raw")
    record = read_record(args.name)
    if record is None:
        raise InputError(f"model {args.name!r} is not in the repository (see `facexplain models list`)")
    engine = "triton" if args.triton and args.engine == "auto" else args.engine
    with open_face_model(args.name, engine=engine, triton_url=args.triton) as model:
        scored = score_pairs(pairs, model, aligner=Aligner(pre_aligned="arcface" if dataset.aligned else "auto"))
    result = calibrate(scored)
    print(f"{args.name} on {root} ({images}): {len(scored.scores)} pairs scored, "
          f"{scored.skipped_pairs} skipped ({len(scored.failures)} images failed)")
    print("fold accuracies: " + ", ".join(f"{a * 100:.2f}" for a in result.accuracies))
    print(f"accuracy {result.mean * 100:.2f} % +- {result.std * 100:.2f} "
          f"({len(result.accuracies)}-fold); threshold {result.threshold_all:.4f}")
    if not args.dry_run:
        from dataclasses import replace

        write_record(replace(record, threshold=round(result.threshold_all, 4)))
        print(f"threshold of {args.name} set to {result.threshold_all:.4f}")
    return 0


_COMMANDS = {
    "explain": _cmd_explain,
    "embed": _cmd_embed,
    "setup": _cmd_setup,
    "serve": _cmd_serve,
    "evaluate": _cmd_evaluate,
    "sanity": _cmd_sanity,
    "models": _cmd_models,
}


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
    except OSError as e:  # a file or folder that cannot be read or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"facexplain: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facexplain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
