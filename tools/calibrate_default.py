"""Calibrate the default model's cosine threshold on ../shared/data/lfw-dev (docs/calibration.md).

Usage: .venv/bin/python tools/calibrate_default.py [--images images|aligned112] [--lfw PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import Aligner  # noqa: E402
from explainer_service.calibration import calibrate, score_pairs  # noqa: E402
from explainer_service.datasets import read_lfw_pairs  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402
from explainer_service.verification import accuracy, eer_threshold  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw-dev"))
    ap.add_argument("--images", default="images", help="images (raw, detector) or aligned112")
    ap.add_argument("--at", type=float, default=None, help="also report accuracy at this threshold")
    args = ap.parse_args()
    pairs = read_lfw_pairs(args.lfw, images=args.images)
    model = load_face_model()
    t0 = time.perf_counter()
    scored = score_pairs(pairs, model, aligner=Aligner())
    res = calibrate(scored)
    eer_t, eer = eer_threshold(scored.scores, scored.same)
    out = {
        "pairs": len(pairs),
        "scored_pairs": int(len(scored.scores)),
        "skipped_pairs": scored.skipped_pairs,
        "failed_images": len(scored.failures),
        "failures": scored.failures,
        "fold_accuracies": [round(float(a), 4) for a in res.accuracies],
        "fold_thresholds": [round(float(t), 4) for t in res.thresholds],
        "accuracy_mean": round(res.mean, 4),
        "accuracy_std": round(res.std, 4),
        "threshold_all_pairs": round(res.threshold_all, 4),
        "eer_threshold": round(eer_t, 4),
        "eer": round(eer, 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "accuracy_at": None
        if args.at is None
        else {"threshold": args.at, "accuracy": round(accuracy(scored.scores, scored.same, args.at), 4)},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
