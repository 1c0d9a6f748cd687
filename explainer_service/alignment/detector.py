"""The face detector: dlib's HOG detector and 5-point landmark predictor, and dlib's own chip cut.

Everything that touches dlib is here; the geometry of alignment is in
:mod:`~explainer_service.alignment.geometry`. From a photo, :func:`detect_face` is dlib's
reference pipeline up to the landmarks (``get_frontal_face_detector()`` ->
``shape_predictor_5_face_landmarks``), :func:`dlib_face_chip` the last step
(``get_face_chip(img, shape, size, 0.25)``), returned with its image -> chip affine.

dlib and its models load lazily on first use and are cached; importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import FaceNotFoundError, InputError, ModelNotReadyError
from ..models.store import package_model_file
from .geometry import DLIB_CHIP_PADDING, dlib_chip_transform

__all__ = [
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "MULTIPLE_FACES",
    "FaceDetection",
    "check_detector",
    "detect_face",
    "landmarks_in_box",
    "dlib_face_chip",
]

#: The choices when the detector finds several faces: keep the largest, or refuse the image.
MULTIPLE_FACES = ("largest", "refuse")

#: The face detectors :func:`detect_face` knows, by name. ``"hog"``: dlib's HOG frontal detector.
DETECTORS: tuple[str, ...] = ("hog",)

#: The detector used when none is named.
DEFAULT_DETECTOR = "hog"


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """The face the detector chose in one image, with its 5 dlib landmarks.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detection, image pixels.
        landmarks: ``(5, 2)`` float64 image ``(x, y)`` of dlib's 5 landmarks.
        faces_found: how many faces the detector found at the level that found any.
        upsample: the detector upsampling level that found the faces.
        shape: dlib's ``full_object_detection`` (for ``dlib.get_face_chip``).
        detector: the name of the detector (one of :data:`DETECTORS`) that found the face.
        confidence: the detector's score for the chosen face (its own scale: a probability for
            a CNN with a softmax, a margin for HOG), or None when it gives none.
        pose: a head-pose estimate in degrees, e.g. ``{"yaw": -35.0}`` (positive: the face turns
            to the image's left), or None when the detector gives none.
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    faces_found: int
    upsample: int
    shape: Any = field(repr=False, compare=False)
    detector: str = DEFAULT_DETECTOR
    confidence: float | None = None
    pose: dict[str, float] | None = None


def check_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`DETECTORS`.

    Raises:
        InputError: an unknown name; the message lists the choices.
    """
    if detector not in DETECTORS:
        raise InputError(f"detector must be one of {', '.join(DETECTORS)}; got {detector!r}")
    return detector


def detect_face(
    image: np.ndarray,
    *,
    detector: str = DEFAULT_DETECTOR,
    upsample: int,
    multiple_faces: str,
    name: str = "<array>",
) -> FaceDetection:
    """Find the face and its 5 landmarks in an ``(H, W, 3)`` uint8 RGB image (already validated).

    ``"hog"``: the detector runs at ``upsample``, and once more at ``upsample + 1`` when it finds
    nothing; of several faces the largest box is chosen (on a tie, the first in dlib's order).

    Raises:
        InputError: an unknown ``detector``.
        FaceNotFoundError: no face at either level, or several faces with
            ``multiple_faces="refuse"``. The message starts with ``name``.
    """
    check_detector(detector)
    return _detect_hog(image, upsample=upsample, multiple_faces=multiple_faces, name=name)


def _detect_hog(image: np.ndarray, *, upsample: int, multiple_faces: str, name: str) -> FaceDetection:
    detector = _detector()
    level, rects, scores = upsample, [], []
    for level in (upsample, upsample + 1):
        found, found_scores, _ = detector.run(image, level, 0.0)
        rects, scores = list(found), [float(v) for v in found_scores]
        if rects:
            break
    if not rects:
        raise FaceNotFoundError(
            f"{name}: no face found (dlib HOG detector, upsample {upsample} and {upsample + 1})"
        )
    if len(rects) > 1 and multiple_faces == "refuse":
        raise FaceNotFoundError(
            f"{name}: {len(rects)} faces found; choose one with multiple_faces='largest' "
            "(CLI: --face largest) or crop the image to one face"
        )
    best = max(range(len(rects)), key=lambda i: rects[i].width() * rects[i].height())
    rect = rects[best]
    shape = _shape_predictor()(image, rect)
    return FaceDetection(
        box=(int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom())),
        landmarks=_landmarks(shape),
        faces_found=len(rects),
        upsample=level,
        shape=shape,
        detector="hog",
        confidence=scores[best],
    )


def landmarks_in_box(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, Any]:
    """dlib's 5 landmarks inside a given face box ``(left, top, right, bottom)`` (no detector).

    Returns:
        ``(5, 2)`` float64 image ``(x, y)`` and dlib's ``full_object_detection``.
    """
    shape = _shape_predictor()(image, _dlib().rectangle(*box))
    return _landmarks(shape), shape


def dlib_face_chip(image: np.ndarray, shape: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """dlib's face chip of one detection: ``get_face_chip(image, shape, size, 0.25)``.

    Returns:
        The chip, ``(size, size, 3)`` uint8 C-contiguous, and its ``(2, 3)`` image -> chip affine.
    """
    dlib = _dlib()
    chip = np.asarray(dlib.get_face_chip(image, shape, size, DLIB_CHIP_PADDING))
    details = dlib.get_face_chip_details(shape, size, DLIB_CHIP_PADDING)
    return np.ascontiguousarray(chip, dtype=np.uint8), dlib_chip_transform(details)


def _landmarks(shape: Any) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


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
    return _dlib().shape_predictor(str(package_model_file("shape_predictor_5_face_landmarks.dat")))
