"""The embedded server's settings, ports and startup-failure messages, without starting a server."""

from __future__ import annotations

import socket

import pytest

from explainer_service.errors import InputError
from explainer_service.serving import embedded
from explainer_service.serving.embedded import EmbeddedTriton, free_port, port_free

# lines of real tritonserver logs (nvidia-pytriton 0.7.0)
BUSY_LOG = """I1129 15:50:24.979000 9040 server.cc:100] "starting"
E1129 15:50:24.979607 9040 server.cc:241] "CudaDriverHelper has not been initialized."
E1129 15:50:28.285088834    9040 chttp2_server.cc:1060]                UNKNOWN:No address added out of total 1 resolved for '127.0.0.1:36113' {created_time:"..."}
E1129 15:50:28.288699 9040 main.cc:245] "failed to start GRPC service: Unavailable - Socket '127.0.0.1:36113' already in use "
"""
MODEL_LOG = """E1129 15:50:24.979607 9040 server.cc:241] "CudaDriverHelper has not been initialized."
E1129 16:01:02.000001 9040 model_lifecycle.cc:654] "failed to load 'dlib_resnet_v1' version 1: Internal: onnxruntime: bad file"
E1129 16:01:02.000002 9040 model_repository_manager.cc:1)] "Invalid argument: ensemble x"
"""


def test_the_cause_of_a_failed_start_comes_first():
    assert embedded._startup_cause(BUSY_LOG) == "gRPC port 36113 is already in use"
    assert embedded._port_in_use(BUSY_LOG) == ("gRPC", 36113)
    http = BUSY_LOG.replace("GRPC service", "HTTP service")
    assert embedded._port_in_use(http) == ("HTTP", 36113)
    assert embedded._startup_cause(MODEL_LOG) == (
        "failed to load 'dlib_resnet_v1' version 1: Internal: onnxruntime: bad file"
    )
    assert embedded._port_in_use(MODEL_LOG) is None
    assert embedded._startup_cause("") == "no error in its log"
    assert embedded._startup_cause("E0101 00:00:00.1 1 a.cc:1] " + "x" * 1000).endswith("...")


def test_a_failure_message_keeps_the_log_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_HOME", str(tmp_path))
    srv = EmbeddedTriton()
    message = srv._failure("tritonserver exited with code 1 while starting", MODEL_LOG)
    lines = message.splitlines()
    assert lines[0] == (
        "tritonserver exited with code 1 while starting: "
        "failed to load 'dlib_resnet_v1' version 1: Internal: onnxruntime: bad file"
    )
    kept = tmp_path / "run" / embedded.FAILED_START_LOG
    assert lines[-1] == f"(the server's whole log: {kept})"
    assert kept.read_text() == MODEL_LOG


def test_settings_give_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_BIND_HOST", "127.0.0.2")
    monkeypatch.setenv("FACEXPLAIN_STARTUP_TIMEOUT", "12")
    monkeypatch.setenv("FACEXPLAIN_TRITON_ENV", str(tmp_path / "env"))
    srv = EmbeddedTriton(grpc_port=1234)
    assert srv.bind_host == "127.0.0.2" and srv.startup_timeout == 12
    assert srv.url == "127.0.0.2:1234"
    assert embedded.triton_env_dir() == tmp_path / "env"
    assert EmbeddedTriton(bind_host="0.0.0.0", grpc_port=5).url == "127.0.0.1:5"  # dialled on loopback
    assert EmbeddedTriton(bind_host="::", grpc_port=5).url == "[::1]:5"


def test_bad_ports_are_input_errors():
    with pytest.raises(InputError, match="grpc_port 70000"):
        EmbeddedTriton(grpc_port=70000)
    with pytest.raises(InputError, match="different ports"):
        EmbeddedTriton(grpc_port=4000, http_port=4000)


def test_port_checks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
    assert port_free("127.0.0.1", free_port())


def test_a_busy_port_given_by_the_caller_is_refused_before_any_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_HOME", str(tmp_path))
    monkeypatch.setattr(embedded, "find_triton", lambda env: pytest.fail("launched"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = EmbeddedTriton(grpc_port=port)
        with pytest.raises(InputError, match=f"gRPC port {port} on 127.0.0.1 is already in use"):
            srv._pick_ports()
