"""corrrise-plus estimators on the same masks and scores: reproducibility and Deletion/Insertion
(issue 11 §1, second round).

Forward passes dominate, so every pair is scored once per mask seed and every candidate estimator
is applied to the same masks and scores:

- ``score``: for matched pairs of LFW (aligned crops, ``prepare_pairs`` over the chosen folds,
  0-based), score the paper's masks (N = 500, seeds 0 and 1: 1,002 forward passes each), for the
  first ``--ref-pairs`` pairs also N = ``--ref-masks`` masks (seed 100: the converged reference),
  and with ``--baselines`` the LIME and xFace maps (registry defaults, seed 0). Cached per pair in
  ``--cache`` (npz).
- ``eval``: every candidate of ``CANDIDATES`` on the cached pairs: seed-to-seed Pearson r of S_A
  and S_B, r with the paper's map at N = ref-masks and with the candidate's own map at
  N = ref-masks (the same reference scores), median (minimum) over pairs; Deletion and Insertion
  (library ``score_maps``, 11 steps, zeros substrate, probe perturbed) of the seed-0 maps, with
  the paired 95 % interval of the per-pair AUC difference to LIME and to xFace. The paper's
  CorrRISE at N = 500 gets the same r columns (seed-to-seed and vs the N = ref-masks map).

Tuning uses fold 0 (``--folds 0``), the report folds 1-4 (``--folds 1,2,3,4``).

Usage:
  nice -n 5 .venv/bin/python bench/bench_corrrise_plus_faithfulness.py score --folds 0 --pairs 20 --cache C
  nice -n 5 .venv/bin/python bench/bench_corrrise_plus_faithfulness.py eval --cache C [--out JSON]
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
from explainer_service.datasets import Dataset, read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.evaluation import score_maps  # noqa: E402
from explainer_service.masks import MaskConfig, generate_masks  # noqa: E402
from explainer_service.methods import build  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.methods.corrrise_plus import (  # noqa: E402
    fit_map,
    grid_labels,
    occlusion_covariance,
    region_matrix,
    region_pool,
    superpixel_labels,
)
from explainer_service.pipeline import load_face_model  # noqa: E402

N = 500
LFW = f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}"

# name -> (grids, superpixel counts, ridge (None: GCV), output, superpixel counts to pool over,
# weight of the standardised effect map added)
Cand = tuple[tuple[int, ...], tuple[int, ...], float | None, str, tuple[int, ...], float]
CANDIDATES: dict[str, Cand] = {
    "old: cells 4,8 ridge 1 corr": ((4, 8), (), 1.0, "correlation", (), 0.0),
    "cells 4,8 gcv corr": ((4, 8), (), None, "correlation", (), 0.0),
    "cells 4,8 ridge 10 corr": ((4, 8), (), 10.0, "correlation", (), 0.0),
    "cells 4 ridge 1 corr": ((4,), (), 1.0, "correlation", (), 0.0),
    "sp 50 + cells 4,8 gcv corr": ((4, 8), (50,), None, "correlation", (), 0.0),
    "sp 50 + cells 4,8 gcv effect": ((4, 8), (50,), None, "effect", (), 0.0),
    "old + pool sp 50": ((4, 8), (), 1.0, "correlation", (50,), 0.0),
    "old + pool sp 50,150": ((4, 8), (), 1.0, "correlation", (50, 150), 0.0),
    "old + pool sp 150": ((4, 8), (), 1.0, "correlation", (150,), 0.0),
    "old + 0.3 effect(sp 50 + cells)": ((4, 8), (), 1.0, "correlation", (), 0.3),
    "old + pool sp 50 + 0.3 effect": ((4, 8), (), 1.0, "correlation", (50,), 0.3),
}
EFFECT_BASIS = ((4, 8), (50,))


def _z(m: np.ndarray) -> np.ndarray:
    return (m - m.mean()) / max(float(m.std()), 1e-12)


def candidate_map(name: str, occ: np.ndarray, scores: np.ndarray, labels: dict[Any, np.ndarray],
                  cov: np.ndarray) -> np.ndarray:
    """One candidate's map of one face; ``labels`` maps a grid g and ("sp", n) to label maps."""
    g, sps, ridge, output, pool, w = CANDIDATES[name]
    regions = region_matrix([labels[x] for x in g] + [labels[("sp", n)] for n in sps])
    m = fit_map(occ, scores, regions, cov, ridge, output)
    if pool:
        m = region_pool(m, [labels[("sp", n)] for n in pool])
    if w:
        eff_regions = region_matrix([labels[x] for x in EFFECT_BASIS[0]] + [labels[("sp", n)] for n in EFFECT_BASIS[1]])
        eff = fit_map(occ, scores, eff_regions, cov, None, "effect")
        m = (_z(m) + w * _z(eff)) * float(m.std())
    return m.astype(np.float32)


def _folds(text: str) -> list[int]:
    return [int(f) for f in text.split(",")]


def score_stage(args: argparse.Namespace) -> None:
    model = load_face_model()
    data = read_dataset(LFW)
    keep = set(_folds(args.folds))
    subset = Dataset(data.name, tuple(p for p in data.pairs if p.fold in keep), data.aligned, data.source)
    prep = prepare_pairs(subset, model, pairs=args.pairs)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, (a, b) in enumerate(zip(prep.chips_a, prep.chips_b, strict=True)):
        if args.limit and i >= args.limit:
            break
        path = cache / f"pair{i:03d}.npz"
        old: dict[str, Any] = dict(np.load(path)) if path.exists() else {}
        if old and not (np.array_equal(old["chip_a"], a) and np.array_equal(old["chip_b"], b)):
            raise SystemExit(f"{path} holds another pair: score with the same --folds and --pairs")
        out: dict[str, Any] = {**old, "chip_a": a, "chip_b": b}
        for seed in (0, 1):
            if f"sa{seed}" not in out:
                sh = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(seed=seed))).run_shard(a, b, 0, N)
                out[f"sa{seed}"], out[f"sb{seed}"] = sh.scores_a, sh.scores_b
        if i < args.ref_pairs and "ref_sa" not in out:
            method = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=args.ref_masks, seed=100)))
            sh = method.run_shard(a, b, 0, args.ref_masks)
            ex = method.finish(sh)
            out.update(ref_sa=sh.scores_a, ref_sb=sh.scores_b, ref_map_a=ex.s_a, ref_map_b=ex.s_b)
        if args.baselines:
            for name in ("lime", "xface"):
                if f"{name}_b" not in out:
                    ex = build(name, model, seed=0).attribute(a, b)
                    out[f"{name}_a"], out[f"{name}_b"] = ex.s_a, ex.s_b
        np.savez(path, **out)
        print(f"pair {i + 1}/{len(prep.chips_a)} at {time.perf_counter() - t0:.0f} s", flush=True)


def _r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def _occ(seed: int, n: int, size: int) -> np.ndarray:
    return 1.0 - generate_masks(MaskConfig(n_masks=n, seed=seed), size).reshape(n, -1).astype(np.float64)


def eval_stage(args: argparse.Namespace) -> None:
    model = load_face_model()
    size = model.spec.chip.size
    cov = occlusion_covariance(MaskConfig(), size)
    names = [n for n in CANDIDATES if not args.only or any(o in n for o in args.only.split(";"))]
    files = sorted(Path(args.cache).glob("pair*.npz"))[: args.limit or None]
    occ = {s: _occ(s, N, size) for s in (0, 1)}
    grids = {g: grid_labels(size, g) for g in (4, 8, 16)}
    ref_occ: np.ndarray | None = None
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    maps0: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in names}
    chips_a, chips_b = [], []
    base: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"corrrise": ([], []), "lime": ([], []),
                                                                  "xface": ([], [])}
    t0 = time.perf_counter()
    for k, f in enumerate(files):
        d = dict(np.load(f))
        chips_a.append(d["chip_a"])
        chips_b.append(d["chip_b"])
        paper = {face: [pearson_map(1.0 - occ[s].reshape(N, size, size), d[f"s{face}{s}"]) for s in (0, 1)]
                 for face in "ab"}
        base["corrrise"][0].append(paper["a"][0])
        base["corrrise"][1].append(paper["b"][0])
        for face in "ab":
            rows.setdefault("corrrise", {}).setdefault(f"seed_{face}", []).append(_r(*paper[face]))
            if "ref_map_a" in d and args.ref:
                rows["corrrise"].setdefault(f"ref_{face}", []).append(
                    float(np.mean([_r(m, d[f"ref_map_{face}"]) for m in paper[face]])))
        for b in ("lime", "xface"):
            if f"{b}_a" in d:
                base[b][0].append(d[f"{b}_a"])
                base[b][1].append(d[f"{b}_b"])
        has_ref = "ref_sa" in d and args.ref
        if has_ref and args.own_ref and ref_occ is None:
            ref_occ = _occ(100, len(d["ref_sa"]), size).astype(np.float32)
        labels = {face: {**grids, **{("sp", n): superpixel_labels(d[f"chip_{face}"], n) for n in (50, 150)}}
                  for face in "ab"}
        for name in names:
            per_face = {}
            for face in "ab":
                per_face[face] = [candidate_map(name, occ[s], d[f"s{face}{s}"], labels[face], cov) for s in (0, 1)]
                if has_ref:
                    if args.own_ref:
                        assert ref_occ is not None
                        own = candidate_map(name, ref_occ, d[f"ref_s{face}"], labels[face], cov)
                        rows[name].setdefault(f"own_ref_{face}", []).append(
                            float(np.mean([_r(m, own) for m in per_face[face]])))
                    rows[name].setdefault(f"ref_{face}", []).append(
                        float(np.mean([_r(m, d[f"ref_map_{face}"]) for m in per_face[face]])))
                rows[name].setdefault(f"seed_{face}", []).append(_r(*per_face[face]))
            maps0[name][0].append(per_face["a"][0])
            maps0[name][1].append(per_face["b"][0])
        print(f"pair {k + 1}/{len(files)} at {time.perf_counter() - t0:.0f} s", flush=True)
    ca, cb = np.stack(chips_a), np.stack(chips_b)
    per_pair: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    table: dict[str, dict[str, float]] = {}
    for name, (ma, mb) in list(base.items()) + list(maps0.items()):
        if len(mb) != len(files):
            continue
        dl, ins = score_maps(ca, cb, np.stack(ma), np.stack(mb), model)
        per_pair[name] = (dl.per_pair_auc(), ins.per_pair_auc())
        table[name] = {"deletion": dl.auc, "insertion": ins.auc}

    def cell(v: list[float]) -> str:
        return f"{np.median(v):.3f} ({np.min(v):.3f})" if v else "-"

    def diff(name: str, other: str, col: int) -> str:
        if other not in per_pair:
            return "-"
        dd = per_pair[name][col] - per_pair[other][col]
        half = 1.96 * dd.std(ddof=1) / np.sqrt(len(dd))
        return f"{dd.mean():+.1f} [{dd.mean() - half:+.1f}, {dd.mean() + half:+.1f}]"

    print(f"\n{len(files)} pairs from {args.cache}; {time.perf_counter() - t0:.0f} s")
    print("| estimator | seed-to-seed S_A | S_B | vs paper N=ref S_A | S_B | vs own N=ref S_A | S_B |"
          " Deletion | Insertion | Del - LIME | Ins - LIME | Del - xFace | Ins - xFace |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in list(base) + names:
        if name not in table:
            continue
        row = rows.get(name, {})
        print(f"| {name} | {cell(row.get('seed_a', []))} | {cell(row.get('seed_b', []))} | "
              f"{cell(row.get('ref_a', []))} | {cell(row.get('ref_b', []))} | {cell(row.get('own_ref_a', []))} | "
              f"{cell(row.get('own_ref_b', []))} | {table[name]['deletion']:.2f} | {table[name]['insertion']:.2f} | "
              f"{diff(name, 'lime', 0)} | {diff(name, 'lime', 1)} | {diff(name, 'xface', 0)} | "
              f"{diff(name, 'xface', 1)} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"pairs": len(files), "cache": args.cache, "rows": rows,
                                              "auc": table}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="stage", required=True)
    sc = sub.add_parser("score")
    sc.add_argument("--folds", default="0")
    sc.add_argument("--pairs", type=int, default=20)
    sc.add_argument("--ref-pairs", type=int, default=0)
    sc.add_argument("--ref-masks", type=int, default=8000)
    sc.add_argument("--baselines", action="store_true")
    sc.add_argument("--limit", type=int, default=0, help="stop after the first K pairs (0: all)")
    sc.add_argument("--cache", required=True)
    ev = sub.add_parser("eval")
    ev.add_argument("--cache", required=True)
    ev.add_argument("--only", default="", help="';'-separated substrings of candidate names")
    ev.add_argument("--limit", type=int, default=0)
    ev.add_argument("--no-ref", dest="ref", action="store_false")
    ev.add_argument("--no-own-ref", dest="own_ref", action="store_false",
                    help="skip each candidate's own N = ref-masks map (the slow column)")
    ev.add_argument("--out", default="")
    args = ap.parse_args()
    score_stage(args) if args.stage == "score" else eval_stage(args)


if __name__ == "__main__":
    main()
