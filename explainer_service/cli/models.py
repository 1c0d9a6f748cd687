"""``facexplain setup``, ``serve`` and ``models``: building, serving, importing and calibrating models."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InputError, ModelNotReadyError, UnknownModelError
from ..settings import TRITON_DEFAULT_GRPC_PORT
from .common import check_dataset_spec, check_input_files, triton_address


def register_setup(sub: Any) -> None:
    st = sub.add_parser("setup", help="convert the default model (cached; --force to redo), write the Triton configs")
    st.add_argument("--force", action="store_true")
    st.add_argument("--gpu-tensorrt", choices=["none", "fp32", "fp16"], default="none",
                    help="GPU configs: add TensorRT as onnxruntime's accelerator (fp16 only where bench/gpu.py "
                    "shows it keeps fidelity)")
    st.set_defaults(func=_cmd_setup)


def register_serve(sub: Any) -> None:
    sv = sub.add_parser("serve", help="run the embedded Triton server in the foreground until Ctrl-C")
    sv.add_argument("--grpc-port", type=int, default=TRITON_DEFAULT_GRPC_PORT)
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: default)")
    sv.set_defaults(func=_cmd_serve)


def register_models(sub: Any) -> None:
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
    ca.add_argument("--triton", metavar="HOST:PORT", type=triton_address, default=None)
    ca.add_argument("--dry-run", action="store_true", help="print the result, keep the threshold")
    md.set_defaults(func=_cmd_models)


def _cmd_setup(args: argparse.Namespace) -> int:
    from ..models.convert import ensure_default_model
    from ..models.registry import DEFAULT_MODEL
    from ..models.store import read_record
    from ..serving.repository import write_gpu_configs

    path = ensure_default_model(force=args.force)
    write_gpu_configs(tensorrt=None if args.gpu_tensorrt == "none" else args.gpu_tensorrt)
    record = read_record(DEFAULT_MODEL)
    if record is None:  # only if the repository changed under us
        raise ModelNotReadyError(f"{path.parent.parent}: the default model's record is missing after setup")
    source = record.source
    print(f"{path} (source sha256 {source['sha256'][:16]}..., built {source['created']})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from ..models.convert import ensure_default_model
    from ..serving.embedded import EmbeddedTriton

    ensure_default_model()
    server = EmbeddedTriton(grpc_port=args.grpc_port, http_port=args.http_port, intra_op_threads=args.threads)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.start()
        print(f"Triton ready: gRPC {server.url}, HTTP port {server.http_port} on {server.bind_host}; "
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
    from ..models.registry import DEFAULT_MODEL
    from ..models.store import SLOTS, list_records, onnx_path

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
    from ..models.importer import import_model
    from ..serving.repository import write_gpu_configs

    check_input_files([args.file])
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
    from ..alignment import Aligner
    from ..calibration import calibrate, score_pairs
    from ..datasets import read_dataset
    from ..models.store import read_record, write_record
    from ..pipeline import open_face_model

    record = read_record(args.name)
    if record is None:
        raise UnknownModelError(f"model {args.name!r} is not in the repository (see `facexplain models list`)")
    check_dataset_spec(args.dataset)
    spec = args.dataset
    if args.images == "aligned112" and spec.startswith("lfw:"):
        spec = "lfw-aligned:" + spec[4:]
    dataset = read_dataset(spec)
    pairs = list(dataset.pairs)
    root, images = spec, ("aligned" if dataset.aligned else "raw")
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
