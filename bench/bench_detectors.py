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
- **ms/image**: wall time of ``Aligner.align`` (detection, landmarks, ArcFace chip) per image, per
  set (not counting reading the JPEG); one detector after the other, so note the machine's load
  (recorded at start and end in the JSON) beside the figures and compare detectors within one run.

``--demo-rounds N`` instead times ``make demo``'s job (``facexplain explain`` of the demo pair,
500 masks, default engine) N times with ``--detector hog`` and N with ``auto``, alternating, and the
alignment alone of the two demo photos per detector.

The JSON lists, per detector and set, the images where no face was found (``<set>_missed``).

    .venv/bin/python bench/bench_detectors.py [--detectors hog,mtcnn,auto] [--sets cfp_profile,lfw_raw]
        [--limit N] [--limits cfp_profile=all,lfw_raw=500] [--mmod-limit N] [--json FILE]

``--limit`` caps each image set (evenly spaced; default: all images); ``--limits`` sets a cap per
set; ``--mmod-limit`` caps every set for the slow MMOD detector. The occluder of a photo is drawn
from the photo's index in the whole LFW folder, so a subset sees the same occluders as the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
#: The image sets, in the order they run.
SETS = ("cfp_frontal", "cfp_profile", "lfw_raw", "lfw_occluded", "nme")


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


def occluded_lfw(
    paths: list[Path], index: dict[Path, int], left_out: list[str]
) -> Iterator[tuple[str, np.ndarray]]:
    """Raw LFW photos with an occluder pasted on the face, one at a time; the photos where neither
    HOG nor MTCNN finds the clean face are appended to ``left_out``. The occluder of a photo is
    drawn from its index in the whole sorted folder (``index``), so a subset draws the same ones."""
    occluder = Occluder("random", seed=0)
    for path in paths:
        img = load_image(path)
        face = None
        for det in ("hog", "mtcnn"):
            try:
                face = Aligner(detector=det, pre_aligned="never").align(img, ARCFACE_CHIP, str(path))
                break
            except FaceNotFoundError:
                continue
        if face is None:
            left_out.append(str(path))
            continue
        i = index[path]
        chip_occ, chip_mask = occluder.occlude(face.chip, i)
        h, w = img.shape[:2]
        side = max(h, w)
        back = invert_transform(face.transform)
        occ = warp_affine(chip_occ, back, side)[:h, :w]
        mask_img = np.repeat(chip_mask[:, :, None].astype(np.uint8) * 255, 3, axis=2)
        mask = warp_affine(mask_img, back, side)[:h, :w, 0] > 127
        result = img.copy()
        result[mask] = occ[mask]
        yield f"{path}[occluded:{occluder.kind_for(i)}]", result


def recall(detector: str, images: Iterable[tuple[str, np.ndarray]]) -> tuple[float, float, int, list[str]]:
    """(share found, ms per image, images, names of the images where no face was found).

    The time is that of ``Aligner.align`` alone (detection, landmarks, ArcFace chip), not of
    reading the JPEG.
    """
    aligner = Aligner(detector=detector, pre_aligned="never")
    found, n, spent, missed = 0, 0, 0.0, []
    for name, img in images:
        n += 1
        t0 = time.perf_counter()
        try:
            aligner.align(img, ARCFACE_CHIP, name)
            found += 1
        except FaceNotFoundError:
            missed.append(name)
        spent += time.perf_counter() - t0
    return found / max(n, 1), 1000 * spent / max(n, 1), n, missed


def landmark_nme(detector: str, chips: list[Path]) -> tuple[float, float, list[str]]:
    """(mean NME, p95 NME, names of the chips missed) of the alignment on aligned112 chips pasted
    on a canvas."""
    aligner = Aligner(detector=detector, pre_aligned="never")
    iod = float(np.linalg.norm(ARCFACE_TEMPLATE_112[0] - ARCFACE_TEMPLATE_112[1]))
    errs, missed = [], []
    for path in chips:
        canvas = np.full((224, 224, 3), 128, np.uint8)
        canvas[56:168, 56:168] = load_image(path)
        try:
            face = aligner.align(canvas, ARCFACE_CHIP, str(path))
        except FaceNotFoundError:
            missed.append(str(path))
            continue
        mapped = apply_transform(face.transform, ARCFACE_TEMPLATE_112 + 56.0)
        errs.append(float(np.linalg.norm(mapped - ARCFACE_TEMPLATE_112, axis=1).mean()) / iod)
    if not errs:
        return float("nan"), float("nan"), missed
    return float(np.mean(errs)), float(np.percentile(errs, 95)), missed


def demo_timing(rounds: int, detectors: tuple[str, ...] = ("hog", "auto")) -> dict[str, Any]:
    """``make demo``'s job (``facexplain explain A B --masks 500`` on the demo pair, default engine)
    run ``rounds`` times per detector, alternating, with ``--detector`` each way; and the alignment
    alone of the two demo photos (in-process, 20 times each) per detector. Wall seconds."""
    import subprocess
    import tempfile

    from explainer_service.demo import make_demo_pair
    from explainer_service.spec import DLIB_CHIP

    out: dict[str, Any] = {d: {"explain_s": [], "align_ms": []} for d in detectors}
    with tempfile.TemporaryDirectory(prefix="facexplain-demo-") as tmp:
        a, b = make_demo_pair(Path(tmp) / "inputs")
        imgs = [load_image(a), load_image(b)]
        for det in detectors:
            aligner = Aligner(detector=det)
            found = [aligner.align(img, DLIB_CHIP).detector for img in imgs]
            t0 = time.perf_counter()
            for _ in range(20):
                for img in imgs:
                    aligner.align(img, DLIB_CHIP)
            out[det]["align_ms"] = 1000 * (time.perf_counter() - t0) / 40
            out[det]["found_by"] = found
        for r in range(rounds):
            for det in detectors if r % 2 == 0 else detectors[::-1]:
                cmd = [str(ROOT / ".venv" / "bin" / "facexplain"), "explain", str(a), str(b),
                       "--out", str(Path(tmp) / f"out-{det}-{r}"), "--masks", "500", "--detector", det]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                out[det]["explain_s"].append(time.perf_counter() - t0)
                print(f"demo explain --detector {det}: {out[det]['explain_s'][-1]:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return out


def parse_limits(text: str | None, default: int | None) -> dict[str, int | None]:
    """``set=N,set=all`` -> a limit per set (``all``: no limit); sets not named get ``default``."""
    limits: dict[str, int | None] = {s: default for s in SETS}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in SETS:
            raise SystemExit(f"--limits: unknown set {key!r} (sets: {', '.join(SETS)})")
        limits[key] = None if value.strip() == "all" else int(value)
    return limits


def _short(name: str) -> str:
    """An image name relative to ../shared/data (shorter in the JSON)."""
    return name.replace(str(SHARED) + "/", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="images per set (evenly spaced; default all)")
    ap.add_argument("--limits", default=None, help="per set: cfp_profile=all,lfw_raw=500 (overrides --limit)")
    ap.add_argument("--mmod-limit", type=int, default=None, help="images per set for mmod")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--sets", default=",".join(SETS), help=f"which of {', '.join(SETS)}")
    ap.add_argument("--demo-rounds", type=int, default=0,
                    help="only time make demo's explain with --detector hog and auto, this many times each")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.demo_rounds:
        meta = {"command": " ".join(sys.argv), "load_start": os.getloadavg(), "cpus": os.cpu_count()}
        timing = demo_timing(args.demo_rounds)
        meta["load_end"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "demo": timing}, indent=1))
        hog, auto = (float(np.median(timing[d]["explain_s"])) for d in ("hog", "auto"))
        print(f"demo explain median: hog {hog:.1f} s, auto {auto:.1f} s, auto/hog {auto / hog:.3f}; "
              f"alignment of the two photos: hog {timing['hog']['align_ms']:.0f} ms, "
              f"auto {timing['auto']['align_ms']:.0f} ms per image")
        return
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in SETS:
            raise SystemExit(f"--sets: unknown set {s!r} (sets: {', '.join(SETS)})")
    lfw_all = sorted((SHARED / "lfw-dev" / "images").glob("*/*.jpg"))
    chips_all = sorted((SHARED / "lfw-dev" / "aligned112").glob("*/*.jpg"))
    photos = {"cfp_frontal": cfp_images("F"), "cfp_profile": cfp_images("P"), "lfw_raw": lfw_all}
    results: dict[str, dict[str, Any]] = {}
    meta = {"command": " ".join(sys.argv), "load_start": os.getloadavg(), "cpus": os.cpu_count()}
    for det in detectors:
        limits = parse_limits(args.limits, args.mmod_limit if det == "mmod" and args.mmod_limit else args.limit)
        row: dict[str, Any] = {}
        for key in sets:
            t_set = time.perf_counter()
            if key in photos:
                chosen = spaced(photos[key], limits[key])
                images: Iterable[tuple[str, np.ndarray]] = ((str(p), load_image(p)) for p in chosen)
                row[key], row[f"{key}_ms"], row[f"{key}_n"], missed = recall(det, images)
            elif key == "lfw_occluded":
                left: list[str] = []
                chosen = spaced(lfw_all, limits[key])
                row[key], row[f"{key}_ms"], row[f"{key}_n"], missed = recall(
                    det, occluded_lfw(chosen, {p: i for i, p in enumerate(lfw_all)}, left))
                row["lfw_occluded_left_out"] = [_short(n) for n in left]
            else:
                nme_mean, nme_p95, missed = landmark_nme(det, spaced(chips_all, limits[key]))
                row["nme_mean"], row["nme_p95"] = nme_mean, nme_p95
                row["nme_n"] = len(spaced(chips_all, limits[key]))
            row[f"{key}_missed"] = [_short(n) for n in missed]
            print(det, key, json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                        for k, v in row.items() if k.startswith(key[:8])}),
                  f"({time.perf_counter() - t_set:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
        results[det] = row
    meta["load_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"load average at start {meta['load_start']}, at end {meta['load_end']}")
    print("| detector | " + " | ".join(f"{s} (n)" for s in sets) + " |")
    for det, row in results.items():
        cells = []
        for s in sets:
            if s == "nme":
                cells.append(f"{row['nme_mean']:.3f} / p95 {row['nme_p95']:.3f} ({row['nme_n']})")
            else:
                cells.append(f"{100 * row[s]:.2f} % ({row[f'{s}_n']}), {row[f'{s}_ms']:.0f} ms")
        print(f"| {det} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
