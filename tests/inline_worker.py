"""An API server in a thread of the test process whose jobs are done by the worker library in a
second thread (no Celery, no worker process): the API's checks, the servicer and the workers'
code end to end on a real store, fast enough for the options of one request.

:class:`InlineWorker` stands for the Celery queue: each queued job id is run, in order, by the
library the tasks call (``worker.explain.run_unit`` over the job's planned units, the next waves
of an early-stopping job included; ``worker.audit.run_pair`` for each pair of an audit).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from explainer_service.api.server import BackgroundServer
from explainer_service.api.service import ApiService
from explainer_service.store import JobKind, JobStore
from explainer_service.worker import ModelPool, WorkerContext
from explainer_service.worker.audit import run_pair
from explainer_service.worker.explain import run_unit
from explainer_service.worker.plan import Unit, plan_explain, shard_masks_of

#: Masks per shard of a job without its own step (the workers' default is larger; small shards
#: make the merge run).
SHARD_MASKS = 32


class InlineWorker:
    """Runs the jobs queued to it in a thread of its own, with ``model`` (the test's, opened
    once). ``ids``: the jobs queued; ``errors``: what a job's run raised (a test asserts none)."""

    def __init__(self, store: JobStore, model: Any) -> None:
        self.store = store
        self.pool = ModelPool(engine="local")
        self.pool._models[model.spec.name] = model  # the test's model: no second load
        self.ids: list[str] = []
        self.errors: list[tuple[str, BaseException]] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="inline-worker", daemon=True)
        self._thread.start()

    def __call__(self, job_id: str) -> None:
        self.ids.append(job_id)
        self._queue.put(job_id)

    def close(self, timeout: float = 300.0) -> None:
        """Finish the queued jobs and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _main(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._run(job_id)
            except BaseException as exc:  # recorded for the test, which fails on it
                self.errors.append((job_id, exc))

    def _run(self, job_id: str) -> None:
        record = self.store.get_job(job_id)
        units: deque[Unit] = deque()
        ctx = WorkerContext(self.store, self.pool, worker=f"inline-{uuid.uuid4().hex[:6]}", lease_s=60,
                            send=lambda _record, more: units.extend(more))
        if record.kind is JobKind.AUDIT:
            for index in range(record.total):
                run_pair(ctx, job_id, index)
            return
        units.extend(plan_explain(record.method, record.total, shard_masks_of(record.params, SHARD_MASKS)))
        while units:
            run_unit(ctx, job_id, units.popleft())


@contextmanager
def inline_api(store: JobStore, model: Any) -> Iterator[tuple[str, InlineWorker]]:
    """``(address, worker)`` of an API server (local engine) over ``store`` whose jobs the
    :class:`InlineWorker` does; both stopped after."""
    worker = InlineWorker(store, model)
    try:
        with ApiService(store, engine="local", enqueue=worker) as service, BackgroundServer(service) as address:
            yield address, worker
    finally:
        worker.close()
