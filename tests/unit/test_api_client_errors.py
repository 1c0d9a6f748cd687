"""Status codes <-> the library's errors, both ways (api.status), as the typed client raises them.

The server answers ``errors.grpc_status(exc)`` with the error's message and never the text of an
exception that is not facexplain's; the client turns every status back into the error class of
that code, so exit codes and ``is_retryable`` hold through the API. A client whose server does
not answer gets a retryable BackendUnavailableError naming the address, quickly.
"""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from explainer_service.api.client import FacexplainClient
from explainer_service.api.server import read_token
from explainer_service.api.status import (
    JobNotFinishedError,
    PermissionDeniedError,
    error_from_status,
    status_of,
)
from explainer_service.errors import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_RETRY,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    CancelledError,
    DeadlineExceededError,
    FaceNotFoundError,
    InputError,
    LimitExceededError,
    ModelNotReadyError,
    NotFoundError,
    UnknownModelError,
    exit_code,
    grpc_status,
    is_retryable,
)

CASES = [
    ("INVALID_ARGUMENT", InputError, EXIT_INPUT, False),
    ("RESOURCE_EXHAUSTED", LimitExceededError, EXIT_INPUT, False),
    ("NOT_FOUND", NotFoundError, EXIT_INPUT, False),
    ("FAILED_PRECONDITION", JobNotFinishedError, EXIT_INPUT, False),
    ("UNAUTHENTICATED", AuthenticationError, EXIT_INPUT, False),
    ("PERMISSION_DENIED", PermissionDeniedError, EXIT_INPUT, False),
    ("UNAVAILABLE", BackendUnavailableError, EXIT_RETRY, True),
    ("DEADLINE_EXCEEDED", DeadlineExceededError, EXIT_RETRY, True),
    ("CANCELLED", CancelledError, EXIT_INTERRUPTED, False),
    ("INTERNAL", BackendError, EXIT_FAILURE, False),
    ("UNKNOWN", BackendError, EXIT_FAILURE, False),
    ("DATA_LOSS", BackendError, EXIT_FAILURE, False),
]


@pytest.mark.parametrize(("status", "cls", "code", "retryable"), CASES)
def test_each_status_becomes_the_error_of_its_code(status, cls, code, retryable):
    exc = error_from_status(status, "image a: not an image")
    assert type(exc) is cls
    assert "image a: not an image" in str(exc)
    assert exit_code(exc) == code
    assert is_retryable(exc) is retryable


@pytest.mark.parametrize(
    "status", ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "FAILED_PRECONDITION", "UNAUTHENTICATED",
               "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"],
)
def test_the_round_trip_keeps_the_status(status):
    """What the server answers for an error the client maps back to, it answers again."""
    exc = error_from_status(status, "m")
    assert status_of(exc) == (status, "m")


def test_models_are_told_apart_from_jobs():
    assert type(error_from_status("NOT_FOUND", "unknown model 'x' (known: a)")) is UnknownModelError
    assert type(error_from_status("NOT_FOUND", "no job abc")) is NotFoundError
    assert isinstance(error_from_status("FAILED_PRECONDITION", "model 'arcface_r50' has no weights"),
                      ModelNotReadyError)
    assert type(error_from_status("FAILED_PRECONDITION", "job j is running (3/10 done)")) is JobNotFinishedError


def test_unimplemented_and_transient_messages_name_the_server():
    exc = error_from_status("UNIMPLEMENTED", "Method not found!", where="API server h:1")
    assert isinstance(exc, BackendError) and "does not offer this call" in str(exc) and "h:1" in str(exc)
    assert str(error_from_status("UNAVAILABLE", "connection refused", where="API server h:1")).startswith(
        "API server h:1: ")


def test_the_server_side_status_of_errors():
    assert status_of(FaceNotFoundError("image b: no face found")) == ("INVALID_ARGUMENT", "image b: no face found")
    assert status_of(LimitExceededError("masks 1e9 over the limit"))[0] == "RESOURCE_EXHAUSTED"
    assert status_of(UnknownModelError("unknown model 'x'"))[0] == "NOT_FOUND"
    assert status_of(JobNotFinishedError("job j is queued"))[0] == "FAILED_PRECONDITION"
    assert grpc_status(JobNotFinishedError("x")) == "FAILED_PRECONDITION"
    # a bug: INTERNAL, named by type only (its text may quote request data)
    status, message = status_of(KeyError("secret-bytes"))
    assert status == "INTERNAL" and "KeyError" in message and "secret" not in message


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_the_client_raises_the_library_error_of_a_status():
    client = FacexplainClient("127.0.0.1:1")
    try:

        def refuse(request, timeout=None, metadata=None):
            raise _FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "masks 1000000000 is over the limit 100000")

        with pytest.raises(LimitExceededError, match="over the limit"):
            client._call(refuse, None)
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_does_not_answer_is_a_retryable_error_naming_it():
    address = f"127.0.0.1:{_free_port()}"
    with FacexplainClient(address, timeout=5) as client:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            client.get_job("abc")
        assert time.monotonic() - t0 < 5
    assert address in str(info.value) and is_retryable(info.value) and exit_code(info.value) == EXIT_RETRY


def test_client_arguments_are_checked():
    with pytest.raises(InputError, match="HOST:PORT"):
        FacexplainClient("")
    with pytest.raises(InputError, match="timeout"):
        FacexplainClient("127.0.0.1:1", timeout=0)
    client = FacexplainClient("127.0.0.1:1")
    try:
        with pytest.raises(InputError, match="image a: expected the bytes"):
            client.verify("a.jpg", b"x")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="params.n_masks"):
            client.explain(b"a", b"b", params={"n_masks": {"bad": 1}})
        with pytest.raises(InputError, match="state must be one of"):
            client.list_jobs(state="finished")
    finally:
        client.close()


def test_token_files_are_checked(tmp_path):
    good = tmp_path / "token"
    good.write_text("s3cret-token\n")
    assert read_token(good) == "s3cret-token"
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        read_token(tmp_path / "empty")
    (tmp_path / "spaces").write_text("two words")
    with pytest.raises(InputError, match="printable ASCII"):
        read_token(tmp_path / "spaces")
    with pytest.raises(InputError, match="cannot be read"):
        read_token(tmp_path / "missing")
