"""Masks spent by early stopping (issue 11 §2) against the paper's fixed N = 500, and the maps' r
against a converged reference.

For K matched LFW pairs (aligned chips, the default model in-process), one seeded CorrRISE run per
pair draws the library's 64-mask steps (``CorrRISE.run_shard`` / ``resume_shard``, bit-exact with
``attribute_until``) up to ``--max-masks`` and applies ``attribute_until``'s rule at every step
(``predicted_agreement``): for each R of ``--agreements`` the masks used are the first step whose
predicted agreement reaches R (or ``--max-masks``), and the map is ``finish_until`` of that prefix,
exactly what ``facexplain explain --until-agreement R --max-masks M`` writes. The fixed map is the
paper's N = 500 (same seed). The reference is the paper's estimator at N = ``--ref-masks`` with
another seed (independent masks). Reported per setting: masks used (median, min, max), the
Pearson r of S_A and S_B with the reference (median, minimum), and the predicted agreement
reached. ``--check`` runs ``attribute_until`` itself on the first pair and compares.

``--cache DIR`` takes the pairs and their references from ``bench_corrrise_plus_faithfulness.py``'s
cache instead (its files holding a reference, in order, at most ``--pairs``): the same estimator,
N and seed (the paper's CorrRISE, seed 100), so the reference's forward passes are not spent again.

Usage: nice -n 5 .venv/bin/python bench/bench_early_stopping.py [--pairs 20] [--max-masks 4000]
       [--agreements 0.9,0.95] [--ref-masks 8000] [--ref-pairs 20] [--check] [--cache DIR]
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

from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.masks import MaskConfig  # noqa: E402
from explainer_service.methods.corrrise import DEFAULT_UNTIL_STEP, CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402

FIXED = 500


def r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over pixels."""
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


def trajectory(model, a, b, *, seed: int, max_masks: int, agreements: list[float]) -> dict[float, dict]:
    """For each R, the explanation ``attribute_until(R, max_masks)`` returns, from one run of steps."""
    method = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=max_masks, seed=seed)))
    out: dict[float, dict] = {}
    shard = None
    done = 0
    while done < max_masks and len(out) < len(agreements):
        stop = min(done + DEFAULT_UNTIL_STEP, max_masks)
        shard = method.run_shard(a, b, 0, stop) if shard is None else method.resume_shard(a, b, shard, stop)
        done = stop
        reached = method.predicted_agreement(method.finish(shard))
        for target in agreements:
            if target not in out and ((reached is not None and reached >= target) or done == max_masks):
                e = method.finish_until(shard, agreement=target, max_masks=max_masks, step=DEFAULT_UNTIL_STEP,
                                        reached=reached)
                out[target] = {"masks": e.masks, "reached": reached, "s_a": e.s_a, "s_b": e.s_b}
    return out


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--max-masks", type=int, default=4000)
    ap.add_argument("--agreements", default="0.9,0.95")
    ap.add_argument("--ref-masks", type=int, default=8000)
    ap.add_argument("--ref-pairs", type=int, default=None, help="pairs with a reference (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="attribute_until itself on the first pair")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "early_stopping.json"))
    ap.add_argument("--cache", default="", help="pairs and N = 8,000 references from the faithfulness cache")
    args = ap.parse_args()
    agreements = [float(x) for x in args.agreements.split(",")]

    model = load_face_model()
    cached: list[dict[str, np.ndarray]] = []
    if args.cache:
        files = sorted(Path(args.cache).glob("pair*.npz"))
        cached = [d for d in (dict(np.load(f)) for f in files) if "ref_map_a" in d][: args.pairs]
        if not cached:
            raise SystemExit(f"{args.cache} holds no pair with a reference")
        chips_a = [d["chip_a"] for d in cached]
        chips_b = [d["chip_b"] for d in cached]
        args.ref_masks = len(cached[0]["ref_sa"])
    else:
        prep = prepare_pairs(read_dataset(f"lfw-aligned:{ROOT.parent / 'shared' / 'data' / 'lfw-dev'}"),
                             model, pairs=args.pairs)
        chips_a, chips_b = list(prep.chips_a), list(prep.chips_b)
    ref_pairs = len(chips_a) if args.ref_pairs is None else args.ref_pairs
    settings = [f"until {t}" for t in agreements] + [f"fixed {FIXED}"]
    rows: dict[str, dict[str, list[float]]] = {s: {"masks": [], "r_a": [], "r_b": [], "reached": []} for s in settings}
    t0 = time.perf_counter()
    for i, (a, b) in enumerate(zip(chips_a, chips_b, strict=True)):
        runs = trajectory(model, a, b, seed=args.seed, max_masks=args.max_masks, agreements=agreements)
        fixed = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=FIXED, seed=args.seed))).attribute(a, b)
        if args.check and i == 0:
            for target in agreements:
                method = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=args.max_masks, seed=args.seed)))
                e = method.attribute_until(a, b, agreement=target)
                assert e.masks == runs[target]["masks"] and np.array_equal(e.s_a, runs[target]["s_a"]), target
        ref: tuple[np.ndarray, np.ndarray] | None = None
        if cached:
            ref = cached[i]["ref_map_a"], cached[i]["ref_map_b"]
        elif i < ref_pairs:
            e_ref = CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=args.ref_masks, seed=args.seed + 100))
                             ).attribute(a, b)
            ref = e_ref.s_a, e_ref.s_b
        fixed_reached = CorrRISE.predicted_agreement(fixed)
        for name, run in [*((f"until {t}", runs[t]) for t in agreements),
                          (f"fixed {FIXED}", {"masks": FIXED, "reached": fixed_reached, "s_a": fixed.s_a,
                                              "s_b": fixed.s_b})]:
            row = rows[name]
            row["masks"].append(run["masks"])
            row["reached"].append(np.nan if run["reached"] is None else run["reached"])
            if ref is not None:
                row["r_a"].append(r(run["s_a"], ref[0]))
                row["r_b"].append(r(run["s_b"], ref[1]))
        print(f"pair {i + 1}/{len(chips_a)}: " + ", ".join(
            f"{s} {rows[s]['masks'][-1]}" for s in settings) + f" ({time.perf_counter() - t0:.0f} s)", flush=True)

    result = {
        "command": " ".join(sys.argv),
        "machine": platform.processor() or platform.machine(),
        "model": model.spec.name,
        "pairs": len(chips_a),
        "ref_pairs": ref_pairs,
        "ref_masks": args.ref_masks,
        "pairs_from": args.cache or "lfw-aligned prepare_pairs",
        "max_masks": args.max_masks,
        "seconds": time.perf_counter() - t0,
        "settings": {s: {k: summary(v) for k, v in row.items() if v} for s, row in rows.items()},
        "raw": {s: {k: [float(x) for x in v] for k, v in row.items()} for s, row in rows.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\n| setting | masks median (min-max) | r S_A vs ref median / min | r S_B vs ref median / min "
          "| predicted agreement median |")
    print("|---|---|---|---|---|")
    for s in settings:
        st = result["settings"][s]
        m = st["masks"]
        ra, rb = st.get("r_a"), st.get("r_b")
        cell_a = "-" if ra is None else f"{ra['median']:.3f} / {ra['min']:.3f}"
        cell_b = "-" if rb is None else f"{rb['median']:.3f} / {rb['min']:.3f}"
        print(f"| {s} | {m['median']:.0f} ({m['min']:.0f}-{m['max']:.0f}) | {cell_a} | {cell_b} "
              f"| {st['reached']['median']:.3f} |")
    print(f"\n{len(chips_a)} pairs in {result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
