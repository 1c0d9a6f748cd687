"""Benchmark of the face detectors (issue 12): recall, landmark error and ms/image on this CPU.

Per detector (``--detectors``, default all of ``alignment.DETECTORS``), on the same images:

- **CFP frontal / profile**: the raw photos CFP split 01 uses (``Protocol/Pair_list_F.txt`` and
  ``Pair_list_P.txt`` of ``../shared/data/cfp-dev``); recall = share of images where a face is
  found and aligned (``Aligner(detector=...).align``, ArcFace 112 chip).
- **LFW raw**: ``../shared/data/lfw-dev/images`` (250x250), evenly spaced over the folder.
- **LFW occluded**: the same raw photos with the project's synthetic occluders
  (``occlusion.Occluder("random", seed=0)``, one kind per image) pasted on before detection. The
  occluders are drawn on the photo's ArcFace chip (they are placed from the template) and warped
  back into the photo through the chip transform of the clean photo (HOG, or MTCNN where HOG
  finds nothing); photos where neither finds the clean face are left out and counted.
- **landmark error**: the shared aligned112 LFW chips, whose five landmarks are the ArcFace
  template by construction, pasted in the middle of a 224x224 grey canvas (so the detector sees
  context); the alignment's transform maps the template points (shifted by 56) to the chip frame,
  and the error is their mean distance from the template, divided by the inter-ocular distance
  (NME). It measures the whole alignment (detector + landmarks + the map to the template).
- **ms/image**: wall time of ``Aligner.align`` (detection, landmarks, ArcFace chip) per image on
  the LFW raw photos and on the CFP profiles; one detector after the other, so note the machine's
  load (``uptime``) beside the figures and compare detectors within one run.

    .venv/bin/python bench/bench_detectors.py --limit 100 [--detectors hog,mtcnn,auto] [--json FILE]

``--limit`` caps each image set (evenly spaced); ``--mmod-limit`` caps it for the slow MMOD detector.
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

from explainer_service.alignment import (  # noqa: E402
    ARCFACE_CHIP,
    ARCFACE_TEMPLATE_112,
    DETECTORS,
    Aligner,
    apply_transform,
    invert_transform,
    warp_affine,
)
from explainer_service.errors import FaceNotFoundError  # noqa: E402
from explainer_service.images import load_image  # noqa: E402
from explainer_service.occlusion import Occluder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def spaced(items: list[Path], limit: int | None) -> list[Path]:
    """``limit`` items evenly spaced over the list (all when ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def cfp_images(which: str) -> list[Path]:
    proto = SHARED / "cfp-dev" / "Protocol" / f"Pair_list_{which}.txt"
    out = []
    for line in proto.read_text().splitlines():
        if line.strip():
            rel = line.split()[1]
            out.append((proto.parent / rel).resolve())
    return out


def occluded_lfw(paths: list[Path]) -> tuple[list[tuple[str, np.ndarray]], int]:
    """Raw LFW photos with an occluder pasted on the face; and how many were left out."""
    occluder = Occluder("random", seed=0)
    out, left_out = [], 0
    for i, path in enumerate(paths):
        img = load_image(path)
        face = None
        for det in ("hog", "mtcnn"):
            try:
                face = Aligner(detector=det, pre_aligned="never").align(img, ARCFACE_CHIP, str(path))
                break
            except FaceNotFoundError:
                continue
        if face is None:
            left_out += 1
            continue
        chip_occ, chip_mask = occluder.occlude(face.chip, i)
        h, w = img.shape[:2]
        side = max(h, w)
        back = invert_transform(face.transform)
        occ = warp_affine(chip_occ, back, side)[:h, :w]
        mask_img = np.repeat(chip_mask[:, :, None].astype(np.uint8) * 255, 3, axis=2)
        mask = warp_affine(mask_img, back, side)[:h, :w, 0] > 127
        result = img.copy()
        result[mask] = occ[mask]
        out.append((f"{path}[occluded:{occluder.kind_for(i)}]", result))
    return out, left_out


def recall(detector: str, images: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """(share found, ms per image)."""
    aligner = Aligner(detector=detector, pre_aligned="never")
    found, t0 = 0, time.perf_counter()
    for name, img in images:
        try:
            aligner.align(img, ARCFACE_CHIP, name)
            found += 1
        except FaceNotFoundError:
            pass
    return found / max(len(images), 1), 1000 * (time.perf_counter() - t0) / max(len(images), 1)


def landmark_nme(detector: str, chips: list[Path]) -> tuple[float, float, int]:
    """(mean NME, p95 NME, misses) of the alignment on aligned112 chips pasted on a canvas."""
    aligner = Aligner(detector=detector, pre_aligned="never")
    iod = float(np.linalg.norm(ARCFACE_TEMPLATE_112[0] - ARCFACE_TEMPLATE_112[1]))
    errs, misses = [], 0
    for path in chips:
        canvas = np.full((224, 224, 3), 128, np.uint8)
        canvas[56:168, 56:168] = load_image(path)
        try:
            face = aligner.align(canvas, ARCFACE_CHIP, str(path))
        except FaceNotFoundError:
            misses += 1
            continue
        mapped = apply_transform(face.transform, ARCFACE_TEMPLATE_112 + 56.0)
        errs.append(float(np.linalg.norm(mapped - ARCFACE_TEMPLATE_112, axis=1).mean()) / iod)
    if not errs:
        return float("nan"), float("nan"), misses
    return float(np.mean(errs)), float(np.percentile(errs, 95)), misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="images per set (evenly spaced)")
    ap.add_argument("--mmod-limit", type=int, default=None, help="images per set for mmod")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    lfw_all = sorted((SHARED / "lfw-dev" / "images").glob("*/*.jpg"))
    chips_all = sorted((SHARED / "lfw-dev" / "aligned112").glob("*/*.jpg"))
    sets_all = {
        "cfp_frontal": cfp_images("F"),
        "cfp_profile": cfp_images("P"),
        "lfw_raw": lfw_all,
    }
    results: dict[str, dict[str, float]] = {}
    for det in detectors:
        limit = args.mmod_limit if det == "mmod" and args.mmod_limit else args.limit
        row: dict[str, float] = {"limit": float(limit or 0)}
        for key, paths in sets_all.items():
            chosen = spaced(paths, limit)
            images = [(str(p), load_image(p)) for p in chosen]
            row[key], ms = recall(det, images)
            row[f"{key}_n"] = float(len(images))
            if key == "lfw_raw":
                row["ms_per_image_lfw"] = ms
            if key == "cfp_profile":
                row["ms_per_image_cfp_profile"] = ms
        occ, left_out = occluded_lfw(spaced(lfw_all, limit))
        row["lfw_occluded"], _ = recall(det, occ)
        row["lfw_occluded_n"], row["lfw_occluded_left_out"] = float(len(occ)), float(left_out)
        row["nme_mean"], row["nme_p95"], misses = landmark_nme(det, spaced(chips_all, limit))
        row["nme_misses"] = float(misses)
        results[det] = row
        print(det, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    cols = ["cfp_frontal", "cfp_profile", "lfw_raw", "lfw_occluded", "nme_mean", "nme_p95",
            "ms_per_image_lfw", "ms_per_image_cfp_profile"]
    print("| detector | n/set | " + " | ".join(cols) + " |")
    for det, row in results.items():
        cells = [f"{100 * row[c]:.1f} %" if c in cols[:4] else f"{row[c]:.3f}" if "nme" in c else f"{row[c]:.0f}"
                 for c in cols]
        print(f"| {det} | {int(row['lfw_raw_n'])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
