"""The error tree: every class is told at the edges as errors.py's docstring table says.

The table below is written out by hand from that docstring (retryable, exit code, gRPC status);
a class added to errors.py without a row here fails the completeness test.
"""

from __future__ import annotations

import re

import grpc
import pytest

from explainer_service import errors
from explainer_service.errors import exit_code, grpc_status, is_retryable

#: class name -> (retryable, exit code, gRPC status name), as in errors.py's docstring
TABLE = {
    "FacexplainError": (False, 1, "INTERNAL"),
    "InputError": (False, 2, "INVALID_ARGUMENT"),
    "FaceNotFoundError": (False, 2, "INVALID_ARGUMENT"),
    "LimitExceededError": (False, 2, "RESOURCE_EXHAUSTED"),
    "ModelFormatError": (False, 2, "INVALID_ARGUMENT"),
    "ModelNotReadyError": (False, 2, "FAILED_PRECONDITION"),
    "UnknownModelError": (False, 2, "NOT_FOUND"),
    "NotFoundError": (False, 2, "NOT_FOUND"),
    "AuthenticationError": (False, 2, "UNAUTHENTICATED"),
    "CancelledError": (False, 130, "CANCELLED"),
    "BackendError": (False, 1, "INTERNAL"),
    "TransientError": (True, 75, "UNAVAILABLE"),
    "BackendUnavailableError": (True, 75, "UNAVAILABLE"),
    "DeadlineExceededError": (True, 75, "DEADLINE_EXCEEDED"),
}

#: class name -> its parent in the drawn tree
PARENTS = {
    "InputError": "FacexplainError",
    "FaceNotFoundError": "InputError",
    "LimitExceededError": "InputError",
    "ModelFormatError": "FacexplainError",
    "ModelNotReadyError": "FacexplainError",
    "UnknownModelError": "ModelNotReadyError",
    "NotFoundError": "FacexplainError",
    "AuthenticationError": "FacexplainError",
    "CancelledError": "FacexplainError",
    "BackendError": "FacexplainError",
    "TransientError": "BackendError",
    "BackendUnavailableError": "TransientError",
    "DeadlineExceededError": "TransientError",
}


def _classes() -> dict[str, type[errors.FacexplainError]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.FacexplainError)
    }


def test_the_table_covers_every_class():
    assert set(_classes()) == set(TABLE)
    assert set(errors.__all__) >= set(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_class_maps_as_documented(name):
    retryable, code, status = TABLE[name]
    exc = _classes()[name]("something went wrong")
    assert is_retryable(exc) is retryable
    assert exit_code(exc) == code
    assert grpc_status(exc) == status
    assert str(exc) == "something went wrong"


@pytest.mark.parametrize("name", sorted(PARENTS))
def test_the_tree_is_as_drawn(name):
    classes = _classes()
    assert classes[name].__mro__[1] is classes[PARENTS[name]]


def test_the_docstring_table_agrees_with_the_classes():
    """Each row of the module docstring (name, retryable, exit, status) is what the class does."""
    rows = re.findall(r"(\w+Error)\s+(yes|no)\s+(\d+)\s+([A-Z_]+)", errors.__doc__ or "")
    assert {r[0] for r in rows} == set(TABLE) - {"FacexplainError"}  # the root's row has no values
    for name, retry, code, status in rows:
        assert TABLE[name] == (retry == "yes", int(code), status), name


def test_input_errors_are_value_errors():
    """Callers that catch ValueError for bad input keep working."""
    assert isinstance(errors.InputError("x"), ValueError)
    assert isinstance(errors.LimitExceededError("x"), ValueError)


def test_every_grpc_status_is_a_real_status_code():
    names = {code.name for code in grpc.StatusCode}
    for _, _, status in TABLE.values():
        assert status in names
    for cls in _classes().values():
        assert cls.grpc_status in names


@pytest.mark.parametrize(
    ("exc", "code", "status"),
    [
        (KeyboardInterrupt(), 130, "INTERNAL"),
        (OSError(28, "No space left on device"), 1, "INTERNAL"),
        (FileNotFoundError("x"), 1, "INTERNAL"),
        (RuntimeError("a bug"), 1, "INTERNAL"),
        (ValueError("not ours"), 1, "INTERNAL"),
        (MemoryError(), 1, "INTERNAL"),
    ],
)
def test_foreign_exceptions(exc, code, status):
    assert exit_code(exc) == code
    assert grpc_status(exc) == status
    assert is_retryable(exc) is False


def test_exit_code_constants():
    assert (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_INPUT, errors.EXIT_RETRY, errors.EXIT_INTERRUPTED) == (
        0, 1, 2, 75, 130,
    )


def test_a_subclass_inherits_its_mapping():
    class Throttled(errors.TransientError):
        pass

    class BadChip(errors.InputError):
        pass

    assert (is_retryable(Throttled()), exit_code(Throttled()), grpc_status(Throttled())) == (True, 75, "UNAVAILABLE")
    assert (is_retryable(BadChip()), exit_code(BadChip()), grpc_status(BadChip())) == (False, 2, "INVALID_ARGUMENT")
