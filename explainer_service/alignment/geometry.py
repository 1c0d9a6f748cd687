"""Alignment geometry: the pure maths of face alignment, no detector and no dlib import.

The five-point templates and the measured constants between the ArcFace and dlib chip frames,
least-squares similarities (Umeyama 1991), ``(2, 3)`` affine transforms (apply, invert, compose),
the bilinear chip warp, and the image -> chip affine of a ``dlib.chip_details``.

Coordinates: ``(x, y)`` pixels with the *pixel-centre* convention -- integer coordinates are pixel
centres, pixel ``(row i, column j)`` sits at ``(x=j, y=i)`` and covers ``[j-0.5, j+0.5] x
[i-0.5, i+0.5]``. It is the convention of dlib's landmarks and chips and of OpenCV's ``warpAffine``.
An ArcFace frame of size ``s`` is the 112 frame scaled by ``s / 112`` about the origin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB5_IN_ARCFACE_112",
    "ARCFACE_112_TO_DLIB_150",
    "ARCFACE_112_FACE_BOX",
    "DLIB_CHIP_PADDING",
    "CROP_UPSAMPLE_SIDE",
    "similarity_transform",
    "apply_transform",
    "invert_transform",
    "compose_transforms",
    "warp_affine",
    "dlib_chip_transform",
    "arcface_to_dlib_transform",
]

#: The standard ArcFace 112x112 five-point template, (5, 2) float64 ``(x, y)``: left eye, right
#: eye, nose tip, left mouth corner, right mouth corner ("left" = left side of the picture).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.setflags(write=False)

#: Padding of dlib's face chip, as in dlib's face-recognition example (``get_face_chip(.., 0.25)``).
DLIB_CHIP_PADDING = 0.25

# ---- derived constants ----------------------------------------------------------------------
# Made by:  .venv/bin/python tools/derive_dlib_arcface_map.py   (defaults: ../shared/data/lfw-dev
# aligned112, crops upsampled 2x + 0.25 black border, fitted on 1906 crops of half the identities,
# errors measured on the other half). Residuals and the method: docs/alignment.md.

#: Mean positions of dlib's 5 landmarks (``shape_predictor_5_face_landmarks``: 0,1 outer/inner
#: corner of the eye on the picture's right; 2,3 outer/inner corner of the eye on the picture's
#: left; 4 base of the nose) in the ArcFace 112x112 frame, (5, 2) float64 ``(x, y)``. Per-image
#: spread about these means: 3.4-4.6 px rms; an ArcFace chip made from them sits 3.1 px (mean) from
#: the reference crop at the template points.
DLIB5_IN_ARCFACE_112 = np.array(
    [
        [79.2655, 53.1083],
        [65.4843, 53.7424],
        [30.5776, 53.8788],
        [44.4014, 54.0742],
        [55.3599, 80.2550],
    ],
    dtype=np.float64,
)
DLIB5_IN_ARCFACE_112.setflags(write=False)

#: Similarity from the ArcFace 112x112 frame to dlib's 150x150 face-chip frame, (2, 3) float64:
#: ``chip_xy = M[:, :2] @ arcface_xy + M[:, 2]`` (scale 1.5152, rotation 0.885 deg). Differs from
#: dlib's own per-image chip transform by 4.5 px (mean, at the landmarks, 150-px chip).
#: See :func:`arcface_to_dlib_transform` for other sizes.
ARCFACE_112_TO_DLIB_150 = np.array(
    [
        [1.5150, -0.0234, -8.4776],
        [0.0234, 1.5150, -35.8610],
    ],
    dtype=np.float64,
)
ARCFACE_112_TO_DLIB_150.setflags(write=False)
# ---------------------------------------------------------------------------------------------

#: Mean dlib HOG face box (left, top, right, bottom) in the ArcFace-112 frame, from 185 of 191
#: shared aligned112 crops (every 20th) upsampled 3x (std about 5 px per side); used to refine
#: dlib's landmarks on pre-aligned crops without running the detector.
ARCFACE_112_FACE_BOX = np.array([13.78, 28.38, 97.49, 112.09])
ARCFACE_112_FACE_BOX.setflags(write=False)
#: Crops are upsampled (integer factor) to at least this side before landmark refinement.
CROP_UPSAMPLE_SIDE = 300


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    IEEE TPAMI 13(4), 1991.

    Args:
        src, dst: ``(k, 2)`` corresponding ``(x, y)`` points, ``k >= 2``.

    Returns:
        ``(2, 3)`` float64 ``T`` with ``dst ~ T[:, :2] @ src + T[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise InputError(
            f"similarity_transform needs two (k, 2) arrays, k >= 2: {src.shape}, {dst.shape}"
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if not np.isfinite(var_s) or var_s <= 1e-12:
        raise InputError("similarity_transform: the source points coincide")
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(transform: npt.ArrayLike, points: npt.ArrayLike) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(k, 2)`` ``(x, y)`` points; returns ``(k, 2)`` float64."""
    t = np.asarray(transform, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ t[:, :2].T + t[:, 2]


def invert_transform(transform: npt.ArrayLike) -> np.ndarray:
    """The inverse of an invertible ``(2, 3)`` affine, ``(2, 3)``."""
    m = np.vstack([np.asarray(transform, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def warp_affine(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Warp an image into a ``size x size`` chip with bilinear interpolation, black outside.

    Args:
        image: ``(H, W, 3)`` uint8.
        transform: ``(2, 3)`` affine mapping image ``(x, y)`` -> chip ``(x, y)`` (pixel centres).
        size: chip side in pixels.

    Returns:
        ``(size, size, 3)`` uint8. A chip pixel whose source point falls outside the image (not
        between four image pixels) is black, as in dlib. When the warp shrinks the image, the
        source is first blurred with a Gaussian of sigma ``(1/scale - 1) / 2`` (as
        ``skimage.transform.resize`` does) so that bilinear sampling does not alias.
    """
    from scipy import ndimage

    img = np.asarray(image)
    inv = invert_transform(transform)
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(transform, dtype=np.float64)[:, :2]))))
    sigma = max(0.0, (1.0 / scale - 1.0) / 2.0) if scale > 0 else 0.0
    sigma = sigma if sigma > 0.05 else 0.0

    # Only the part of the image the chip sees (plus the blur's reach) is filtered and sampled.
    corners = apply_transform(inv, [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]])
    margin = 2 + int(np.ceil(4 * sigma))
    h, w = img.shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, w))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin + 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, h))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin + 1, 0, h))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return out
    src = img[y0:y1, x0:x1].astype(np.float64)
    if sigma > 0:
        src = ndimage.gaussian_filter(src, sigma=(sigma, sigma, 0), mode="nearest")

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2] - x0
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2] - y0
    for c in range(3):
        v = ndimage.map_coordinates(src[:, :, c], [sy, sx], order=1, mode="constant", cval=0.0)
        out[:, :, c] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    # Points outside the real image (not between four of its pixels) are black, as in dlib.
    outside = (sx + x0 < 0) | (sx + x0 > w - 1) | (sy + y0 < 0) | (sy + y0 > h - 1)
    out[outside] = 0
    return out


def dlib_chip_transform(details: Any) -> np.ndarray:
    """The image -> chip ``(2, 3)`` affine of a ``dlib.chip_details`` (pixel-centre convention).

    dlib's ``extract_image_chip`` maps the chip's corners ``(0, 0)``, ``(cols-1, 0)``,
    ``(0, rows-1)`` to the corners of ``details.rect`` rotated by ``details.angle`` about the
    rect's centre; this is the inverse of that map.
    """
    r = details.rect
    left, top, right, bottom = r.left(), r.top(), r.right(), r.bottom()
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    c, s = np.cos(details.angle), np.sin(details.angle)

    def rot(x: float, y: float) -> tuple[float, float]:
        return c * (x - cx) - s * (y - cy) + cx, s * (x - cx) + c * (y - cy) + cy

    chip_pts = np.array([[0, 0, 1], [details.cols - 1, 0, 1], [0, details.rows - 1, 1]], float)
    img_pts = np.array([rot(left, top), rot(right, top), rot(left, bottom)])
    chip_to_image = np.linalg.solve(chip_pts, img_pts).T  # (2, 3)
    return invert_transform(chip_to_image)


def arcface_to_dlib_transform(crop_size: int = 112, chip_size: int = 150) -> np.ndarray:
    """The fixed ``(2, 3)`` similarity from an ArcFace-aligned crop to dlib's face chip.

    :data:`ARCFACE_112_TO_DLIB_150` between the crop's frame (the 112 frame scaled by
    ``crop_size / 112``) and a dlib chip of ``chip_size``: dlib's chip of any size covers the same
    image rectangle, pixel centres ``0 .. size-1`` spanning it, so chip coordinates scale by
    ``(chip_size - 1) / 149``.
    """
    a = np.vstack([ARCFACE_112_TO_DLIB_150, [0.0, 0.0, 1.0]])
    pre = np.diag([112.0 / crop_size, 112.0 / crop_size, 1.0])
    k = (chip_size - 1) / 149.0
    post = np.diag([k, k, 1.0])
    out: np.ndarray = (post @ a @ pre)[:2]
    return out


def compose_transforms(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine ``outer o inner``."""
    o = np.vstack([outer, [0.0, 0.0, 1.0]])
    i = np.vstack([inner, [0.0, 0.0, 1.0]])
    out: np.ndarray = (o @ i)[:2]
    return out
