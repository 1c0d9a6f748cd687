"""The dashboard against a real API: a redis-server and the gRPC API (local engine) in this
process, the dashboard under AppTest with the client of ``FACEXPLAIN_SERVER`` (what
``facexplain dashboard`` sets). Jobs are recorded, not run (no worker): the page must show the
server's models and methods, queue a real explanation of the demo pair, and show the server's
own message for a photo without a face; a server that is down is a readable message too; an API
that serves TLS is reached with the CA of ``FACEXPLAIN_TLS_CA`` (``facexplain dashboard --tls-ca``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from explainer_service.api.server import BackgroundServer, ServerConfig
from explainer_service.api.service import ApiService
from explainer_service.demo import make_demo_pair
from explainer_service.store import EmbeddedRedis, RedisJobStore
from tests.dashboard.conftest import open_app, png
from tests.inprocess_api import RecordingQueue, in_process_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]



@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RecordingQueue]]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-dashboard"), startup_timeout=30) as redis:
        store = RedisJobStore(redis.url, prefix=f"dash{uuid.uuid4().hex[:8]}")
        try:
            with in_process_api(store) as (address, queue):
                yield address, queue
        finally:
            store.close()


@pytest.fixture
def server(served: tuple[str, RecordingQueue], monkeypatch: pytest.MonkeyPatch) -> tuple[str, RecordingQueue]:
    monkeypatch.setenv("FACEXPLAIN_SERVER", served[0])
    monkeypatch.delenv("FACEXPLAIN_TOKEN", raising=False)
    return served


def test_models_page_shows_the_servers_models_and_methods(server):
    at = open_app(None, "models.py")
    assert not at.exception and not at.error
    models = at.dataframe[0].value
    assert "dlib-resnet-v1 (default)" in list(models["model"])
    assert list(at.dataframe[1].value["method"]) == ["corrrise", "rise", "lime", "xface", "minplus",
                                                     "corrrise-plus", "gradcam", "gradcampp"]


def test_explain_queues_the_pair_and_shows_the_servers_refusal_of_a_faceless_photo(server, tmp_path: Path):
    address, queue = server
    a, b = make_demo_pair(tmp_path)
    at = open_app(None)
    at.file_uploader(key="image_a").upload(a.name, a.read_bytes(), "image/png")
    at.file_uploader(key="image_b").upload(b.name, b.read_bytes(), "image/png")
    at.run()
    at.number_input(key="p1.corrrise.n_masks").set_value(16)
    at.button(key="submit").click().run()
    assert not at.exception and not [e.value for e in at.error]
    (method, job_id), = at.session_state["explain_jobs"]
    assert method == "corrrise" and job_id in queue.ids
    assert [p.proto.text for p in at.get("progress")] == ["corrrise: queued: 0 / 16 masks"]
    blank = png((128, 128, 128), size=200)
    at.file_uploader(key="image_b").upload("blank.png", blank, "image/png")
    at.run()
    at.button(key="submit").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("submitting corrrise: ") and "face" in errors[0]
    assert at.session_state["explain_jobs"] == [("corrrise", job_id)]  # what was shown is kept


def test_a_server_that_is_down_is_a_readable_message(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FACEXPLAIN_SERVER", f"127.0.0.1:{port}")
    at = open_app(None, "models.py")
    errors = [e.value for e in at.error]
    assert not at.exception
    assert errors and errors[0].startswith("listing the models: ") and "try again" in errors[0]


def test_an_api_over_tls_is_reached_with_the_ca_and_refused_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make the test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    monkeypatch.delenv("FACEXPLAIN_TOKEN", raising=False)
    config = ServerConfig(tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    with EmbeddedRedis(tmp_path / "redis", startup_timeout=30) as redis:
        store = RedisJobStore(redis.url, prefix=f"dtls{uuid.uuid4().hex[:8]}")
        try:
            with ApiService(store, engine="local", enqueue=RecordingQueue()) as service, \
                    BackgroundServer(service, config) as address:
                monkeypatch.setenv("FACEXPLAIN_SERVER", address)
                monkeypatch.setenv("FACEXPLAIN_TLS_CA", str(cert))
                at = open_app(None, "models.py")
                assert not at.exception and not at.error
                assert "dlib-resnet-v1 (default)" in list(at.dataframe[0].value["model"])
                monkeypatch.delenv("FACEXPLAIN_TLS_CA")  # plain text to a TLS server: no connection
                at = open_app(None, "models.py")
                errors = [e.value for e in at.error]
                assert not at.exception and errors and errors[0].startswith("listing the models: ")
                monkeypatch.setenv("FACEXPLAIN_TLS_CA", str(tmp_path / "gone.pem"))
                at = open_app(None, "models.py")
                errors = [e.value for e in at.error]
                assert errors and errors[0].startswith("connecting to the API: FACEXPLAIN_TLS_CA ")
                assert "gone.pem: cannot be read" in errors[0]
        finally:
            store.close()
