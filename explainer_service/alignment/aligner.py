"""The aligner: one image -> one face chip of either kind, with its image -> chip transform.

It decides how an image is aligned (detected, or taken as an ArcFace-aligned crop) and combines
the detector (:mod:`~explainer_service.alignment.detector`) with the geometry
(:mod:`~explainer_service.alignment.geometry`); the package docstring describes the chip kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import image_from_array, load_image
from ..spec import ChipSpec
from .detector import (
    DEFAULT_DETECTOR,
    MULTIPLE_FACES,
    FaceDetection,
    check_detector,
    detect_face,
    dlib_face_chip,
    landmarks_in_box,
)
from .geometry import (
    ARCFACE_112_FACE_BOX,
    ARCFACE_TEMPLATE_112,
    CROP_UPSAMPLE_SIDE,
    DLIB5_IN_ARCFACE_112,
    apply_transform,
    arcface_to_dlib_transform,
    compose_transforms,
    invert_transform,
    similarity_transform,
    warp_affine,
)

__all__ = ["PRE_ALIGNED", "AlignedFace", "Aligner"]

#: How an input may be taken as an ArcFace-aligned crop (see :class:`Aligner`).
PRE_ALIGNED = ("auto", "arcface", "never")


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
        landmarks: ``(k, 2)`` image ``(x, y)`` of dlib's 5 points when detected (the ArcFace chip
            of a detector with its own five points, MTCNN, is cut from those:
            ``detection.keypoints``), the ArcFace template (scaled to the crop) when pre-aligned.
        detection: the detector's result (backend, confidence, pose) when detected; None for
            pre-aligned input.
    """

    chip: np.ndarray
    spec: ChipSpec
    transform: np.ndarray
    source: str
    method: str
    faces_found: int
    face_box: tuple[int, int, int, int] | None
    landmarks: np.ndarray | None
    detection: FaceDetection | None = None

    @property
    def detector(self) -> str | None:
        """The detector that found the face, or None (pre-aligned input)."""
        return None if self.detection is None else self.detection.detector

    @property
    def confidence(self) -> float | None:
        """The detector's confidence for the face, or None (none given, or pre-aligned input)."""
        return None if self.detection is None else self.detection.confidence

    @property
    def pose(self) -> dict[str, float] | None:
        """The detector's head-pose estimate in degrees (e.g. ``{"yaw": ...}``), or None."""
        return None if self.detection is None else self.detection.pose

    def to_chip(self, points: np.ndarray) -> np.ndarray:
        """Map ``(k, 2)`` image ``(x, y)`` points to chip coordinates, ``(k, 2)``."""
        return apply_transform(self.transform, points)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map ``(k, 2)`` chip ``(x, y)`` points back to image coordinates, ``(k, 2)``."""
        return apply_transform(invert_transform(self.transform), points)


class Aligner:
    """Turns images into face chips of either kind; see the package docstring.

    Args:
        multiple_faces: ``"largest"`` picks the largest detection; ``"refuse"`` raises
            :class:`~explainer_service.errors.FaceNotFoundError` when the detector finds more
            than one face.
        upsample: dlib HOG detector upsampling (1 finds faces down to about 40 px). When nothing is
            found, detection is retried once at ``upsample + 1``.
        pre_aligned: ``"auto"`` takes a square 112x112 image as an ArcFace-aligned crop (no
            detection); ``"arcface"`` takes every input as an ArcFace-aligned square crop of any
            size; ``"never"`` always detects.
        refine_landmarks: for a dlib chip of a pre-aligned crop, find dlib's 5 landmarks inside
            the face box the template implies (``ARCFACE_112_FACE_BOX``; no detector) and cut
            dlib's own chip (default); False uses the fixed ``ARCFACE_112_TO_DLIB_150`` map.
        detector: the face detector, one of :data:`~explainer_service.alignment.DETECTORS`.

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
        detector: str = DEFAULT_DETECTOR,
    ) -> None:
        if multiple_faces not in MULTIPLE_FACES:
            raise InputError(
                f"multiple_faces must be one of {MULTIPLE_FACES}, got {multiple_faces!r}"
            )
        if (
            not isinstance(upsample, (int, np.integer))
            or isinstance(upsample, bool)
            or not 0 <= upsample <= 4
        ):
            raise InputError(f"upsample must be an integer in [0, 4], got {upsample!r}")
        if pre_aligned not in PRE_ALIGNED:
            raise InputError(f"pre_aligned must be one of {PRE_ALIGNED}, got {pre_aligned!r}")
        self.multiple_faces = multiple_faces
        self.upsample = int(upsample)
        self.pre_aligned = pre_aligned
        self.refine_landmarks = bool(refine_landmarks)
        self.detector = check_detector(detector)

    def __repr__(self) -> str:
        return (
            f"Aligner(multiple_faces={self.multiple_faces!r}, upsample={self.upsample}, "
            f"pre_aligned={self.pre_aligned!r}, detector={self.detector!r})"
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
        return detect_face(
            img,
            detector=self.detector,
            upsample=self.upsample,
            multiple_faces=self.multiple_faces,
            name=name,
        )

    # -- internals ----------------------------------------------------------------------------

    def _is_pre_aligned(self, img: np.ndarray, name: str) -> bool:
        h, w = img.shape[:2]
        if self.pre_aligned == "never":
            return False
        if self.pre_aligned == "auto":
            return bool(h == w == 112)
        if h != w:
            raise InputError(
                f"{name}: pre_aligned='arcface' needs a square ArcFace-aligned crop, got {w}x{h} px"
            )
        return True

    def _from_detection(
        self, img: np.ndarray, det: FaceDetection, spec: ChipSpec, name: str
    ) -> AlignedFace:
        if spec.kind == "dlib":
            chip, transform = dlib_face_chip(img, det.shape, spec.size)
        elif det.keypoints is not None:  # the detector's own points: the template's semantics
            transform = similarity_transform(det.keypoints, ARCFACE_TEMPLATE_112 * (spec.size / 112.0))
            chip = warp_affine(img, transform, spec.size)
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
            detection=det,
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
        side = img.shape[0]
        up = max(1, int(np.ceil(CROP_UPSAMPLE_SIDE / side)))
        big = np.asarray(Image.fromarray(img).resize((side * up, side * up), Image.Resampling.BICUBIC))
        box = ARCFACE_112_FACE_BOX * (side * up / 112.0)
        left, top, right, bottom = (int(round(v)) for v in box)
        landmarks_big, shape = landmarks_in_box(big, (left, top, right, bottom))
        chip, big_to_chip = dlib_face_chip(big, shape, spec.size)
        to_big = np.array([[up, 0.0, 0.0], [0.0, up, 0.0]])
        left, top, right, bottom = (int(round(v / up)) for v in box)
        return AlignedFace(
            chip=chip,
            spec=spec,
            transform=compose_transforms(big_to_chip, to_big),
            source=name,
            method="pre-aligned",
            faces_found=0,
            face_box=(left, top, right, bottom),
            landmarks=landmarks_big / up,
        )
