"""The Celery application of the workers, configured for tasks that may run twice, and what one
worker process keeps (the store, the models).

Broker: the job store's Redis (Celery's keys ``facexplain``, ``unacked``, ``_kombu.*`` beside our
``fx:*``). No result backend: a job's state and result live in our own records
(``explainer_service.store``), never in Celery's task state. Reliability (service-stack.md §2):

- ``task_acks_late`` and ``task_reject_on_worker_lost``: a task is acknowledged when it returns,
  so a worker killed mid-task (its process or its whole group) has the task delivered again;
- ``worker_prefetch_multiplier=1``: a worker holds one task besides the one it runs;
- Redis redelivers an unacknowledged task after ``visibility_timeout``
  (``Settings.visibility_timeout_s``), which must exceed the task time limit
  (``Settings.task_time_limit_s``: a soft limit, then a hard one 30 s later), so a task that is
  still running is never handed to a second worker by the broker;
- JSON messages carrying ids only (job id, mask range), never images.

Tasks are idempotent (``worker.explain``): duplicates and redeliveries are harmless.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals

from ..errors import InputError
from ..settings import Settings, get_settings
from ..store import DEFAULT_PREFIX, RedisJobStore
from ..store.keys import check_prefix
from .explain import WORKER_ENGINES, ModelPool, WorkerContext

__all__ = [
    "configure_app",
    "WorkerConfig",
    "worker_config",
    "process_context",
    "QUEUE",
    "SHARD_TASK",
    "JOB_TASK",
    "ENGINE_CHOICES",
    "model_threads",
]

log = logging.getLogger(__name__)

#: The queue of explain and audit tasks.
QUEUE = "facexplain"
#: Task names (the API sends them by name: ``enqueue_explain``).
SHARD_TASK = "facexplain.explain_shard"
JOB_TASK = "facexplain.explain_job"
#: auto: Triton when an address is known (argument or FACEXPLAIN_TRITON_URL), else local.
ENGINE_CHOICES = ("auto", *WORKER_ENGINES)
#: Seconds between the soft time limit (the task fails its job) and the hard one (killed).
_HARD_LIMIT_MARGIN_S = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """What the tasks of an app need besides Celery's settings.

    Attributes:
        redis_url: the job store (and broker).
        prefix: the store's key namespace.
        engine: ``local`` or ``triton`` (resolved from ``auto``).
        triton_url: Triton's HOST:PORT (engine triton).
        shard_masks: masks per CorrRISE task (``Settings.shard_masks``).
        retries: retries of a retryable failure (``Settings.task_retries``).
        lease_s: a worker's lease on a unit (``Settings.lease_s``).
        settings: the rest (timeouts, TTL, limits).
        threads: onnxruntime intra-op threads of each process's local model (None: onnxruntime's
            default, one per core; see :func:`model_threads`).
    """

    redis_url: str
    prefix: str
    engine: str
    triton_url: str | None
    shard_masks: int
    retries: int
    lease_s: float
    settings: Settings
    threads: int | None = None


def model_threads(processes: int, cores: int | None = None) -> int:
    """Intra-op threads per worker process so that ``processes`` processes share ``cores`` (default:
    the cores this process may run on) without oversubscribing them: ``cores // processes``, at
    least 1. Each process's onnxruntime would otherwise start one thread per core, and K
    processes on K cores would run K*K threads that spin and preempt each other
    (``bench/bench_audit.py --workers 2,2:0``, docs/benchmarks.md: an audit with 2 processes on 2
    cores ran 0.60-0.72 pairs/s with one thread each, 0.51-0.53 with onnxruntime's default)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise InputError(f"worker processes must be an integer >= 1, got {processes!r}")
    n = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, n // processes)


def configure_app(
    redis_url: str,
    *,
    settings: Settings | None = None,
    prefix: str = DEFAULT_PREFIX,
    engine: str = "auto",
    triton_url: str | None = None,
    threads: int | None = None,
) -> Celery:
    """The Celery app on the Redis at ``redis_url``, configured but without tasks
    (:func:`explainer_service.worker.tasks.make_app` registers them).

    ``engine``/``triton_url`` say where a worker of this app runs the models (see
    :data:`ENGINE_CHOICES`), ``threads`` how many onnxruntime threads each worker process's local
    model uses (None: onnxruntime's default); an app that only sends tasks (the API) ignores them.
    InputError for a bad engine, a Triton engine without an address, or a visibility timeout not
    longer than the task time limit.
    """
    settings = settings or get_settings()
    if engine not in ENGINE_CHOICES:
        raise InputError(f"unknown worker engine {engine!r} (available: {', '.join(ENGINE_CHOICES)})")
    url = triton_url or (settings.triton_url if engine != "local" else None)
    if engine == "triton" and not url:
        raise InputError("worker engine 'triton' needs a server address (--triton HOST:PORT or FACEXPLAIN_TRITON_URL)")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"model threads must be an integer >= 1 (or None: onnxruntime's default), got {threads!r}")
    resolved = "triton" if url and engine != "local" else "local"
    hard_limit = settings.task_time_limit_s + _HARD_LIMIT_MARGIN_S
    if settings.visibility_timeout_s <= hard_limit:
        raise InputError(
            f"FACEXPLAIN_VISIBILITY_TIMEOUT ({settings.visibility_timeout_s:g} s) must exceed the task time limit "
            f"FACEXPLAIN_TASK_TIME_LIMIT + {_HARD_LIMIT_MARGIN_S:g} s ({hard_limit:g} s), or Redis would hand a "
            "running task to a second worker"
        )
    config = WorkerConfig(
        redis_url=redis_url,
        prefix=check_prefix(prefix),
        engine=resolved,
        triton_url=url if resolved == "triton" else None,
        shard_masks=settings.shard_masks,
        retries=settings.task_retries,
        lease_s=settings.lease_s,
        settings=settings,
        threads=threads,
    )
    app = Celery("facexplain", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_time_limit_s,
        task_time_limit=hard_limit,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        enable_utc=True,
    )
    app.facexplain_config = config
    return app


def worker_config(app: Any) -> WorkerConfig:
    """The :class:`WorkerConfig` of an app built by :func:`make_app`."""
    config = getattr(app, "facexplain_config", None)
    if not isinstance(config, WorkerConfig):
        raise InputError("not a facexplain worker app (build it with worker.make_app)")
    return config


#: id(app) -> (pid, context): one context per app and process, made after the worker's fork.
_CONTEXTS: dict[int, tuple[int, WorkerContext]] = {}


def process_context(app: Any) -> WorkerContext:
    """The store, models and worker id of this process for ``app`` (made on first use in each
    process, so nothing made before a fork is used after it)."""
    entry = _CONTEXTS.get(id(app))
    pid = os.getpid()
    if entry is not None and entry[0] == pid:
        return entry[1]
    config = worker_config(app)
    store = RedisJobStore(config.redis_url, prefix=config.prefix, settings=config.settings)
    models = ModelPool(engine=config.engine, triton_url=config.triton_url, threads=config.threads)
    context = WorkerContext(store, models, worker=f"{socket.gethostname()}:{pid}", lease_s=config.lease_s)
    _CONTEXTS[id(app)] = (pid, context)
    return context


def _drop_contexts(close: bool) -> None:
    pid = os.getpid()
    for key, (owner, context) in list(_CONTEXTS.items()):
        if close and owner == pid:
            with contextlib.suppress(Exception):
                context.models.close()
            with contextlib.suppress(Exception):
                context.store.close()
        del _CONTEXTS[key]


def _after_fork(**_: Any) -> None:
    """A new pool process: forget whatever the parent made (store connections, models)."""
    _drop_contexts(close=False)


def _at_exit(**_: Any) -> None:
    """A pool process ends: close its models (Triton clients) and store connections."""
    _drop_contexts(close=True)


signals.worker_process_init.connect(_after_fork, weak=False)
signals.worker_process_shutdown.connect(_at_exit, weak=False)
