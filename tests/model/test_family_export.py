"""Full-size family networks and real user ONNX models through facexplain's one input contract.

- Each family's default network (iresnet50 for ArcFace and MagFace, IR-50 for AdaFace) with random
  weights: written in the official checkpoint layout, read back, exported to ONNX; onnxruntime
  must agree with PyTorch (cosine >= 0.9999 per embedding).
- The real models of ../shared/models wrapped by ``wrap_onnx``: fed RGB 0..255 through ``image``
  they must give what the original gives for the manually preprocessed input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from explainer_service.models import families as F  # noqa: E402
from explainer_service.models.onnx_wrap import onnx_input_info, wrap_onnx  # noqa: E402


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _faces(shared: Path | None, n: int = 2) -> np.ndarray:
    """(n, 3, 112, 112) RGB 0..255: real aligned LFW crops when ../shared has them, else noise."""
    rng = np.random.default_rng(0)
    out = [rng.uniform(0, 255, (3, 112, 112)).astype(np.float32)]
    root = shared / "data" / "lfw-dev" / "aligned112" if shared else None
    if root is not None and root.is_dir():
        from PIL import Image

        for p in sorted(root.rglob("*.jpg"))[:n]:
            out.append(np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1))
    while len(out) < n + 1:
        out.append(rng.uniform(0, 255, (3, 112, 112)).astype(np.float32))
    return np.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("family", F.FAMILIES)
def test_full_size_family_exports_match_torch(family, tmp_path):
    model = F.randomize_weights(F.build_backbone(family), seed=2).eval()
    ckpt = tmp_path / f"{family}-official.ckpt"
    F.save_official(model, family, ckpt)
    loaded, info = F.load_official(family, ckpt)
    assert info["arch"] == F.DEFAULT_ARCH[family] and info["embedding_dim"] == 512

    onnx_path = tmp_path / f"{family}.onnx"
    F.export_onnx(loaded, F.PRESETS[family], onnx_path)
    io = onnx_input_info(onnx_path)
    assert (io["name"], io["output_name"], io["chip"], io["output_dim"]) == ("image", "embedding", 112, 512)
    assert io["dynamic_batch"]

    x = _faces(None, 3)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x})
    with torch.no_grad():
        want = F.Preprocessed(model, family).eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (4, 512)
    assert _cosine_rows(got, want).min() >= 0.9999
    # MagFace's quality is the norm: it must survive too.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-4)


@pytest.mark.shared
@pytest.mark.parametrize("name,preset", [
    ("mobilefacenet-ms1mv3.onnx", "paddle-bgr128"),
    ("mobilefacenet-arcface-ms1m.onnx", "imagenet"),
])
def test_wrapped_shared_models_equal_manual_preprocessing(shared_dir, name, preset):
    path = shared_dir / "models" / name
    if not path.is_file():
        pytest.skip(f"needs {path}")
    wrapped = wrap_onnx(path, preset)
    io = onnx_input_info(wrapped)
    assert io["name"] == "image" and io["output_name"] == "embedding"
    assert io["chip"] == 112 and io["dynamic_batch"]
    assert [i.name for i in wrapped.graph.input] == ["image"]

    x = _faces(shared_dir, 3)
    c = F.PRESETS[preset]
    y = x[:, ::-1] if c.channels == "bgr" else x  # written out by hand, not via the convention object
    manual = ((y - np.array(c.mean, np.float32)[None, :, None, None])
              / np.array(c.std, np.float32)[None, :, None, None]).astype(np.float32)
    orig = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = orig.run(None, {orig.get_inputs()[0].name: np.ascontiguousarray(manual)})
    sess = ort.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x})
    assert got.shape == (4, 128)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # The convention matters: the other channel order changes the embeddings of real faces.
    flipped = manual[:, ::-1].copy()
    (other,) = orig.run(None, {orig.get_inputs()[0].name: flipped})
    assert _cosine_rows(other, want).min() < 0.9999
