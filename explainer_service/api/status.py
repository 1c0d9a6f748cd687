"""gRPC status codes <-> facexplain errors, both ways, without importing grpc.

The server answers an exception with ``errors.grpc_status(exc)`` and its message (:func:`status_of`);
the typed client turns a status back into the library's error of that code (:func:`error_from_status`),
so a caller of :class:`~explainer_service.api.client.FacexplainClient` catches the same classes
as a caller of the library, and the CLI's exit codes follow (bad input 2, retry 75...).

The API adds two errors, both FAILED_PRECONDITION: :class:`JobNotFinishedError`, a request about a
job that is not in the state it needs (GetResult on a queued, running, failed or cancelled job),
and :class:`DatasetsNotAllowedError`, a dataset call to a server started without ``--dataset-root``.
"""

from __future__ import annotations

from ..errors import (
    EXIT_INPUT,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    CancelledError,
    DeadlineExceededError,
    FacexplainError,
    InputError,
    LimitExceededError,
    ModelNotReadyError,
    NotFoundError,
    UnknownModelError,
    grpc_status,
)

__all__ = ["JobNotFinishedError", "DatasetsNotAllowedError", "PermissionDeniedError", "status_of", "error_from_status", "internal_message", "printable"]


class JobNotFinishedError(FacexplainError):
    """A job is not in the state a request needs (its result asked for before it succeeded)."""

    exit_code = EXIT_INPUT
    grpc_status = "FAILED_PRECONDITION"


class DatasetsNotAllowedError(FacexplainError):
    """A call about a dataset on the server, which allows none (it was started without
    ``--dataset-root``)."""

    exit_code = EXIT_INPUT
    grpc_status = "FAILED_PRECONDITION"


class PermissionDeniedError(AuthenticationError):
    """The server refused the credentials' rights (PERMISSION_DENIED)."""

    grpc_status = "PERMISSION_DENIED"


def internal_message(exc: BaseException) -> str:
    """What a caller is told about an exception that is not facexplain's (a bug): its type only,
    never its text, which may quote request data."""
    return f"internal error ({type(exc).__name__}); the server's log has the details"


def printable(text: str) -> str:
    """``text`` with every character that is not printable (control characters, a newline, an
    escape sequence's ESC) written as its Python escape: a message that quotes request data (a
    file name, a dataset path) cannot drive the terminal that shows it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def status_of(exc: BaseException) -> tuple[str, str]:
    """``(status name, message)`` the API answers for ``exc``: facexplain's errors by their class
    with their own message (written for a person, non-printable characters escaped); anything else
    INTERNAL, named by type only."""
    if isinstance(exc, FacexplainError):
        return grpc_status(exc), printable(str(exc)) or type(exc).__name__
    return "INTERNAL", internal_message(exc)


#: How the message of a DatasetsNotAllowedError starts (the client tells it by this).
_NO_DATASETS = "this server allows no dataset"

_BY_STATUS: dict[str, type[FacexplainError]] = {
    "INVALID_ARGUMENT": InputError,
    "OUT_OF_RANGE": InputError,
    "RESOURCE_EXHAUSTED": LimitExceededError,
    "NOT_FOUND": NotFoundError,
    "FAILED_PRECONDITION": JobNotFinishedError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "UNAVAILABLE": BackendUnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "CANCELLED": CancelledError,
    "ABORTED": BackendUnavailableError,
}


def error_from_status(status: str, message: str, *, where: str = "") -> FacexplainError:
    """The library's error for a status a server answered (``status``: a ``grpc.StatusCode``
    name). An unknown model (NOT_FOUND whose message names a model) is an UnknownModelError, a
    model not ready (FAILED_PRECONDITION about a model) a ModelNotReadyError, a server without
    dataset roots (FAILED_PRECONDITION "this server allows no dataset...") a DatasetsNotAllowedError;
    INTERNAL, UNKNOWN, UNIMPLEMENTED and the rest are BackendError. ``where`` (e.g. the server's
    address) prefixes the message of transient failures, which are about the connection."""
    cls = _BY_STATUS.get(status, BackendError)
    text = message or status
    if status == "NOT_FOUND" and text.startswith("unknown model"):
        return UnknownModelError(text)
    if status == "FAILED_PRECONDITION" and text.startswith("model"):
        return ModelNotReadyError(text)
    if status == "FAILED_PRECONDITION" and text.startswith(_NO_DATASETS):
        return DatasetsNotAllowedError(text)
    if status == "UNIMPLEMENTED":
        return BackendError(f"{where + ': ' if where else ''}the server does not offer this call ({text})")
    if cls is BackendUnavailableError and where:
        text = f"{where}: {text}"
    return cls(text)
