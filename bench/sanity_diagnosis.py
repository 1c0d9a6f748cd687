"""Why the perturbation methods' maps keep part of their shape when the model is fully randomised.

Two measurements per method, with the trained default model and its fully randomised twin (all
layers, as the sanity check's last stage):
- the mean Spearman correlation between a face's map and its grey level (a mask multiplies pixels,
  so darkening an already dark pixel changes nothing, whatever the network);
- map agreement across mask seeds: trained seed 0 vs trained seed 1 (the method's own
  reproducibility, the ceiling of any sanity figure), trained seed 0 vs randomised seed 0 (what
  `facexplain sanity` reports: the same masks on both sides) and vs randomised seed 1.

Usage: .venv/bin/python bench/sanity_diagnosis.py [--pairs 3] [--methods corrrise,lime,xface]
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
from explainer_service.methods import build  # noqa: E402
from explainer_service.models.convert import dlib_source_path  # noqa: E402
from explainer_service.models.dlib_format import read_dlib_resnet  # noqa: E402
from explainer_service.models.registry import DLIB_RESNET_V1  # noqa: E402
from explainer_service.models.torch_dlib import build_torch  # noqa: E402
from explainer_service.models.torch_model import TorchFaceModel  # noqa: E402
from explainer_service.sanity import dlib_stages, randomize_layers  # noqa: E402


def main() -> None:
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--methods", default="corrrise,lime,xface")
    args = ap.parse_args()
    twin = build_torch(read_dlib_resnet(dlib_source_path()))
    models = {"trained": twin, "randomised": randomize_layers(twin, dlib_stages(twin), seed=0)}
    prep = prepare_pairs(read_dataset(f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}"),
                         TorchFaceModel(twin, DLIB_RESNET_V1), pairs=args.pairs)
    grey = [c.astype(np.float64).mean(axis=2) for pair in zip(prep.chips_a, prep.chips_b, strict=True) for c in pair]
    def maps(module: object, seed: int, name: str) -> list[np.ndarray]:
        method = build(name, TorchFaceModel(module, DLIB_RESNET_V1, batch_size=64), seed=seed)
        out = []
        for a, b in zip(prep.chips_a, prep.chips_b, strict=True):
            ex = method.attribute(a, b)
            out += [ex.s_a, ex.s_b]
        return out

    def rho(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
        return float(np.mean([spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(xs, ys, strict=True)]))

    for name in args.methods.split(","):
        t0, t1 = maps(models["trained"], 0, name), maps(models["trained"], 1, name)
        r0, r1 = maps(models["randomised"], 0, name), maps(models["randomised"], 1, name)
        print(f"{name}: Spearman(map, grey level) trained {rho(t0, grey):+.2f}, randomised {rho(r0, grey):+.2f}; "
              f"trained s0 vs trained s1 {rho(t0, t1):.2f}, vs randomised s0 {rho(t0, r0):.2f}, "
              f"vs randomised s1 {rho(t0, r1):.2f}", flush=True)

if __name__ == "__main__":
    main()
