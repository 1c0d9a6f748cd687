"""The job record: our own account of a job (not Celery's task state, where any unknown id is
PENDING), as a frozen value and as the Redis hash that holds it.

Hash fields (all text; times are integer milliseconds since the epoch, Redis's own clock)::

    kind state done total model method params created updated started finished expires
    lease_owner lease_unit lease_expires error_status error_message cancel

and, kept in :attr:`JobRecord.extra`: ``rewrites`` (a shard or pair stored again: work done twice,
which the fault tests require to stay 0), ``requeues``/``requeue_done`` (the stuck-job sweep's
count, ``worker.sweep``).

A state moves ``queued -> running -> done | failed | cancelled``; the last three are final
(:data:`FINAL_STATES`): nothing moves a job out of them (a job asked again with ``force`` is
deleted and created anew).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError, InputError

__all__ = [
    "JobState",
    "JobKind",
    "FINAL_STATES",
    "JobError",
    "Lease",
    "JobRecord",
    "JobProgress",
    "PROGRESS_FIELDS",
]


class JobState(enum.StrEnum):
    """Where a job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether nothing moves the job on from here."""
        return self in FINAL_STATES


class JobKind(enum.StrEnum):
    """What a job computes: one explained pair, or an audit of many pairs."""

    EXPLAIN = "explain"
    AUDIT = "audit"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the ``grpc.StatusCode`` name (``errors.grpc_status``) and a message a
    person understands."""

    status: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobError:
        """The error of an exception, by the error tree's mapping (anything unexpected: INTERNAL,
        with the exception's type only, so no data of the request can leak into the record)."""
        from ..errors import FacexplainError, grpc_status

        if isinstance(exc, FacexplainError):
            message = str(exc)
        else:
            message = f"internal error ({type(exc).__name__})"
        return cls(grpc_status(exc), message[:2000])


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a unit of a job (``"job"``, ``"shard:0-64"``, ``"pair:3"``) until
    ``expires_at`` (seconds since the epoch)."""

    owner: str
    unit: str
    expires_at: float


def _text(raw: Mapping[bytes, bytes], name: str, default: str = "") -> str:
    value = raw.get(name.encode())
    return default if value is None else value.decode("utf-8", "replace")


def _ms(raw: Mapping[bytes, bytes], name: str) -> float | None:
    value = _text(raw, name)
    if not value:
        return None
    try:
        return int(value) / 1000.0
    except ValueError:
        raise BackendError(f"job record field {name} is not a time: {value[:40]!r}") from None


def _int(raw: Mapping[bytes, bytes], name: str) -> int:
    value = _text(raw, name, "0")
    try:
        return int(value)
    except ValueError:
        raise BackendError(f"job record field {name} is not an integer: {value[:40]!r}") from None


@dataclass(frozen=True)
class JobRecord:
    """One job as the store knows it.

    Attributes:
        id: the job id (a content hash for explanations and audits).
        kind: explain or audit.
        state: queued, running, done, failed or cancelled.
        done, total: progress in the job's own unit (masks of a CorrRISE job, pairs of an audit;
            ``total`` 0: not known yet).
        model, method: what the job runs (an audit's methods comma-separated).
        params: the request's parameters (plain JSON values).
        created_at, updated_at, started_at, finished_at, expires_at: seconds since the epoch
            (Redis's clock); ``started_at``/``finished_at`` None until then. Every key of the job
            disappears at ``expires_at``.
        lease: the latest worker claim (None: never claimed).
        error: why it failed (None unless failed).
        cancel_requested: a cancel was asked for (the worker stops at its next check).
    """

    id: str
    kind: JobKind
    state: JobState
    done: int
    total: int
    model: str
    method: str
    params: dict[str, Any]
    created_at: float
    updated_at: float
    expires_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease: Lease | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state.final

    @property
    def fraction(self) -> float:
        """done / total in [0, 1] (0 while the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[bytes, bytes]) -> JobRecord:
        """The record from its Redis hash (bytes to bytes); BackendError for a damaged one."""
        try:
            kind = JobKind(_text(raw, "kind"))
            state = JobState(_text(raw, "state"))
        except ValueError:
            raise BackendError(f"job {job_id}: damaged record (kind/state)") from None
        try:
            params = json.loads(_text(raw, "params", "{}"))
        except json.JSONDecodeError:
            raise BackendError(f"job {job_id}: damaged record (params)") from None
        if not isinstance(params, dict):
            raise BackendError(f"job {job_id}: damaged record (params)")
        owner = _text(raw, "lease_owner")
        lease_expires = _ms(raw, "lease_expires")
        lease = Lease(owner, _text(raw, "lease_unit"), lease_expires) if owner and lease_expires else None
        status = _text(raw, "error_status")
        error = JobError(status, _text(raw, "error_message")) if status else None
        created = _ms(raw, "created")
        expires = _ms(raw, "expires")
        if created is None or expires is None:
            raise BackendError(f"job {job_id}: damaged record (times)")
        known = {
            "kind", "state", "done", "total", "model", "method", "params", "created", "updated", "started",
            "finished", "expires", "lease_owner", "lease_unit", "lease_expires", "error_status",
            "error_message", "cancel",
        }
        extra = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()
                 if k.decode("utf-8", "replace") not in known}
        return cls(
            id=job_id,
            kind=kind,
            state=state,
            done=_int(raw, "done"),
            total=_int(raw, "total"),
            model=_text(raw, "model"),
            method=_text(raw, "method"),
            params=params,
            created_at=created,
            updated_at=_ms(raw, "updated") or created,
            expires_at=expires,
            started_at=_ms(raw, "started"),
            finished_at=_ms(raw, "finished"),
            lease=lease,
            error=error,
            cancel_requested=_text(raw, "cancel") == "1",
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (a listing, ``facexplain client jobs``)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "state": self.state.value,
            "done": self.done,
            "total": self.total,
            "model": self.model,
            "method": self.method,
            "params": self.params,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "lease": None if self.lease is None else {
                "owner": self.lease.owner, "unit": self.lease.unit, "expires_at": self.lease.expires_at
            },
            "error": None if self.error is None else {"status": self.error.status, "message": self.error.message},
            "cancel_requested": self.cancel_requested,
        }


#: The fields of a job's hash that :class:`JobProgress` reads (never ``params``, which holds a
#: whole audit's pair list).
PROGRESS_FIELDS = ("state", "done", "total", "created")


@dataclass(frozen=True)
class JobProgress:
    """Where a job is, without its parameters: what a worker checks after every unit, at a cost
    that does not grow with the request. ``created_at`` tells a recreated job of the same id
    (``force``) from the one it replaced."""

    state: JobState
    done: int
    total: int
    created_at: float

    @classmethod
    def from_fields(cls, job_id: str, values: Sequence[bytes | None]) -> JobProgress:
        """From the values of :data:`PROGRESS_FIELDS`; BackendError for a damaged record."""
        raw = {name.encode(): v for name, v in zip(PROGRESS_FIELDS, values, strict=True) if v is not None}
        try:
            state = JobState(_text(raw, "state"))
        except ValueError:
            raise BackendError(f"job {job_id}: damaged record (state)") from None
        created = _ms(raw, "created")
        if created is None:
            raise BackendError(f"job {job_id}: damaged record (times)")
        return cls(state, _int(raw, "done"), _int(raw, "total"), created)


def encode_params(params: Mapping[str, Any]) -> str:
    """``params`` as canonical JSON; InputError unless plain JSON values."""
    if not isinstance(params, Mapping):
        raise InputError(f"job parameters must be a mapping, got {type(params).__name__}")
    try:
        return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"job parameters must be plain JSON values: {e}") from None
