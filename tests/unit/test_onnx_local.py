"""The in-process model's errors say what is wrong with the file, in one line."""

from __future__ import annotations

import pytest

from explainer_service.errors import ModelFormatError, ModelNotReadyError
from explainer_service.models.onnx_local import OnnxFaceModel
from explainer_service.spec import ChipSpec, ModelSpec

SPEC = ModelSpec("toy", ChipSpec("arcface", 16), 2, threshold=None)


def test_a_missing_file_is_not_ready(tmp_path):
    with pytest.raises(ModelNotReadyError, match="model file missing") as info:
        OnnxFaceModel(tmp_path / "model.onnx", SPEC)
    assert not isinstance(info.value, ModelFormatError)


@pytest.mark.parametrize("content", [b"", b"not an onnx file", b"\x08\x07" * 100])
def test_an_unloadable_file_is_a_format_error_in_one_line(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match="not a model onnxruntime can load") as info:
        OnnxFaceModel(path, SPEC)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
