"""The workers on real processes: a real redis-server (the session's embedded one, a database of
its own per worker group), real ``facexplain worker`` processes (Celery prefork, the local
engine), jobs created in the store and enqueued as the API does.

CorrRISE jobs of 64 masks in shards of 16: 1 worker and 2 workers give the maps of the in-process
library (max abs difference <= 1e-6); duplicate shard deliveries count once and change nothing;
racing finishers write one result; a whole-method job (RISE) completes; a bad image or an unknown
model fails the job at once with the right status and no retry; cancel stops the job and the
workers' remaining tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from explainer_service.pipeline import explain_pair
from explainer_service.processes import stop_groups
from explainer_service.settings import get_settings
from explainer_service.store import EmbeddedRedis, JobState, RedisJobStore
from explainer_service.worker import QUEUE, ModelPool, Outcome, WorkerContext, make_app
from explainer_service.worker import enqueue_explain as enqueue
from explainer_service.worker.explain import finish_explain, run_unit
from explainer_service.worker.plan import Unit, plan_shards
from tests.integration.procs import children, marked_env, marked_processes

N_MASKS = 64
SHARD = 16
PARAMS = {"n_masks": N_MASKS, "seed": 5, "patches": 8}
ALIGN = {"face": "largest", "aligned": "auto"}
_DBS = itertools.count(9)  # databases of the session's Redis: one per worker group (0 is the store tests')


# -- helpers ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Group:
    """Worker processes on one Redis database, with the app and store the test uses."""

    url: str
    app: Any
    store: RedisJobStore
    log: Path
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    marks: list[str] = dataclasses.field(default_factory=list)

    def start(self, n: int, **env: str) -> None:
        for _ in range(n):
            full_env, mark = marked_env(FACEXPLAIN_LEASE="3", **env)
            with open(self.log, "ab") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "explainer_service.cli", "worker", "--redis", self.url,
                     "--engine", "local", "--concurrency", "1", "--loglevel", "info"],
                    env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                ))
            self.marks.append(mark)
        deadline = time.monotonic() + 30
        while len(self.app.control.ping(timeout=0.5)) < len(self.procs):
            assert all(p.poll() is None for p in self.procs), self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "workers did not answer a ping within 30 s"

    def stop(self) -> None:
        stop_groups(self.procs, grace_s=20)
        deadline = time.monotonic() + 10
        while any(marked_processes(m) for m in self.marks) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for m in self.marks for pid in marked_processes(m)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs, self.marks = [], []
        assert not left, f"worker processes left running: {left}"


@contextlib.contextmanager
def group(redis_server: EmbeddedRedis, log: Path) -> Iterator[Group]:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next(_DBS)}"
    settings = dataclasses.replace(get_settings(), shard_masks=SHARD)
    app = make_app(url, settings=settings, engine="local")
    store = RedisJobStore(url, timeout_s=5)
    g = Group(url, app, store, log)
    try:
        yield g
    finally:
        try:
            g.stop()
        finally:
            client = redis.Redis.from_url(url, socket_timeout=5)
            client.flushdb()
            client.close()
            store.close()
            app.close()


def submit(g: Group, a: bytes, b: bytes, *, method: str = "corrrise", params: dict[str, Any] | None = None,
           model: str = "dlib-resnet-v1", send: bool = True) -> str:
    params = dict(PARAMS if params is None else params)
    job_id = uuid.uuid4().hex
    total = params["n_masks"] if method == "corrrise" else 1
    _, created = g.store.create_job(job_id, "explain", model=model, method=method,
                                    params={"method": params, "align": ALIGN}, total=total,
                                    inputs={"a": a, "b": b})
    assert created
    if send:
        enqueue(g.app, g.store, job_id)
    return job_id


def wait_final(store: RedisJobStore, job_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        record = store.get_job(job_id)
        if record.final:
            return record
        assert time.monotonic() < deadline, f"job {job_id} still {record.state} ({record.done}/{record.total})"
        time.sleep(0.05)


def queue_length(g: Group) -> int:
    client = redis.Redis.from_url(g.url, socket_timeout=5)
    try:
        return int(client.llen(QUEUE)) + int(client.hlen("unacked"))
    finally:
        client.close()


def assert_maps_equal(result: Any, expected: Any) -> None:
    assert result.s_a.dtype == np.float32 and result.s_a.shape == expected.s_a.shape
    assert np.abs(result.s_a - expected.s_a).max() <= 1e-6
    assert np.abs(result.s_b - expected.s_b).max() <= 1e-6
    assert result.score == pytest.approx(expected.score, abs=1e-6)
    assert result.masks == expected.masks and result.decision == expected.decision


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(pair: tuple[bytes, bytes], local_model: Any) -> Any:
    """The in-process library's result for the job parameters."""
    return explain_pair(pair[0], pair[1], local_model, "corrrise", PARAMS)


@pytest.fixture(scope="module")
def one_worker(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    with group(redis_server, tmp_path_factory.mktemp("worker") / "worker.log") as g:
        g.start(1)
        yield g


# -- tests --------------------------------------------------------------------------------------


def test_one_and_four_workers_give_the_librarys_maps(redis_server, tmp_path, pair, library):
    results = []
    for n in (1, 4):
        with group(redis_server, tmp_path / f"workers{n}.log") as g:
            g.start(n)
            job_id = submit(g, *pair)
            record = wait_final(g.store, job_id)
            assert record.state is JobState.DONE, record.error
            assert record.done == record.total == N_MASKS
            stored = g.store.get_shards(job_id)
            assert [s.ranges for s in stored] == [((lo, hi),) for lo, hi in plan_shards(N_MASKS, SHARD)]
            result = g.store.get_result(job_id)
            assert result is not None and result.engine == "local" and result.method == "corrrise"
            assert result.face_a.chip is not None and result.params["n_masks"] == N_MASKS
            # every shard embedded the clean pair itself: 2 passes each beside 2 per mask
            assert result.forward_passes == 2 * N_MASKS + 2 * len(stored)
            results.append(result)
    for result in results:
        assert_maps_equal(result, library)
    np.testing.assert_array_equal(results[0].s_a, results[1].s_a)  # the shards are bit-exact
    np.testing.assert_array_equal(results[0].s_b, results[1].s_b)


def test_duplicate_deliveries_count_once_and_change_nothing(one_worker, pair, library):
    g = one_worker
    job_id = submit(g, *pair)
    for lo, hi in ((0, 16), (32, 48), (0, 16)):  # delivered twice more, by hand, while the job runs
        g.app.send_task("facexplain.explain_shard", args=[job_id, lo, hi])
    record = wait_final(g.store, job_id)
    assert record.state is JobState.DONE and record.done == N_MASKS  # not 64 + 48
    deadline = time.monotonic() + 15
    while queue_length(g) and time.monotonic() < deadline:  # the duplicates ran too
        time.sleep(0.05)
    raw = redis.Redis.from_url(g.url, socket_timeout=5)
    key = f"fx:job:{{{job_id}}}:result"
    before = raw.hgetall(key)
    # a redelivery after the job finished: skipped, the stored result stays byte for byte
    g.app.send_task("facexplain.explain_shard", args=[job_id, 16, 32])
    deadline = time.monotonic() + 15
    while queue_length(g) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue_length(g) == 0
    assert raw.hgetall(key) == before
    raw.close()
    after = g.store.get_job(job_id)
    assert after.done == N_MASKS and after.state is JobState.DONE and len(g.store.get_shards(job_id)) == 4
    result = g.store.get_result(job_id)
    assert result is not None
    assert_maps_equal(result, library)


def test_racing_finishers_write_one_result(redis_server, pair, library, local_model):
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next(_DBS)}"
    store = RedisJobStore(url, timeout_s=5)
    pool = ModelPool(engine="local")
    pool._models["dlib-resnet-v1"] = local_model  # the test's own model: no second load
    first = WorkerContext(store, pool, worker="first", lease_s=30)
    second = WorkerContext(store, pool, worker="second", lease_s=30)
    g = Group(url, None, store, Path(os.devnull))
    try:
        job_id = submit(g, *pair, send=False)
        units = [Unit(lo, hi) for lo, hi in plan_shards(N_MASKS, SHARD)]
        for unit in units[:-1]:
            assert run_unit(first, job_id, unit) is Outcome.DONE
        assert run_unit(second, job_id, units[0]) is Outcome.SKIPPED  # stored already
        assert store.get_job(job_id).done == N_MASKS - SHARD
        # the last shard: stored, then its finisher finds the merge lease held by another
        assert store.claim(job_id, "merge", "second", lease_s=30).value == "claimed"
        assert run_unit(first, job_id, units[-1]) is Outcome.DONE
        assert store.get_job(job_id).state is JobState.RUNNING and store.get_result(job_id) is None
        assert finish_explain(first, job_id) is Outcome.HELD
        assert finish_explain(second, job_id) is Outcome.DONE
        raw = redis.Redis.from_url(url, socket_timeout=5)
        before = raw.hgetall(f"fx:job:{{{job_id}}}:result")
        assert finish_explain(first, job_id) is Outcome.STOPPED  # done: nothing rewritten
        assert run_unit(first, job_id, units[1]) is Outcome.STOPPED
        assert raw.hgetall(f"fx:job:{{{job_id}}}:result") == before
        raw.close()
        record = store.get_job(job_id)
        assert record.state is JobState.DONE and record.done == N_MASKS
        result = store.get_result(job_id)
        assert result is not None
        assert_maps_equal(result, library)
    finally:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb()
        client.close()
        store.close()


def test_a_whole_method_job_completes(one_worker, pair, local_model):
    params = {"n_masks": 16, "seed": 2}
    job_id = submit(one_worker, *pair, method="rise", params=params)
    record = wait_final(one_worker.store, job_id)
    assert record.state is JobState.DONE, record.error
    assert record.done == record.total == 1
    result = one_worker.store.get_result(job_id)
    assert result is not None and result.method == "rise" and result.masks == 16
    expected = explain_pair(pair[0], pair[1], local_model, "rise", params)
    assert np.abs(result.s_a - expected.s_a).max() <= 1e-6 and np.abs(result.s_b - expected.s_b).max() <= 1e-6


@pytest.mark.parametrize(
    ("which", "status", "words"),
    [("image", "INVALID_ARGUMENT", "image_a"), ("model", "NOT_FOUND", "no-such-model"),
     ("param", "INVALID_ARGUMENT", "patches")],
)
def test_bad_requests_fail_the_job_at_once_without_retries(one_worker, pair, which, status, words):
    a, b = pair
    kw: dict[str, Any] = {}
    if which == "image":
        a = b"\x89PNG\r\n\x1a\n this is not an image"
    elif which == "model":
        kw["model"] = "no-such-model"
    else:
        kw["params"] = {**PARAMS, "patches": 0}
    t0 = time.monotonic()
    job_id = submit(one_worker, a, b, **kw)
    record = wait_final(one_worker.store, job_id, timeout=20)
    assert record.state is JobState.FAILED
    assert record.error is not None and record.error.status == status and words in record.error.message
    assert time.monotonic() - t0 < 15  # the backoff of even one retry would show
    deadline = time.monotonic() + 10
    while queue_length(one_worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue_length(one_worker) == 0  # no task waits for a retry
    log = one_worker.log.read_text(errors="replace")
    assert f"job {job_id}: " not in log or "retry" not in log.split(f"job {job_id}")[1][:200]
    assert "this is not an image" not in log  # no image bytes in the log


def test_cancel_stops_the_job_and_the_remaining_tasks(one_worker, pair):
    g = one_worker
    params = {**PARAMS, "n_masks": 1600}  # 100 shards: far longer than the test waits
    job_id = submit(g, *pair, params=params)
    deadline = time.monotonic() + 20
    while g.store.get_job(job_id).done < 2 * SHARD:
        assert time.monotonic() < deadline, "no shard was stored within 20 s"
        time.sleep(0.02)
    g.store.request_cancel(job_id)
    record = wait_final(g.store, job_id, timeout=10)
    assert record.state is JobState.CANCELLED and record.error is None
    deadline = time.monotonic() + 20
    while queue_length(g) and time.monotonic() < deadline:  # the rest is dropped quickly
        time.sleep(0.05)
    assert queue_length(g) == 0
    done = g.store.get_job(job_id).done
    time.sleep(0.5)
    assert g.store.get_job(job_id).done == done < 1600 - SHARD  # nothing more is computed
    assert g.store.get_result(job_id) is None



def test_a_killed_pool_process_has_its_shard_redone_once(one_worker, pair):
    g = one_worker
    params = {**PARAMS, "n_masks": 320}  # 20 shards
    job_id = submit(g, *pair, params=params)
    deadline = time.monotonic() + 20
    while g.store.get_job(job_id).done < 2 * SHARD:
        assert time.monotonic() < deadline, "no shard was stored within 20 s"
        time.sleep(0.02)
    (child,) = children(None, g.procs[0].pid)
    os.kill(child, signal.SIGKILL)  # mid-shard: its task is requeued (acks late, reject on worker lost)
    record = wait_final(g.store, job_id, timeout=40)
    assert record.state is JobState.DONE, record.error
    assert record.done == record.total == 320  # every shard counted exactly once
    assert len(g.store.get_shards(job_id)) == 20
    result = g.store.get_result(job_id)
    assert result is not None and result.masks == 320
    assert child not in children(None, g.procs[0].pid) and g.procs[0].poll() is None  # a new child took over
