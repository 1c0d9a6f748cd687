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
from .geometry import (
    ARCFACE_112_FACE_BOX,
    ARCFACE_TEMPLATE_112,
    DLIB_CHIP_PADDING,
    apply_transform,
    dlib_chip_transform,
    invert_transform,
    similarity_transform,
)

__all__ = [
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "MULTIPLE_FACES",
    "FaceDetection",
    "check_detector",
    "detect_face",
    "yaw_from_landmarks",
    "landmarks_in_box",
    "dlib_face_chip",
]

#: The choices when the detector finds several faces: keep the largest, or refuse the image.
MULTIPLE_FACES = ("largest", "refuse")

#: The face detectors :func:`detect_face` knows, by name: ``"hog"`` dlib's HOG frontal detector;
#: ``"mtcnn"`` the MTCNN cascade (:mod:`.mtcnn`; any pose, its own five landmarks); ``"mmod"``
#: dlib's CNN (MMOD) detector; ``"auto"`` HOG first, MTCNN when HOG finds nothing.
DETECTORS: tuple[str, ...] = ("hog", "mtcnn", "mmod", "auto")

#: The detector used when none is named (chosen by bench/bench_detectors.py, docs/benchmarks.md).
DEFAULT_DETECTOR = "auto"

#: The smallest face MTCNN looks for, pixels (HOG at upsample 1 finds faces down to about 40 px).
MTCNN_MIN_FACE = 40


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
        pose: a rough head-pose estimate in degrees, ``{"yaw": ...}`` from the landmarks'
            asymmetry (:func:`yaw_from_landmarks`; positive: the face turns to the image's right).
        keypoints: ``(5, 2)`` image ``(x, y)`` of the detector's own five landmarks in the ArcFace
            template's semantics (eye centres, nose tip, mouth corners), or None (dlib's
            detectors give only a box; ``landmarks`` are then dlib's points).
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    faces_found: int
    upsample: int
    shape: Any = field(repr=False, compare=False)
    detector: str = DEFAULT_DETECTOR
    confidence: float | None = None
    pose: dict[str, float] | None = None
    keypoints: np.ndarray | None = None


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

    ``"hog"`` and ``"mmod"`` run at ``upsample``, and once more at ``upsample + 1`` when they find
    nothing; ``"mtcnn"`` scans its own image pyramid (faces from :data:`MTCNN_MIN_FACE` px), and
    once more with a black border when it finds nothing (tight crops);
    ``"auto"`` runs HOG at ``upsample`` and MTCNN when HOG finds nothing. Of several faces the
    largest box is chosen (on a tie, the first in the detector's order). dlib's 5 landmarks are
    found in the chosen box (for MTCNN, in the dlib-style box its landmarks imply).

    Raises:
        InputError: an unknown ``detector``.
        FaceNotFoundError: no face (the message names the detectors tried), or several faces
            with ``multiple_faces="refuse"`` (it names the count). The message starts with ``name``.
        ModelNotReadyError: the detector's weights are missing (``make setup``).
    """
    check_detector(detector)
    if detector == "auto":
        found = _hog_faces(image, [upsample])
        if not found:
            found = _mtcnn_faces(image)
        tried = f"dlib HOG detector at upsample {upsample}, then MTCNN"
    elif detector == "mtcnn":
        found = _mtcnn_faces(image)
        tried = f"MTCNN, faces from {MTCNN_MIN_FACE} px"
    elif detector == "mmod":
        found = _mmod_faces(image, [upsample, upsample + 1])
        tried = f"dlib CNN (MMOD) detector, upsample {upsample} and {upsample + 1}"
    else:
        found = _hog_faces(image, [upsample, upsample + 1])
        tried = f"dlib HOG detector, upsample {upsample} and {upsample + 1}"
    if not found:
        raise FaceNotFoundError(f"{name}: no face found ({tried})")
    if len(found) > 1 and multiple_faces == "refuse":
        raise FaceNotFoundError(
            f"{name}: {len(found)} faces found; choose one with multiple_faces='largest' "
            "(CLI: --face largest) or crop the image to one face"
        )
    face = max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    if face.keypoints is None:
        landmarks, shape = landmarks_in_box(image, face.box)
    else:
        landmarks, shape = landmarks_in_box(image, _dlib_box_from_keypoints(face.keypoints))
    eyes_nose = _eyes_nose(face.keypoints) if face.keypoints is not None else _dlib_eyes_nose(landmarks)
    return FaceDetection(
        box=face.box,
        landmarks=landmarks,
        faces_found=len(found),
        upsample=face.upsample,
        shape=shape,
        detector=face.detector,
        confidence=face.confidence,
        pose={"yaw": yaw_from_landmarks(*eyes_nose)},
        keypoints=face.keypoints,
    )


def yaw_from_landmarks(eye_a: np.ndarray, eye_b: np.ndarray, nose: np.ndarray) -> float:
    """A rough yaw, degrees, from where the nose sits between the eyes.

    With ``u`` the nose's position along the eye line (0 at the eye on the image's left, 1 at the
    other), ``yaw = asin(clip(2u - 1, -1, 1))``: 0 for a frontal face, positive when the face turns
    to the image's right, +-90 when the nose reaches an eye's column. Not a calibrated angle: it
    ignores the nose's depth, so it orders poses (frontal < half profile < profile) rather than
    measuring them.
    """
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    axis = right - left
    norm2 = float(axis @ axis)
    if norm2 <= 0.0:
        return 0.0
    u = float((nose - left) @ axis) / norm2
    return float(np.degrees(np.arcsin(np.clip(2.0 * u - 1.0, -1.0, 1.0))))


@dataclass(frozen=True)
class _Found:
    """One face of one detector, before the choice among several."""

    box: tuple[int, int, int, int]
    detector: str
    confidence: float | None
    upsample: int
    keypoints: np.ndarray | None = None


def _hog_faces(image: np.ndarray, levels: list[int]) -> list[_Found]:
    """dlib's HOG detector at the first of ``levels`` that finds a face."""
    detector = _detector()
    for level in levels:
        rects, scores, _ = detector.run(image, level, 0.0)
        if len(rects):
            return [_Found(_box(r), "hog", float(s), level) for r, s in zip(rects, scores, strict=True)]
    return []


def _mmod_faces(image: np.ndarray, levels: list[int]) -> list[_Found]:
    """dlib's CNN (MMOD) detector at the first of ``levels`` that finds a face."""
    detector = _mmod_detector()
    for level in levels:
        dets = list(detector(image, level))
        if dets:
            return [_Found(_box(d.rect), "mmod", float(d.confidence), level) for d in dets]
    return []


def _mtcnn_faces(image: np.ndarray) -> list[_Found]:
    """MTCNN's faces; when it finds none, once more on the image framed by a black border of a
    quarter of its longer side (a tight crop -- a face filling the photo, as in CFP -- leaves its
    windows no margin), with the boxes and points shifted back."""
    from .mtcnn import mtcnn_detect

    pad = 0
    faces = mtcnn_detect(image, min_face=MTCNN_MIN_FACE)
    if not faces:
        pad = max(image.shape[:2]) // 4
        framed = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        faces = mtcnn_detect(framed, min_face=MTCNN_MIN_FACE)
    return [
        _Found(
            tuple(int(round(v - pad)) for v in f.box),  # type: ignore[arg-type]
            "mtcnn",
            f.score,
            0,
            f.keypoints - pad,
        )
        for f in faces
    ]


def _box(rect: Any) -> tuple[int, int, int, int]:
    return (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))


def _dlib_box_from_keypoints(keypoints: np.ndarray) -> tuple[int, int, int, int]:
    """The box dlib's HOG detector would give a face with these ArcFace-semantics landmarks.

    The mean HOG box in the ArcFace frame (``ARCFACE_112_FACE_BOX``) mapped back through the
    similarity that takes the landmarks to the template (axis-aligned: centre and scale).
    """
    to_template = similarity_transform(keypoints, ARCFACE_TEMPLATE_112)
    back = invert_transform(to_template)
    x1, y1, x2, y2 = ARCFACE_112_FACE_BOX
    centre = apply_transform(back, np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]))[0]
    half = 0.5 * (x2 - x1) / float(np.hypot(to_template[0, 0], to_template[0, 1]))
    return (
        int(round(centre[0] - half)),
        int(round(centre[1] - half)),
        int(round(centre[0] + half)),
        int(round(centre[1] + half)),
    )


def _eyes_nose(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return keypoints[0], keypoints[1], keypoints[2]


def _dlib_eyes_nose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dlib's 5 points: two corners of one eye, two of the other, the nose base."""
    return landmarks[0:2].mean(axis=0), landmarks[2:4].mean(axis=0), landmarks[4]


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
def _mmod_detector() -> Any:
    """dlib's CNN face detector, ``mmod_human_face_detector.dat`` (loaded once)."""
    return _dlib().cnn_face_detection_model_v1(str(package_model_file("mmod_human_face_detector.dat")))


@lru_cache(maxsize=1)
def _shape_predictor() -> Any:
    """dlib's 5-point landmark predictor, ``shape_predictor_5_face_landmarks.dat`` (loaded once)."""
    return _dlib().shape_predictor(str(package_model_file("shape_predictor_5_face_landmarks.dat")))
