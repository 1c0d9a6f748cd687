"""An API server in a thread of the test process (local engine) whose new jobs are recorded, not
run: the tests of the API's checks, caching and conversions that need no worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from explainer_service.api.server import BackgroundServer, ServerConfig
from explainer_service.api.service import ApiService
from explainer_service.store import JobStore


class RecordingQueue:
    """Stands for the Celery queue: records the ids of the jobs the API queues."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, job_id: str) -> None:
        self.ids.append(job_id)


@contextmanager
def in_process_api(store: JobStore, config: ServerConfig | None = None) -> Iterator[tuple[str, RecordingQueue]]:
    """``(address, queue)`` of an API server over ``store``, stopped (its models closed) after."""
    queue = RecordingQueue()
    with ApiService(store, engine="local", enqueue=queue) as service, \
            BackgroundServer(service, config) as address:
        yield address, queue
