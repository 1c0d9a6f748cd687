"""Load (issue 9 section 5): 16 concurrent clients against a real redis-server, two
``facexplain worker`` processes and ``facexplain api``; and retention: a job's keys gone from
Redis after a short TTL.

Each client (its own thread and channel) sends, all at once after a barrier: the SAME CorrRISE
request as every other client (n_masks 50, seed 0), one request of its OWN (seed 100 + i), and
three Verify calls; then follows both jobs to the end and reads their results. Checked: every call
answered (no error), every job done with maps of the chip's shape; the 16 identical requests name
one job, queued once (exactly one answer not ``reused``); and no work was done twice: the workers'
logs show each shard of each job stored exactly once and each job merged exactly once (a shard
computed by both workers, or a job queued twice, would show twice). Throughput and p50/p95
latency per kind of call go to ``load.json`` under ``$FACEXPLAIN_RELIABILITY_OUT`` (else the test's
temporary folder) and are printed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from explainer_service.api.client import FacexplainClient
from explainer_service.demo import make_demo_pair
from explainer_service.worker.plan import plan_shards
from tests.reliability.conftest import Service

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

CLIENTS = 16
N_MASKS = 50
SHARD_MASKS = 16  # 4 shards per job ([0, 16), [16, 32), [32, 48), [48, 50)): both workers share each job
VERIFIES = 3
JOB_TIMEOUT_S = 600.0
STORED = re.compile(r"job ([0-9a-f]{64}): shard shard:(\d+)-(\d+) stored by")
MERGED = re.compile(r"job ([0-9a-f]{64}): \d+ shards merged by")


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {"n": len(values), "p50_ms": round(float(np.percentile(arr, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(arr, 95)) * 1000, 1), "max_ms": round(float(arr.max()) * 1000, 1)}


def _api(svc: Service, *extra: str) -> str:
    """``facexplain api --engine local --port 0``; its address, from its log."""
    svc.start("api", ["api", "--redis", svc.redis_url, "--engine", "local", "--port", "0", *extra],
              ready="serving on ")
    text = svc.log("api").read_text(errors="replace")
    return text.split("serving on ", 1)[1].split()[0]


def _stack(svc: Service, workers: int) -> str:
    svc.start_redis()
    for i in range(workers):
        svc.start_worker(f"worker{i}", "--engine", "local", "--loglevel", "info")
    return _api(svc)


def test_sixteen_concurrent_clients_every_request_answered_no_work_twice(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    a_path, b_path = make_demo_pair(tmp_path / "demo")
    a, b = a_path.read_bytes(), b_path.read_bytes()
    svc = service_factory(FACEXPLAIN_SHARD_MASKS=str(SHARD_MASKS), FACEXPLAIN_JOB_TTL="3600")
    address = _stack(svc, workers=2)

    latencies: dict[str, list[float]] = {"verify": [], "explain": [], "job": [], "result": []}
    answers: list[tuple[str, str, bool]] = []  # (which, job id, reused)
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def timed(kind: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        with lock:
            latencies[kind].append(time.perf_counter() - t0)
        return out

    def client(i: int) -> None:
        try:
            with FacexplainClient(address, timeout=300) as c:
                barrier.wait(timeout=120)
                t_shared = time.perf_counter()
                shared = timed("explain", lambda: c.explain(a, b, params={"n_masks": N_MASKS, "seed": 0}))
                timed("verify", lambda: c.verify(a, b))
                t_own = time.perf_counter()
                own = timed("explain", lambda: c.explain(a, b, params={"n_masks": N_MASKS, "seed": 100 + i}))
                for _ in range(VERIFIES - 1):
                    v = timed("verify", lambda: c.verify(b, a))
                    assert v.decision in ("match", "non-match") and -1.0 <= v.score <= 1.0
                with lock:
                    answers.extend([("shared", shared.job.id, shared.reused), ("own", own.job.id, own.reused)])
                for sub, t_sub in ((shared, t_shared), (own, t_own)):
                    final = c.wait(sub.job.id, timeout=JOB_TIMEOUT_S)
                    with lock:
                        latencies["job"].append(time.perf_counter() - t_sub)
                    assert final.state == "done", f"job {final.id} {final.state}: {final.error}"
                    result = timed("result", lambda sub=sub: c.get_result(sub.job.id))
                    assert result.s_a is not None and result.s_a.shape == (150, 150)
                    assert result.masks == N_MASKS and np.isfinite(result.s_a).all()
        except BaseException as exc:  # noqa: BLE001 - every failure of a client thread is reported by the test
            with lock:
                errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,), name=f"client{i}") for i in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOB_TIMEOUT_S + 120)
    wall = time.perf_counter() - t0
    assert not any(t.is_alive() for t in threads), "a client never returned"
    assert errors == []

    # every request answered: 16 x (2 explains, 3 verifies, 2 results)
    assert len(latencies["explain"]) == 2 * CLIENTS and len(latencies["verify"]) == VERIFIES * CLIENTS
    assert len(latencies["result"]) == len(latencies["job"]) == 2 * CLIENTS
    shared_ids = {job_id for which, job_id, _ in answers if which == "shared"}
    own_ids = {job_id for which, job_id, _ in answers if which == "own"}
    assert len(shared_ids) == 1 and len(own_ids) == CLIENTS and not shared_ids & own_ids
    queued = Counter(which for which, _, reused in answers if not reused)
    assert queued == {"shared": 1, "own": CLIENTS}  # the identical request queued once, by one client

    # no duplicate work: each shard of each job stored once, each job merged once
    logs = "".join(svc.log(f"worker{i}").read_text(errors="replace") for i in range(2))
    stored = Counter((m[1], (int(m[2]), int(m[3]))) for m in STORED.finditer(logs))
    merged = Counter(m[1] for m in MERGED.finditer(logs))
    plan = plan_shards(N_MASKS, SHARD_MASKS)
    want = {(job_id, shard) for job_id in shared_ids | own_ids for shard in plan}
    assert set(stored) == want, f"shards stored: {sorted(stored)}"
    assert max(stored.values()) == 1, f"shards computed twice: {[k for k, n in stored.items() if n > 1]}"
    assert merged == dict.fromkeys(shared_ids | own_ids, 1)
    by_worker = [len(STORED.findall(svc.log(f"worker{i}").read_text(errors="replace"))) for i in range(2)]

    jobs = len(shared_ids | own_ids)
    report = {
        "clients": CLIENTS,
        "workers": 2,
        "n_masks": N_MASKS,
        "shard_masks": SHARD_MASKS,
        "requests": {k: len(v) for k, v in latencies.items() if k != "job"},
        "jobs_computed": jobs,
        "shards_computed": sum(stored.values()),
        "shards_per_worker": by_worker,
        "seconds": round(wall, 1),
        "throughput_per_s": {
            "verify": round(len(latencies["verify"]) / wall, 2),
            "explain_submit": round(len(latencies["explain"]) / wall, 2),
            "jobs_done": round(jobs / wall, 3),
            "masks_done": round(jobs * N_MASKS / wall, 1),
        },
        "latency": {k: _percentiles(v) for k, v in latencies.items()},
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
    }
    out = Path(os.environ.get("FACEXPLAIN_RELIABILITY_OUT") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nload:", json.dumps(report))


def _holders(client: redis.Redis, needle: bytes) -> list[str]:
    """Keys whose name or value holds ``needle`` (every type a job or the queue may use)."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if needle in key:
            found.append(key.decode(errors="replace"))
            continue
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"stream":
            values = [repr(client.xrange(key)).encode()]
        else:
            values = []
        if any(needle in v for v in values):
            found.append(key.decode(errors="replace"))
    return found


def test_a_finished_job_leaves_nothing_in_redis_after_its_ttl(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    """FACEXPLAIN_JOB_TTL=8 s for the API and the worker: the job runs, its result is read, and
    once the TTL has passed no key of Redis names the job or holds its id (records, images,
    shards, maps, index entries, queue messages)."""
    a_path, b_path = make_demo_pair(tmp_path / "demo")
    ttl = 8
    svc = service_factory(FACEXPLAIN_SHARD_MASKS=str(SHARD_MASKS), FACEXPLAIN_JOB_TTL=str(ttl))
    address = _stack(svc, workers=1)
    with FacexplainClient(address, timeout=120) as c:
        job = c.explain(a_path.read_bytes(), b_path.read_bytes(), params={"n_masks": 32, "seed": 1}).job
        assert c.wait(job.id, timeout=300).state == "done"
        assert c.get_result(job.id).s_a is not None
        expires = c.get_job(job.id).expires_at
    assert expires is not None and expires - time.time() <= ttl + 1
    client = redis.Redis.from_url(svc.redis_url, socket_timeout=10)
    try:
        needle = job.id.encode()
        assert _holders(client, needle), "the job's keys should exist before the TTL"
        time.sleep(max(0.0, expires - time.time()) + 1.5)
        assert _holders(client, needle) == []
    finally:
        client.close()
    with FacexplainClient(address, timeout=30) as c, pytest.raises(Exception, match="no job"):
        c.get_job(job.id)
