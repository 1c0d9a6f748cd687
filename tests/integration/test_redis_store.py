"""The job store on a real redis-server (the embedded one, on a free loopback port).

Records, images, CorrRISE shards (bit-exact; merged = single pass), results and audit rows round
trip; rewrites are idempotent; leases and cancellation; retention (a TTL on every key, expiry and
delete leave nothing, a deleted job is not resurrected); AOF survives a SIGKILL; the server listens
on loopback only, reports a busy port, and leaves no process behind.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from explainer_service.alignment import Aligner
from explainer_service.errors import (
    BackendError,
    BackendUnavailableError,
    InputError,
    ModelNotReadyError,
    NotFoundError,
    grpc_status,
    is_retryable,
)
from explainer_service.masks import MaskConfig
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.pipeline import explain_pair
from explainer_service.serving.leftovers import pid_alive
from explainer_service.settings import Settings
from explainer_service.store import (
    ClaimResult,
    EmbeddedRedis,
    JobError,
    JobState,
    RedisJobStore,
    content_job_id,
    find_redis_server,
    job_keys,
    lease_unit,
    stop_pid,
)
from explainer_service.store.keys import job_key
from explainer_service.store.redis_store import shard_from_bytes, shard_to_bytes
from tests.integration.procs import listening
from tests.toy import ToyModel, toy_pair

N_MASKS = 64
FACE_A, FACE_B = b"\xff\xd8JPEG-A" + bytes(range(256)), b"\x89PNG-B" + bytes(range(255, -1, -1))


def raw_client(store_or_url: RedisJobStore | str) -> redis.Redis:
    url = store_or_url if isinstance(store_or_url, str) else store_or_url.url
    return redis.Redis.from_url(url, socket_timeout=5)


def our_keys(store: RedisJobStore) -> list[bytes]:
    client = raw_client(store)
    try:
        return sorted(client.scan_iter(match=f"{store.prefix}:*", count=1000))
    finally:
        client.close()


def engine() -> CorrRISE:
    return CorrRISE(ToyModel(), CorrRISEConfig(masks=MaskConfig(n_masks=N_MASKS, patches=3, patch_size=6, seed=3)))


def new_job(store: RedisJobStore, job_id: str = "job-1", **kw: object) -> str:
    store.create_job(job_id, "explain", model="toy", method="corrrise", params={"n_masks": N_MASKS},
                     total=N_MASKS, inputs={"a": FACE_A, "b": FACE_B}, **kw)  # type: ignore[arg-type]
    return job_id


# -- records -----------------------------------------------------------------------------------


def test_job_record_round_trip_and_cache_hit(job_store):
    job_id = content_job_id("explain", [FACE_A, FACE_B], model="toy", model_sha256="0" * 64,
                            method="corrrise", params={"n_masks": N_MASKS, "seed": 3})
    record, created = job_store.create_job(
        job_id, "explain", model="toy", method="corrrise", params={"n_masks": N_MASKS, "seed": 3},
        total=N_MASKS, inputs={"a": FACE_A, "b": FACE_B},
    )
    assert created and record.id == job_id and record.state is JobState.QUEUED
    assert (record.kind.value, record.model, record.method, record.done, record.total) == (
        "explain", "toy", "corrrise", 0, N_MASKS)
    assert record.params == {"n_masks": N_MASKS, "seed": 3}
    assert abs(record.created_at - time.time()) < 5 and record.started_at is None
    assert abs(record.expires_at - record.created_at - 86400) < 1e-3  # default TTL: 24 h
    # the same request again: the stored job, unchanged, nothing recomputed
    again, created = job_store.create_job(job_id, "explain", model="other", total=1)
    assert not created and again == record
    assert job_store.get_input(job_id, "a") == FACE_A and job_store.get_input(job_id, "b") == FACE_B
    assert job_store.input_names(job_id) == ["a", "b"]
    with pytest.raises(NotFoundError, match="no input 'c'"):
        job_store.get_input(job_id, "c")
    assert [r.id for r in job_store.list_jobs()] == [job_id]
    assert job_store.list_jobs(states=["done"]) == [] and job_store.list_jobs(kind="audit") == []
    assert job_store.count_by_state()[JobState.QUEUED] == 1


def test_unknown_jobs_are_not_found_and_bad_ids_input_errors(job_store):
    for call in (
        lambda: job_store.get_job("nope"),
        lambda: job_store.get_result("nope"),
        lambda: job_store.get_summary("nope"),
        lambda: job_store.request_cancel("nope"),
        lambda: job_store.set_state("nope", "running"),
        lambda: job_store.claim("nope", "job", "w", lease_s=1),
        lambda: job_store.put_pair("nope", 0, {"score": 1.0}),
        lambda: job_store.delete_job("nope"),
    ):
        with pytest.raises(NotFoundError, match="no job nope") as info:
            call()
        assert grpc_status(info.value) == "NOT_FOUND"
    assert job_store.find_job("nope") is None
    with pytest.raises(InputError, match="malformed"):
        job_store.get_job("../etc")


def test_states_leases_and_cancellation(job_store):
    job_id = new_job(job_store)
    unit = lease_unit("shard", lo=0, hi=16)
    assert job_store.claim(job_id, unit, "w1", lease_s=0.3) is ClaimResult.CLAIMED
    record = job_store.get_job(job_id)
    assert record.state is JobState.RUNNING and record.started_at is not None
    assert record.lease is not None and (record.lease.owner, record.lease.unit) == ("w1", unit)
    assert job_store.claim(job_id, unit, "w2", lease_s=5) is ClaimResult.HELD  # a duplicate delivery
    assert job_store.claim(job_id, unit, "w1", lease_s=0.3) is ClaimResult.CLAIMED  # renew
    time.sleep(0.4)
    assert job_store.claim(job_id, unit, "w2", lease_s=5) is ClaimResult.CLAIMED  # w1 died: lease expired
    job_store.release(job_id, unit, "w1")  # not w1's any more: nothing changes
    assert job_store.claim(job_id, unit, "w3", lease_s=5) is ClaimResult.HELD
    job_store.release(job_id, unit, "w2")
    assert job_store.claim(job_id, unit, "w3", lease_s=5) is ClaimResult.CLAIMED
    job_store.report_progress(job_id, 10)
    job_store.report_progress(job_id, 4)  # progress never goes back
    assert job_store.get_job(job_id).done == 10
    # a running job: the flag, checked by its worker; new claims stop
    assert not job_store.cancel_requested(job_id)
    assert job_store.request_cancel(job_id).state is JobState.RUNNING
    assert job_store.cancel_requested(job_id)
    assert job_store.claim(job_id, lease_unit("shard", lo=16, hi=32), "w1", lease_s=5) is ClaimResult.STOPPED
    done = job_store.set_state(job_id, JobState.CANCELLED)
    assert done.state is JobState.CANCELLED and done.finished_at is not None
    # final states are sticky
    assert job_store.set_state(job_id, "done").state is JobState.CANCELLED
    # a queued job is cancelled at once
    other = new_job(job_store, "job-2")
    assert job_store.request_cancel(other).state is JobState.CANCELLED
    # a failure keeps its status and message
    third = new_job(job_store, "job-3")
    failed = job_store.set_state(third, "failed", error=JobError("UNAVAILABLE", "Triton not answering"))
    assert failed.error == JobError("UNAVAILABLE", "Triton not answering") and failed.final
    with pytest.raises(InputError, match="needs an error"):
        job_store.set_state(new_job(job_store, "job-4"), "failed")
    assert job_store.cancel_requested("gone")  # no job: the worker stops too


# -- shards, results, pairs ---------------------------------------------------------------------


def test_shard_state_round_trip_is_bit_exact(job_store):
    a, b = toy_pair()
    shard = engine().run_shard(a, b, 0, 24)
    back = shard_from_bytes(shard_to_bytes(shard))
    job_id = new_job(job_store)
    assert job_store.put_shard(job_id, shard)
    (stored,) = job_store.get_shards(job_id)
    for copy in (back, stored):
        want, got = shard.state(), copy.state()
        assert want.keys() == got.keys()
        for key, value in want.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key  # type: ignore[union-attr]
            else:
                assert got[key] == value, key


def test_shards_merged_from_the_store_equal_the_single_pass(job_store):
    eng = engine()
    a, b = toy_pair()
    single = eng.attribute(a, b)
    job_id = new_job(job_store)
    emb = eng.clean_embeddings(a, b)
    ranges = [(0, 16), (16, 24), (24, 48), (48, 64)]  # "4 workers", finishing in any order
    random.Random(5).shuffle(ranges)
    for lo, hi in ranges:
        shard = eng.run_shard(a, b, lo, hi, embeddings=None if lo == 0 else emb)
        assert job_store.put_shard(job_id, shard)
        assert job_store.claim(job_id, lease_unit("shard", lo=lo, hi=hi), "w9", lease_s=5) is ClaimResult.DONE
    assert [s.ranges for s in job_store.get_shards(job_id)] == [((0, 16),), ((16, 24),), ((24, 48),), ((48, 64),)]
    merged = job_store.merged_shard(job_id)
    assert merged is not None and merged.covers(N_MASKS)
    maps = eng.finish(merged)
    assert np.abs(maps.s_a - single.s_a).max() <= 1e-6 and np.abs(maps.s_b - single.s_b).max() <= 1e-6
    assert np.array_equal(maps.scores_a, single.scores_a) and maps.score == single.score
    assert job_store.get_job(job_id).done == N_MASKS  # each shard counted once
    # partial maps while running: the stored shards so far
    partial_job = new_job(job_store, "job-partial")
    job_store.put_shard(partial_job, eng.run_shard(a, b, 0, 16))
    partial = job_store.merged_shard(partial_job)
    assert partial is not None and partial.masks == 16 and eng.finish(partial).masks == 16
    assert job_store.merged_shard(new_job(job_store, "job-empty")) is None


def test_rewrites_are_idempotent(job_store):
    eng = engine()
    a, b = toy_pair()
    job_id = new_job(job_store)
    shard = eng.run_shard(a, b, 0, 32)
    assert job_store.put_shard(job_id, shard) is True
    assert job_store.put_shard(job_id, shard) is False  # a redelivered task: same field, same bytes
    assert job_store.put_pair(job_id, 0, {"score": 0.5}) is True
    assert job_store.put_pair(job_id, 0, {"score": 0.5}) is False
    client = raw_client(job_store)
    try:
        shards_key, pairs_key = job_keys(job_id, job_store.prefix)[2:4]
        assert client.hlen(shards_key) == 1 and client.hlen(pairs_key) == 1
    finally:
        client.close()
    assert job_store.get_job(job_id).done == 32 + 1
    assert len(job_store.get_shards(job_id)) == 1


def test_pair_result_round_trip_through_the_store(job_store):
    model = ToyModel()
    a, b = toy_pair()
    result = explain_pair(a, b, model, "corrrise", {"budget": 16}, aligner=Aligner(pre_aligned="arcface"))
    job_id = new_job(job_store)
    assert job_store.get_result(job_id) is None  # not finished
    job_store.put_result(job_id, result)
    job_store.put_result(job_id, result)  # idempotent
    back = job_store.get_result(job_id)
    assert back is not None and back.to_dict() == result.to_dict()
    for key, arr in result.arrays().items():
        got = back.arrays()[key]
        assert got.dtype == arr.dtype and np.array_equal(got, arr), key
    assert job_store.get_summary(job_id) == result.to_dict()


def test_audit_rows_pages_maps_and_summary(job_store):
    job_id = "audit-1"
    job_store.create_job(job_id, "audit", model="toy", method="corrrise,rise", total=10,
                         inputs={f"{i}{s}": bytes([i]) * 10 for i in range(3) for s in "ab"})
    job_store.put_inputs(job_id, {"3a": b"x", "3b": b"y"})
    assert len(job_store.input_names(job_id)) == 8
    for i in range(10):
        if i != 5:
            job_store.put_pair(job_id, i, {"index": i, "score": i / 10, "correct": i % 2 == 0},
                               maps=b"npz-%d" % i if i < 2 else None)
    assert [i for i, _ in job_store.get_pairs(job_id, offset=3, limit=4)] == [3, 4, 6]
    assert job_store.get_pairs(job_id, offset=0, limit=1) == [(0, {"correct": True, "index": 0, "score": 0.0})]
    assert job_store.get_pair_maps(job_id, 1) == b"npz-1" and job_store.get_pair_maps(job_id, 4) is None
    assert job_store.get_job(job_id).done == 9
    assert job_store.get_summary(job_id) is None
    job_store.put_summary(job_id, {"accuracy": 0.8, "worst": [3, 7]})
    assert job_store.get_summary(job_id) == {"accuracy": 0.8, "worst": [3, 7]}
    with pytest.raises(InputError, match="JSON"):
        job_store.put_pair(job_id, 11, {"x": float("nan")})


# -- retention ----------------------------------------------------------------------------------


def fill(store: RedisJobStore, job_id: str) -> None:
    """Write every kind of key a job has."""
    eng = engine()
    a, b = toy_pair()
    unit = lease_unit("shard", lo=0, hi=16)
    store.claim(job_id, unit, "w1", lease_s=60)
    store.put_shard(job_id, eng.run_shard(a, b, 0, 16))
    store.put_pair(job_id, 0, {"score": 0.1}, maps=b"maps")
    store.put_summary(job_id, {"accuracy": 1.0})


def test_every_key_of_a_job_carries_the_jobs_expiry(job_store, redis_server):
    job_id = new_job(job_store, ttl_s=600)
    fill(job_store, job_id)
    keys = our_keys(job_store)
    assert len(keys) == len(job_keys(job_id)) + 1  # every part, plus the listing index
    client = raw_client(redis_server.url)
    try:
        ttls = {k: client.pttl(k) for k in keys}
        assert all(0 < t <= 600_000 for t in ttls.values()), ttls
        assert max(ttls.values()) - min(ttls.values()) < 2000, ttls  # one expiry for the whole job
        # and no key of the whole server lives forever (other tests' jobs included)
        forever = [k for k in client.scan_iter(count=1000) if client.pttl(k) == -1]
        assert forever == []
    finally:
        client.close()


def test_expiry_leaves_nothing_and_is_not_undone(redis_server):
    store = RedisJobStore(redis_server.url, prefix="ttltest", ttl_s=1.0)
    try:
        job_id = new_job(store)
        fill(store, job_id)
        assert store.get_job(job_id).expires_at - store.get_job(job_id).created_at == pytest.approx(1.0)
        assert len(our_keys(store)) == 8
        time.sleep(1.3)
        assert our_keys(store) == []  # images, maps, rows, leases and the index entry: all gone
        with pytest.raises(NotFoundError):
            store.get_job(job_id)
        with pytest.raises(NotFoundError):  # a late worker cannot bring the job back
            store.put_shard(job_id, engine().run_shard(*toy_pair(), 16, 32))
        assert store.list_jobs() == [] and our_keys(store) == []
    finally:
        store.close()


def test_delete_removes_every_key_of_the_job_and_only_those(job_store):
    keep = new_job(job_store, "keep")
    fill(job_store, keep)
    before = our_keys(job_store)
    gone = new_job(job_store, "gone")
    fill(job_store, gone)
    job_store.put_result(gone, explain_pair(*toy_pair(), ToyModel(), "corrrise", {"budget": 16},
                                            aligner=Aligner(pre_aligned="arcface")))
    job_store.delete_job(gone)
    assert our_keys(job_store) == before
    assert not any(b"{gone}" in k for k in our_keys(job_store))
    client = raw_client(job_store)
    try:
        assert client.zrange(f"{job_store.prefix}:jobs", 0, -1) == [b"keep"]  # index pruned at once
    finally:
        client.close()
    assert [r.id for r in job_store.list_jobs()] == [keep]
    with pytest.raises(NotFoundError):
        job_store.delete_job(gone)
    with pytest.raises(NotFoundError):  # no resurrection by a late write
        job_store.put_pair(gone, 1, {"score": 0.0})
    assert our_keys(job_store) == before


def test_logs_name_sizes_never_image_bytes(job_store, caplog):
    marker = b"SECRET-FACE-" + bytes(range(32, 127))
    with caplog.at_level(logging.DEBUG, logger="explainer_service.store"):
        job_id = job_store.create_job("logged", "audit", inputs={"0a": marker, "0b": marker})[0].id
        job_store.put_inputs(job_id, {"1a": marker})
        job_store.put_pair(job_id, 0, {"score": 0.3}, maps=marker)
        job_store.delete_job(job_id)
    assert caplog.records  # it does log
    text = caplog.text
    assert "SECRET-FACE" not in text and marker.decode("latin-1")[12:40] not in text


# -- the server ---------------------------------------------------------------------------------


def test_server_is_configured_as_a_job_store_on_loopback(redis_server):
    client = raw_client(redis_server.url)
    try:
        config = {k: client.config_get(k)[k] for k in
                  ("bind", "appendonly", "appendfsync", "maxmemory-policy", "protected-mode", "save")}
    finally:
        client.close()
    assert config == {"bind": "127.0.0.1", "appendonly": "yes", "appendfsync": "everysec",
                      "maxmemory-policy": "noeviction", "protected-mode": "yes", "save": ""}
    assert redis_server.pid is not None
    assert set(listening(redis_server.pid)) == {("127.0.0.1", redis_server.port)}
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_aof_keeps_a_job_across_a_sigkill(tmp_path):
    first = EmbeddedRedis(tmp_path / "redis", startup_timeout=30).start()
    port = first.port
    try:
        with RedisJobStore(first.url) as store:
            job_id = new_job(store, ttl_s=3600)
            store.put_shard(job_id, engine().run_shard(*toy_pair(), 0, 16))
            before = store.get_job(job_id)
        time.sleep(1.2)  # appendfsync everysec
        pid = first.pid
        first.kill()
        assert pid is not None and not pid_alive(pid)
        second = EmbeddedRedis(tmp_path / "redis", port=port, startup_timeout=30).start()
        try:
            with RedisJobStore(second.url) as store:
                after = store.get_job(job_id)
                assert after == before  # expiry included: absolute times survive a restart
                assert store.get_input(job_id, "a") == FACE_A
                assert len(store.get_shards(job_id)) == 1
        finally:
            second.stop()
    finally:
        first.stop()


def test_busy_port_is_a_clear_error_and_leaves_nothing_running(redis_server, tmp_path):
    with pytest.raises(InputError, match=rf"Redis port {redis_server.port} on 127.0.0.1 is already in use"):
        EmbeddedRedis(tmp_path / "r2", port=redis_server.port, startup_timeout=30).start()
    # a port some other program holds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        server = EmbeddedRedis(tmp_path / "r3", port=busy, startup_timeout=30)
        with pytest.raises(InputError, match="already in use"):
            server.start()
        assert server.pid is None
    with pytest.raises(InputError, match="outside 0..65535"):
        EmbeddedRedis(tmp_path, port=70000)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create the Redis folder"):
        EmbeddedRedis(tmp_path / "file" / "sub").start()


def test_stop_and_parent_death_leave_no_process(tmp_path):
    server = EmbeddedRedis(tmp_path / "a", startup_timeout=30).start()
    pid = server.pid
    assert pid is not None and pid_alive(pid)
    server.stop()
    server.stop()  # twice is fine
    assert not pid_alive(pid)
    # a foreground starter killed outright takes its server with it (PR_SET_PDEATHSIG)
    code = (
        "import sys; from explainer_service.store.server import EmbeddedRedis;"
        f"s = EmbeddedRedis({str(tmp_path / 'b')!r}, startup_timeout=30).start();"
        "print(s.pid, flush=True); sys.stdin.read()"
    )
    starter = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert starter.stdout is not None
        child = int(starter.stdout.readline())
        assert pid_alive(child)
    finally:
        starter.kill()
        starter.wait()
        if starter.stdin is not None:
            starter.stdin.close()
        if starter.stdout is not None:
            starter.stdout.close()
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(child):  # do not leave it behind even when the test fails
        os.kill(child, signal.SIGKILL)
        pytest.fail("redis-server outlived the process that started it")


def test_a_stopped_server_is_a_retryable_unavailable_error(tmp_path):
    server = EmbeddedRedis(tmp_path / "r", startup_timeout=30).start()
    url = server.url.replace("redis://", "redis://:hunter2@")
    store = RedisJobStore(url, timeout_s=1)
    store.ping()
    server.stop()
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        store.get_job("any")
    assert time.monotonic() - started < 5  # no minute of redis-py default retries
    assert is_retryable(info.value) and grpc_status(info.value) == "UNAVAILABLE"
    assert f"127.0.0.1:{server.port}" in str(info.value) and "hunter2" not in str(info.value)
    store.close()


def test_the_binary_is_found_and_a_wrong_one_named(tmp_path):
    found = find_redis_server(Settings.from_env({"FACEXPLAIN_HOME": str(tmp_path)}))
    assert found.name == "redis-server" and os.access(found, os.X_OK)
    bad = tmp_path / "redis-server"
    bad.write_text("not a program")
    with pytest.raises(ModelNotReadyError, match="FACEXPLAIN_REDIS_SERVER"):
        find_redis_server(Settings.from_env({"FACEXPLAIN_HOME": str(tmp_path), "FACEXPLAIN_REDIS_SERVER": str(bad)}))


def test_listing_prunes_ids_whose_record_is_gone(job_store):
    new_job(job_store, "left")
    new_job(job_store, "right")
    client = raw_client(job_store)
    try:
        client.delete(job_keys("left", job_store.prefix)[0])  # gone behind the store's back
        assert [r.id for r in job_store.list_jobs()] == ["right"]
        assert client.zrange(f"{job_store.prefix}:jobs", 0, -1) == [b"right"]
    finally:
        client.close()
    assert job_store.list_jobs(limit=0) == []


def test_a_detached_server_is_stopped_through_its_pid_file(tmp_path):
    server = EmbeddedRedis(tmp_path / "d", detach=True, startup_timeout=30).start()
    try:
        deadline = time.monotonic() + 5
        while not server.pid_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(server.pid_path.read_text())
        assert pid == server.pid
        assert stop_pid(pid) is True
        assert server._proc is not None and server._proc.wait(timeout=10) == 0  # SIGTERM: a clean shutdown
        assert stop_pid(pid) is False
    finally:
        server.stop()


def test_progress_and_counts_read_no_parameters(job_store):
    """A worker's check after each unit and the job counts read a few fields, never ``params``:
    a damaged ``params`` field (which get_job refuses) does not disturb them."""
    big = {"pairs": [["input", f"a{i}"] for i in range(2000)]}
    record, _ = job_store.create_job("big", "audit", model="toy", params=big, total=2000)
    job_store.report_progress("big", 7)
    progress = job_store.job_progress("big")
    assert (progress.state, progress.done, progress.total) == (JobState.QUEUED, 7, 2000)
    assert progress.created_at == record.created_at
    job_store.create_job("small", "explain", model="toy", total=1)
    job_store.set_state("small", "running")
    client = redis.Redis.from_url(job_store.url, socket_timeout=5)
    try:
        client.hset(job_key("big", job_store.prefix), "params", "{not json")
    finally:
        client.close()
    with pytest.raises(BackendError, match="damaged record"):
        job_store.get_job("big")
    assert job_store.job_progress("big").done == 7
    counts = job_store.count_by_state()
    assert counts[JobState.QUEUED] == 1 and counts[JobState.RUNNING] == 1 and sum(counts.values()) == 2
    with pytest.raises(NotFoundError):
        job_store.job_progress("nope")
