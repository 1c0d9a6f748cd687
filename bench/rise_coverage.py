"""Why RISE fails on face similarity: its map is the masks' coverage, whatever the model says.

RISE's saliency is the score-weighted sum of its masks, sum_k s_k M_k / (N p). With a cosine
similarity the scores s_k sit in a narrow band far from 0 (dlib's model: mean about 0.88, spread
about 0.02), so the sum is s_mean * sum_k M_k (the coverage of the mask set, which does not depend
on the model) plus a small centred term. This prints, per pair, the scores' mean and spread and
the Spearman correlation of RISE's map of B with the coverage and with the centred term
sum_k (s_k - s_mean) M_k (what CorrRISE's correlation keeps).

Usage: .venv/bin/python bench/rise_coverage.py [--pairs 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.methods.rise import RISE, RISEConfig, rise_masks  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402


def main() -> None:
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4)
    args = ap.parse_args()
    model = load_face_model(batch_size=128)
    size = model.spec.chip.size
    prep = prepare_pairs(read_dataset(f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}"), model,
                         pairs=args.pairs)
    cfg = RISEConfig()
    masks = rise_masks(cfg, size).astype(np.float64)
    coverage = masks.sum(axis=0)
    for a, b in zip(prep.chips_a, prep.chips_b, strict=True):
        ex = RISE(model, cfg).attribute(a, b)
        s = np.asarray(ex.scores_b, np.float64)
        centred = np.tensordot(s - s.mean(), masks, axes=1)
        print(f"scores mean {s.mean():.3f} sd {s.std():.4f}; Spearman(map, coverage) "
              f"{spearmanr(ex.s_b.ravel(), coverage.ravel())[0]:.3f}, Spearman(map, centred term) "
              f"{spearmanr(ex.s_b.ravel(), centred.ravel())[0]:.3f}")


if __name__ == "__main__":
    main()
