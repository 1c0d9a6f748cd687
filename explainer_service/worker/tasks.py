"""The Celery tasks: thin shims over ``worker.explain`` (parse the ids, call one function, turn
its outcome into Celery's terms), and :func:`enqueue_explain`, which plans and sends them.

- ``facexplain.explain_shard(job_id, lo, hi)``: masks [lo, hi) of a CorrRISE job;
- ``facexplain.explain_job(job_id)``: any other method, the whole pair.

Both take ``failures`` (retries spent so far on retryable errors). A unit another worker holds
(HELD) is tried again after half a lease without spending the budget; a retryable error after a
jittered exponential backoff while the budget (``Settings.task_retries``) lasts; anything else
fails the job. A task that runs over the soft time limit fails its job with DEADLINE_EXCEEDED.

Each worker's main process runs the stuck-job sweep (``worker.sweep``) every half stall bound
(two leases: 60 s by default) while it runs: jobs whose tasks were lost are sent again
(:func:`send_units`), or failed after the sweep's budget.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from celery import signals

from ..errors import InputError
from ..settings import Settings
from ..store import JobError, JobKind, JobRecord, JobStore, RedisJobStore
from ..store.keys import DEFAULT_PREFIX
from .app import JOB_TASK, QUEUE, SHARD_TASK, configure_app, process_context, worker_config
from .explain import Outcome, WorkerContext, fail_job, handle_failure, run_unit
from .plan import SHARDED_METHODS, Unit, plan_explain, shard_masks_of
from .sweep import Sweeper, SweepPolicy, SweepReport, sweep

__all__ = [
    "make_app",
    "register_tasks",
    "enqueue_explain",
    "register_audit_tasks",
    "enqueue_audit",
    "AUDIT_TASK",
    "send_units",
    "queue_waiting",
    "sweep_app",
]

log = logging.getLogger(__name__)


def make_app(
    redis_url: str,
    *,
    settings: Settings | None = None,
    prefix: str = DEFAULT_PREFIX,
    engine: str = "auto",
    triton_url: str | None = None,
    threads: int | None = None,
) -> Any:
    """The Celery app on the Redis at ``redis_url`` (see :func:`.app.configure_app`), with the
    explain and audit tasks registered."""
    app = configure_app(redis_url, settings=settings, prefix=prefix, engine=engine, triton_url=triton_url,
                        threads=threads)
    register_tasks(app)
    return app


def _run(task: Any, job_id: str, lease: str, work: Callable[[WorkerContext], Outcome], failures: int) -> str:
    """One task's unit of work (``lease`` names it in the store) with the shared failure policy:
    the time limit fails the job, retryable errors retry with backoff within the budget, others
    fail the job, a unit another worker holds is retried later."""
    from celery.exceptions import SoftTimeLimitExceeded

    config = worker_config(task.app)
    ctx = process_context(task.app)
    if ctx.send is None:  # an early-stopping job's next wave is sent from its last shard's task
        app = task.app
        ctx.send = lambda record, units: send_units(app, record, units)
    try:
        outcome = work(ctx)
    except SoftTimeLimitExceeded:
        limit = config.settings.task_time_limit_s
        fail_job(ctx.store, job_id, JobError(
            "DEADLINE_EXCEEDED",
            f"a worker task ran over the time limit of {limit:g} s (FACEXPLAIN_TASK_TIME_LIMIT)",
        ))
        return "failed"
    except Exception as exc:
        delay = handle_failure(ctx.store, job_id, exc, failures=failures, budget=config.retries)
        with contextlib.suppress(Exception):
            ctx.store.release(job_id, lease, ctx.worker)
        if delay is None:
            return "failed"
        raise task.retry(kwargs={"failures": failures + 1}, countdown=delay) from None
    if outcome is Outcome.HELD:
        raise task.retry(kwargs={"failures": failures}, countdown=max(0.5, config.lease_s / 2))
    return outcome.value


def _run_unit(task: Any, job_id: str, unit: Unit, failures: int) -> str:
    return _run(task, job_id, unit.lease, lambda ctx: run_unit(ctx, job_id, unit), failures)


def _explain_shard(task: Any, job_id: str, lo: int, hi: int, failures: int = 0) -> str:
    return _run_unit(task, str(job_id), Unit(int(lo), int(hi)), int(failures))


def _explain_job(task: Any, job_id: str, failures: int = 0) -> str:
    return _run_unit(task, str(job_id), Unit(), int(failures))


def register_tasks(app: Any) -> None:
    """Register the explain tasks on ``app`` (``make_app`` does). Retries are bounded by the
    shims themselves (``failures``), so Celery's own count is unlimited."""
    app.task(bind=True, name=SHARD_TASK, max_retries=None)(_explain_shard)
    app.task(bind=True, name=JOB_TASK, max_retries=None)(_explain_job)
    register_audit_tasks(app)


def enqueue_explain(app: Any, store: JobStore, job_id: str) -> None:
    """Send the tasks of explain job ``job_id`` (ids only, never images): mask shards of
    ``Settings.shard_masks`` for CorrRISE (the record's ``total`` masks), one task otherwise.
    Nothing is sent for a job that is already final. NotFoundError for an unknown job."""
    record = store.get_job(job_id)
    if record.final:
        return
    if record.method in SHARDED_METHODS and record.total < 1:
        raise InputError(f"job {job_id}: a {record.method} job needs its masks as total, got {record.total}")
    # an early-stopping job's total is its first wave, cut in its steps
    per_shard = shard_masks_of(record.params, worker_config(app).shard_masks)
    send_units(app, record, plan_explain(record.method, record.total, per_shard))


def send_units(app: Any, record: JobRecord, units: Sequence[Unit | int]) -> None:
    """Send the tasks of ``units`` of ``record``'s job: :class:`Unit` of an explain job (a mask
    shard or the whole pair), pair indices of an audit."""
    with app.producer_or_acquire() as producer:
        for unit in units:
            if isinstance(unit, int):
                if record.kind is not JobKind.AUDIT:
                    raise InputError(f"job {record.id}: pair {unit} of an {record.kind.value} job")
                app.send_task(AUDIT_TASK, args=[record.id, unit], producer=producer)
            elif unit.lo is not None:
                app.send_task(SHARD_TASK, args=[record.id, unit.lo, unit.hi], producer=producer)
            else:
                app.send_task(JOB_TASK, args=[record.id], producer=producer)


#: The task of one audit pair: ``facexplain.audit_pair(job_id, index)``.
AUDIT_TASK = "facexplain.audit_pair"


def _audit_pair(task: Any, job_id: str, index: int, failures: int = 0) -> str:
    from ..store.keys import lease_unit
    from .audit import run_pair

    job_id, index = str(job_id), int(index)
    return _run(task, job_id, lease_unit("pair", index=index), lambda ctx: run_pair(ctx, job_id, index),
                int(failures))


def register_audit_tasks(app: Any) -> None:
    """Register ``facexplain.audit_pair`` on ``app`` (idempotent: a second call changes nothing)."""
    if AUDIT_TASK not in app.tasks:
        app.task(bind=True, name=AUDIT_TASK, max_retries=None)(_audit_pair)


def enqueue_audit(app: Any, store: JobStore, job_id: str) -> None:
    """Send one ``facexplain.audit_pair`` task per pair of audit job ``job_id`` (its record's
    ``total``); nothing for a final job. NotFoundError for an unknown job."""
    record = store.get_job(job_id)
    if record.final:
        return
    send_units(app, record, list(range(record.total)))


def queue_waiting(app: Any) -> int:
    """Messages waiting in the broker's queue (not those a worker holds)."""
    from kombu.exceptions import ChannelError

    with app.connection_for_read() as conn:
        try:
            return int(conn.default_channel.queue_declare(QUEUE, passive=True).message_count)
        except ChannelError:  # Redis drops an empty list: no queue is an empty queue
            return 0


def sweep_app(app: Any, store: Any, *, policy: SweepPolicy | None = None) -> SweepReport:
    """One stuck-job sweep (``worker.sweep.sweep``) over ``store`` with ``app``'s queue and plan;
    the policy defaults to the app's lease (:meth:`SweepPolicy.from_lease`)."""
    config = worker_config(app)
    policy = policy or SweepPolicy.from_lease(config.lease_s)
    return sweep(store, lambda record, units: send_units(app, record, units), policy=policy,
                 waiting=queue_waiting(app), shard_masks=config.shard_masks)


#: id(app) -> the sweeper of this worker process (its main process only).
_SWEEPERS: dict[int, tuple[Sweeper, RedisJobStore]] = {}


def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """Celery's ``worker_ready``: a facexplain worker starts sweeping in its main process."""
    app = getattr(sender, "app", None)
    if getattr(app, "facexplain_config", None) is None or id(app) in _SWEEPERS:
        return
    config = worker_config(app)
    policy = SweepPolicy.from_lease(config.lease_s)
    store = RedisJobStore(config.redis_url, prefix=config.prefix, settings=config.settings)
    sweeper = Sweeper(lambda: sweep_app(app, store, policy=policy), policy.interval_s).start()
    _SWEEPERS[id(app)] = (sweeper, store)
    log.info("stuck-job sweep every %.0f s (stalled after %.0f s, %d requeues without progress)",
             policy.interval_s, policy.stall_s, policy.budget)


def _stop_sweepers(**_: Any) -> None:
    """Celery's ``worker_shutdown``: stop this process's sweepers."""
    for key, (sweeper, store) in list(_SWEEPERS.items()):
        sweeper.stop()
        with contextlib.suppress(Exception):
            store.close()
        del _SWEEPERS[key]


signals.worker_ready.connect(_start_sweeper, weak=False)
signals.worker_shutdown.connect(_stop_sweepers, weak=False)
