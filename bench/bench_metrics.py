"""Benchmark of Deletion/Insertion (issue: evaluation): batched vs one image per model call.

Same pairs, same maps (CorrRISE's, computed once), same run; pairs/s of both curves together.
Usage: .venv/bin/python bench/bench_metrics.py [--pairs 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE  # noqa: E402
from explainer_service.metrics import CausalMetric  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20)
    args = ap.parse_args()
    model = load_face_model(batch_size=128)
    ds = read_dataset(f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}")
    prep = prepare_pairs(ds, model, pairs=args.pairs)
    engine = CorrRISE(model)
    maps = [engine.attribute(a, b) for a, b in zip(prep.chips_a, prep.chips_b, strict=True)]
    ma = np.stack([m.s_a for m in maps])
    mb = np.stack([m.s_b for m in maps])
    out = {"pairs": len(ma)}
    aucs = {}
    for label, batch in (("batched_128", 128), ("per_image_1", 1)):
        t0 = time.perf_counter()
        for mode in ("deletion", "insertion"):
            curve = CausalMetric(model, mode, batch_size=batch).curve(prep.chips_a, prep.chips_b, ma, mb)
            aucs[(label, mode)] = curve.auc
        dt = time.perf_counter() - t0
        out[label] = {"seconds": round(dt, 3), "pairs_per_s": round(len(ma) / dt, 2)}
    assert aucs[("batched_128", "deletion")] == aucs[("per_image_1", "deletion")]
    out["speedup_batched"] = round(out["per_image_1"]["seconds"] / out["batched_128"]["seconds"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
