"""Reproducibility of CorrRISE-type estimators at the paper's budget (issue 11 §1).

For K matched LFW pairs (aligned chips, the default model in-process), every candidate spends
500 masks per face (1,002 forward passes per pair) with two mask seeds; we report the Pearson r
between the two seeds' maps (S_A and S_B) and between each map and a converged reference (the
paper's estimator at N = --ref-masks, another seed), median and minimum over pairs.

Candidates = a sampling scheme x an estimator:
- sampling: ``iid`` (the paper's masks), ``antithetic`` (masks in pairs: the same patches, fill
  values U and 1 - U), ``lowdisc`` (patch corners from a randomly shifted R2 low-discrepancy
  sequence over all N x P patches, fill values iid);
- estimator: ``pearson`` (the paper's per-pixel correlation), ``cv-coverage`` (one control
  variate: the mask's total occlusion, its covariance with each pixel known exactly),
  ``reg G`` (CorrRISE+: ridge regression of the scores on cell occlusions of the grids G used as
  control variates, ``+fit`` without the residual correction).

Usage: .venv/bin/python bench/bench_corrrise_plus.py [--pairs 20] [--ref-pairs 3] [--ref-masks 8000]
       [--schemes iid,antithetic,lowdisc]
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

from explainer_service.correlation import pearson_map  # noqa: E402
from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.masks import MaskConfig, generate_masks  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.methods.corrrise_plus import (  # noqa: E402
    cell_kernel,
    occlusion_covariance,
    regression_map,
)
from explainer_service.models.base import cosine_to, to_model_input  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402

N = 500
CALL = 16  # masks per model call (the in-process default)


def lowdisc_masks(cfg: MaskConfig, size: int) -> np.ndarray:
    """N masks whose N x P patch corners follow an R2 sequence shifted by the seed (fills iid)."""
    side = cfg.patch_size_for(size)
    span = size + side - 1
    rng = np.random.default_rng([cfg.seed, 7])
    g = 1.32471795724474602596  # plastic number
    alpha = np.array([1 / g, 1 / g**2])
    i = np.arange(cfg.n_masks * cfg.patches)[:, None]
    u = (rng.random(2) + (i + 1) * alpha) % 1.0
    corners = (np.floor(u * span) - (side - 1)).astype(int).reshape(cfg.n_masks, cfg.patches, 2)
    order = rng.permutation(cfg.n_masks * cfg.patches).reshape(cfg.n_masks, cfg.patches)
    corners = corners.reshape(-1, 2)[order]  # decorrelate a mask's patches
    fills = rng.random((cfg.n_masks, cfg.patches))
    masks = np.ones((cfg.n_masks, size, size), np.float32)
    for k in range(cfg.n_masks):
        for p in range(cfg.patches):
            y, x = corners[k, p]
            masks[k, max(y, 0):min(y + side, size), max(x, 0):min(x + side, size)] = fills[k, p]
    return masks


def sample_masks(scheme: str, seed: int, size: int) -> np.ndarray:
    if scheme == "iid":
        return generate_masks(MaskConfig(seed=seed), size)
    if scheme == "antithetic":
        half = generate_masks(MaskConfig(n_masks=N // 2, seed=seed), size)
        anti = np.where(half < 1, 1.0 - half, 1.0).astype(np.float32)
        return np.stack([half, anti], axis=1).reshape(N, size, size)
    if scheme == "lowdisc":
        return lowdisc_masks(MaskConfig(seed=seed), size)
    raise ValueError(scheme)


def score(model, chip_a, chip_b, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = to_model_input(chip_a[None])[0], to_model_input(chip_b[None])[0]
    emb = model.embed(np.stack([xa, xb]))
    sa, sb = [], []
    for lo in range(0, len(masks), CALL):
        mm = masks[lo:lo + CALL, None]
        e = model.embed(np.concatenate([xa[None] * mm, xb[None] * mm]))
        n = len(mm)
        sa.append(cosine_to(e[:n], emb[1]))
        sb.append(cosine_to(e[n:], emb[0]))
    return np.concatenate(sa).astype(np.float64), np.concatenate(sb).astype(np.float64)


def r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--ref-pairs", type=int, default=3)
    ap.add_argument("--ref-masks", type=int, default=8000)
    ap.add_argument("--schemes", default="iid,antithetic", help="of iid, antithetic, lowdisc")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "corrrise_plus.json"))
    args = ap.parse_args()

    model = load_face_model()
    size = model.spec.chip.size
    prep = prepare_pairs(read_dataset(f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}"),
                         model, pairs=args.pairs)
    cfg = MaskConfig()
    cov = occlusion_covariance(cfg, size)
    sigma = float(np.sqrt(cov[size - 1, size - 1]))
    estimators: dict[str, tuple[tuple[int, ...], float, bool] | None] = {
        "pearson": None,
        "cv-coverage": ((1,), 0.0, True),
        "reg 4,8": ((4, 8), 1.0, True),
        "reg 4,8 +fit": ((4, 8), 1.0, False),
        "reg 4,8,16 +fit": ((4, 8, 16), 1.0, False),
    }
    kernels = {e[0]: cell_kernel(cov, size, e[0]) for e in estimators.values() if e is not None}
    schemes = tuple(args.schemes.split(","))
    only_iid = {"reg 4,8,16 +fit"}
    rows: dict[str, dict[str, list[float]]] = {}
    est_time: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    n_pairs = len(prep.chips_a)
    for i, (a, b) in enumerate(zip(prep.chips_a, prep.chips_b, strict=True)):
        ref = None
        if i < args.ref_pairs:
            method = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=args.ref_masks, seed=100)))
            ex = method.attribute(a, b)
            ref = (ex.s_a, ex.s_b)
        for scheme in schemes:
            maps: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
            for seed in (0, 1):
                masks = sample_masks(scheme, seed, size)
                sa, sb = score(model, a, b, masks)
                for name, est in estimators.items():
                    if scheme != "iid" and name in only_iid:
                        continue
                    t0 = time.perf_counter()
                    if est is None:
                        out = (pearson_map(masks, sa), pearson_map(masks, sb))
                    else:
                        g, ridge, resid = est
                        out = tuple(regression_map(masks, s, kernels[g], sigma, g, ridge, resid) for s in (sa, sb))
                    est_time.setdefault(name, []).append((time.perf_counter() - t0) / 2)
                    maps.setdefault(name, []).append(out)  # type: ignore[arg-type]
            for name, (m0, m1) in maps.items():
                row = rows.setdefault(f"{scheme} / {name}", {})
                row.setdefault("seed_a", []).append(r(m0[0], m1[0]))
                row.setdefault("seed_b", []).append(r(m0[1], m1[1]))
                if ref is not None:
                    row.setdefault("ref_a", []).append((r(m0[0], ref[0]) + r(m1[0], ref[0])) / 2)
                    row.setdefault("ref_b", []).append((r(m0[1], ref[1]) + r(m1[1], ref[1])) / 2)
        print(f"pair {i + 1}/{n_pairs} done at {time.perf_counter() - t_start:.0f} s", flush=True)

    def cell(v: list[float]) -> str:
        return f"{np.median(v):.3f} ({np.min(v):.3f})" if v else "-"

    print(f"\n{n_pairs} pairs (reference: {min(args.ref_pairs, n_pairs)} pairs, N={args.ref_masks}, seed 100); "
          f"{platform.machine()}, {platform.python_version()}; total {time.perf_counter() - t_start:.0f} s")
    print("| sampling / estimator | seed-to-seed S_A | seed-to-seed S_B | vs reference S_A | vs reference S_B |"
          " estimator time per face |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        est = name.split(" / ", 1)[1]
        print(f"| {name} | {cell(row['seed_a'])} | {cell(row['seed_b'])} | {cell(row.get('ref_a', []))} | "
              f"{cell(row.get('ref_b', []))} | {1000 * np.median(est_time[est]):.0f} ms |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"pairs": n_pairs, "ref_pairs": min(args.ref_pairs, n_pairs),
                                          "ref_masks": args.ref_masks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
