"""facexplain: saliency explanations of face verification (CorrRISE) served through Triton.

The pipeline, one module per step: ``images`` -> ``alignment`` -> ``models`` (and ``serving`` for
Triton) -> ``masks`` -> ``methods.corrrise`` -> ``correlation`` -> ``explanation`` -> ``report``;
``verification``/``calibration`` turn scores into decisions and thresholds. Below them all:
``spec`` (contract types), ``settings`` (the environment, read once) and ``errors`` (one tree,
retryable or not).
"""

from .alignment import AlignedFace, Aligner
from .errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    CancelledError,
    DeadlineExceededError,
    FaceNotFoundError,
    FacexplainError,
    InputError,
    LimitExceededError,
    ModelFormatError,
    ModelNotReadyError,
    NotFoundError,
    TransientError,
    UnknownModelError,
)
from .explanation import Explanation
from .images import decode_image, load_image
from .masks import MaskConfig, generate_masks
from .methods import list_methods
from .methods.corrrise import CorrRISE, CorrRISEConfig
from .models.base import FaceModel
from .models.registry import DEFAULT_MODEL, get_spec
from .pipeline import explain_files, explain_pair, load_face_model, open_face_model
from .results import PairResult
from .settings import Limits, Settings, get_settings
from .spec import ARCFACE_CHIP, DLIB_CHIP, ChipSpec, ModelSpec

__all__ = [
    # contract types
    "ARCFACE_CHIP",
    "DLIB_CHIP",
    "ChipSpec",
    "ModelSpec",
    # settings
    "Limits",
    "Settings",
    "get_settings",
    # errors (permanent, then transient)
    "FacexplainError",
    "InputError",
    "FaceNotFoundError",
    "LimitExceededError",
    "ModelFormatError",
    "ModelNotReadyError",
    "UnknownModelError",
    "NotFoundError",
    "AuthenticationError",
    "CancelledError",
    "BackendError",
    "TransientError",
    "BackendUnavailableError",
    "DeadlineExceededError",
    # images and alignment
    "load_image",
    "decode_image",
    "AlignedFace",
    "Aligner",
    # models
    "FaceModel",
    "DEFAULT_MODEL",
    "get_spec",
    "load_face_model",
    "open_face_model",
    # masks and methods
    "MaskConfig",
    "generate_masks",
    "CorrRISE",
    "CorrRISEConfig",
    "list_methods",
    # results
    "Explanation",
    "PairResult",
    "explain_pair",
    "explain_files",
]
