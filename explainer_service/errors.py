"""The one exception hierarchy of facexplain.

    FacexplainError
    ├── InputError            bad user input (file, image, option); CLI exit code 2
    │   └── FaceNotFoundError no face, or an ambiguous choice of faces
    ├── ModelFormatError      a model file that cannot be read or does not match its format
    ├── ModelNotReadyError    a model that is unknown or not yet built/imported
    └── BackendError          an inference backend (onnxruntime, Triton) failed

Every error carries a message meant for a person: it names the file or option and the problem.
Edges (CLI, gRPC, Celery) translate these into exit codes, status codes or retries.
"""

from __future__ import annotations

__all__ = [
    "FacexplainError",
    "InputError",
    "FaceNotFoundError",
    "ModelFormatError",
    "ModelNotReadyError",
    "BackendError",
]


class FacexplainError(Exception):
    """Base class of every error facexplain raises on purpose."""


class InputError(FacexplainError, ValueError):
    """Bad input from the user: an unreadable file, a wrong option, an image of the wrong size."""


class FaceNotFoundError(InputError):
    """No face was found in an image, or several were found and the policy refuses to choose."""


class ModelFormatError(FacexplainError):
    """A model file is corrupted, truncated or not of the expected format."""


class ModelNotReadyError(FacexplainError):
    """A model is unknown, or its converted files have not been built yet."""


class BackendError(FacexplainError):
    """The inference backend failed (server down, model missing, bad reply)."""
