"""The Triton model ``corrrise_scores`` as Triton loads it (the folder ``write_corrrise_model`` writes,
with its copy of the mask generators), run here with a fake ``triton_python_backend_utils``: the torch
engine on torch's CPU device gives the NumPy engine's scores (and the client's own), the engine is
chosen from the instance kind and config parameters with a fallback that says why, every response
names its engine, and bad requests, deadlines and face-model failures are per-request errors."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.serving.repository import write_corrrise_model

SIZE = 24
DIM = 16


class FakeError:
    INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

    def __init__(self, msg: str, code: Any = None) -> None:
        self._msg, self._code = msg, code

    def message(self) -> str:
        return self._msg

    def code(self) -> Any:
        return self._code


class FakeTensor:
    """A named tensor holding a NumPy array or (from DLPack) a torch tensor."""

    def __init__(self, name: str, value: Any) -> None:
        self._name, self.value = name, value

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        v = self.value
        return v if isinstance(v, np.ndarray) else v.cpu().numpy()

    def to_dlpack(self) -> Any:
        import torch

        v = self.value if not isinstance(self.value, np.ndarray) else torch.from_numpy(self.value)
        return torch.utils.dlpack.to_dlpack(v)

    @staticmethod
    def from_dlpack(name: str, obj: Any) -> FakeTensor:
        import torch

        BACKEND.dlpack_inputs += 1
        return FakeTensor(name, torch.utils.dlpack.from_dlpack(obj))


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: FakeError | None = None) -> None:
        self.outputs = {t.name(): t for t in (output_tensors or [])}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> FakeError | None:
        return self._error


class Backend:
    """The server around the model: face models by name (NumPy functions) and what was asked of them."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.dlpack_inputs = 0
        self.preferred: list[Any] = []
        self.logs: list[str] = []

    def request(self, model_name: str, inputs: list[FakeTensor], requested_output_names: list[str],
                preferred_memory: Any = None) -> Any:
        backend = self

        class Req:
            def exec(self) -> FakeResponse:
                backend.preferred.append(preferred_memory)
                if model_name not in backend.models:
                    return FakeResponse(error=FakeError(f"model {model_name} is not ready", "UNAVAILABLE"))
                emb = backend.models[model_name](inputs[0].as_numpy())
                return FakeResponse([FakeTensor("embedding", emb)])

        return Req()


BACKEND = Backend()


def _fake_pb_utils() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = FakeTensor  # type: ignore[attr-defined]
    m.TritonError = FakeError  # type: ignore[attr-defined]
    m.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    m.InferenceRequest = lambda **kw: BACKEND.request(**kw)  # type: ignore[attr-defined]
    m.get_input_tensor_by_name = lambda r, name: r[name]  # type: ignore[attr-defined]
    m.get_output_tensor_by_name = lambda r, name: r.outputs[name]  # type: ignore[attr-defined]
    m.Logger = types.SimpleNamespace(log_info=BACKEND.logs.append)  # type: ignore[attr-defined]
    m.PreferredMemory = lambda kind, device: (kind, device)  # type: ignore[attr-defined]
    m.TRITONSERVER_MEMORY_CPU, m.TRITONSERVER_MEMORY_GPU = "CPU", "GPU"  # type: ignore[attr-defined]
    return m


@pytest.fixture(scope="module")
def backend_module(tmp_path_factory):
    """model.py imported from the folder Triton would load, against the fake pb_utils."""
    folder = tmp_path_factory.mktemp("repo") / "corrrise_scores"
    write_corrrise_model(folder, "embedded")
    saved = {k: sys.modules.get(k) for k in ("triton_python_backend_utils", "facexplain_masks",
                                             "facexplain_masks.masks", "facexplain_masks.masks_torch",
                                             "facexplain_masks.errors")}
    sys.modules["triton_python_backend_utils"] = _fake_pb_utils()
    sys.path.insert(0, str(folder / "1"))
    spec = importlib.util.spec_from_file_location("corrrise_scores_model", folder / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(folder / "1"))
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def face_model(seed: int = 0):
    """A non-linear embedding (k, 3, S, S) float32 -> (k, DIM) float32 that depends on every pixel."""
    w = np.random.default_rng(seed).normal(size=(3 * SIZE * SIZE, DIM)) / (3 * SIZE * SIZE) ** 0.5

    def embed(x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, np.float64).reshape(len(x), -1) / 255.0
        return (np.tanh(flat @ w) + 0.1 * (flat @ w) ** 2).astype(np.float32)

    return embed


@pytest.fixture()
def chip() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture()
def reference() -> np.ndarray:
    return face_model()(np.random.default_rng(2).uniform(0, 255, (1, 3, SIZE, SIZE)))[0]


def client_scores(chip, ref, config, start, stop):
    """What the client computes itself: cos(f(chip * M_k), ref) with the host's masks."""
    masks = generate_masks(config, SIZE, start, stop)
    emb = face_model()(chip[None] * masks[:, None]).astype(np.float64)
    return emb @ ref.astype(np.float64) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref.astype(np.float64)))


def make_model(module, engine: str, kind: str = "CPU", device: str | None = None):
    params = {"mask_engine": {"string_value": engine}}
    if device is not None:
        params["mask_device"] = {"string_value": device}
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": params}), "model_instance_kind": kind,
                      "model_instance_device_id": "0", "model_instance_name": "corrrise_scores_0"})
    return model


def request(chip, ref, params) -> dict[str, FakeTensor]:
    return {"image": FakeTensor("image", chip), "reference": FakeTensor("reference", ref.astype(np.float32)),
            "request": FakeTensor("request", np.array([json.dumps(params).encode()], dtype=object))}


CONFIGS = [
    MaskConfig(n_masks=40, seed=3, patches=4, patch_size=7),
    MaskConfig(n_masks=40, seed=4, patches=3, patch_size=6, values="binary", clip_at_border=False),
    MaskConfig(n_masks=40, seed=5, patches=2, patch_size=5, per_pixel=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["uniform", "binary-inside", "per-pixel"])
@pytest.mark.parametrize(("start", "stop", "chunk"), [(0, 40, 16), (7, 33, 5), (3, 4, 32)])
def test_torch_engine_on_cpu_gives_the_numpy_engines_scores(backend_module, chip, reference, config, start,
                                                             stop, chunk):
    pytest.importorskip("torch")
    embed = face_model()
    host = backend_module.score_numpy(chip, reference, config, start, stop, chunk, embed)

    def embed_tensor(batch):
        import torch

        assert batch.device.type == "cpu" and batch.dtype == torch.float32
        return torch.from_numpy(embed(batch.numpy()))

    device = backend_module.score_torch(chip, reference, config, start, stop, chunk, embed_tensor, "cpu")
    assert host.dtype == device.dtype == np.float64 and host.shape == device.shape == (stop - start,)
    np.testing.assert_allclose(device, host, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host, client_scores(chip, reference, config, start, stop), rtol=0, atol=1e-6)


def test_the_copy_beside_the_model_pastes_the_host_masks_bit_for_bit(backend_module):
    pytest.importorskip("torch")
    from facexplain_masks.masks import MaskConfig as CopiedConfig  # the server's copy
    from facexplain_masks.masks_torch import device_masks

    for config in CONFIGS:
        copied = CopiedConfig(**asdict(config))
        np.testing.assert_array_equal(device_masks(copied, SIZE, 5, 29, "cpu").numpy(),
                                      generate_masks(config, SIZE, 5, 29))


@pytest.mark.parametrize(("engine", "device", "label"), [("torch", "cpu", "torch cpu"), ("numpy", None, "numpy"),
                                                         ("auto", None, "numpy")])
def test_each_response_names_its_engine_and_the_scores_agree(backend_module, chip, reference, engine, device, label):
    if engine == "torch":
        pytest.importorskip("torch")
    BACKEND.models["face"] = face_model()
    BACKEND.dlpack_inputs = 0
    BACKEND.logs.clear()
    model = make_model(backend_module, engine, "CPU", device)
    config = CONFIGS[0]
    params = {"model": "face", "start": 2, "stop": 37, "chunk": 8, "masks": asdict(config), "timeout_s": 60}
    (response,) = model.execute([request(chip, reference, params)])
    assert not response.has_error()
    assert response.outputs["engine"].as_numpy().tolist() == [label.encode()]
    scores = response.outputs["scores"].as_numpy()
    np.testing.assert_allclose(scores, client_scores(chip, reference, config, 2, 37), rtol=0, atol=1e-6)
    # the torch engine hands its batches to the face model by DLPack (5 chunks of <= 8 masks)
    assert BACKEND.dlpack_inputs == (5 if engine == "torch" else 0)
    assert len(BACKEND.logs) == 1 and f"masks on {label}" in BACKEND.logs[0]


def test_engine_choice_and_fallbacks(backend_module, monkeypatch):
    choose = backend_module.choose_engine
    assert choose("numpy", "GPU", 0) == ("numpy", None, "mask_engine is numpy")
    engine, device, why = choose("auto", "CPU", 0)
    assert (engine, device) == ("numpy", None) and "KIND_CPU" in why
    with pytest.raises(ValueError, match="mask_engine must be one of auto, torch, numpy, got 'gpu'"):
        choose("gpu", "GPU", 0)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():  # this machine: a GPU instance without CUDA keeps the host path
        engine, device, why = choose("auto", "GPU", 1)
        assert (engine, device) == ("numpy", None) and "no CUDA" in why
        engine, device, why = choose("torch", "GPU", 0, "cuda:0")
        assert (engine, device) == ("numpy", None) and "cuda:0" in why
        assert choose("torch", "GPU", 0)[:2] == ("torch", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU server
    assert choose("auto", "GPU", 1)[:2] == ("torch", "cuda:1")
    assert choose("auto", "CPU", 0)[:2] == ("numpy", None)
    assert choose("torch", "CPU", 0)[:2] == ("torch", "cpu")
    assert choose("auto", "CPU", 0, "cpu")[:2] == ("torch", "cpu")  # an explicit device asks for torch
    with pytest.raises(ValueError, match="mask_device must be a torch device"):
        choose("torch", "CPU", 0, "no-such-device")
    monkeypatch.setitem(sys.modules, "torch", None)  # torch absent: the host path, saying so
    engine, device, why = choose("auto", "GPU", 0)
    assert (engine, device) == ("numpy", None) and "torch is not importable" in why


def test_a_gpu_instance_asks_for_the_embeddings_in_gpu_memory(backend_module, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = make_model(backend_module, "auto", "GPU")
    assert model.device == "cuda:0" and model.label == "torch cuda:0"
    BACKEND.preferred.clear()
    BACKEND.models["face"] = face_model()
    model._embed_device("face")(torch.zeros((2, 3, SIZE, SIZE)))
    model._embed_host("face")(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert BACKEND.preferred == [("GPU", 0), ("CPU", 0)]


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_failures_are_per_request_errors(backend_module, chip, reference, engine):
    if engine == "torch":
        pytest.importorskip("torch")
    BACKEND.models["face"] = face_model()
    model = make_model(backend_module, engine, "CPU", "cpu" if engine == "torch" else None)
    good = {"model": "face", "start": 0, "stop": 10, "masks": asdict(CONFIGS[0])}
    bad = [
        {**good, "masks": {"n_masks": -3}},
        {**good, "start": 5, "stop": 2},
        {**good, "chunk": 0},
        {k: v for k, v in good.items() if k != "model"},
        {**good, "masks": {**asdict(CONFIGS[0]), "patch_size": 99}},
    ]
    out = model.execute([request(chip, reference, p) for p in bad] + [request(chip, reference, good)])
    for response in out[:-1]:
        assert response.has_error() and response.error().code() == FakeError.INVALID_ARG
        assert response.error().message().startswith("bad corrrise request")
    assert not out[-1].has_error() and out[-1].outputs["scores"].as_numpy().shape == (10,)
    (late,) = model.execute([request(chip, reference, {**good, "timeout_s": 1e-9})])
    assert late.has_error() and late.error().code() == FakeError.UNAVAILABLE
    assert "abandoned after 0 of 10 masks" in late.error().message()
    (missing,) = model.execute([request(chip, reference, {**good, "model": "absent"})])
    assert missing.has_error() and missing.error().code() == "UNAVAILABLE"
    assert missing.error().message().startswith("face model absent: model absent is not ready")
    (empty,) = model.execute([request(chip, reference, {**good, "start": 4, "stop": 4})])
    assert not empty.has_error() and empty.outputs["scores"].as_numpy().shape == (0,)


def test_a_bad_mask_engine_parameter_fails_the_model_load(backend_module):
    with pytest.raises(ValueError, match="mask_engine must be one of"):
        make_model(backend_module, "cuda")


def test_folder_holds_the_model_and_both_mask_generators(tmp_path):
    write_corrrise_model(tmp_path / "m", "gpu", mask_engine="torch", mask_device="cuda:1")
    names = sorted(p.name for p in (tmp_path / "m" / "1" / "facexplain_masks").iterdir())
    assert names == ["__init__.py", "errors.py", "masks.py", "masks_torch.py"]
    root = Path(__file__).resolve().parents[2] / "explainer_service"
    assert (tmp_path / "m" / "1" / "model.py").read_bytes() == (root / "serving" / "corrrise_backend_model.py").read_bytes()
    text = (tmp_path / "m" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in text and '"mask_engine" value: { string_value: "torch" }' in text
    assert '"mask_device" value: { string_value: "cuda:1" }' in text


def test_config_variants_and_bad_settings():
    from explainer_service.errors import InputError
    from explainer_service.serving.repository import render_corrrise_config

    embedded = render_corrrise_config("embedded")
    assert "kind: KIND_CPU" in embedded and "KIND_GPU" not in embedded and "mask_device" not in embedded
    assert '{ name: "engine" data_type: TYPE_STRING dims: [ 1 ] }' in embedded
    assert "count: 3 kind: KIND_GPU" in render_corrrise_config("gpu", instances=3)
    with pytest.raises(InputError, match="config variant must be gpu or embedded, got 'cpu'"):
        render_corrrise_config("cpu")
    with pytest.raises(InputError, match="mask_engine must be one of auto, torch, numpy, got 'cuda'"):
        render_corrrise_config("gpu", mask_engine="cuda")
    with pytest.raises(InputError, match="instances must be a positive integer, got 0"):
        render_corrrise_config("gpu", instances=0)
