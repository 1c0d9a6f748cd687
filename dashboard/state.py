"""The dashboard's state in one place: the API client, where the API is, and per-user values.

- The API: ``FACEXPLAIN_SERVER`` (``HOST:PORT``; default ``127.0.0.1:50051``) with the bearer
  token of ``FACEXPLAIN_TOKEN``, over TLS trusting the CA certificate (PEM) at the path
  ``FACEXPLAIN_TLS_CA`` when it is set (``facexplain dashboard`` sets all three).
- :func:`client`: one :class:`~explainer_service.api.client.FacexplainClient` per server process
  (``st.cache_resource``: one gRPC channel shared by every session), unless this session was given
  a client under :data:`CLIENT_KEY` in ``st.session_state`` (the tests give a fake there).
  Anything with the methods of :class:`DashboardClient` will do.
- :func:`attempt`: one call to the API whose error becomes a readable ``st.error`` (the status's
  message, never a traceback) and ``None``.
- Per-user values (submitted jobs, fetched results) live in ``st.session_state`` under the keys
  named here, so that a bad upload or a failed call never loses what is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import streamlit as st

from explainer_service.api.client import (
    AuditPage,
    DatasetPairImages,
    DatasetPairPage,
    FacexplainClient,
    JobInfo,
    JobUpdate,
    ModelEntry,
    Submitted,
)
from explainer_service.errors import FacexplainError, InputError
from explainer_service.methods.registry import MethodInfo
from explainer_service.results import PairResult
from explainer_service.settings import get_settings

__all__ = [
    "SERVER_ENV",
    "TOKEN_ENV",
    "TLS_CA_ENV",
    "CLIENT_KEY",
    "EXPLAIN_JOBS_KEY",
    "RESULTS_KEY",
    "REFRESH_S",
    "DashboardClient",
    "server_address",
    "client",
    "attempt",
    "error_text",
]

SERVER_ENV = "FACEXPLAIN_SERVER"
TOKEN_ENV = "FACEXPLAIN_TOKEN"
TLS_CA_ENV = "FACEXPLAIN_TLS_CA"
#: ``st.session_state`` key of a client given to this session (tests put a fake here).
CLIENT_KEY = "facexplain_client"
#: The Explain page's submitted jobs: a list of (method, job id), the second a comparison.
EXPLAIN_JOBS_KEY = "explain_jobs"
#: Fetched explanation results by job id (kept while the session lives).
RESULTS_KEY = "explain_results"
#: Seconds between two refreshes of a running job's progress.
REFRESH_S = 1.0
#: Seconds each API call of the dashboard may take.
CALL_TIMEOUT_S = 30.0

_T = TypeVar("_T")


class DashboardClient(Protocol):
    """The calls of :class:`~explainer_service.api.client.FacexplainClient` the dashboard makes
    (same names and signatures); a fake for tests implements these."""

    def list_models(self) -> list[ModelEntry]: ...

    def list_methods(self, *, model: str = "", chip_size: int = 0) -> list[MethodInfo]: ...

    def explain(
        self, image_a: bytes, image_b: bytes, *, model: str = "", method: str = "corrrise",
        params: Mapping[str, Any] | None = None, force: bool = False, names: Sequence[str] = ("", ""),
        until_agreement: float = 0.0, max_masks: int = 0, fdr_q: float = 0.0, ci_level: float = 0.0,
        detector: str = "",
    ) -> Submitted: ...

    def get_job(self, job_id: str) -> JobInfo: ...

    def watch(self, job_id: str, *, partial_maps: bool = False, timeout: float | None = None) -> Iterator[JobUpdate]:
        ...

    def get_result(self, job_id: str, *, summary_only: bool = False) -> PairResult: ...

    def submit_audit(
        self, *, pairs: Sequence[tuple[bytes, bytes, bool, str]] | None = None, dataset: str = "", model: str = "",
        methods: Sequence[tuple[str, Mapping[str, Any]]] | Sequence[str] = (), metrics: Sequence[str] = (),
        steps: int = 0, substrate: str = "", limit: int = 0, keep_maps: bool = False, force: bool = False,
        detector: str = "", fdr_q: float = 0.0, ci_level: float = 0.0,
    ) -> Submitted: ...

    def audit_result(self, job_id: str, *, page_token: str = "", page_size: int = 0, maps: bool = False) -> AuditPage:
        ...

    def audit_rows(self, job_id: str, *, page_size: int = 0, maps: bool = False) -> Iterator[dict[str, Any]]: ...

    def cancel(self, job_id: str) -> JobInfo: ...

    def delete(self, job_id: str) -> object: ...

    def list_jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 1000) -> list[JobInfo]: ...

    def list_dataset_pairs(self, dataset: str, *, page_token: str = "", page_size: int = 0) -> DatasetPairPage: ...

    def dataset_pair(self, dataset: str, index: int) -> DatasetPairImages: ...


def server_address() -> str:
    """The API's ``HOST:PORT`` (``FACEXPLAIN_SERVER``, else the default port on loopback)."""
    return get_settings().client_server


@st.cache_resource(show_spinner=False)
def _shared_client(address: str, token: str | None, tls_ca: str | None) -> FacexplainClient:
    ca = None
    if tls_ca:
        try:
            ca = Path(tls_ca).read_bytes()
        except OSError as e:
            raise InputError(f"{TLS_CA_ENV} {tls_ca}: cannot be read ({e.strerror or e})") from None
    return FacexplainClient(address, token=token, timeout=CALL_TIMEOUT_S, tls_ca=ca)


def _connection() -> tuple[str, str | None, str | None]:
    """Where and how this process reaches the API: address, token, CA file (the settings that
    ``facexplain dashboard`` sets in its environment); a malformed variable raises InputError."""
    settings = get_settings()
    return settings.client_server, settings.token, str(settings.tls_ca) if settings.tls_ca else None


def client() -> DashboardClient | None:
    """This session's client (see the module docstring); None, with the reason on the page, when
    the configured address is unusable."""
    given = st.session_state.get(CLIENT_KEY)
    if given is not None:
        return given  # type: ignore[no-any-return]
    shared: DashboardClient | None = attempt(
        "connecting to the API", lambda: _shared_client(*_connection()),
    )
    return shared


def error_text(what: str, exc: BaseException) -> str:
    """The line shown for a failed call: what was being done, then the error's own message (a
    status of the API carries one written for a person); a bug is named by its type."""
    if isinstance(exc, FacexplainError):
        text = f"{what}: {exc}"
        if exc.retryable:
            text += " (a temporary failure: try again)"
        return text
    return f"{what}: unexpected {type(exc).__name__}: {exc} (please report this)"


def attempt(what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """``fn(*args, **kwargs)``, or None after showing :func:`error_text` with ``st.error``."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # every failure is a message on the page, never a traceback
        st.error(error_text(what, exc))
        return None
