"""facexplain: saliency explanations of face verification (CorrRISE) served through Triton.

The pipeline, one module per step: ``images`` -> ``alignment`` -> ``models`` (and ``serving`` for
Triton) -> ``masks`` -> ``methods.corrrise`` -> ``correlation`` -> ``explanation`` -> ``report``;
``verification``/``calibration`` turn scores into decisions and thresholds.
"""

from .alignment import AlignedFace, Aligner
from .errors import (
    BackendError,
    FaceNotFoundError,
    FacexplainError,
    InputError,
    ModelFormatError,
    ModelNotReadyError,
)
from .explanation import Explanation
from .images import load_image
from .masks import MaskConfig, generate_masks
from .methods.corrrise import CorrRISE, CorrRISEConfig
from .models.base import FaceModel
from .models.registry import DEFAULT_MODEL, get_spec
from .spec import ARCFACE_CHIP, DLIB_CHIP, ChipSpec, ModelSpec
from .pipeline import explain_files, load_face_model, open_face_model

__all__ = [
    "ARCFACE_CHIP",
    "DLIB_CHIP",
    "AlignedFace",
    "Aligner",
    "ChipSpec",
    "BackendError",
    "FaceNotFoundError",
    "FacexplainError",
    "InputError",
    "ModelFormatError",
    "ModelNotReadyError",
    "Explanation",
    "load_image",
    "MaskConfig",
    "generate_masks",
    "CorrRISE",
    "CorrRISEConfig",
    "FaceModel",
    "DEFAULT_MODEL",
    "ModelSpec",
    "get_spec",
    "explain_files",
    "load_face_model",
    "open_face_model",
]
