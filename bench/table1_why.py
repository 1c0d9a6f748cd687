"""Why does CorrRISE not lead Table 1 on the default model? Paired experiments on the same pairs.

Hypotheses checked (each against xFace and LIME, the methods that lead columns on dlib's model):
- budget: xFace spends 2,118 and MinPlus about 2,400 forward passes per pair, CorrRISE 1,002;
  CorrRISE at an equal cost (N=1,059 masks per face) and at 4x (N=2,000);
- pixel noise: CorrRISE's per-pixel correlations carry sampling noise (about 1/sqrt(N)), so the
  ranking of single pixels that Deletion/Insertion uses is noisy where xFace's sliding-window
  maps are smooth; CorrRISE's map after a Gaussian blur (sigma in px) is scored too, as a
  diagnostic, not as a method of the paper.
Output: AUCs of each variant, the paired difference (variant - reference; references xFace,
LIME and plain CorrRISE) with its 95 % interval over pairs, and the per-pair AUCs, as JSON.

Usage: .venv/bin/python bench/table1_why.py --dataset cfp-fp-aligned:../shared/data/cfp-dev --pairs 40
       [--model NAME] [--engine local] [--out FILE]
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
sys.path.insert(0, str(ROOT / "bench"))

from table1_report import paired as paired_difference  # noqa: E402

from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.evaluation import explain_pairs, score_maps  # noqa: E402
from explainer_service.methods import build  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402


def blurred(maps: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(m.astype(np.float64), sigma) for m in maps]).astype(np.float32)


def paired(x: np.ndarray, y: np.ndarray) -> list[float]:
    mean, half = paired_difference(x, y)
    return [round(mean, 2), round(half, 2)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--occlude", action="store_true")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sigmas", default="2,4,8")
    ap.add_argument("--budgets", default="1059,2000")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = load_face_model(args.model, batch_size=128) if args.model else load_face_model(batch_size=128)
    prep = prepare_pairs(read_dataset(args.dataset), model, pairs=args.pairs, occlude=args.occlude)
    ca, cb = prep.chips_a, prep.chips_b
    variants: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seconds: dict[str, float] = {}

    def run(label: str, name: str, budget: int | None = None) -> None:
        t0 = time.perf_counter()
        ma, mb, _ = explain_pairs(build(name, model, budget=budget), ca, cb)
        seconds[label] = round(time.perf_counter() - t0, 1)
        variants[label] = (ma, mb)
        print(f"{label}: {seconds[label]} s", flush=True)

    run("corrrise", "corrrise")
    run("xface", "xface")
    run("lime", "lime")
    for b in (int(v) for v in args.budgets.split(",") if v):
        run(f"corrrise_n{b}", "corrrise", budget=b)
    for s in (float(v) for v in args.sigmas.split(",") if v):
        ma, mb = variants["corrrise"]
        variants[f"corrrise_blur{s:g}"] = (blurred(ma, s), blurred(mb, s))
    curves = {k: score_maps(ca, cb, ma, mb, model) for k, (ma, mb) in variants.items()}
    per = {k: (d.per_pair_auc(), i.per_pair_auc()) for k, (d, i) in curves.items()}
    out = {
        "dataset": args.dataset + (" (occluded)" if args.occlude else ""),
        "model": model.spec.name,
        "pairs": len(ca),
        "seconds": seconds,
        "auc": {k: {"deletion": round(d.auc, 2), "insertion": round(i.auc, 2)} for k, (d, i) in curves.items()},
        "paired_vs_xface": {k: {"deletion": paired(per[k][0], per["xface"][0]),
                                "insertion": paired(per[k][1], per["xface"][1])} for k in per if k != "xface"},
        "paired_vs_lime": {k: {"deletion": paired(per[k][0], per["lime"][0]),
                               "insertion": paired(per[k][1], per["lime"][1])} for k in per if k != "lime"},
        "paired_vs_corrrise": {k: {"deletion": paired(per[k][0], per["corrrise"][0]),
                                   "insertion": paired(per[k][1], per["corrrise"][1])} for k in per if k != "corrrise"},
        "per_pair": {k: {"deletion": [round(float(v), 2) for v in d], "insertion": [round(float(v), 2) for v in i]}
                     for k, (d, i) in per.items()},
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
