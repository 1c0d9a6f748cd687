"""The Triton client's chunking, ordering, deadlines and retry policy, against a fake server (no network)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from explainer_service.errors import (
    BackendError,
    BackendUnavailableError,
    DeadlineExceededError,
    InputError,
    ModelNotReadyError,
    is_retryable,
)
from explainer_service.serving import leftovers
from explainer_service.serving.client import TritonFaceModel
from explainer_service.spec import ChipSpec, ModelSpec

SPEC = ModelSpec("fake-model", ChipSpec("arcface", 16), 2, threshold=None)
DEADLINE = "StatusCode.DEADLINE_EXCEEDED"


class FakeClient:
    """Embedding = (mean of image, request number); fails with given statuses first.

    ``frozen``: every call waits its whole client_timeout and then fails as gRPC does
    (DEADLINE_EXCEEDED); ``slow``: only inferences do, liveness still answers.
    """

    failures: list[str] = []
    max_batch = 5
    frozen = False
    slow = False
    fail_register_at = -1
    instances: list[FakeClient] = []

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[int] = []
        self.timeouts: list[tuple[str, float | None]] = []
        self.lock = threading.Lock()
        self.registered: list[str] = []
        self.closed = False
        FakeClient.instances.append(self)

    def _enter(self, what: str, client_timeout: float | None, *, slow: bool = False) -> None:
        with self.lock:
            self.timeouts.append((what, client_timeout))
        if FakeClient.frozen or (slow and FakeClient.slow):
            time.sleep(client_timeout if client_timeout is not None else 3600)
            raise InferenceServerException("Deadline Exceeded", status=DEADLINE)

    def is_server_live(self, client_timeout=None, **kw):
        self._enter("live", client_timeout)
        return True

    def is_model_ready(self, name, client_timeout=None, **kw):
        self._enter("ready", client_timeout)
        return name == "fake_model"

    def get_model_repository_index(self, as_json=False, client_timeout=None):
        self._enter("index", client_timeout)
        return {"models": [{"name": "fake_model"}]}

    def get_model_config(self, name, as_json=False, client_timeout=None):
        self._enter("config", client_timeout)
        return {"config": {"max_batch_size": self.max_batch}}

    def register_system_shared_memory(self, name, key, byte_size, client_timeout=None):
        self._enter("register", client_timeout)
        if len(self.registered) == FakeClient.fail_register_at:
            raise InferenceServerException("no room", status="StatusCode.INTERNAL")
        self.registered.append(name)

    def unregister_system_shared_memory(self, name="", client_timeout=None):
        self._enter("unregister", client_timeout)
        self.registered.remove(name)

    def infer(self, name, inputs, outputs=None, client_timeout=None):
        self._enter("infer", client_timeout, slow=True)
        with self.lock:
            if FakeClient.failures:
                raise InferenceServerException("server says no", status=FakeClient.failures.pop(0))
            self.calls.append(len(self.calls))
        x = inputs[0]._np
        return _Result(np.stack([x.mean(axis=(1, 2, 3)), np.full(len(x), x.shape[0])], axis=1).astype(np.float32))

    def close(self):
        self.closed = True


class _Result:
    def __init__(self, out):
        self.out = out

    def as_numpy(self, name):
        return self.out


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    original = grpcclient.InferInput.set_data_from_numpy

    def keep(self, arr):
        self._np = arr
        return original(self, arr)

    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeClient)
    monkeypatch.setattr(grpcclient.InferInput, "set_data_from_numpy", keep)
    FakeClient.failures = []
    FakeClient.frozen = FakeClient.slow = False
    FakeClient.fail_register_at = -1
    FakeClient.instances = []
    yield


def images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((n, 3, 16, 16), np.float32)


def test_chunks_to_the_server_limit_and_keeps_order():
    m = TritonFaceModel("fake:1", SPEC, max_in_flight=3)
    assert m.batch_size == 5
    out = m.embed(images(13))
    np.testing.assert_array_equal(out[:, 0], np.arange(13))
    assert list(out[:, 1]) == [5] * 10 + [3] * 3
    assert len(m._client.calls) == 3
    small = TritonFaceModel("fake:1", SPEC, batch_size=2)
    assert small.batch_size == 2 and len(small.embed(images(5))) == 5


def test_retries_unavailable_then_succeeds():
    FakeClient.failures = ["StatusCode.UNAVAILABLE", "StatusCode.UNAVAILABLE"]
    m = TritonFaceModel("fake:1", SPEC, retries=3, backoff_s=0.001)
    np.testing.assert_array_equal(m.embed(images(3))[:, 0], [0, 1, 2])


def test_gives_up_after_the_retries_with_a_clear_error():
    FakeClient.failures = ["StatusCode.UNAVAILABLE"] * 3
    m = TritonFaceModel("fake:1", SPEC, retries=2, backoff_s=0.001)
    with pytest.raises(
        BackendUnavailableError, match=r"Triton at fake:1, model 'fake_model': \[StatusCode.UNAVAILABLE\] server says no"
    ) as info:
        m.embed(images(3))
    assert is_retryable(info.value)


def test_does_not_retry_a_bad_request():
    FakeClient.failures = ["StatusCode.INVALID_ARGUMENT", "StatusCode.UNAVAILABLE"]
    m = TritonFaceModel("fake:1", SPEC, retries=5, backoff_s=0.001)
    with pytest.raises(BackendError, match="server says no") as info:
        m.embed(images(2))
    assert FakeClient.failures == ["StatusCode.UNAVAILABLE"]  # no second attempt
    assert not is_retryable(info.value)


def test_unknown_model_names_what_the_server_has():
    with pytest.raises(ModelNotReadyError, match="has no model 'other'.*fake_model"):
        TritonFaceModel("fake:1", replace(SPEC, name="other"))


def test_wrong_input_shape_is_an_input_error():
    m = TritonFaceModel("fake:1", SPEC)
    with pytest.raises(InputError, match=r"\(N, 3, 16, 16\)"):
        m.embed(np.zeros((2, 3, 5, 5), np.float32))


def test_addresses_are_parsed_not_passed_through():
    assert TritonFaceModel("fake", SPEC).url == "fake:8001"  # Triton's port, not gRPC's 443
    assert FakeClient.instances[-1].url == "fake:8001"
    with pytest.raises(InputError, match="'fake:99999'.*outside 1..65535"):
        TritonFaceModel("fake:99999", SPEC)


def test_every_call_carries_a_deadline_within_the_timeout():
    m = TritonFaceModel("fake:1", SPEC, timeout_s=2.5, max_in_flight=2)
    m.embed(images(12))
    m.close()
    seen = FakeClient.instances[-1].timeouts
    assert {what for what, _ in seen} >= {"live", "ready", "config", "infer"}
    assert all(t is not None and 0 < t <= 2.5 for _, t in seen), seen


def test_the_timeout_defaults_to_the_setting(monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_REQUEST_TIMEOUT", "7.5")
    assert TritonFaceModel("fake:1", SPEC).timeout_s == 7.5
    monkeypatch.delenv("FACEXPLAIN_REQUEST_TIMEOUT")
    assert TritonFaceModel("fake:1", SPEC).timeout_s == 30.0


def test_a_frozen_server_is_unavailable_within_the_timeout():
    m = TritonFaceModel("fake:1", SPEC, timeout_s=1.0, max_in_flight=2, retries=5)
    FakeClient.frozen = True
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"Triton at fake:1.*no answer .* within 1 s.*liveness") as info:
        m.embed(images(40))  # 8 chunks: the queued ones must not wait again
    assert time.monotonic() - t0 < 1.6
    assert is_retryable(info.value)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError):  # known down: fails at once
        m.embed(images(3))
    assert time.monotonic() - t0 < 0.2
    t0 = time.monotonic()
    m.close()
    assert time.monotonic() - t0 < 1.6


def test_a_slow_but_live_server_is_a_deadline_error():
    m = TritonFaceModel("fake:1", SPEC, timeout_s=0.6)
    FakeClient.slow = True
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="although the server is live.*FACEXPLAIN_REQUEST_TIMEOUT") as info:
        m.embed(images(3))
    assert time.monotonic() - t0 < 1.0
    assert is_retryable(info.value)


def test_retries_stay_within_the_timeout():
    FakeClient.failures = ["StatusCode.UNAVAILABLE"] * 1000
    m = TritonFaceModel("fake:1", SPEC, timeout_s=0.8, retries=1000, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        m.embed(images(3))
    assert time.monotonic() - t0 < 0.9
    assert len(FakeClient.failures) > 1000 - 20  # a handful of attempts, not a thousand


def test_a_frozen_server_at_connect_is_unavailable_within_the_timeout():
    FakeClient.frozen = True
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="fake:1"):
        TritonFaceModel("fake:1", SPEC, timeout_s=1.0)
    assert time.monotonic() - t0 < 1.0


def _ours() -> list[str]:
    return leftovers.shm_names(f"{leftovers.SHM_PREFIX}{os.getpid()}_")


def test_shared_memory_is_named_by_owner_and_released_on_failure_and_close():
    before = _ours()
    FakeClient.fail_register_at = 3
    with pytest.raises(BackendError, match="no room"):
        TritonFaceModel("fake:1", SPEC, shared_memory=True, max_in_flight=2)
    assert _ours() == before
    assert FakeClient.instances[-1].closed
    FakeClient.fail_register_at = -1
    m = TritonFaceModel("fake:1", SPEC, shared_memory=True, max_in_flight=2)
    assert len(_ours()) == len(before) + 4
    m.close()
    assert _ours() == before and FakeClient.instances[-1].registered == []


def test_close_does_not_wait_once_per_region_on_a_frozen_server():
    before = _ours()
    m = TritonFaceModel("fake:1", SPEC, shared_memory=True, max_in_flight=4, timeout_s=1.0)
    FakeClient.frozen = True
    t0 = time.monotonic()
    m.close()
    assert time.monotonic() - t0 < 0.5  # one liveness-sized wait (0.25 s), not eight
    assert _ours() == before


def test_a_failed_constructor_closes_what_it_opened():
    with pytest.raises(ModelNotReadyError, match="corrrise_scores"):
        TritonFaceModel("fake:1", SPEC, server_masks=True)
    assert FakeClient.instances[-1].closed
