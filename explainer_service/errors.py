"""The one exception hierarchy of facexplain, and how each error is told at the edges.

    FacexplainError                     retryable?  exit  gRPC status
    ├── InputError                      no          2     INVALID_ARGUMENT   bad file, image, option
    │   ├── FaceNotFoundError           no          2     INVALID_ARGUMENT   no face / ambiguous faces
    │   └── LimitExceededError          no          2     RESOURCE_EXHAUSTED over a configured limit
    ├── ModelFormatError                no          2     INVALID_ARGUMENT   unreadable model file
    ├── ModelNotReadyError              no          2     FAILED_PRECONDITION model not built/imported
    │   └── UnknownModelError           no          2     NOT_FOUND          no model of that name
    ├── NotFoundError                   no          2     NOT_FOUND          unknown job or other object
    ├── AuthenticationError             no          2     UNAUTHENTICATED
    ├── CancelledError                  no          130   CANCELLED          a job cancelled on request
    └── BackendError                    no          1     INTERNAL           backend failed (bad reply...)
        └── TransientError              yes         75    UNAVAILABLE        may succeed if tried again
            ├── BackendUnavailableError yes         75    UNAVAILABLE        server down, not answering
            └── DeadlineExceededError   yes         75    DEADLINE_EXCEEDED  no answer within the deadline

Every error carries a message meant for a person: it names the file or option and the problem.
``retryable`` says whether the same request may succeed later unchanged (a worker retries those,
with backoff; everything else is final). The edges translate with :func:`exit_code` (CLI; 75 is
sysexits' EX_TEMPFAIL) and :func:`grpc_status` (API); neither imports grpc.
"""

from __future__ import annotations

__all__ = [
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
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_INPUT",
    "EXIT_RETRY",
    "EXIT_INTERRUPTED",
    "is_retryable",
    "exit_code",
    "grpc_status",
]

EXIT_OK = 0
#: a permanent failure of a model, backend or file system
EXIT_FAILURE = 1
#: bad input (file, option, unknown or unusable model, limit): one line names it
EXIT_INPUT = 2
#: a transient failure (server down or too slow): the same command may succeed later
EXIT_RETRY = 75
#: interrupted (Ctrl-C) or cancelled
EXIT_INTERRUPTED = 130


class FacexplainError(Exception):
    """Base class of every error facexplain raises on purpose."""

    retryable: bool = False
    exit_code: int = EXIT_FAILURE
    grpc_status: str = "INTERNAL"


class InputError(FacexplainError, ValueError):
    """Bad input from the user: an unreadable file, a wrong option, an image of the wrong size."""

    exit_code = EXIT_INPUT
    grpc_status = "INVALID_ARGUMENT"


class FaceNotFoundError(InputError):
    """No face was found in an image, or several were found and the policy refuses to choose."""


class LimitExceededError(InputError):
    """A request over a configured limit (masks, pixels, bytes, batch size...): the message names
    the limit and the setting that raises it."""

    grpc_status = "RESOURCE_EXHAUSTED"


class ModelFormatError(FacexplainError):
    """A model file is corrupted, truncated or not of the expected format."""

    exit_code = EXIT_INPUT
    grpc_status = "INVALID_ARGUMENT"


class ModelNotReadyError(FacexplainError):
    """A model is known but not usable yet (weights not imported, files not built)."""

    exit_code = EXIT_INPUT
    grpc_status = "FAILED_PRECONDITION"


class UnknownModelError(ModelNotReadyError):
    """No model of that name exists."""

    grpc_status = "NOT_FOUND"


class NotFoundError(FacexplainError):
    """An object asked for by id (a job, a result) does not exist (or no longer does)."""

    exit_code = EXIT_INPUT
    grpc_status = "NOT_FOUND"


class AuthenticationError(FacexplainError):
    """A request without valid credentials."""

    exit_code = EXIT_INPUT
    grpc_status = "UNAUTHENTICATED"


class CancelledError(FacexplainError):
    """Work stopped because it was cancelled on request."""

    exit_code = EXIT_INTERRUPTED
    grpc_status = "CANCELLED"


class BackendError(FacexplainError):
    """The inference backend failed in a way that retrying will not fix (a bad reply, a model
    missing on the server, a crash while loading)."""


class TransientError(BackendError):
    """A failure that may go away if the same request is tried again later."""

    retryable = True
    exit_code = EXIT_RETRY
    grpc_status = "UNAVAILABLE"


class BackendUnavailableError(TransientError):
    """The inference server cannot be reached, or stopped answering its liveness check."""


class DeadlineExceededError(TransientError):
    """A call to the inference server got no answer within its deadline."""

    grpc_status = "DEADLINE_EXCEEDED"


def is_retryable(exc: BaseException) -> bool:
    """Whether trying the same request again may succeed (only transient backend failures)."""
    return isinstance(exc, FacexplainError) and exc.retryable


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for an exception (see the table in this module's docstring).

    Other exceptions: KeyboardInterrupt 130; OSError 1 (a file or folder that cannot be read or
    written); anything else 1.
    """
    if isinstance(exc, FacexplainError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def grpc_status(exc: BaseException) -> str:
    """The name of the ``grpc.StatusCode`` an API answers for an exception (``"INVALID_ARGUMENT"``...).

    Errors of facexplain map by their class; anything else is ``"INTERNAL"`` (a bug, never bad
    input: bad input always raises an :class:`InputError`).
    """
    if isinstance(exc, FacexplainError):
        return exc.grpc_status
    return "INTERNAL"
