"""Change notifications of the job store and the event-driven WatchJob, on a real redis-server
and a real gRPC server (in a thread of this process).

Every write that changes a job publishes on its channel and wakes the watchers of that job only
(not those of another job or another store's prefix); a listener without Redis stays down and
its watchers fall back to polling; WatchJob ends within moments of the terminal state even with
a poll period of 30 s (the notification woke it), still ends when the change comes without a
notification (after the fallback period), and idle watchers hold no thread each.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from explainer_service.api.client import FacexplainClient
from explainer_service.api.pb import service_pb2, service_pb2_grpc
from explainer_service.api.server import BackgroundServer, ServerConfig
from explainer_service.api.service import ApiService
from explainer_service.methods.corrrise import ShardResult
from explainer_service.store import JobState, RedisJobStore
from explainer_service.store.events import JobEvents
from tests.inprocess_api import RecordingQueue

WAKE_BOUND_S = 5.0  # generous: the machine is shared; without a notification these waits are 30 s


def _job(store: RedisJobStore, total: int = 4) -> str:
    job_id = uuid.uuid4().hex
    store.create_job(job_id, "explain", model="m", method="corrrise", total=total, inputs={"a": b"a", "b": b"b"})
    return job_id


async def _until_live(events: JobEvents) -> None:
    deadline = time.monotonic() + 30
    while not events.live:
        assert time.monotonic() < deadline, "the listener did not subscribe within 30 s"
        await asyncio.sleep(0.02)


def test_each_write_wakes_the_watchers_of_its_job_only(job_store: RedisJobStore, redis_server: Any):
    other_store = RedisJobStore(redis_server.url, prefix=f"o{uuid.uuid4().hex[:8]}", timeout_s=5)
    job, bystander = _job(job_store), _job(job_store)
    twin = uuid.uuid4().hex  # the same id under another prefix: another store's job
    other_store.create_job(twin, "explain", total=1, inputs={"a": b"a"})
    shard = _shard()

    writes = [
        ("claim moves it to running", lambda: job_store.claim(job, "shard:0-4", "w", lease_s=30)),
        ("a stored shard", lambda: job_store.put_shard(job, shard)),
        ("progress", lambda: job_store.report_progress(job, 4)),
        ("cancel asked", lambda: job_store.request_cancel(job)),
        ("a state", lambda: job_store.set_state(job, JobState.CANCELLED)),
        ("delete", lambda: job_store.delete_job(job)),
    ]

    async def main() -> None:
        events = JobEvents.for_store(job_store)
        assert events is not None
        try:
            async with events.subscribe(job) as waiter, events.subscribe(bystander) as idle, \
                    events.subscribe(twin) as foreign:
                await _until_live(events)
                for what, write in writes:
                    waiter.clear()
                    t0 = time.monotonic()
                    await asyncio.to_thread(write)
                    assert await waiter.wait(WAKE_BOUND_S), f"{what}: no notification"
                    assert time.monotonic() - t0 < WAKE_BOUND_S
                await asyncio.to_thread(other_store.set_state, twin, JobState.RUNNING)
                await asyncio.sleep(0.3)
                assert idle.wakeups == 1 and foreign.wakeups == 1  # only the one at subscribing
                assert events.watched == 3
            assert events.watched == 0
        finally:
            await events.aclose()

    try:
        asyncio.run(main())
    finally:
        other_store.delete_job(twin)
        other_store.close()


def _shard() -> ShardResult:
    from explainer_service.methods import build
    from explainer_service.methods.corrrise import CorrRISE
    from tests.toy import ToyModel, toy_pair

    method = build("corrrise", ToyModel(), n_masks=4, seed=0, patches=4)
    assert isinstance(method, CorrRISE)
    a, b = toy_pair()
    return method.run_shard(a, b, 0, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_listener_without_redis_stays_down_and_its_watchers_time_out():
    async def main() -> None:
        events = JobEvents(f"redis://127.0.0.1:{_free_port()}/0", timeout_s=0.5, reconnect_s=0.2)
        try:
            async with events.subscribe("job") as waiter:
                await asyncio.sleep(0.5)
                assert not events.live
                t0 = time.monotonic()
                await waiter.wait(0.2)  # may be woken by a failed attempt; never hangs
                assert time.monotonic() - t0 < WAKE_BOUND_S
        finally:
            await events.aclose()

    asyncio.run(main())



@pytest.fixture
def serve(job_store: RedisJobStore) -> Iterator[Any]:
    """``serve(**config)``: an API server on the test's store with that ServerConfig."""
    servers: list[BackgroundServer] = []
    services: list[ApiService] = []

    def start(**config: Any) -> str:
        service = ApiService(job_store, engine="local", enqueue=RecordingQueue())
        server = BackgroundServer(service, ServerConfig(**config))
        services.append(service)
        servers.append(server)
        return server.start(timeout=60)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for service in services:
            service.close()


def _watch_in_thread(client: FacexplainClient, job_id: str) -> tuple[threading.Thread, list[Any], list[float]]:
    updates: list[Any] = []
    ended: list[float] = []

    def run() -> None:
        for update in client.watch(job_id, timeout=120):
            updates.append(update.job)
        ended.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not updates:
        assert time.monotonic() < deadline, "no first update within 60 s"
        time.sleep(0.01)
    return thread, updates, ended


def test_watchjob_wakes_on_the_change_not_on_its_poll(serve: Any, job_store: RedisJobStore):
    address = serve(watch_poll_s=30.0, watch_fallback_s=30.0)
    job = _job(job_store)
    with FacexplainClient(address, timeout=60) as client:
        thread, updates, ended = _watch_in_thread(client, job)
        time.sleep(0.3)  # the listener is subscribed by now (and if not, its start wakes the watcher)
        job_store.report_progress(job, 2)
        t0 = time.monotonic()
        while len(updates) < 2:
            assert time.monotonic() - t0 < WAKE_BOUND_S, "progress not sent within the bound"
            time.sleep(0.01)
        assert updates[-1].done == 2
        job_store.set_state(job, JobState.DONE)
        t0 = time.monotonic()
        thread.join(WAKE_BOUND_S + 1)
        assert ended and ended[0] - t0 < WAKE_BOUND_S, "the watch did not end within the bound"
        assert updates[-1].state == "done"


def test_watchjob_still_ends_when_a_notification_is_lost(serve: Any, job_store: RedisJobStore):
    address = serve(watch_poll_s=30.0, watch_fallback_s=1.0)
    job = _job(job_store)
    with FacexplainClient(address, timeout=60) as client:
        thread, updates, ended = _watch_in_thread(client, job)
        time.sleep(0.3)
        raw = redis.Redis.from_url(job_store.url, socket_timeout=5)
        try:  # the change without its notification (as if the message were lost)
            raw.hset(f"{job_store.prefix}:job:{{{job}}}", mapping={"state": "done"})
        finally:
            raw.close()
        t0 = time.monotonic()
        thread.join(30)
        assert ended, "the watch did not end after the fallback period"
        assert ended[0] - t0 < 1.0 + WAKE_BOUND_S
        assert updates[-1].state == "done"


def test_idle_watchers_hold_no_thread_each(serve: Any, job_store: RedisJobStore):
    address = serve(watch_poll_s=30.0, watch_fallback_s=30.0)
    jobs = [_job(job_store) for _ in range(24)]
    import grpc

    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.FacexplainStub(channel)
        before = threading.active_count()
        calls = [stub.WatchJob(service_pb2.WatchJobRequest(id=j), timeout=120) for j in jobs]
        for call in calls:
            next(call)  # the first update: every watcher is now waiting
        time.sleep(0.5)
        grown = threading.active_count() - before
        assert grown < 8, f"{grown} threads for {len(jobs)} idle watchers"
        t0 = time.monotonic()
        for j in jobs:
            job_store.set_state(j, JobState.CANCELLED)
        for call in calls:
            assert [u.job.state for u in call]  # the terminal update, then the stream ends
        assert time.monotonic() - t0 < 2 * WAKE_BOUND_S


def test_stopping_the_server_closes_its_events_listener(job_store: RedisJobStore):
    """ApiServer.stop closes the listener's pub/sub connection while the event loop goes on (an
    API embedded in a longer-lived loop does not keep it)."""
    from explainer_service.api.server import start_server

    def listeners() -> int:
        client = redis.Redis.from_url(job_store.url, socket_timeout=5)
        try:
            return sum(1 for c in client.client_list() if int(c.get("psub", 0)) > 0)
        finally:
            client.close()

    async def until(check: Any, what: str) -> None:
        deadline = time.monotonic() + WAKE_BOUND_S
        while not await asyncio.to_thread(check):
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    before = listeners()
    service = ApiService(job_store, engine="local", enqueue=RecordingQueue())
    job = _job(job_store)

    async def scenario() -> None:
        api = await start_server(service, ServerConfig(host="127.0.0.1", port=0, watch_poll_s=30.0,
                                                       watch_fallback_s=30.0))
        try:
            async with grpc_aio_channel(api.address) as channel:
                stub = service_pb2_grpc.FacexplainStub(channel)
                call = stub.WatchJob(service_pb2.WatchJobRequest(id=job))
                await call.read()  # the first update: the watcher is subscribed
                await until(lambda: listeners() > before, "no listener subscribed")
                call.cancel()
        finally:
            await api.stop(grace_s=1.0)
        await until(lambda: listeners() == before, "the listener's connection outlived the server's stop")

    try:
        asyncio.run(scenario())
    finally:
        service.close()


def grpc_aio_channel(address: str) -> Any:
    import grpc

    return grpc.aio.insecure_channel(address)
