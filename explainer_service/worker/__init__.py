"""The workers: Celery tasks that compute explain jobs from the job store, in mask shards.

Modules: ``plan`` (how a job is cut into tasks, retry backoff: pure), ``explain`` (what one task
does: claim, align, compute, store, finish; failures; the per-process models), ``app`` (the
Celery app configured for idempotent tasks: acks late, redelivery of a lost worker's task,
prefetch 1, visibility timeout over the task time limit), ``tasks`` (the task shims,
:func:`make_app` and :func:`enqueue_explain`).

The API uses two names::

    app = make_app(settings.redis_url)            # sends tasks; no worker needed in the process
    enqueue_explain(app, store, job_id)           # after store.create_job(...) created the job

and a worker runs ``facexplain worker --redis URL [--triton HOST:PORT | --engine local]
[--concurrency K]`` (``cli/worker.py``). Results, progress and errors land in the store: the
job's record (``done``/``total`` counting masks), its stored shards (the running maps), its
``PairResult``; nothing is read from Celery's task state.
"""

from __future__ import annotations

from .app import ENGINE_CHOICES, JOB_TASK, QUEUE, SHARD_TASK, WorkerConfig, worker_config
from .explain import ModelPool, Outcome, WorkerContext, finish_explain, handle_failure, run_unit
from .plan import Unit, plan_explain, plan_shards, retry_delay
from .tasks import enqueue_explain, make_app

__all__ = [
    "make_app",
    "enqueue_explain",
    "WorkerConfig",
    "worker_config",
    "ENGINE_CHOICES",
    "QUEUE",
    "SHARD_TASK",
    "JOB_TASK",
    "ModelPool",
    "Outcome",
    "WorkerContext",
    "run_unit",
    "finish_explain",
    "handle_failure",
    "Unit",
    "plan_explain",
    "plan_shards",
    "retry_delay",
]
