"""The stuck-job sweep (``worker.sweep``) on a real redis-server and a real Celery app, without
workers: the tasks it sends are read back from the broker's queue. A stalled audit gets exactly
its missing pairs, a stalled CorrRISE job its missing shards; a backlog in the queue or a recent
change leaves a job alone; progress restarts the count; after the budget the job fails with a
message naming what to check; a stalled job asked to cancel is cancelled. The store counts a unit
stored twice (``rewrites``), which the fault tests use to see work done twice."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from explainer_service.settings import get_settings
from explainer_service.store import EmbeddedRedis, JobState, RedisJobStore
from explainer_service.worker import QUEUE, make_app
from explainer_service.worker.plan import Unit
from explainer_service.worker.sweep import Sweeper, SweepPolicy, is_stalled, missing_explain_units
from explainer_service.worker.tasks import queue_waiting, sweep_app

POLICY = SweepPolicy(stall_s=5.0, budget=2)
LATER = 60.0  # seconds ahead of the records' times: every job is silent for longer than the bound


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(Path(tmp_path_factory.mktemp("redis-sweep")), startup_timeout=30) as srv:
        yield srv


@pytest.fixture
def parts(server: EmbeddedRedis) -> Iterator[tuple[Any, RedisJobStore, redis.Redis]]:
    settings = dataclasses.replace(get_settings(), shard_masks=16)
    app = make_app(server.url, settings=settings, engine="local")
    store = RedisJobStore(server.url, timeout_s=5)
    raw = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        yield app, store, raw
    finally:
        raw.flushdb()
        raw.close()
        store.close()
        app.close()


def _sent(raw: redis.Redis) -> list[tuple[str, list[Any]]]:
    """(task, args) of every message in the queue, oldest first (Celery's protocol 2)."""
    out = []
    for item in reversed(raw.lrange(QUEUE, 0, -1)):  # LPUSH: the newest is first
        msg = json.loads(item)
        args, _, _ = json.loads(base64.b64decode(msg["body"]))
        out.append((msg["headers"]["task"], args))
    return out


def _sweep(app: Any, store: RedisJobStore, now: float) -> Any:
    from explainer_service.worker.sweep import sweep
    from explainer_service.worker.tasks import send_units

    return sweep(store, lambda r, u: send_units(app, r, u), policy=POLICY, waiting=queue_waiting(app),
                 shard_masks=16, now=now)


def _audit(store: RedisJobStore, job_id: str, total: int) -> None:
    store.create_job(job_id, "audit", model="m", params={}, total=total)
    assert store.claim(job_id, "pair:0", "w", lease_s=1).value == "claimed"  # running


def test_a_stalled_audit_gets_its_missing_pairs_then_fails_after_the_budget(parts):
    app, store, raw = parts
    job_id = "s1"
    _audit(store, job_id, 4)
    for i in (0, 2):
        store.put_pair(job_id, i, {"index": i})
    now = time.time()
    assert not is_stalled(store.get_job(job_id), now, POLICY.stall_s, 0)  # just changed
    assert _sweep(app, store, now).requeued == []
    report = _sweep(app, store, now + LATER)
    assert report.requeued == [job_id]
    assert _sent(raw) == [("facexplain.audit_pair", [job_id, 1]), ("facexplain.audit_pair", [job_id, 3])]
    assert store.get_job(job_id).extra["requeues"] == "1"

    # the queue is not empty: a backlog may hold the job's tasks, nothing is looked at
    report = _sweep(app, store, now + 2 * LATER)
    assert report.waiting == 2 and report.requeued == [] and len(_sent(raw)) == 2
    raw.delete(QUEUE)  # those tasks were lost too

    store.put_pair(job_id, 1, {"index": 1})  # progress: the count starts again
    assert _sweep(app, store, now + 3 * LATER).requeued == [job_id]
    assert _sent(raw) == [("facexplain.audit_pair", [job_id, 3])]
    assert store.get_job(job_id).extra["requeues"] == "1"
    raw.delete(QUEUE)
    assert _sweep(app, store, now + 4 * LATER).requeued == [job_id]  # requeue 2 of 2
    raw.delete(QUEUE)
    report = _sweep(app, store, now + 5 * LATER)
    assert report.failed == [job_id] and _sent(raw) == []
    record = store.get_job(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.status == "UNAVAILABLE"
    assert "no worker made progress" in record.error.message and "Triton" in record.error.message
    assert _sweep(app, store, now + 6 * LATER).requeued == []  # final: left alone


def test_a_stalled_corrrise_job_gets_its_missing_shards_and_a_finished_one_its_finisher(parts):
    app, store, raw = parts
    job_id = "s2"
    store.create_job(job_id, "explain", model="m", method="corrrise", params={}, total=64)
    store.claim(job_id, "shard:0-16", "w", lease_s=1)
    assert store.stored_shards(job_id) == []
    raw.hset(f"fx:job:{{{job_id}}}:shards", mapping={"0-16": b"x", "32-48": b"x"})  # names only are read
    assert store.stored_shards(job_id) == [(0, 16), (32, 48)]
    assert _sweep(app, store, time.time() + LATER).requeued == [job_id]
    assert _sent(raw) == [("facexplain.explain_shard", [job_id, 16, 32]), ("facexplain.explain_shard", [job_id, 48, 64])]
    raw.delete(QUEUE)
    raw.hset(f"fx:job:{{{job_id}}}:shards", mapping={"16-32": b"x", "48-64": b"x"})
    assert _sweep(app, store, time.time() + 2 * LATER).requeued == [job_id]
    assert _sent(raw) == [("facexplain.explain_shard", [job_id, 0, 16])]  # its task finds all stored: merges


def test_a_queued_job_never_sent_is_sent_and_a_cancelled_one_settled(parts):
    app, store, raw = parts
    store.create_job("s3", "explain", model="m", method="rise", params={}, total=1)  # the API died before queueing
    store.create_job("s4", "audit", model="m", params={}, total=2)
    store.request_cancel("s4")  # queued: cancelled at once
    store.create_job("s5", "audit", model="m", params={}, total=2)
    store.claim("s5", "pair:0", "w", lease_s=1)
    store.request_cancel("s5")  # running: its worker never checks again
    report = _sweep(app, store, time.time() + LATER)
    assert report.requeued == ["s3"] and report.cancelled == ["s5"]
    assert _sent(raw) == [("facexplain.explain_job", ["s3"])]
    assert store.get_job("s5").state is JobState.CANCELLED


def test_a_unit_stored_twice_is_counted(parts):
    _, store, _ = parts
    _audit(store, "s6", 3)
    assert store.put_pair("s6", 1, {"index": 1}) and "rewrites" not in store.get_job("s6").extra
    assert not store.put_pair("s6", 1, {"index": 1})
    record = store.get_job("s6")
    assert record.done == 1 and record.extra["rewrites"] == "1"


def test_the_plan_and_the_policy_are_checked():
    assert missing_explain_units("corrrise", 64, 16, [(0, 32)]) is None  # another plan: not guessed
    assert missing_explain_units("rise", 1, 16, []) == [Unit()]
    policy = SweepPolicy.from_lease(30)
    assert policy.stall_s == 60 and policy.interval_s == 30 and policy.give_up_s == 4 * 90
    from explainer_service.errors import InputError

    for bad in ({"stall_s": 0}, {"stall_s": 5, "budget": -1}, {"stall_s": 5, "interval_s": -1}):
        with pytest.raises(InputError):
            SweepPolicy(**bad)


def test_the_sweeper_thread_keeps_going_after_a_failing_pass():
    calls: list[float] = []

    def once() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("store down")

    sweeper = Sweeper(once, 0.05).start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sweeper.stop()
    assert len(calls) >= 3


def test_sweep_app_uses_the_apps_lease(parts):
    app, store, raw = parts
    report = sweep_app(app, store)  # nothing stalled by the app's default bound (2 leases)
    assert report.requeued == [] and report.failed == []
