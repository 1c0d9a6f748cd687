"""Faults of a real embedded Triton: a frozen server, a busy port, a server killed mid-inference,
a run killed or stopped by a signal. Each must give a clear error within a bounded time and leave
nothing behind (processes, shared memory, folders). Only servers these tests start are touched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from explainer_service.errors import BackendError, BackendUnavailableError, InputError, is_retryable
from explainer_service.models.convert import ensure_default_model
from explainer_service.models.registry import get_spec
from explainer_service.serving import embedded as embedded_module
from explainer_service.serving.client import TritonFaceModel
from explainer_service.serving.embedded import EmbeddedTriton
from explainer_service.serving.leftovers import SHM_PREFIX, shm_names
from explainer_service.settings import get_settings
from tests.integration.procs import children, left_after, listening, marked_env

pytestmark = pytest.mark.integration

SPEC = get_spec("dlib-resnet-v1")
MODEL = "dlib_resnet_v1"
TIMEOUT_S = 3.0


@pytest.fixture(autouse=True, scope="module")
def _model():
    ensure_default_model()


def ours(pid: int | None = None) -> set[str]:
    """Shared-memory names owned by ``pid`` (default: this process)."""
    return set(shm_names(f"{SHM_PREFIX}{os.getpid() if pid is None else pid}_"))


def run_dirs(pid: int) -> list[Path]:
    return sorted(get_settings().runtime_dir.glob(f"triton-{pid}-*"))


def test_the_server_listens_on_loopback_only():
    with EmbeddedTriton(models=[MODEL]) as srv:
        assert srv.pid is not None
        sockets = listening(srv.pid)
        assert {port for _, port in sockets} == {srv.grpc_port, srv.http_port}  # no metrics port either
        assert {addr for addr, _ in sockets} == {"127.0.0.1"}, sockets
        assert srv.url == f"127.0.0.1:{srv.grpc_port}"


def test_a_frozen_server_is_a_clear_retryable_error_within_the_timeout(monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_REQUEST_TIMEOUT", str(TIMEOUT_S))
    before = ours()
    srv = EmbeddedTriton(models=[MODEL]).start()
    try:
        assert srv.pid is not None
        model = TritonFaceModel(srv.url, SPEC, shared_memory=True)  # the timeout comes from the setting
        x = np.zeros((40, 3, 150, 150), np.float32)
        assert model.embed(x[:2]).shape == (2, 128)
        os.killpg(srv.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=rf"Triton at {srv.url}.*within 3 s.*liveness") as info:
            model.embed(x)
        assert time.monotonic() - t0 < TIMEOUT_S + 1.0
        assert is_retryable(info.value)
        t0 = time.monotonic()
        model.close()
        assert time.monotonic() - t0 < TIMEOUT_S
        t0 = time.monotonic()
        srv.stop()  # a stopped server is woken to handle SIGTERM, not waited on for 20 s
        assert time.monotonic() - t0 < 15
    finally:
        if srv.pid is not None:
            os.killpg(srv.pid, signal.SIGCONT)
        srv.stop()
    assert ours() <= before


def test_the_default_engine_on_a_frozen_server_fails_within_the_timeout(monkeypatch):
    from explainer_service.pipeline import open_face_model

    monkeypatch.setenv("FACEXPLAIN_REQUEST_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.delenv("FACEXPLAIN_TRITON_URL", raising=False)
    before = ours()
    servers: list[int] = []
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        with open_face_model(engine="auto") as model:
            servers = children("tritonserver")
            assert len(servers) == 1
            model.embed(np.zeros((1, 3, 150, 150), np.float32))
            os.killpg(servers[0], signal.SIGSTOP)
            t0 = time.monotonic()
            model.embed(np.zeros((20, 3, 150, 150), np.float32))
    assert time.monotonic() - t0 < TIMEOUT_S + 15  # the error, then the stop of the stopped server
    assert children("tritonserver") == []
    assert ours() <= before
    assert run_dirs(os.getpid()) == []


def test_a_server_killed_mid_inference_leaves_no_shared_memory():
    before = ours()
    srv = EmbeddedTriton(models=[MODEL]).start()
    try:
        assert srv.pid is not None
        server_shm = ours() - before
        assert server_shm, "the Python backend's regions carry our pid"
        model = TritonFaceModel(srv.url, SPEC, shared_memory=True, timeout_s=10, max_in_flight=2)
        errors: list[BaseException] = []
        busy = threading.Event()

        def work() -> None:
            # inference goes on until the kill interrupts it (one batch alone may finish before it)
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    model.embed(np.zeros((64, 3, 150, 150), np.float32))
                    busy.set()
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
                errors.append(e)

        worker = threading.Thread(target=work)
        worker.start()
        assert busy.wait(30), "no inference went through before the kill"
        os.killpg(srv.pid, signal.SIGKILL)
        worker.join(timeout=15)
        assert not worker.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], BackendError), errors
        model.close()
    finally:
        srv.stop()
    assert ours() <= before


def _occupied_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_busy_port_is_named_at_once_and_leaves_nothing():
    before = ours()
    with _occupied_port() as busy:
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(InputError) as info:
            EmbeddedTriton(grpc_port=port, models=[MODEL]).start()
        assert time.monotonic() - t0 < 5  # found before the server is launched
    first = str(info.value).splitlines()[0]
    assert f"gRPC port {port} on 127.0.0.1 is already in use" in first
    assert ours() <= before and run_dirs(os.getpid()) == []


def test_a_port_taken_during_the_launch_is_reported_from_the_log(monkeypatch):
    """The server itself fails to bind: its log's cause comes first, its regions are removed."""
    before = ours()
    monkeypatch.setattr(embedded_module, "port_free", lambda host, port: True)  # miss the check
    with _occupied_port() as busy:
        port = busy.getsockname()[1]
        with pytest.raises(InputError) as info:
            EmbeddedTriton(http_port=port, models=[MODEL]).start()
    message = str(info.value)
    assert message.splitlines()[0].startswith(f"HTTP port {port} on 127.0.0.1 is already in use")
    for word in message.split():  # any log the message mentions still exists
        if word.endswith(".log") or word.endswith(".log)"):
            assert Path(word.rstrip(")")).is_file(), message
    assert ours() <= before and run_dirs(os.getpid()) == []


def test_an_auto_picked_port_taken_meanwhile_is_picked_again(monkeypatch):
    with _occupied_port() as busy:
        port = busy.getsockname()[1]
        real = embedded_module.free_port
        given = iter([port])
        monkeypatch.setattr(embedded_module, "free_port", lambda host="127.0.0.1": next(given, None) or real(host))
        monkeypatch.setattr(embedded_module, "port_free", lambda host, p: True)
        with EmbeddedTriton(models=[MODEL]) as srv:
            assert srv.grpc_port != port


_CHILD = """
import sys, time
from explainer_service.pipeline import open_face_model
import numpy as np
with open_face_model(engine="auto") as m:
    m.embed(np.zeros((1, 3, 150, 150), np.float32))
    print("ready", flush=True)
    time.sleep(120)
"""


def _child(**extra: str) -> tuple[subprocess.Popen[str], str]:
    env, mark = marked_env(**extra)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # SIGINT as a terminal delivers it, whoever launched pytest: a shell's background job
        # (`cmd &` without job control) inherits SIGINT ignored, and Python then keeps it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, mark


def _wait_gone(mark: str, timeout: float = 30) -> None:
    assert left_after(mark, timeout) == []


def test_sigterm_releases_the_runs_folder_and_shared_memory():
    proc, mark = _child()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        assert run_dirs(proc.pid) and ours(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_gone(mark)
    assert run_dirs(proc.pid) == [] and ours(proc.pid) == set()


def test_sigint_during_model_load_leaves_nothing():
    proc, mark = _child()
    try:
        deadline = time.monotonic() + 60
        while not run_dirs(proc.pid) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert run_dirs(proc.pid), "the run never created its folder"
        time.sleep(0.5)  # the server is launching: its Python backend loads the model
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_gone(mark)
    assert run_dirs(proc.pid) == [] and ours(proc.pid) == set()


def test_a_sigkilled_runs_leftovers_are_removed_by_the_next_start():
    proc, mark = _child()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        proc.kill()
        proc.wait(timeout=10)
        # nothing can run in a killed process: its folder and its client's regions stay (checked
        # at once: any other run's start on this machine may already clean /dev/shm)
        left_shm = ours(proc.pid)
        assert run_dirs(proc.pid) and left_shm
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_gone(mark)  # its server dies with it (parent-death signal)
    with EmbeddedTriton(models=[MODEL]):
        assert run_dirs(proc.pid) == [] and ours(proc.pid) == set()
