"""What the service survives (issue 9 §5 "Faults"), with real processes: a redis-server of the
test's own, ``facexplain api`` and ``facexplain worker`` processes, and the embedded Triton where
the fault is Triton's.

- a worker's whole process group SIGKILLed in the middle of an audit: the audit completes with
  every pair exactly once;
- redis-server SIGKILLed and restarted mid-audit: the job survives and completes, every pair once;
- Triton SIGKILLed mid-job: completed once it is back within the retry budget; failed with an
  error naming Triton within a stated bound when it stays down — never a hang;
- the API SIGKILLed and started again: the job went on meanwhile, and ``WatchJob`` opened on the
  new process follows it to its result.

"Exactly once" is checked three ways, each of which a duplicate or a loss would break: the stored
rows are indices 0..n-1 with the submitted names, the record counts no unit stored twice
(``rewrites``) and done == total, and the workers' logs name each pair's storing exactly once.
Each test prints its measured times (docs/reliability.md records them).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.api.client import FacexplainClient
from explainer_service.datasets import read_dataset
from explainer_service.serving.embedded import free_port
from explainer_service.store import JobRecord, JobState, RedisJobStore
from tests.reliability.conftest import Service

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-dev"
N_PAIRS = 12
LEASE_S = 5  # the sweep's stall bound is two leases: 10 s
METHODS = [("gradcam", {})]


def _say(text: str) -> None:
    print(f"\n[reliability] {text}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[bytes, bytes, bool, str]]:
    if not LFW.is_dir():
        pytest.fail(f"needs {LFW} (the ../shared data beside the checkout)")
    ds = read_dataset(f"lfw-aligned:{LFW}")
    chosen = [p for p in ds.pairs if p.same][: N_PAIRS // 2] + [p for p in ds.pairs if not p.same][: N_PAIRS // 2]
    return [(Path(p.a).read_bytes(), Path(p.b).read_bytes(), p.same, f"{Path(p.a).name}|{Path(p.b).name}")
            for p in chosen]


def _wait(what: str, check: Callable[[], Any], timeout: float, service: Service | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "" if service is None else "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(service.root.glob("*.log")))
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs}")
        time.sleep(0.05)


def _final(store: RedisJobStore, job_id: str) -> JobRecord | None:
    record = store.get_job(job_id)
    return record if record.final else None


def _lease_pid(record: JobRecord) -> int | None:
    """The pid of the process holding the job's latest live lease on a pair."""
    lease = record.lease
    if lease is None or not lease.unit.startswith("pair:") or lease.expires_at < time.time():
        return None
    return int(lease.owner.rsplit(":", 1)[1])


def _assert_every_pair_once(service: Service, store: RedisJobStore, job_id: str,
                            pairs: list[tuple[bytes, bytes, bool, str]]) -> JobRecord:
    record = store.get_job(job_id)
    assert record.state is JobState.DONE, record.error
    assert record.done == record.total == len(pairs)
    assert "rewrites" not in record.extra, f"{record.extra['rewrites']} pair(s) stored twice"
    rows = store.get_pairs(job_id, offset=0, limit=len(pairs) + 10)
    assert [i for i, _ in rows] == list(range(len(pairs)))
    assert [r["index"] for _, r in rows] == list(range(len(pairs)))
    assert [r["name"] for _, r in rows] == [p[3] for p in pairs]
    assert all(r["error"] is None for _, r in rows)
    summary = store.get_summary(job_id)
    assert summary is not None and summary["pairs"] == len(pairs) and summary["pairs_failed"] == 0
    stored = Counter()
    for log in service.root.glob("w*.log"):
        stored.update(int(i) for i in re.findall(rf"job {job_id}: pair (\d+) stored by", log.read_text(errors="replace")))
    assert stored == Counter(range(len(pairs))), f"pairs stored other than once: {stored}"
    return record


def _audit_service(service_factory: Callable[..., Service], workers: int) -> tuple[Service, str]:
    service = service_factory(FACEXPLAIN_LEASE=str(LEASE_S))
    service.start_redis()
    address = service.start_api(free_port("127.0.0.1"))
    for i in range(workers):
        service.start_worker(f"w{i + 1}", "--engine", "local")
    return service, address


def _submit_audit(address: str, pairs: list[tuple[bytes, bytes, bool, str]]) -> str:
    with FacexplainClient(address, timeout=120) as client:
        submitted = client.submit_audit(pairs=pairs, methods=METHODS, metrics=["deletion"], steps=5)
    assert not submitted.reused
    return submitted.job.id


def test_a_worker_group_killed_mid_audit_leaves_every_pair_done_once(service_factory, pairs):
    service, address = _audit_service(service_factory, workers=2)
    t0 = time.monotonic()
    job_id = _submit_audit(address, pairs)
    with service.store() as store:
        # kill w1 while its pool process holds a pair, after the audit has started for real
        def w1_busy() -> bool:
            record = store.get_job(job_id)
            return record.done >= 1 and _lease_pid(record) in service.pool_children("w1")

        _wait("w1 working on a pair", w1_busy, 120, service)
        held = store.get_job(job_id)
        t_kill = time.monotonic()
        service.kill("w1")
        assert held.done < held.total
        record = _wait("the audit done", lambda: _final(store, job_id), 240, service)
        recovered = time.monotonic() - t_kill
        _assert_every_pair_once(service, store, job_id, pairs)
    _say(f"worker group SIGKILL at {held.done}/{held.total} pairs: done {recovered:.1f} s after the kill, "
         f"{time.monotonic() - t0:.1f} s in all, sweep requeues {record.extra.get('requeues', '0')}")


def test_redis_killed_and_restarted_mid_audit_loses_no_job(service_factory, pairs):
    service, address = _audit_service(service_factory, workers=2)
    t0 = time.monotonic()
    job_id = _submit_audit(address, pairs)
    with service.store() as store:
        _wait("two pairs stored", lambda: store.get_job(job_id).done >= 2, 120, service)
        at = store.get_job(job_id).done
    t_kill = time.monotonic()
    port = service.kill_redis()
    time.sleep(2.0)
    service.restart_redis(port)
    t_back = time.monotonic()
    with service.store() as store:
        assert store.find_job(job_id) is not None  # the job survived the kill (AOF)
        record = _wait("the audit done", lambda: _final(store, job_id), 240, service)
        recovered = time.monotonic() - t_back
        _assert_every_pair_once(service, store, job_id, pairs)
    with FacexplainClient(address, timeout=60) as client:  # the API outlived its store's restart
        page = client.audit_result(job_id)
        assert page.job.state == "done" and page.summary is not None
    _say(f"redis SIGKILL at {at}/{len(pairs)} pairs, down {t_back - t_kill:.1f} s: done {recovered:.1f} s after "
         f"the restart, {time.monotonic() - t0:.1f} s in all, sweep requeues {record.extra.get('requeues', '0')}")


# -- Triton -------------------------------------------------------------------------------------

TRITON_MODEL = "dlib_resnet_v1"
N_MASKS = 960  # ten shards of 96
REQUEST_TIMEOUT_S = 5


def _pair_bytes() -> tuple[bytes, bytes]:
    img = LFW / "aligned112"
    a = sorted((img / "Abel_Pacheco").iterdir())
    return a[0].read_bytes(), a[1].read_bytes()


def _triton(grpc_port: int = 0, http_port: int = 0) -> Any:
    from explainer_service.serving.embedded import EmbeddedTriton

    return EmbeddedTriton(models=[TRITON_MODEL], grpc_port=grpc_port, http_port=http_port, startup_timeout=240).start()


def _kill_triton(srv: Any) -> None:
    assert srv.pid is not None
    os.killpg(srv.pid, signal.SIGKILL)
    srv.stop()  # reaps it and removes its folders


@pytest.fixture(scope="module")
def _model() -> None:
    from explainer_service.models.convert import ensure_default_model

    ensure_default_model()


@pytest.mark.parametrize("comes_back", [True, False], ids=["back-within-the-budget", "stays-down"])
def test_triton_killed_mid_job(service_factory, _model, comes_back):
    retries = 6 if comes_back else 2
    service = service_factory(FACEXPLAIN_LEASE="20", FACEXPLAIN_TASK_RETRIES=str(retries),
                              FACEXPLAIN_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT_S), FACEXPLAIN_SHARD_MASKS="96")
    service.start_redis()
    srv = _triton()
    try:
        address = service.start_api(free_port("127.0.0.1"))
        service.start_worker("w1", "--engine", "triton", "--triton", srv.url)
        a, b = _pair_bytes()
        with FacexplainClient(address, timeout=120) as client:
            job_id = client.explain(a, b, params={"n_masks": N_MASKS, "seed": 3}).job.id
        with service.store() as store:
            _wait("a shard stored", lambda: store.get_job(job_id).done >= 96, 180, service)
            at = store.get_job(job_id).done
            t_kill = time.monotonic()
            _kill_triton(srv)
            if comes_back:
                time.sleep(3.0)
                srv = _triton(srv.grpc_port, srv.http_port)
                t_back = time.monotonic()
                record = _wait("the job done", lambda: _final(store, job_id), 300, service)
                assert record.state is JobState.DONE, record.error
                assert record.done == record.total == N_MASKS and "rewrites" not in record.extra
                assert len(store.stored_shards(job_id)) == 10
                result = store.get_result(job_id)
                assert result is not None and result.masks == N_MASKS and np.isfinite(result.s_a).all()
                _say(f"Triton SIGKILL at {at}/{N_MASKS} masks, back after {t_back - t_kill:.1f} s: job done "
                     f"{time.monotonic() - t_back:.1f} s after, {time.monotonic() - t_kill:.1f} s after the kill")
            else:
                # the bound: each of the 1 + retries attempts waits at most the request timeout,
                # the backoffs 1, 2 s are stretched by up to 1.5, and a margin for a loaded machine
                bound = (retries + 1) * REQUEST_TIMEOUT_S + 1.5 * (1 + 2) + 30
                record = _wait("the job failed", lambda: _final(store, job_id), bound, service)
                took = time.monotonic() - t_kill
                assert record.state is JobState.FAILED and record.error is not None
                assert record.error.status == "UNAVAILABLE", record.error
                assert "Triton" in record.error.message and f"gave up after {retries} retries" in record.error.message
                with FacexplainClient(address, timeout=60) as client:
                    job = client.get_job(job_id)
                    assert job.state == "failed" and job.error is not None and "Triton" in job.error.message
                _say(f"Triton SIGKILL at {at}/{N_MASKS} masks, not restarted: failed {took:.1f} s after the kill "
                     f"(bound {bound:.0f} s): {record.error.message[:160]}")
    finally:
        srv.stop()


# -- the API ------------------------------------------------------------------------------------


def test_the_api_restarted_mid_job_and_watch_reopened_on_the_new_process(service_factory):
    service = service_factory(FACEXPLAIN_LEASE=str(LEASE_S), FACEXPLAIN_SHARD_MASKS="96")
    service.start_redis()
    port = free_port("127.0.0.1")
    address = service.start_api(port)
    service.start_worker("w1", "--engine", "local")
    a, b = _pair_bytes()
    with FacexplainClient(address, timeout=120) as client:
        job_id = client.explain(a, b, params={"n_masks": N_MASKS, "seed": 4}).job.id
        for update in client.watch(job_id, partial_maps=True, timeout=120):
            if update.partial is not None:
                break
    with service.store() as store:
        before = store.get_job(job_id).done
        t_kill = time.monotonic()
        service.kill("api")
        # the job goes on without the API
        _wait("progress while the API is down", lambda: store.get_job(job_id).done > before, 120, service)
        down_progress = store.get_job(job_id).done
        service.start_api(port)
        t_back = time.monotonic()
        last = None
        with FacexplainClient(address, timeout=120) as client:
            updates = list(client.watch(job_id, partial_maps=True, timeout=300))
            assert updates and updates[-1].job.final and updates[-1].job.state == "done"
            assert [u.job.done for u in updates] == sorted(u.job.done for u in updates)  # never backwards
            partials = [u.partial for u in updates if u.partial is not None]
            result = client.get_result(job_id)
            last = partials[-1] if partials else None
        assert result.masks == N_MASKS
        assert last is not None and last.masks == N_MASKS  # the stream's last partial maps are the result's
        np.testing.assert_allclose(last.s_a, result.s_a, atol=1e-6)
        np.testing.assert_allclose(last.s_b, result.s_b, atol=1e-6)
        record = store.get_job(job_id)
        assert record.done == record.total == N_MASKS and "rewrites" not in record.extra
    _say(f"API SIGKILL at {before}/{N_MASKS} masks; {down_progress} done while it was down; new API "
         f"serving {t_back - t_kill:.1f} s after the kill; WatchJob on it ended at the result "
         f"{time.monotonic() - t_back:.1f} s later")
