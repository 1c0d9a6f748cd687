"""Derive the fixed constants of explainer_service/alignment.py from shared LFW data; print them.

    .venv/bin/python tools/derive_dlib_arcface_map.py [--lfw ../shared/data/lfw-dev]

Two constants link dlib's landmarks and chip with the ArcFace 112x112 template:

- ``DLIB5_IN_ARCFACE_112`` (5, 2): where dlib's 5 landmarks (eye corners, base of the nose) sit, on
  average, in the ArcFace 112 frame. Used to make an ArcFace chip from a photo: similarity from the
  detected landmarks to these points.
- ``ARCFACE_112_TO_DLIB_150`` (2, 3): the similarity from the ArcFace 112 frame to dlib's 150x150
  face-chip frame. Used to make a dlib chip from an already aligned ArcFace crop.

Method. ``aligned112/`` holds LFW faces aligned to the ArcFace template by another detector, so
their template landmarks are known by construction. Each crop is upsampled (``--scale``, bicubic)
and framed by a black border (``--border``, fraction of the upsampled side) so that dlib's HOG
detector finds the face; dlib's 5-point predictor gives its landmarks, mapped back to the 112 frame
(pixel-centre convention: ``x112 = (x_up - border + 0.5) / scale - 0.5``). dlib's own chip
transform for that detection (``get_face_chip_details(shape, 150, 0.25)``) composed with the same
mapping gives the 112-frame -> chip transform of each crop.

- ``DLIB5_IN_ARCFACE_112`` = the mean of the landmarks in the 112 frame (a plain mean: the crops
  are already in one frame, and that frame is what we want to reproduce).
- ``ARCFACE_112_TO_DLIB_150`` = one least-squares similarity fitted on the pooled pairs
  (grid point of the 112 crop, its place in dlib's chip), over a 15x15 grid covering the crop and
  all fitted images: it minimises the mean squared displacement of crop pixels between the fixed
  map and dlib's per-image chip transform.

Identities are split in two (sorted names, even/odd): constants are fitted on one half and every
error is measured on the other. Printed: the constants as Python literals, and their errors
(landmark spread, template-point displacement, chip-frame landmark error, pixel differences against
dlib's chips and against the shared crops).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dlib  # noqa: E402

from explainer_service.alignment import (  # noqa: E402
    ARCFACE_TEMPLATE_112,
    DLIB_CHIP_PADDING,
    Aligner,
    apply_transform,
    dlib_chip_transform,
    invert_transform,
    similarity_transform,
    warp_affine,
)
from explainer_service.errors import FaceNotFoundError  # noqa: E402
from explainer_service.images import load_image  # noqa: E402


@dataclass
class Measured:
    """One aligned112 crop seen by dlib."""

    rel: str                   # Name/Name_000i.jpg
    landmarks112: np.ndarray   # (5, 2) dlib landmarks in the 112 frame
    to_chip150: np.ndarray     # (2, 3) 112 frame -> dlib 150 chip (dlib's own transform)
    dlib_chip: np.ndarray      # (150, 150, 3) dlib.get_face_chip of the upsampled, framed crop


def measure(path: Path, rel: str, aligner: Aligner, scale: int, border: float) -> Measured | None:
    """Detect dlib's landmarks on one upsampled, black-framed aligned112 crop."""
    crop = Image.open(path).convert("RGB")
    side = crop.size[0]
    up = np.asarray(crop.resize((side * scale, side * scale), Image.BICUBIC))
    pad = int(round(border * side * scale))
    framed = np.ascontiguousarray(np.pad(up, ((pad, pad), (pad, pad), (0, 0))))
    try:
        det = aligner.detect(framed, rel)
    except FaceNotFoundError:
        return None
    # 112 frame -> framed upsampled image (pixel-centre convention, PIL's area-aligned resize).
    k = scale * side / 112.0
    to_framed = np.array([[k, 0.0, (k - 1) / 2 + pad], [0.0, k, (k - 1) / 2 + pad]])
    from_framed = invert_transform(to_framed)
    details = dlib.get_face_chip_details(det.shape, 150, DLIB_CHIP_PADDING)
    to_chip = _compose(dlib_chip_transform(details), to_framed)
    chip = np.asarray(dlib.get_face_chip(framed, det.shape, 150, DLIB_CHIP_PADDING))
    return Measured(rel, apply_transform(from_framed, det.landmarks), to_chip, chip)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(2, 3) affine a after b."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def fit_map(items: list[Measured], n_grid: int = 15) -> np.ndarray:
    """One similarity 112 frame -> 150 chip, least squares over a grid of each crop, all images."""
    g = np.linspace(0, 111, n_grid)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    src = np.concatenate([grid] * len(items))
    dst = np.concatenate([apply_transform(m.to_chip150, grid) for m in items])
    return similarity_transform(src, dst)


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of the grey levels of two images (optionally within a mask)."""
    x = a.astype(np.float64).mean(-1)
    y = b.astype(np.float64).mean(-1)
    if mask is not None:
        x, y = x[mask], y[mask]
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-12))


def stats(v: list[float] | np.ndarray) -> str:
    v = np.asarray(v, dtype=np.float64)
    return (
        f"mean {v.mean():.3f}  median {np.median(v):.3f}  p5 {np.percentile(v, 5):.3f}  "
        f"p95 {np.percentile(v, 95):.3f}  max {v.max():.3f}  (n={len(v)})"
    )


def register(raw: np.ndarray, crop: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float]:
    """The similarity raw photo -> shared 112 crop, by direct image registration.

    The shared crops were cut from the same photos by a similarity warp, so the exact transform can
    be recovered: minimise the grey-level RMS difference (Powell, 4 parameters about the crop's
    centre, starting at ``start``) over the crop less an 8-px rim. Returns ``(T (2, 3), rms)``;
    an RMS of 1-2 grey levels is JPEG noise, a large one a failed registration.
    """
    from scipy import ndimage, optimize

    g = raw.astype(np.float64).mean(-1)
    c = crop.astype(np.float64).mean(-1)
    rim = np.zeros(c.shape, bool)
    rim[8:-8, 8:-8] = True
    ys, xs = np.mgrid[0 : c.shape[0], 0 : c.shape[1]].astype(np.float64)
    centre = np.array([[1, 0, (c.shape[1] - 1) / 2], [0, 1, (c.shape[0] - 1) / 2], [0, 0, 1]])
    start3 = np.vstack([start, [0, 0, 1]])

    def transform(p: np.ndarray) -> np.ndarray:
        s, a, tx, ty = p
        d = np.array([[np.exp(s) * np.cos(a), -np.exp(s) * np.sin(a), tx],
                      [np.exp(s) * np.sin(a), np.exp(s) * np.cos(a), ty], [0, 0, 1]])
        return (centre @ d @ np.linalg.inv(centre) @ start3)[:2]

    def cost(p: np.ndarray) -> float:
        inv = invert_transform(transform(p))
        sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        w = ndimage.map_coordinates(g, [sy, sx], order=1, mode="nearest")
        return float(((w - c)[rim] ** 2).mean())

    r = optimize.minimize(cost, np.zeros(4), method="Powell", options={"xtol": 1e-4, "ftol": 1e-7})
    return transform(r.x), float(np.sqrt(r.fun))


def end_to_end(
    val: list[Measured],
    aligned_dir: Path,
    raw_dir: Path,
    dlib5: np.ndarray,
    amap: np.ndarray,
    n: int,
) -> None:
    """Held-out checks on the raw photos, with the true raw -> crop transform from registration."""
    sel = [val[i] for i in np.linspace(0, len(val) - 1, min(n, len(val))).astype(int)]
    photo_aligner = Aligner()  # the defaults: upsample 1, largest face
    crops = [load_image(aligned_dir / m.rel) for m in sel]
    g = np.linspace(0, 111, 15)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    r: dict[str, list[float]] = {k: [] for k in (
        "arc_ncc", "arc_mad", "wrong_ncc", "shift_ncc", "dl_ncc", "dl_mad", "arc_true",
        "lm_crop_vs_raw", "map_true_grid", "map_true_lm", "reg_rms")}
    lm_raw112, lm_crop112 = [], []
    missed = failed = 0
    for i, (m, crop) in enumerate(zip(sel, crops, strict=True)):
        raw = load_image(raw_dir / m.rel)
        try:
            det = photo_aligner.detect(raw, m.rel)
        except FaceNotFoundError:
            missed += 1
            continue
        ours_t = similarity_transform(det.landmarks, dlib5)
        arc = warp_affine(raw, ours_t, 112)
        r["arc_ncc"].append(ncc(arc, crop))
        r["arc_mad"].append(np.abs(arc.astype(np.int16) - crop.astype(np.int16)).mean())
        r["wrong_ncc"].append(ncc(arc, crops[(i + len(crops) // 2) % len(crops)]))
        r["shift_ncc"].append(ncc(arc[:, :-3], crop[:, 3:]))
        ref = np.asarray(dlib.get_face_chip(raw, det.shape, 150, DLIB_CHIP_PADDING))
        ours = warp_affine(crop, amap, 150)
        inside = ours.sum(-1) > 0
        r["dl_ncc"].append(ncc(ours, ref, inside))
        r["dl_mad"].append(np.abs(ours.astype(np.int16) - ref.astype(np.int16))[inside].mean())

        true_t, rms = register(raw, crop, ours_t)
        if rms > 4.0:  # not the same face, or an occluded crop: no ground truth
            failed += 1
            continue
        r["reg_rms"].append(rms)
        tpl_in_raw = apply_transform(invert_transform(true_t), ARCFACE_TEMPLATE_112)
        r["arc_true"].append(_dist(apply_transform(ours_t, tpl_in_raw), ARCFACE_TEMPLATE_112))
        raw112 = apply_transform(true_t, det.landmarks)  # dlib's landmarks of the photo, 112 frame
        lm_raw112.append(raw112)
        lm_crop112.append(m.landmarks112)
        r["lm_crop_vs_raw"].append(_dist(raw112, m.landmarks112))
        details = dlib.get_face_chip_details(det.shape, 150, DLIB_CHIP_PADDING)
        true_map = _compose(dlib_chip_transform(details), invert_transform(true_t))
        r["map_true_grid"].append(_map_dist(amap, true_map, grid))
        r["map_true_lm"].append(_map_dist(amap, true_map, raw112))

    print(f"\n# end to end, {len(sel) - missed} held-out raw photos ({missed} without a face); "
          f"registered {len(r['reg_rms'])} ({failed} failed), residual grey RMS:\n"
          f"#     {stats(r['reg_rms'])}")
    print("#   dlib landmarks found on the upsampled crop vs on the raw photo (112 px):")
    print(f"#     per image: {stats(r['lm_crop_vs_raw'])}")
    bias = np.stack(lm_crop112).mean(0) - np.stack(lm_raw112).mean(0)
    print(f"#     difference of the means (crop - raw), per point: {np.round(bias, 3).tolist()}")
    print("#   ArcFace chip from the raw photo vs the shared aligned112 crop:")
    print(f"#     template-point error vs the true transform (112 px): {stats(r['arc_true'])}")
    print(f"#     NCC: {stats(r['arc_ncc'])}")
    print(f"#     mean |diff| (0-255): {stats(r['arc_mad'])}")
    print(f"#     NCC vs the crop of another person: {stats(r['wrong_ncc'])}")
    print(f"#     NCC vs the right crop shifted by 3 px: {stats(r['shift_ncc'])}")
    print("#   dlib chip of the crop (fixed map) vs dlib's chip of the raw photo:")
    print(f"#     crop-grid error vs the true transform (150 px): {stats(r['map_true_grid'])}")
    print(f"#     landmark error vs the true transform (150 px): {stats(r['map_true_lm'])}")
    print(f"#     NCC inside the crop: {stats(r['dl_ncc'])}")
    print(f"#     mean |diff| inside the crop (0-255): {stats(r['dl_mad'])}")


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between two (k, 2) point sets."""
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


def _map_dist(t1: np.ndarray, t2: np.ndarray, points: np.ndarray) -> float:
    """Mean distance between where two (2, 3) affines send the same (k, 2) points."""
    return _dist(apply_transform(t1, points), apply_transform(t2, points))


def fmt_array(name: str, a: np.ndarray) -> str:
    rows = ",\n".join("        [" + ", ".join(f"{x:.4f}" for x in r) + "]" for r in a)
    return f"{name} = np.array(\n    [\n{rows},\n    ],\n    dtype=np.float64,\n)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "data" / "lfw-dev")
    ap.add_argument("--scale", type=int, default=2, help="upsampling of the 112 crops (default 2)")
    ap.add_argument("--border", type=float, default=0.25, help="black border, fraction of side")
    ap.add_argument("--limit", type=int, default=0, help="images per half, at most (0: all)")
    ap.add_argument("--e2e", type=int, default=400, help="held-out raw photos, end-to-end checks")
    args = ap.parse_args(argv)

    aligned_dir, raw_dir = args.lfw / "aligned112", args.lfw / "images"
    if not aligned_dir.is_dir():
        print(f"{aligned_dir}: no such directory", file=sys.stderr)
        return 2
    names = sorted(p.name for p in aligned_dir.iterdir() if p.is_dir())
    halves: dict[str, list[str]] = {"fit": [], "val": []}
    for i, name in enumerate(names):
        half = "fit" if i % 2 == 0 else "val"
        halves[half] += [f"{name}/{f.name}" for f in sorted((aligned_dir / name).glob("*.jpg"))]
    if args.limit:
        for half in halves:
            v = halves[half]
            idx = np.linspace(0, len(v) - 1, min(args.limit, len(v))).astype(int)
            halves[half] = [v[i] for i in idx]

    # The detector as alignment.py runs it on such a crop: upsample 0, then 1 if needed.
    aligner = Aligner(upsample=0, pre_aligned="never")
    t0 = time.time()
    measured: dict[str, list[Measured]] = {}
    for half, rels in halves.items():
        got = [measure(aligned_dir / r, r, aligner, args.scale, args.border) for r in rels]
        measured[half] = [m for m in got if m is not None]
        print(f"# {half}: dlib found a face in {len(measured[half])} of {len(rels)} crops")
    print(f"# detection: {time.time() - t0:.1f} s")
    fit, val = measured["fit"], measured["val"]

    # ---- DLIB5_IN_ARCFACE_112 ----------------------------------------------------------------
    pts = np.stack([m.landmarks112 for m in fit])  # (n, 5, 2)
    dlib5 = pts.mean(0)
    print("\n# dlib's 5 landmarks in the ArcFace 112 frame (fit half):")
    for j in range(5):
        sd = pts[:, j].std(0)
        rad = np.sqrt(((pts[:, j] - dlib5[j]) ** 2).sum(-1))
        print(f"#   point {j}: mean ({dlib5[j, 0]:.3f}, {dlib5[j, 1]:.3f})  sd x {sd[0]:.3f} "
              f"y {sd[1]:.3f}  rms radial {np.sqrt((rad ** 2).mean()):.3f} px")
    print(fmt_array("DLIB5_IN_ARCFACE_112", dlib5))

    vpts = np.stack([m.landmarks112 for m in val])
    print(f"# held-out rms distance of landmarks to the means: "
          f"{np.sqrt(((vpts - dlib5) ** 2).sum(-1).mean()):.3f} px")
    # How far an ArcFace chip made from dlib's landmarks sits from the reference crop: the
    # similarity landmarks -> means, applied to the template points of the crop (held-out half).
    disp = []
    for m in val:
        s = similarity_transform(m.landmarks112, dlib5)
        disp.append(_dist(apply_transform(s, ARCFACE_TEMPLATE_112), ARCFACE_TEMPLATE_112))
    print("# held-out template-point displacement of the dlib-landmark alignment, px (112 frame):")
    print(f"#   {stats(disp)}")

    # ---- ARCFACE_112_TO_DLIB_150 --------------------------------------------------------------
    amap = fit_map(fit)
    lm_map = similarity_transform(
        np.concatenate([m.landmarks112 for m in fit]),
        np.concatenate([apply_transform(m.to_chip150, m.landmarks112) for m in fit]),
    )
    sc = np.sqrt(np.linalg.det(amap[:, :2]))
    ang = np.degrees(np.arctan2(amap[1, 0], amap[0, 0]))
    print(f"\n# ArcFace 112 -> dlib 150 chip: scale {sc:.5f}, rotation {ang:.4f} deg")
    print(fmt_array("ARCFACE_112_TO_DLIB_150", amap))
    g = np.linspace(0, 111, 15)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    print(f"# pooled-landmark fit differs from the grid fit by "
          f"{np.abs(apply_transform(lm_map, grid) - apply_transform(amap, grid)).max():.3f} px "
          "max over the crop")
    lm_err, grid_err, mad, mad_in = [], [], [], []
    for m in val:
        lm_err.append(_map_dist(amap, m.to_chip150, m.landmarks112))
        grid_err.append(_map_dist(amap, m.to_chip150, grid))
        crop = load_image(aligned_dir / m.rel)
        ours = warp_affine(crop, amap, 150)
        diff = np.abs(ours.astype(np.int16) - m.dlib_chip.astype(np.int16))
        mad.append(diff.mean())
        inside = (ours.sum(-1) > 0) & (m.dlib_chip.sum(-1) > 0)
        mad_in.append(diff[inside].mean())
    print("# held-out, fixed map vs dlib's chip transform of the upsampled crop (150 chip px):")
    print(f"#   landmark error: {stats(lm_err)}")
    print(f"#   crop-grid error: {stats(grid_err)}")
    print(f"#   chip mean |diff| (0-255), whole chip: {stats(mad)}")
    print(f"#   chip mean |diff| (0-255), where both non-black: {stats(mad_in)}")

    # ---- end to end on the raw photos (held-out) ----------------------------------------------
    if args.e2e and raw_dir.is_dir():
        end_to_end(val, aligned_dir, raw_dir, dlib5, amap, args.e2e)
    print(f"# total {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
