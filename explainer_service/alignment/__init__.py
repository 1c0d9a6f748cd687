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

Modules: :mod:`.geometry` (the pure maths: templates, similarities, affines, the chip warp; no
dlib), :mod:`.detector` (dlib's detector, landmark predictor and chip cut, loaded lazily on first
use and cached, so importing this package is cheap) and :mod:`.aligner` (:class:`Aligner`, which
combines them). This front re-exports their public names.
"""

from ..spec import ARCFACE_CHIP, DLIB_CHIP, ChipSpec
from .aligner import PRE_ALIGNED, AlignedFace, Aligner
from .detector import DEFAULT_DETECTOR, DETECTORS, MULTIPLE_FACES, FaceDetection, detect_face
from .geometry import (
    ARCFACE_112_FACE_BOX,
    ARCFACE_112_TO_DLIB_150,
    ARCFACE_TEMPLATE_112,
    CROP_UPSAMPLE_SIDE,
    DLIB5_IN_ARCFACE_112,
    DLIB_CHIP_PADDING,
    apply_transform,
    arcface_to_dlib_transform,
    compose_transforms,
    dlib_chip_transform,
    invert_transform,
    similarity_transform,
    warp_affine,
)

__all__ = [
    # the aligner
    "Aligner",
    "AlignedFace",
    "PRE_ALIGNED",
    "MULTIPLE_FACES",
    # chip kinds (defined in spec)
    "ChipSpec",
    "DLIB_CHIP",
    "ARCFACE_CHIP",
    # the detector
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "FaceDetection",
    "detect_face",
    # geometry
    "ARCFACE_TEMPLATE_112",
    "DLIB5_IN_ARCFACE_112",
    "ARCFACE_112_TO_DLIB_150",
    "ARCFACE_112_FACE_BOX",
    "DLIB_CHIP_PADDING",
    "CROP_UPSAMPLE_SIDE",
    "similarity_transform",
    "warp_affine",
    "apply_transform",
    "invert_transform",
    "compose_transforms",
    "dlib_chip_transform",
    "arcface_to_dlib_transform",
]
