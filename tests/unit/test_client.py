"""The Triton client's chunking, ordering and retry policy, against a fake server (no network)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from explainer_service.errors import BackendError, ModelNotReadyError
from explainer_service.spec import ChipSpec, ModelSpec
from explainer_service.serving.client import TritonFaceModel

SPEC = ModelSpec("fake-model", ChipSpec("arcface", 16), 2, threshold=None)


class FakeClient:
    """Embedding = (mean of image, request number); fails with given statuses first."""

    failures: list[str] = []
    max_batch = 5

    def __init__(self, url: str) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def is_server_live(self, **kw):
        return True

    def is_model_ready(self, name, **kw):
        return name == "fake_model"

    def get_model_repository_index(self, as_json=False):
        return {"models": [{"name": "fake_model"}]}

    def get_model_config(self, name, as_json=False):
        return {"config": {"max_batch_size": self.max_batch}}

    def infer(self, name, inputs, outputs=None, client_timeout=None):
        with self.lock:
            if FakeClient.failures:
                raise InferenceServerException("server says no", status=FakeClient.failures.pop(0))
            self.calls.append(len(self.calls))
        x = inputs[0]._np
        return _Result(np.stack([x.mean(axis=(1, 2, 3)), np.full(len(x), x.shape[0])], axis=1).astype(np.float32))

    def close(self):
        pass


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
    with pytest.raises(BackendError, match=r"Triton at fake:1, model 'fake_model': \[StatusCode.UNAVAILABLE\] server says no"):
        m.embed(images(3))


def test_does_not_retry_a_bad_request():
    FakeClient.failures = ["StatusCode.INVALID_ARGUMENT", "StatusCode.UNAVAILABLE"]
    m = TritonFaceModel("fake:1", SPEC, retries=5, backoff_s=0.001)
    with pytest.raises(BackendError, match="server says no"):
        m.embed(images(2))
    assert FakeClient.failures == ["StatusCode.UNAVAILABLE"]  # no second attempt


def test_unknown_model_names_what_the_server_has():
    from dataclasses import replace

    with pytest.raises(ModelNotReadyError, match="has no model 'other'.*fake_model"):
        TritonFaceModel("fake:1", replace(SPEC, name="other"))


def test_wrong_input_shape_is_an_input_error():
    from explainer_service.errors import InputError

    m = TritonFaceModel("fake:1", SPEC)
    with pytest.raises(InputError, match=r"\(N, 3, 16, 16\)"):
        m.embed(np.zeros((2, 3, 5, 5), np.float32))
