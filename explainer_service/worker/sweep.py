"""The stuck-job sweep: a job whose tasks are gone is sent again, or failed after a budget.

Late acknowledgement keeps a task in Redis while a worker runs it, but a task can still be out of
reach for a long time: a worker whose whole process group was killed leaves its task (and the one
it had prefetched) in kombu's ``unacked`` hash until the visibility timeout (an hour by default:
``Settings.visibility_timeout_s``); a redis-server killed mid-job makes the running task fail its
store calls and its retry cannot be published, and an append-only file written every second may
lose the latest messages; an API killed between creating a job and queueing it leaves a job that
no task names. Such a job stays ``queued`` or ``running`` with nothing working on it.

A job is *stalled* (:func:`is_stalled`) when it is not final, its record has not changed for
``stall_s`` (every claim, lease renewal, stored shard or pair touches it, and a lease lasts
``lease_s`` < ``stall_s``, so no worker holds a live lease on any of its units) and nothing waits
in the broker's queue (a backlog may hold its tasks: the sweep waits for it to drain, so a job
merely waiting its turn is never requeued nor failed). :func:`sweep` sends the stalled job's
missing units again (tasks are idempotent: a unit stored meanwhile is skipped, a unit another
worker holds is retried after its lease) and counts that in the record (``mark_requeued``: the
count restarts whenever progress moves). After ``budget`` requeues without progress the job fails
with UNAVAILABLE and a message saying what to check. A job whose cancel was asked for is marked
cancelled instead.

:class:`Sweeper` runs :func:`sweep` every ``interval_s`` in a thread of each worker's main
process (``tasks.make_app`` connects it to Celery's ``worker_ready``/``worker_shutdown``). Several
workers may sweep at once: the worst case is a unit sent twice, which the tasks absorb.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InputError
from ..store import JobError, JobKind, JobRecord, JobState
from .plan import Unit, plan_explain, shard_masks_of

__all__ = [
    "SweepPolicy",
    "SweepReport",
    "SweepStore",
    "is_stalled",
    "missing_audit_pairs",
    "missing_explain_units",
    "sweep",
    "Sweeper",
    "STALL_LEASES",
    "DEFAULT_SWEEP_BUDGET",
]

log = logging.getLogger(__name__)

#: A job is stalled after this many lease lengths without a change of its record.
STALL_LEASES = 2.0
#: Requeues without progress before a stalled job fails.
DEFAULT_SWEEP_BUDGET = 3
#: Jobs one sweep looks at (the newest first).
_SWEEP_LIMIT = 10_000


@dataclass(frozen=True)
class SweepPolicy:
    """When a job counts as stalled and how often it is sent again.

    Args:
        stall_s: seconds without a change of the job's record (> the lease, see the module doc).
        budget: requeues without progress before the job fails (>= 0).
        interval_s: seconds between two sweeps of a :class:`Sweeper` (default ``stall_s / 2``).
    """

    stall_s: float
    budget: int = DEFAULT_SWEEP_BUDGET
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.stall_s > 0:
            raise InputError(f"stall bound must be > 0 s, got {self.stall_s!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 0:
            raise InputError(f"sweep budget must be an integer >= 0, got {self.budget!r}")
        if self.interval_s < 0:
            raise InputError(f"sweep interval must be >= 0 s, got {self.interval_s!r}")
        if self.interval_s == 0:
            object.__setattr__(self, "interval_s", self.stall_s / 2)

    @classmethod
    def from_lease(cls, lease_s: float, *, budget: int = DEFAULT_SWEEP_BUDGET) -> SweepPolicy:
        """The policy of workers whose leases last ``lease_s``: stalled after
        :data:`STALL_LEASES` leases."""
        return cls(stall_s=STALL_LEASES * float(lease_s), budget=budget)

    @property
    def give_up_s(self) -> float:
        """The longest a stalled job stays unfinished before it fails (no worker progresses it):
        one stall, ``budget`` more, and a sweep interval's delay for each."""
        return (self.budget + 1) * (self.stall_s + self.interval_s)


class SweepStore(Protocol):
    """What the sweep needs of the job store (``RedisJobStore`` has it)."""

    def list_jobs(
        self, *, limit: int = 100, states: Sequence[JobState | str] | None = None, kind: JobKind | str | None = None
    ) -> list[JobRecord]: ...
    def get_pairs(self, job_id: str, *, offset: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]: ...
    def stored_shards(self, job_id: str) -> list[tuple[int, int]]: ...
    def mark_requeued(self, job_id: str) -> int: ...
    def set_state(self, job_id: str, state: JobState | str, *, error: JobError | None = None) -> JobRecord: ...


@dataclass
class SweepReport:
    """What one sweep did: ids of jobs sent again, failed, cancelled; ``waiting`` the messages
    found in the queue (> 0: nothing was looked at)."""

    waiting: int = 0
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def is_stalled(record: JobRecord, now: float, stall_s: float, waiting: int) -> bool:
    """Whether nothing is working on ``record``'s job: not final, unchanged for more than
    ``stall_s`` seconds at ``now`` (seconds since the epoch), and no message ``waiting`` in the
    queue."""
    return not record.final and waiting == 0 and now - record.updated_at > stall_s


def missing_audit_pairs(total: int, stored: Sequence[int]) -> list[int]:
    """Pair indices in [0, total) without a stored row.

    >>> missing_audit_pairs(5, [0, 2, 3])
    [1, 4]
    """
    have = set(stored)
    return [i for i in range(total) if i not in have]


def missing_explain_units(
    method: str, total: int, shard_masks: int, stored: Sequence[tuple[int, int]]
) -> list[Unit] | None:
    """The units of an explain job not stored yet (CorrRISE shards by ``shard_masks``; the whole
    pair otherwise, always "missing" since it stores no shard). None when the stored shards are
    not the plan's (a different ``FACEXPLAIN_SHARD_MASKS`` planned the job): the sweep cannot tell
    the missing ranges and leaves the job to the broker's redelivery.

    >>> missing_explain_units("corrrise", 64, 16, [(0, 16), (32, 48)])
    [Unit(lo=16, hi=32), Unit(lo=48, hi=64)]
    """
    units = plan_explain(method, total, shard_masks)
    planned = {(u.lo, u.hi) for u in units if u.sharded}
    if not units[0].sharded:
        return units
    if not set(stored) <= planned:
        return None
    have = set(stored)
    return [u for u in units if (u.lo, u.hi) not in have]


def _stored_pairs(store: SweepStore, record: JobRecord) -> list[int]:
    found: list[int] = []
    for offset in range(0, record.total, 500):
        found += [i for i, _ in store.get_pairs(record.id, offset=offset, limit=500)]
    return found


def sweep(
    store: SweepStore,
    send: Callable[[JobRecord, Sequence[Unit | int]], None],
    *,
    policy: SweepPolicy,
    waiting: int,
    shard_masks: int,
    now: float | None = None,
) -> SweepReport:
    """One pass over the unfinished jobs (see the module docstring).

    Args:
        store: the job store.
        send: sends the tasks of a job's units (:class:`Unit` of an explain job, pair indices of
            an audit); ``tasks.send_units``.
        policy: the stall bound and the budget.
        waiting: messages in the broker's queue now (> 0: the pass does nothing).
        shard_masks: masks per CorrRISE shard (the plan the API used).
        now: seconds since the epoch (default: this machine's clock).
    """
    report = SweepReport(waiting=waiting)
    if waiting > 0:
        return report
    now = time.time() if now is None else now
    for record in store.list_jobs(limit=_SWEEP_LIMIT, states=[JobState.QUEUED, JobState.RUNNING]):
        if not is_stalled(record, now, policy.stall_s, waiting):
            continue
        if record.cancel_requested:
            store.set_state(record.id, JobState.CANCELLED)
            report.cancelled.append(record.id)
            log.info("sweep: job %s was asked to cancel and nothing works on it: cancelled", record.id)
            continue
        units: Sequence[Unit | int] | None
        if record.kind is JobKind.AUDIT:
            units = missing_audit_pairs(record.total, _stored_pairs(store, record))
        else:
            units = missing_explain_units(record.method, record.total, shard_masks_of(record.params, shard_masks),
                                          store.stored_shards(record.id))
        if units is None:
            log.warning("sweep: job %s has shards of another plan (FACEXPLAIN_SHARD_MASKS differs from %d): "
                        "left to the broker's redelivery", record.id, shard_masks)
            continue
        count = store.mark_requeued(record.id)
        if count > policy.budget:
            silent = now - record.updated_at + (count - 1) * policy.stall_s
            error = JobError(
                "UNAVAILABLE",
                f"no worker made progress on job {record.id} for about {silent:.0f} s although its tasks were "
                f"sent again {count - 1} time(s): are workers running on this Redis and is their model server "
                "(Triton) up?",
            )
            store.set_state(record.id, JobState.FAILED, error=error)
            report.failed.append(record.id)
            log.warning("sweep: job %s failed: %s", record.id, error.message)
            continue
        if not units:  # every unit stored but nobody finished the job: a stored unit's task finishes it
            per_shard = shard_masks_of(record.params, shard_masks)  # an early-stopping job's step
            units = [0] if record.kind is JobKind.AUDIT else plan_explain(record.method, record.total, per_shard)[:1]
        send(record, units)
        report.requeued.append(record.id)
        log.warning("sweep: job %s %s for %.0f s: %d task(s) sent again (requeue %d of %d)", record.id,
                    record.state.value, now - record.updated_at, len(units), count, policy.budget)
    return report


class Sweeper:
    """Runs ``sweep_once()`` every ``interval_s`` seconds in a daemon thread until :meth:`stop`;
    an exception of one pass is logged and the next pass comes as planned."""

    def __init__(self, sweep_once: Callable[[], Any], interval_s: float, *, name: str = "facexplain-sweep") -> None:
        if not interval_s > 0:
            raise InputError(f"sweep interval must be > 0 s, got {interval_s!r}")
        self._sweep_once = sweep_once
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.passes = 0

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sweep_once()
            except Exception as exc:  # the store or broker may be down: try again next time
                log.warning("sweep failed (%s: %s); next in %.0f s", type(exc).__name__, exc, self.interval_s)
            self.passes += 1

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (waits for a pass in progress up to ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout)

