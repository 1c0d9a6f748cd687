"""The gRPC API on real servers: a redis-server, the API (in a thread of this process, and as a
``facexplain api`` subprocess) and, end to end, a ``facexplain worker`` subprocess.

Verify gives the library's score; bad input comes back as the right status with a readable
message (a file that is not an image, an unknown model or job, masks over the limit, a message
over the size limit); Explain checks before it queues, names its job by content (the same request
is answered from the store at once, ``force`` queues again); jobs are cancelled, deleted, listed
by pages; ListMethods is the registry's; health and reflection answer; with a token every call
but health needs it. End to end, ``facexplain client explain`` writes the three files of
``facexplain explain --engine local`` with the same maps, WatchJob's partial maps end at the
result's maps, and nothing is left running.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from explainer_service import cli
from explainer_service.alignment import DEFAULT_DETECTOR
from explainer_service.api.client import FacexplainClient
from explainer_service.api.convert import method_info_to_message
from explainer_service.api.server import BackgroundServer, ServerConfig
from explainer_service.api.service import ApiService
from explainer_service.api.status import JobNotFinishedError
from explainer_service.demo import make_demo_pair
from explainer_service.errors import (
    AuthenticationError,
    BackendUnavailableError,
    DeadlineExceededError,
    InputError,
    LimitExceededError,
    NotFoundError,
    UnknownModelError,
)
from explainer_service.methods.registry import list_methods
from explainer_service.pipeline import explain_pair, load_face_model
from explainer_service.processes import api_address, start_command, stop_groups
from explainer_service.store import EmbeddedRedis, RedisJobStore
from tests.inprocess_api import RecordingQueue, in_process_api
from tests.integration.procs import left_after, marked_env

TOKEN = "t0ken-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_demo_pair(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own: the workers use the store's default key prefix."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-api"), startup_timeout=30) as server:
        yield server.url



@pytest.fixture(scope="module")
def served(redis_url: str) -> Iterator[tuple[str, RecordingQueue, RedisJobStore]]:
    """An in-process API server (local engine) whose jobs are recorded, not run."""
    store = RedisJobStore(redis_url, prefix=f"api{uuid.uuid4().hex[:8]}")
    with in_process_api(store) as (address, queue):
        yield address, queue, store
    store.close()


@pytest.fixture
def client(served: tuple[str, RecordingQueue, RedisJobStore]) -> Iterator[FacexplainClient]:
    with FacexplainClient(served[0], timeout=60) as c:
        yield c


def test_verify_gives_the_library_score(client: FacexplainClient, pair: tuple[Path, Path]):
    a, b = pair
    v = client.verify(a.read_bytes(), b.read_bytes(), include_chips=True)
    lib = explain_pair(a, b, load_face_model(), "corrrise", {"n_masks": 16})
    assert v.model == lib.model == "dlib-resnet-v1"
    assert abs(v.score - lib.score) <= 1e-5
    assert v.threshold == lib.threshold and v.decision == lib.decision
    assert v.face_a.method == "detected" and v.face_a.faces_found >= 1
    assert v.face_a.chip is not None and v.face_a.chip.shape == (150, 150, 3)
    assert np.array_equal(v.face_a.chip, lib.face_a.chip)


def test_bad_input_is_the_right_status_with_a_readable_message(
    client: FacexplainClient, pair: tuple[Path, Path]
):
    a = pair[0].read_bytes()
    with pytest.raises(InputError, match="image a: not an image") as info:
        client.verify(b"this is not an image", a)
    assert type(info.value) is InputError
    with pytest.raises(InputError, match="truncated|not an image|cannot"):
        client.verify(a[: len(a) // 3], a)
    blank = _png(np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(InputError, match="face"):
        client.verify(blank, a)
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'"):
        client.verify(a, a, model="no-such-model")
    with pytest.raises(NotFoundError, match="no job"):
        client.get_job("f" * 64)
    with pytest.raises(InputError, match="malformed"):
        client.get_job("../../etc/passwd")
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_MASKS"):
        client.explain(a, a, params={"n_masks": 10**9})
    with pytest.raises(InputError, match="n_masks"):
        client.explain(a, a, params={"n_masks": 0})
    with pytest.raises(InputError, match="n_masks"):
        client.explain(a, a, params={"n_masks": -1})
    with pytest.raises(InputError, match="unknown method"):
        client.explain(a, a, method="shap")
    with pytest.raises(InputError, match="no_such_param"):
        client.explain(a, a, params={"no_such_param": 1})
    with pytest.raises(InputError, match="page_size"):
        client._call(client._stub.ListJobs, _list_jobs_request(page_size=-1))


def _list_jobs_request(**kw):
    from explainer_service.api.pb import service_pb2

    return service_pb2.ListJobsRequest(**kw)


def _png(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_explain_is_checked_named_by_content_and_cached(
    served: tuple[str, RecordingQueue, RedisJobStore], client: FacexplainClient, pair: tuple[Path, Path]
):
    _address, queue, store = served
    a, b = (p.read_bytes() for p in pair)
    params = {"n_masks": 48, "seed": 3}
    before = len(queue.ids)
    with pytest.raises(InputError, match="image b.*face"):  # no face: refused before anything is queued
        client.explain(a, _png(np.zeros((120, 120, 3), np.uint8)), params=params)
    assert len(queue.ids) == before
    first = client.explain(a, b, params=params)
    assert not first.reused and first.job.state == "queued" and first.job.total == 48 and first.job.unit == "masks"
    assert len(first.job.id) == 64 and queue.ids[-1] == first.job.id
    t0 = time.perf_counter()
    again = client.explain(a, b, params={"seed": 3, "n_masks": 48})
    cached_s = time.perf_counter() - t0
    assert again.reused and again.job.id == first.job.id and cached_s < 0.5
    assert len(queue.ids) == before + 1  # nothing queued twice
    assert client.explain(b, a, params=params).job.id != first.job.id  # (A, B) is not (B, A)
    forced = client.explain(a, b, params=params, force=True)
    assert not forced.reused and forced.job.id == first.job.id and queue.ids[-1] == first.job.id
    stored = store.get_job(first.job.id)
    assert stored.params == {"method": {"n_masks": 48, "seed": 3}, "align": {"face": "largest", "aligned": "auto", "detector": DEFAULT_DETECTOR}}
    with pytest.raises(JobNotFinishedError, match="queued"):
        client.get_result(first.job.id)


def test_jobs_are_cancelled_deleted_and_listed(client: FacexplainClient, pair: tuple[Path, Path]):
    a, b = (p.read_bytes() for p in pair)
    ids = [client.explain(a, b, params={"n_masks": 16, "seed": s}).job.id for s in (100, 101, 102)]
    listed = [j.id for j in client.list_jobs(limit=1000)]
    assert set(ids) <= set(listed)
    assert len(client.list_jobs(limit=2)) == 2
    assert [j.id for j in client.list_jobs(state="done")] == []
    cancelled = client.cancel(ids[0])
    assert cancelled.cancel_requested and cancelled.id == ids[0]
    client.delete(ids[1])
    with pytest.raises(NotFoundError):
        client.get_job(ids[1])
    with pytest.raises(NotFoundError):
        client.delete(ids[1])
    assert ids[1] not in [j.id for j in client.list_jobs()]


def test_watch_sends_the_record_and_ends_at_the_deadline_of_an_open_job(
    client: FacexplainClient, pair: tuple[Path, Path]
):
    a, b = (p.read_bytes() for p in pair)
    job = client.explain(a, b, params={"n_masks": 16, "seed": 7}).job
    seen = []
    with pytest.raises(DeadlineExceededError):  # the job never runs here: the stream lasts until the deadline
        for update in client.watch(job.id, timeout=1.0):
            seen.append(update.job.state)
    assert seen == ["queued"]  # one update: nothing changed after it
    with pytest.raises(NotFoundError):
        list(client.watch("0" * 64, timeout=5))


def test_list_methods_is_the_registry_and_models_are_listed(client: FacexplainClient):
    got = client.list_methods()
    want = list_methods()
    assert [method_info_to_message(m) for m in got] == [method_info_to_message(m) for m in want]
    assert [m.name for m in client.list_methods(chip_size=112)] == [m.name for m in want]
    models = {m.name: m for m in client.list_models()}
    assert models["dlib-resnet-v1"].ready and models["dlib-resnet-v1"].is_default
    assert models["dlib-resnet-v1"].chip_size == 150
    assert not models["arcface_r50"].ready and "import" in models["arcface_r50"].not_ready_reason


def test_health_and_reflection_answer(served: tuple[str, RecordingQueue, RedisJobStore]):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(served[0]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "facexplain.v1.Facexplain"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "facexplain.v1.Facexplain" in services and "grpc.health.v1.Health" in services


def test_a_token_is_needed_for_every_call_but_health(redis_url: str, pair: tuple[Path, Path]):
    store = RedisJobStore(redis_url, prefix=f"tok{uuid.uuid4().hex[:8]}")
    config = ServerConfig(token=TOKEN, max_message_bytes=2 * 1024 * 1024)
    with ApiService(store, engine="local", enqueue=RecordingQueue()) as service, BackgroundServer(service, config) as address:
        for token in (None, "wrong-token"):
            with FacexplainClient(address, token=token) as anonymous:
                with pytest.raises(AuthenticationError, match="token"):
                    anonymous.list_models()
                with pytest.raises(AuthenticationError, match="token"):
                    list(anonymous.watch("a" * 64, timeout=5))
        with grpc.insecure_channel(address) as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        with FacexplainClient(address, token=TOKEN) as authorised:
            assert authorised.list_models()
            with pytest.raises(LimitExceededError):  # a message over the server's maximum
                authorised.verify(os.urandom(3 * 1024 * 1024), b"x")
    store.close()


def test_tls_with_a_certificate_the_test_makes(redis_url: str, tmp_path: Path):
    import shutil

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make the test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    store = RedisJobStore(redis_url, prefix=f"tls{uuid.uuid4().hex[:8]}")
    config = ServerConfig(tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    with ApiService(store, engine="local", enqueue=RecordingQueue()) as service, BackgroundServer(service, config) as address:
        with FacexplainClient(address, tls_ca=cert.read_bytes()) as secure:
            assert "corrrise" in [m.name for m in secure.list_methods()]
        with FacexplainClient(address, timeout=5) as plain, pytest.raises(BackendUnavailableError):
            plain.list_methods()  # plain text to a TLS server: no connection
    store.close()


# -- end to end: facexplain api and facexplain worker as separate processes ------------------------








@pytest.mark.slow
def test_client_explain_through_api_and_worker_processes_writes_the_local_files(
    redis_url: str, pair: tuple[Path, Path], tmp_path: Path
):
    env, mark = marked_env(FACEXPLAIN_REDIS_URL=redis_url)
    api = start_command(["api", "--redis", redis_url, "--engine", "local", "--port", "0"], tmp_path / "api.log", env=env)
    worker = start_command(["worker", "--redis", redis_url, "--engine", "local", "--loglevel", "info"],
                           tmp_path / "worker.log", env=env)
    try:
        address = api_address(tmp_path / "api.log", api)
        a, b = (str(p) for p in pair)
        common = [a, b, "--masks", "64", "--seed", "0"]
        assert cli.main(["client", "explain", *common, "--server", address, "--out", str(tmp_path / "api"),
                         "--no-progress"]) == 0
        assert cli.main(["explain", *common, "--engine", "local", "--out", str(tmp_path / "local"),
                         "--no-progress"]) == 0
        for name in ("summary.json", "maps.npz", "figure.png"):
            assert (tmp_path / "api" / name).stat().st_size > 0
        got, want = np.load(tmp_path / "api" / "maps.npz"), np.load(tmp_path / "local" / "maps.npz")
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            assert np.abs(got[key].astype(np.float64) - want[key].astype(np.float64)).max() <= 1e-6, key
        # the same request again: the stored job, and its partial maps end at the result's maps
        with FacexplainClient(address) as client:
            t0 = time.perf_counter()
            again = client.explain(pair[0].read_bytes(), pair[1].read_bytes(), params={"n_masks": 64, "seed": 0})
            assert again.reused and again.job.state == "done" and time.perf_counter() - t0 < 0.5
            updates = list(client.watch(again.job.id, partial_maps=True, timeout=30))
            assert updates[-1].job.state == "done" and updates[-1].partial is not None
            assert updates[-1].partial.masks == 64
            result = client.get_result(again.job.id)
            assert result.s_a is not None and result.s_b is not None
            assert np.abs(updates[-1].partial.s_a - result.s_a).max() <= 1e-6
            assert np.abs(updates[-1].partial.s_b - result.s_b).max() <= 1e-6
            assert client.get_result(again.job.id, summary_only=True).s_a is None
    finally:
        stop_groups([api, worker])
    assert left_after(mark, 10) == []
    # face images are biometric data: the logs name jobs, never hold image bytes or embeddings
    logs = (tmp_path / "api.log").read_bytes() + (tmp_path / "worker.log").read_bytes()
    assert again.job.id.encode() in logs  # the logs say what happened to the job
    for path in pair:
        data = path.read_bytes()
        for at in range(64, len(data) - 48, max(1, len(data) // 8)):
            chunk = data[at : at + 48]
            assert chunk not in logs and chunk.hex().encode() not in logs
            assert base64.b64encode(chunk)[8:56] not in logs
    assert not re.search(rb"(-?\d+\.\d{3,}[,\s]+){8,}", logs)  # no vector of numbers (an embedding)


def test_client_errors_are_one_line_exit_2(redis_url: str, pair: tuple[Path, Path], tmp_path: Path, capsys):
    store = RedisJobStore(redis_url, prefix=f"cli{uuid.uuid4().hex[:8]}")
    with ApiService(store, engine="local", enqueue=RecordingQueue()) as service, BackgroundServer(service) as address:
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not an image at all")
        code = cli.main(["client", "explain", str(bad), str(pair[0]), "--server", address,
                         "--out", str(tmp_path / "o"), "--masks", "16"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "not an image" in err and "Traceback" not in err
        code = cli.main(["client", "result", "f" * 64, "--server", address, "--out", str(tmp_path / "o")])
        assert code == 2 and "no job" in capsys.readouterr().err
    store.close()


def test_health_is_true_from_the_moment_the_server_is_started(redis_url: str):
    """Health is checked before the server is announced: SERVING at once over a live store,
    NOT_SERVING at once over a store that does not answer (never a stale default)."""
    from explainer_service.serving.embedded import free_port

    for url, want in ((redis_url, health_pb2.HealthCheckResponse.SERVING),
                      (f"redis://127.0.0.1:{free_port('127.0.0.1')}/0", health_pb2.HealthCheckResponse.NOT_SERVING)):
        store = RedisJobStore(url, prefix=f"h{uuid.uuid4().hex[:8]}", timeout_s=1)
        try:
            with in_process_api(store) as (address, _), grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert reply.status == want, url
        finally:
            store.close()
