"""A change of sampling for corrrise-plus (issue 11 §1, third round): masks that switch superpixels.

The second round (bench/bench_corrrise_plus_faithfulness.py) found that a sharp region-level map
(the fitted effect of SLIC superpixels) reaches LIME's Deletion but is not reproducible from the
paper's masks: 40 px patches occlude neighbouring superpixels together, so 500 of them do not
separate their effects. This bench spends part of the same budget on masks that do: each
superpixel of the face on or off with probability 1/2 (LIME's draw, zero fill), the rest on the
paper's patches, and fits one regression on both kinds of masks.

Designs, all at 500 masks per face (1,002 forward passes per pair):

- ``paper``: the paper's 500 masks (scores from the second round's cache, ``sa0``/``sa1``);
- ``hybrid F``: the first ``500 - F`` paper masks of the same seed (their cached scores) and F
  superpixel on/off masks (SLIC ``--segments``, generator ``default_rng([seed, face, 11])``);
- ``lime``: the registry's LIME (500 samples per face, kernel-weighted ridge), seeds 0 and 1.

Estimators on a hybrid design (``COMBOS``): the fitted per-pixel effect (``fit_map(...,
"effect")``) of a ridge regression of the scores of all its masks on the mean occlusion of each
superpixel (``sp``), of superpixels and 4x4 cells (``sp+4``) or of superpixels and 4x4 and 8x8
cells (``joint``), penalty by GCV or fixed; corrrise-plus's default estimator (4x4 + 8x8 cells,
ridge 1, correlation output) on the hybrid's paper masks (``smooth paper``) or on all its masks
(``smooth all``); and standardised averages of an effect and a smooth map. Columns: seed-to-seed
Pearson r of S_A and S_B (median (minimum) over pairs), and the library's Deletion/Insertion of
the seed-0 maps with the paired 95 % interval of the per-pair AUC difference to LIME.

Usage (the second round's tuning cache: LFW fold 0, aligned crops, default model)::

    nice -n 5 .venv/bin/python bench/bench_hybrid_design.py score --cache /tmp/e1/tune --limit 8
    .venv/bin/python bench/bench_hybrid_design.py eval --cache /tmp/e1/tune --limit 8 --out JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.correlation import pearson_map  # noqa: E402
from explainer_service.evaluation import score_maps  # noqa: E402
from explainer_service.masks import MaskConfig, generate_masks  # noqa: E402
from explainer_service.methods import build  # noqa: E402
from explainer_service.methods.corrrise_plus import (  # noqa: E402
    fit_map,
    grid_labels,
    occlusion_covariance,
    region_matrix,
    superpixel_labels,
)
from explainer_service.models.base import cosine_to, to_model_input  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402

N = 500
FRACTIONS = (125, 250)  # superpixel masks per face in the hybrid designs
BATCH = 64
Part = tuple[Any, ...]
#: name -> [(part, weight)]: a part alone, or standardised parts summed (scaled like the last)
COMBOS: dict[str, list[tuple[Part, float]]] = {
    "h250 joint effect gcv": [(("eff", 250, "joint", None), 1.0)],
    "h250 sp effect gcv": [(("eff", 250, "sp", None), 1.0)],
    "h250 sp effect ridge 1": [(("eff", 250, "sp", 1.0), 1.0)],
    "h250 sp effect ridge 10": [(("eff", 250, "sp", 10.0), 1.0)],
    "h250 sp+4 effect gcv": [(("eff", 250, "sp+4", None), 1.0)],
    "h250 smooth all masks": [(("smooth", 250, "all"), 1.0)],
    "h250 joint effect + smooth paper": [(("eff", 250, "joint", None), 0.5), (("smooth", 250, "paper"), 0.5)],
    "h250 sp effect gcv + smooth paper": [(("eff", 250, "sp", None), 0.5), (("smooth", 250, "paper"), 0.5)],
    "h250 sp effect ridge 1 + smooth paper": [(("eff", 250, "sp", 1.0), 0.5), (("smooth", 250, "paper"), 0.5)],
    "h250 sp effect ridge 1 + smooth all": [(("eff", 250, "sp", 1.0), 0.5), (("smooth", 250, "all"), 0.5)],
    "h250 sp effect ridge 10 + smooth all": [(("eff", 250, "sp", 10.0), 0.5), (("smooth", 250, "all"), 0.5)],
    "h125 sp effect ridge 1 + smooth all": [(("eff", 125, "sp", 1.0), 0.5), (("smooth", 125, "all"), 0.5)],
}


def sp_samples(n: int, n_features: int, seed: int, face: int) -> np.ndarray:
    """bool (n, F): superpixel on (kept) / off (zero), each with probability 1/2."""
    return np.random.default_rng([seed, face, 11]).integers(0, 2, size=(n, n_features)).astype(bool)


def score_sp(model: Any, chip: np.ndarray, labels: np.ndarray, z: np.ndarray, other: np.ndarray) -> np.ndarray:
    out = []
    for lo in range(0, len(z), BATCH):
        keep = z[lo:lo + BATCH][:, labels][..., None]
        imgs = np.where(keep, chip[None].astype(np.float32), np.float32(0))
        out.append(cosine_to(model.embed(to_model_input(imgs)), other))
    return np.concatenate(out)


def score_stage(args: argparse.Namespace) -> None:
    model = load_face_model()
    files = sorted(Path(args.cache).glob("pair*.npz"))[: args.limit or None]
    t0 = time.perf_counter()
    for k, f in enumerate(files):
        d = dict(np.load(f))
        out = dict(d)
        emb = model.embed(to_model_input(np.stack([d["chip_a"], d["chip_b"]])))
        for fi, face in enumerate("ab"):
            labels = superpixel_labels(d[f"chip_{face}"], args.segments)
            other = emb[1 - fi]
            for seed in (0, 1):
                key = f"hyb{args.segments}_s{face}{seed}"
                if key not in out:
                    z = sp_samples(max(FRACTIONS), int(labels.max()) + 1, seed, fi)
                    out[key] = score_sp(model, d[f"chip_{face}"], labels, z, other)
        for seed, key in ((0, "lime"), (1, "lime1")):
            if f"{key}_a" not in out:
                ex = build("lime", model, seed=seed).attribute(d["chip_a"], d["chip_b"])
                out[f"{key}_a"], out[f"{key}_b"] = ex.s_a, ex.s_b
        np.savez(f, **out)
        print(f"pair {k + 1}/{len(files)} at {time.perf_counter() - t0:.0f} s", flush=True)


def _part(key: Part, occ_p: np.ndarray, s_p: np.ndarray, occ_sp: np.ndarray, s_sp: np.ndarray,
          bases: dict[str, Any], cov: np.ndarray) -> np.ndarray:
    """("eff", F, basis, ridge): the fitted effect on all masks of the hybrid with F superpixel
    masks; ("smooth", F, "paper"|"all"): corrrise-plus's default estimator on the paper masks of that
    hybrid or on all its masks."""
    n_p = N - key[1]
    occ = np.concatenate([occ_p[:n_p], occ_sp[:key[1]]])
    sc = np.concatenate([s_p[:n_p], s_sp[:key[1]]])
    if key[0] == "eff":
        return fit_map(occ, sc, bases[key[2]], cov, key[3], "effect")
    if key[2] == "paper":
        occ, sc = occ[:n_p], sc[:n_p]
    return fit_map(occ, sc, bases["cells"], cov, 1.0, "correlation")


def _r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def _z(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = (m - m.mean()) / max(float(m.std()), 1e-12)
    return out


def eval_stage(args: argparse.Namespace) -> None:
    model = load_face_model()
    size = model.spec.chip.size
    cov = occlusion_covariance(MaskConfig(), size)
    files = sorted(Path(args.cache).glob("pair*.npz"))[: args.limit or None]
    occ_paper = {s: 1.0 - generate_masks(MaskConfig(n_masks=N, seed=s), size).reshape(N, -1).astype(np.float64)
                 for s in (0, 1)}
    cells = [grid_labels(size, g) for g in (4, 8)]
    cells_regions = region_matrix(cells)
    names = ["corrrise (paper)", "corrrise-plus default", "lime", *COMBOS]
    seed_r: dict[str, dict[str, list[float]]] = {n: {"a": [], "b": []} for n in names}
    maps0: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in names}
    chips_a, chips_b = [], []
    t0 = time.perf_counter()
    for k, f in enumerate(files):
        d = dict(np.load(f))
        chips_a.append(d["chip_a"])
        chips_b.append(d["chip_b"])
        for fi, face in enumerate("ab"):
            labels = superpixel_labels(d[f"chip_{face}"], args.segments)
            nf = int(labels.max()) + 1
            bases = {"sp": region_matrix([labels]), "sp+4": region_matrix([labels, cells[0]]),
                     "joint": region_matrix([labels, *cells]), "cells": cells_regions}
            per: dict[str, list[np.ndarray]] = {n: [] for n in names}
            for seed in (0, 1):
                s_paper = d[f"s{face}{seed}"]
                s_sp = d[f"hyb{args.segments}_s{face}{seed}"]
                occ_sp = 1.0 - sp_samples(len(s_sp), nf, seed, fi)[:, labels].reshape(len(s_sp), -1).astype(np.float64)
                per["corrrise (paper)"].append(pearson_map(1.0 - occ_paper[seed].reshape(N, size, size), s_paper))
                per["corrrise-plus default"].append(fit_map(occ_paper[seed], s_paper, cells_regions, cov, 1.0,
                                                            "correlation"))
                per["lime"].append(d[f"lime_{face}"] if seed == 0 else d[f"lime1_{face}"])
                parts: dict[Part, np.ndarray] = {}
                ctx = (occ_paper[seed], s_paper, occ_sp, s_sp, bases, cov)

                def part(key: Part, parts: dict[Part, np.ndarray] = parts, ctx: tuple[Any, ...] = ctx) -> np.ndarray:
                    if key not in parts:
                        parts[key] = _part(key, *ctx)
                    return parts[key]

                for name, terms in COMBOS.items():
                    if len(terms) == 1:
                        per[name].append(part(terms[0][0]))
                    else:
                        ref = part(terms[-1][0])
                        m = np.sum([w * _z(part(t)) for t, w in terms], axis=0)
                        per[name].append((m * float(ref.std())).astype(np.float32))
            for n in names:
                seed_r[n][face].append(_r(*per[n]))
                maps0[n][fi].append(per[n][0])
        print(f"pair {k + 1}/{len(files)} at {time.perf_counter() - t0:.0f} s", flush=True)
    ca, cb = np.stack(chips_a), np.stack(chips_b)
    auc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for n in names:
        dl, ins = score_maps(ca, cb, np.stack(maps0[n][0]), np.stack(maps0[n][1]), model)
        auc[n] = (dl.per_pair_auc(), ins.per_pair_auc())

    def cell(v: list[float]) -> str:
        return f"{np.median(v):.3f} ({np.min(v):.3f})"

    def diff(n: str, col: int) -> str:
        dd = auc[n][col] - auc["lime"][col]
        half = 1.96 * dd.std(ddof=1) / np.sqrt(len(dd))
        return f"{dd.mean():+.1f} [{dd.mean() - half:+.1f}, {dd.mean() + half:+.1f}]"

    print(f"\n{len(files)} pairs from {args.cache}, SLIC {args.segments}; {time.perf_counter() - t0:.0f} s")
    print("| estimator (1,002 passes) | seed r S_A | seed r S_B | Deletion | Insertion | Del - LIME | Ins - LIME |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for n in names:
        rows[n] = {"seed_a": seed_r[n]["a"], "seed_b": seed_r[n]["b"],
                   "deletion": float(auc[n][0].mean()), "insertion": float(auc[n][1].mean()),
                   "deletion_per_pair": auc[n][0].tolist(), "insertion_per_pair": auc[n][1].tolist()}
        print(f"| {n} | {cell(seed_r[n]['a'])} | {cell(seed_r[n]['b'])} | {auc[n][0].mean():.2f} | "
              f"{auc[n][1].mean():.2f} | {diff(n, 0)} | {diff(n, 1)} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"pairs": len(files), "cache": args.cache,
                                              "segments": args.segments, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="stage", required=True)
    for name in ("score", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--cache", required=True)
        p.add_argument("--limit", type=int, default=0)
        p.add_argument("--segments", type=int, default=50)
        if name == "eval":
            p.add_argument("--out", default="")
    args = ap.parse_args()
    score_stage(args) if args.stage == "score" else eval_stage(args)


if __name__ == "__main__":
    main()
