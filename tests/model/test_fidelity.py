"""Our conversions of dlib's network equal dlib's own compute_face_descriptor on real face chips."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from explainer_service.models.base import to_model_input
from explainer_service.models.convert import (
    DLIB_DAT,
    convert_dlib,
    dlib_source_path,
    ensure_default_model,
    package_model_file,
)
from explainer_service.models.dlib_format import read_dlib_resnet
from explainer_service.models.onnx_local import OnnxFaceModel
from explainer_service.models.registry import get_spec

pytestmark = [pytest.mark.model, pytest.mark.shared]

N_CHIPS = 24


@pytest.fixture(scope="module")
def dlib_chips(lfw_dir):
    """Real 150x150 chips cut by dlib's own detector, 5-point predictor and get_face_chip."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_model_file("shape_predictor_5_face_landmarks.dat")))
    names = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())
    chips = []
    for person in names[:: max(1, len(names) // (N_CHIPS * 2))]:
        img = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        dets = detector(img, 1)
        if not dets:
            continue
        chips.append(dlib.get_face_chip(img, predictor(img, dets[0]), size=150, padding=0.25))
        if len(chips) == N_CHIPS:
            break
    assert len(chips) == N_CHIPS
    return np.stack(chips)


@pytest.fixture(scope="module")
def dlib_reference(dlib_chips):
    import dlib

    rec = dlib.face_recognition_model_v1(str(dlib_source_path()))
    return np.array([np.array(rec.compute_face_descriptor(c)) for c in dlib_chips])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_equals_dlib(dlib_chips, dlib_reference):
    model = OnnxFaceModel(ensure_default_model(), get_spec("dlib-resnet-v1"), batch_size=8)
    ours = model.embed(to_model_input(dlib_chips))
    cos = _cosines(ours.astype(np.float64), dlib_reference)
    assert cos.min() >= 0.9999, cos.min()
    assert np.abs(ours - dlib_reference).max() < 1e-4  # not normalised, like dlib's


def test_torch_twin_equals_dlib(dlib_chips, dlib_reference):
    torch = pytest.importorskip("torch", reason="the torch extra is part of `make test` setup")
    from explainer_service.models.torch_dlib import build_torch

    net = build_torch(read_dlib_resnet(dlib_source_path()))
    with torch.no_grad():
        ours = net(torch.from_numpy(to_model_input(dlib_chips))).numpy()
    cos = _cosines(ours.astype(np.float64), dlib_reference)
    assert cos.min() >= 0.9999, cos.min()
    assert np.abs(ours - dlib_reference).max() < 1e-4


def test_batch_axis_is_dynamic_and_batching_does_not_change_embeddings(dlib_chips):
    path = ensure_default_model()
    spec = get_spec("dlib-resnet-v1")
    x = to_model_input(dlib_chips[:7])
    one = OnnxFaceModel(path, spec, batch_size=1).embed(x)
    many = OnnxFaceModel(path, spec, batch_size=7).embed(x)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_conversion_is_cached_by_source_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_MODEL_REPOSITORY", str(tmp_path))
    path = ensure_default_model()
    assert path == tmp_path / "dlib_resnet_v1" / "1" / "model.onnx"
    record_file = tmp_path / "dlib_resnet_v1" / "facexplain.json"
    record = json.loads(record_file.read_text())
    assert record["source"]["sha256"] == read_dlib_resnet(dlib_source_path()).sha256
    assert record["source"]["file"].endswith(DLIB_DAT)
    assert record["threshold"] == get_spec("dlib-resnet-v1").threshold
    stamp = os.stat(path).st_mtime_ns
    assert ensure_default_model() == path
    assert os.stat(path).st_mtime_ns == stamp  # not rebuilt
    record["source"]["sha256"] = "0" * 64  # as if the package shipped another file
    record["threshold"] = 0.91  # as if `models calibrate` had set it: kept across the rebuild
    record_file.write_text(json.dumps(record))
    ensure_default_model()
    rebuilt = json.loads(record_file.read_text())
    assert rebuilt["source"]["sha256"] != "0" * 64 and rebuilt["threshold"] == 0.91
    assert os.stat(path).st_mtime_ns != stamp


def test_converted_model_records_provenance(tmp_path):
    info = convert_dlib(dlib_source_path(), tmp_path / "dlib_resnet_v1")
    assert info["parameters"] == 5_614_592
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "dlib_resnet_v1" / "1" / "model.onnx")).metadata_props}
    assert meta["source_sha256"] == info["sha256"]
    # the record is the models' store's; Triton's config is rendered from it by serving (as `setup` does)
    from explainer_service.serving.repository import write_gpu_configs

    assert not (tmp_path / "dlib_resnet_v1" / "config.pbtxt").exists()
    write_gpu_configs(tmp_path)
    assert (tmp_path / "dlib_resnet_v1" / "config.pbtxt").read_text().startswith('name: "dlib_resnet_v1"')
