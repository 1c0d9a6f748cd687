"""Benchmark of `explain` on the default model (issue: core).

1. CorrRISE N=500 latency vs the model-throughput bound: (2N+2) forward passes at the best batch
   size, timed in the same run.
2. Speed-up over a literal Algorithm 1 (one masked image per call, per-pixel Python Pearson loop)
   at N=50, same run, same masks.

Usage: .venv/bin/python bench/bench_explain.py [--masks 500] [--literal-masks 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import Aligner  # noqa: E402
from explainer_service.masks import MaskConfig, generate_masks  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.methods.corrrise_literal import corrrise_literal  # noqa: E402
from explainer_service.models.base import to_model_input  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402


def demo_chips(model) -> tuple[np.ndarray, np.ndarray, str]:
    shared = ROOT.parent / "shared" / "data" / "lfw-dev" / "images"
    a = shared / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    b = shared / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    if a.exists() and b.exists():
        al = Aligner()
        return al.align_file(a, model.spec.chip).chip, al.align_file(b, model.spec.chip).chip, "LFW Abel_Pacheco 1 vs 4"
    import tempfile

    from explainer_service.demo import make_demo_pair

    pa, pb = make_demo_pair(tempfile.mkdtemp())
    al = Aligner()
    return al.align_file(pa, model.spec.chip).chip, al.align_file(pb, model.spec.chip).chip, "demo astronaut pair"


def throughput(model, chips: np.ndarray, batch: int, min_images: int) -> float:
    x = to_model_input(chips)
    reps = max(1, min_images // batch)
    xb = np.repeat(x, -(-batch // len(x)), axis=0)[:batch]
    model.embed(xb)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        model.embed(xb)
    return reps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", type=int, default=500)
    ap.add_argument("--literal-masks", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8,16,32,64,128")
    args = ap.parse_args()

    model = load_face_model(batch_size=1024)
    chip_a, chip_b, pair = demo_chips(model)
    chips = np.stack([chip_a, chip_b])
    rows = []
    for b in [int(v) for v in args.batches.split(",")]:
        rows.append((b, throughput(model, chips, b, min_images=256)))
    best_b, best_ips = max(rows, key=lambda r: r[1])
    bound = (2 * args.masks + 2) / best_ips

    lat = []
    for _ in range(args.repeats):
        model.batch_size = best_b
        engine = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=args.masks), perturbations_per_eval=best_b))
        t0 = time.perf_counter()
        engine.attribute(chip_a, chip_b)
        lat.append(time.perf_counter() - t0)
    latency = float(np.median(lat))

    # literal Algorithm 1 vs engine, N = literal-masks
    cfg = MaskConfig(n_masks=args.literal_masks)
    masks = generate_masks(cfg, model.spec.chip.size)
    model.batch_size = 1
    embed_one = lambda img: model.embed(to_model_input(img))[0]  # noqa: E731
    t0 = time.perf_counter()
    lit_a, lit_b = corrrise_literal(embed_one, chip_a.astype(np.float32), chip_b.astype(np.float32), masks)
    t_literal = time.perf_counter() - t0
    model.batch_size = best_b
    engine = CorrRISE(model, CorrRISEConfig(masks=cfg, perturbations_per_eval=best_b))
    t0 = time.perf_counter()
    ex = engine.attribute(chip_a, chip_b)
    t_engine = time.perf_counter() - t0
    max_diff = float(max(np.abs(ex.s_a - lit_a).max(), np.abs(ex.s_b - lit_b).max()))

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "pair": pair,
        "throughput_images_per_s": {str(b): round(v, 1) for b, v in rows},
        "best_batch": best_b,
        "bound_s": round(bound, 3),
        "explain_latency_s": round(latency, 3),
        "latency_over_bound": round(latency / bound, 3),
        "literal_s": round(t_literal, 3),
        "engine_s_at_literal_n": round(t_engine, 3),
        "speedup_over_literal": round(t_literal / t_engine, 2),
        "max_abs_map_diff_vs_literal": max_diff,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
