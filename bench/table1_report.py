"""Markdown of Table 1 from bench/gpu_eval.py's JSON: AUCs with 95 % intervals per scenario, and
CorrRISE's paired differences to each method (same pairs, so far tighter than the intervals).

Usage: .venv/bin/python bench/table1_report.py bench/results/table1_gpu_h100.json [--steps 11]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NAMES = {"corrrise": "CorrRISE", "rise": "RISE", "lime": "LIME", "xface": "xFace", "minplus": "MinPlus",
         "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}
SCEN = {"lfw": "LFW", "cfp-fp": "CFP-FP", "lfw-occluded": "LFW-occluded"}


def paired(x: list[float], y: list[float]) -> tuple[float, float]:
    d = np.asarray(x) - np.asarray(y)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(len(d)))


def report(result: dict, steps: str) -> str:
    scen = [s for s in SCEN if s in result["scenarios"]]
    methods = list(result["methods"])
    rows = {s: result["scenarios"][s]["steps"][steps] for s in scen}
    pairs = ", ".join(f"{SCEN[s]} {result['scenarios'][s]['pairs']}" for s in scen)
    out = [f"Pairs: {pairs}; {steps} steps. AUC x100 [95 % interval over pairs]; best in bold.", ""]
    head = "| method | " + " | ".join(f"{SCEN[s]} Deletion | {SCEN[s]} Insertion" for s in scen) + " |"
    out += [head, "|---" * (1 + 2 * len(scen)) + "|"]
    best = {s: (min(rows[s][m]["deletion"] for m in methods), max(rows[s][m]["insertion"] for m in methods))
            for s in scen}
    for m in methods:
        cells = []
        for s in scen:
            r = rows[s][m]
            for key, b in (("deletion", best[s][0]), ("insertion", best[s][1])):
                v = f"{r[key]:.2f}"
                lo, hi = r[f"{key}_ci95"]
                cells.append(f"{'**' + v + '**' if r[key] == b else v} [{lo:.2f}, {hi:.2f}]")
        out.append(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + " |")
    if "corrrise" in methods:
        out += ["", "CorrRISE minus each method on the same pairs (mean +- 95 % half-width; Deletion: negative "
                "favours CorrRISE, Insertion: positive favours CorrRISE):", ""]
        out += ["| vs | " + " | ".join(f"{SCEN[s]} Deletion | {SCEN[s]} Insertion" for s in scen) + " |",
                "|---" * (1 + 2 * len(scen)) + "|"]
        for m in methods:
            if m == "corrrise":
                continue
            cells = []
            for s in scen:
                for key in ("deletion", "insertion"):
                    mean, half = paired(rows[s]["corrrise"][f"{key}_per_pair"], rows[s][m][f"{key}_per_pair"])
                    cells.append(f"{mean:+.2f} +- {half:.2f}")
            out.append(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--steps", default="11")
    args = ap.parse_args()
    print(report(json.loads(Path(args.json).read_text()), args.steps))


if __name__ == "__main__":
    main()
