"""Table 1 on a CUDA machine: all seven methods, many pairs, the default model's PyTorch twin on the GPU.

Inputs come from bench/gpu_prepare.py (the aligned chips of each scenario, cut exactly as
`facexplain evaluate` cuts them, and dlib's network file): the GPU machine has neither dlib nor
../shared. Worker processes explain one pair with every method each (the perturbation methods' CPU
work runs in parallel over the cores, their model calls on the one GPU); tasks go out round-robin
over the scenarios, so a deadline leaves every scenario with about the same number of pairs. The
main process then scores the maps of the pairs done by every method with Deletion and Insertion,
at the paper's 11 steps and at 2 % steps, and writes the per-pair AUCs (for paired comparisons).
Finally the batched vs one-image-per-call metric benchmark runs on the GPU.

Usage: python bench/gpu_eval.py --carry .devcarry --out DIR [--explain-seconds 270] [--workers 14]
It also runs on the CPU (`--device cpu --pairs 2 --workers 2`) to check itself.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DAT = "dlib_face_recognition_resnet_model_v1.dat"
SCENARIOS = (("lfw", "lfw_a", "lfw_b"), ("lfw-occluded", "lfw_a", "lfwocc_b"), ("cfp-fp", "cfpfp_a", "cfpfp_b"))

from explainer_service.methods.registry import METHOD_NAMES  # noqa: E402

_W: dict[str, Any] = {}


def _ci(curve: Any) -> list[float] | None:
    """The 95 % interval over pairs, rounded; None with fewer than 2 pairs."""
    ci = curve.confidence_interval()
    return None if ci is None else [round(v, 3) for v in ci]


def _twin(carry: Path, device: str) -> Any:
    import torch

    from explainer_service.models.dlib_format import read_dlib_resnet
    from explainer_service.models.torch_dlib import build_torch

    # full fp32: TF32 convolutions would move the cosines near the threshold
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return build_torch(read_dlib_resnet(carry / DAT)).to(device).eval()


def _model(twin: Any, device: str, batch: int = 512) -> Any:
    from explainer_service.models.registry import DLIB_RESNET_V1
    from explainer_service.models.torch_model import TorchFaceModel

    return TorchFaceModel(twin, DLIB_RESNET_V1, device=device, batch_size=batch)


def _init(carry: str, device: str, methods: tuple[str, ...], per_eval: int) -> None:
    import torch
    from chips_io import load_chips

    from explainer_service.methods import build

    torch.set_num_threads(1)
    twin = _twin(Path(carry), device)
    model = _model(twin, device)
    built = {}
    for name in methods:  # the gradient methods run on the model's module (the twin) on the device
        base, _, n = name.partition("/n=")  # "corrrise/n=2000": a method at another budget
        built[name] = build(base, model, seed=0, budget=int(n) if n else None, perturbations_per_eval=per_eval)
    _W["methods"] = built
    _W["chips"] = {k: load_chips(Path(carry), k) for _, a, b in SCENARIOS for k in (a, b)}


def _explain(task: tuple[str, str, str, int, float]) -> tuple[str, int, dict[str, Any] | None, dict[str, float]]:
    import numpy as np

    scenario, ka, kb, i, deadline = task
    if time.time() > deadline:  # past the deadline: drain the queue quickly
        return scenario, i, None, {}
    a, b = _W["chips"][ka][i], _W["chips"][kb][i]
    maps, secs = {}, {}
    for name, method in _W["methods"].items():
        t0 = time.perf_counter()
        ex = method.attribute(a, b)
        secs[name] = time.perf_counter() - t0
        maps[name] = (np.asarray(ex.s_a, np.float32), np.asarray(ex.s_b, np.float32))
    return scenario, i, maps, secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--carry", default=str(ROOT / ".devcarry"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--pairs", type=int, default=None, help="at most this many pairs per scenario")
    ap.add_argument("--explain-seconds", type=float, default=270.0)
    ap.add_argument("--per-eval", type=int, default=256, help="perturbed images per model call")
    ap.add_argument("--methods", default=",".join(METHOD_NAMES),
                    help="comma-separated; NAME/n=K runs a sampling method at K perturbations per face")
    ap.add_argument("--blur", default="", help="also score the CorrRISE maps blurred by these sigmas (px)")
    ap.add_argument("--step-sets", default="11,51", help="curve step counts to score")
    ap.add_argument("--no-metric-bench", action="store_true")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"  # inherited by the spawned workers: one core each
    import numpy as np
    from chips_io import load_chips

    from explainer_service.evaluation import score_maps
    from explainer_service.metrics import CausalMetric, default_steps

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    carry = Path(args.carry)
    methods = tuple(m for m in args.methods.split(",") if m)
    chips = {k: load_chips(carry, k) for _, a, b in SCENARIOS for k in (a, b)}
    sizes = {s: len(chips[b]) if args.pairs is None else min(args.pairs, len(chips[b])) for s, _, b in SCENARIOS}
    tasks = []
    deadline = time.time() + args.explain_seconds
    for i in range(max(sizes.values())):
        for s, a, b in SCENARIOS:
            if i < sizes[s]:
                tasks.append((s, a, b, i, deadline))
    result: dict[str, Any] = {"device": args.device, "workers": args.workers, "methods": methods, "scenarios": {}}
    if args.device.startswith("cuda"):
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
    maps: dict[str, dict[int, dict[str, Any]]] = {s: {} for s, _, _ in SCENARIOS}
    secs: dict[str, float] = {m: 0.0 for m in methods}
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(args.workers, initializer=_init, initargs=(str(carry), args.device, methods, args.per_eval))
    done = 0
    # Workers skip the tasks they receive after the deadline, so the pool drains and closes
    # normally (terminating a pool whose workers sit in CUDA calls can hang).
    try:
        for scenario, i, m, sec in pool.imap_unordered(_explain, tasks):
            if m is None:
                continue
            maps[scenario][i] = m
            for k, v in sec.items():
                secs[k] += v
            done += 1
            if done % 20 == 0:
                print(f"{done}/{len(tasks)} pairs explained in {time.perf_counter() - t0:.0f} s", flush=True)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    print(f"{done}/{len(tasks)} pairs explained by the deadline", flush=True)
    wall = time.perf_counter() - t0
    result["explain"] = {
        "pairs": done,
        "wall_s": round(wall, 1),
        "pairs_per_s_all_methods": round(done / wall, 3),
        "busy_s_per_pair": {k: round(v / max(done, 1), 3) for k, v in secs.items()},
    }
    print(json.dumps(result["explain"]), flush=True)
    main_model = _model(_twin(carry, args.device), args.device, batch=1024)
    sigmas = [float(v) for v in args.blur.split(",") if v]
    if sigmas and "corrrise" in methods:
        from scipy.ndimage import gaussian_filter

        for per_pair in maps.values():
            for m in per_pair.values():
                for sg in sigmas:
                    m[f"corrrise_blur{sg:g}"] = tuple(gaussian_filter(x.astype(np.float64), sg).astype(np.float32)
                                                     for x in m["corrrise"])
        methods = methods + tuple(f"corrrise_blur{sg:g}" for sg in sigmas)
        result["methods"] = methods
    for s, ka, kb in SCENARIOS:
        idx = sorted(maps[s])
        if not idx:
            continue
        ca, cb = chips[ka][idx], chips[kb][idx]
        entry: dict[str, Any] = {"pair_indices": idx, "pairs": len(idx), "steps": {}}
        for n_steps in (int(v) for v in args.step_sets.split(",")):
            rows = {}
            for name in methods:
                ma = np.stack([maps[s][i][name][0] for i in idx])
                mb = np.stack([maps[s][i][name][1] for i in idx])
                d, ins = score_maps(ca, cb, ma, mb, main_model, steps=default_steps(n_steps))
                rows[name] = {
                    "deletion": round(d.auc, 3),
                    "insertion": round(ins.auc, 3),
                    "deletion_ci95": _ci(d),
                    "insertion_ci95": _ci(ins),
                    "deletion_curve": [round(float(v), 4) for v in d.accuracy],
                    "insertion_curve": [round(float(v), 4) for v in ins.accuracy],
                    "deletion_per_pair": [round(float(v), 2) for v in d.per_pair_auc()],
                    "insertion_per_pair": [round(float(v), 2) for v in ins.per_pair_auc()],
                }
            entry["steps"][str(n_steps)] = rows
        result["scenarios"][s] = entry
        print(s, len(idx), {k: (v["deletion"], v["insertion"]) for k, v in entry["steps"]["11"].items()}, flush=True)
        (out / "table1_gpu.json").write_text(json.dumps(result) + "\n")
    # Deletion+Insertion batched vs one image per call, same maps (CorrRISE's), on this device
    s = "lfw"
    idx = sorted(maps[s])[:50]
    if idx and "corrrise" in methods and not args.no_metric_bench:
        ca, cb = chips["lfw_a"][idx], chips["lfw_b"][idx]
        ma = np.stack([maps[s][i]["corrrise"][0] for i in idx])
        mb = np.stack([maps[s][i]["corrrise"][1] for i in idx])
        bench: dict[str, Any] = {"pairs": len(idx)}
        aucs = {}
        for label, batch in (("batched_1024", 1024), ("per_image_1", 1)):
            t1 = time.perf_counter()
            for mode in ("deletion", "insertion"):
                aucs[(label, mode)] = CausalMetric(main_model, mode, batch_size=batch).curve(ca, cb, ma, mb).auc
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t1
            bench[label] = {"seconds": round(dt, 3), "pairs_per_s": round(len(idx) / dt, 2)}
        bench["speedup_batched"] = round(bench["per_image_1"]["seconds"] / bench["batched_1024"]["seconds"], 2)
        bench["same_auc"] = all(abs(aucs[("batched_1024", m)] - aucs[("per_image_1", m)]) < 1e-9
                                for m in ("deletion", "insertion"))
        result["metric_bench"] = bench
        print(json.dumps(bench), flush=True)
    (out / "table1_gpu.json").write_text(json.dumps(result) + "\n")
    print(f"wrote {out / 'table1_gpu.json'}")


if __name__ == "__main__":
    main()
