"""Model families: input conventions, official key layouts, checkpoint reading, ONNX export and wrapping.

Small random models (narrow channels, the official depths and key names) keep this fast; the
full-size networks are exported in tests/model/test_family_export.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from explainer_service.errors import InputError, ModelFormatError  # noqa: E402
from explainer_service.models import families as F  # noqa: E402
from explainer_service.models.onnx_wrap import onnx_input_info, wrap_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = (4, 8, 12, 16)  # distinct stage widths, as in every official model
DIM = 32
ARCHS = {
    "arcface": ["iresnet18", "iresnet34", "iresnet50", "iresnet100"],
    "magface": ["iresnet18", "iresnet50", "iresnet100"],
    "adaface": ["ir_18", "ir_34", "ir_50", "ir_101"],
}


def tiny(family: str, arch: str | None = None, seed: int = 0):
    m = F.build_backbone(family, arch or ("ir_18" if family == "adaface" else "iresnet18"),
                         embedding_dim=DIM, widths=TINY)
    return F.randomize_weights(m, seed=seed).eval()


def pixels(n: int = 3, side: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, side, side)).astype(np.float32)


def embed(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def manual(x: np.ndarray, channels: str, mean, std) -> np.ndarray:
    """The convention written out by hand: flip RGB->BGR if asked, then per-channel (x - m) / s."""
    y = x[:, ::-1] if channels == "bgr" else x
    return ((y - np.array(mean, np.float32)[None, :, None, None])
            / np.array(std, np.float32)[None, :, None, None]).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ----------------------------------------------------------------------------- conventions


def test_presets_are_the_official_preprocessing():
    P = F.PRESETS
    assert P["arcface"] == F.InputConvention("rgb", (127.5,) * 3, (127.5,) * 3)
    assert P["adaface"] == F.InputConvention("bgr", (127.5,) * 3, (127.5,) * 3)
    assert P["magface"] == F.InputConvention("bgr", (0.0,) * 3, (255.0,) * 3)
    assert P["paddle-bgr128"] == F.InputConvention("bgr", (127.5,) * 3, (128.0,) * 3)
    assert np.allclose(P["imagenet"].mean, [123.675, 116.28, 103.53])
    assert np.allclose(P["imagenet"].std, [58.395, 57.12, 57.375])
    assert P["imagenet"].channels == "rgb"
    # One pixel by hand: R=255, G=0, B=127.5.
    px = np.array([255.0, 0.0, 127.5], np.float32).reshape(3, 1, 1)
    assert np.allclose(P["arcface"].to_network(px).ravel(), [1.0, -1.0, 0.0])
    assert np.allclose(P["adaface"].to_network(px).ravel(), [0.0, -1.0, 1.0])
    assert np.allclose(P["magface"].to_network(px).ravel(), [0.5, 0.0, 1.0])


@pytest.mark.parametrize("kwargs", [
    dict(channels="grb", mean=(0, 0, 0), std=(1, 1, 1)),
    dict(channels="rgb", mean=(0, 0), std=(1, 1, 1)),
    dict(channels="rgb", mean=(0, 0, 0), std=(1, 0, 1)),
    dict(channels="rgb", mean=(0, float("nan"), 0), std=(1, 1, 1)),
    dict(channels="rgb", mean="abc", std=(1, 1, 1)),
])
def test_input_convention_rejects_bad_values(kwargs):
    with pytest.raises(InputError):
        F.InputConvention(**kwargs)


def test_convention_helpers():
    c = F.InputConvention("bgr", [1, 2, 3], [4, 5, 6])
    assert c.mean == (1.0, 2.0, 3.0) and isinstance(c.mean, tuple)
    assert F.InputConvention.from_dict(c.to_dict()) == c
    assert F.resolve_convention("ArcFace") is F.PRESETS["arcface"]
    assert F.resolve_convention(c) is c
    with pytest.raises(InputError, match="presets"):
        F.resolve_convention("nope")


def test_conventions_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from explainer_service.models import families as F\n"
        "assert F.PRESETS['arcface'].channels == 'rgb'\n"
        "try:\n    F.Preprocessed\nexcept ImportError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_normalize_arch():
    assert F.normalize_arch("arcface") == "iresnet50"
    assert F.normalize_arch("adaface") == "ir_50"
    assert F.normalize_arch("arcface", "r100") == "iresnet100"
    assert F.normalize_arch("magface", "100") == "iresnet100"
    assert F.normalize_arch("adaface", "ir_101") == "ir_101"
    assert F.normalize_arch("adaface", "r100") == "ir_101"
    with pytest.raises(InputError):
        F.normalize_arch("magface", "iresnet200")
    with pytest.raises(InputError):
        F.normalize_arch("facenet")


# ----------------------------------------------------------------------------- key layouts


def _block_keys(prefix: str, names: list[str]) -> set[str]:
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    out = set()
    for n in names:
        if n.endswith("!bn"):
            out |= {f"{prefix}{n[:-3]}.{p}" for p in bn}
        else:
            out.add(f"{prefix}{n}")
    return out


@pytest.mark.parametrize("family", ["arcface", "magface"])
def test_iresnet_key_layout_matches_upstream(family):
    m = F.build_backbone(family, "iresnet50", embedding_dim=DIM, widths=TINY)
    keys = set(m.state_dict())
    assert len(keys) == 475  # 7 stem + 24 blocks * 18 + 4 downsamples * 6 + bn2 5 + fc 2 + features 5
    block = ["bn1!bn", "conv1.weight", "bn2!bn", "prelu.weight", "conv2.weight", "bn3!bn"]
    assert _block_keys("layer1.0.", block + ["downsample.0.weight", "downsample.1!bn"]) <= keys
    assert _block_keys("layer3.13.", block) <= keys
    assert not any(k.startswith("layer3.13.downsample") or k.startswith("layer3.14.") for k in keys)
    assert _block_keys("", ["conv1.weight", "bn1!bn", "prelu.weight", "bn2!bn", "fc.weight", "fc.bias",
                            "features!bn"]) <= keys
    sd = m.state_dict()
    assert sd["fc.weight"].shape == (DIM, TINY[3] * 49)
    assert sd["layer2.0.conv2.weight"].shape == (TINY[1], TINY[1], 3, 3)  # the stride-2 conv
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)
    eps, momentum = (1e-5, 0.1) if family == "arcface" else (2e-5, 0.9)
    for bn in (m.bn1, m.layer1[0].bn3, m.layer4[0].downsample[1], m.bn2, m.features):
        assert bn.eps == eps and bn.momentum == momentum


def test_adaface_key_layout_matches_upstream():
    m = F.build_backbone("adaface", "ir_50", embedding_dim=DIM, widths=TINY)
    keys = set(m.state_dict())
    assert len(keys) == 467  # 7 stem + 24 blocks * 18 + 3 conv shortcuts * 6 + 5 + 2 + 3
    res = ["res_layer.0!bn", "res_layer.1.weight", "res_layer.2!bn", "res_layer.3.weight",
           "res_layer.4.weight", "res_layer.5!bn"]
    assert _block_keys("input_layer.", ["0.weight", "1!bn", "2.weight"]) <= keys
    assert _block_keys("body.0.", res) <= keys
    assert not any(k.startswith("body.0.shortcut_layer") for k in keys)  # MaxPool2d(1, 2): 64 -> 64
    for first in (3, 7, 21):  # first block of stages 2, 3, 4 of IR-50 (3, 4, 14, 3)
        assert _block_keys(f"body.{first}.", res + ["shortcut_layer.0.weight", "shortcut_layer.1!bn"]) <= keys
    assert "body.23.res_layer.5.weight" in keys and "body.24.res_layer.0.weight" not in keys
    assert {"output_layer.0.weight", "output_layer.3.weight", "output_layer.3.bias",
            "output_layer.4.running_mean", "output_layer.4.running_var"} <= keys
    assert "output_layer.4.weight" not in keys  # BatchNorm1d(512, affine=False)
    assert isinstance(m.body[0].shortcut_layer, torch.nn.MaxPool2d)
    assert m.body[3].res_layer[4].stride == (2, 2)
    assert isinstance(m.output_layer[1], torch.nn.Dropout) and m.output_layer[1].p == 0.4


# ----------------------------------------------------------------------------- official files


@pytest.mark.parametrize("family", F.FAMILIES)
def test_official_round_trip_gives_identical_embeddings(family, tmp_path):
    m = tiny(family, seed=3)
    path = tmp_path / f"{family}.ckpt"
    F.save_official(m, family, path)
    loaded, info = F.load_official(family, path)
    x = pixels()
    assert np.array_equal(embed(loaded, x / 255), embed(m, x / 255))
    assert not loaded.training
    expected_arch = "ir_18" if family == "adaface" else "iresnet18"
    assert info["family"] == family and info["arch"] == expected_arch
    assert info["embedding_dim"] == DIM and info["widths"] == TINY
    assert info["keys"] == len(m.state_dict())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["unpickler"] == "weights_only"


def test_saved_files_have_the_official_layout(tmp_path):
    files = {}
    for family in F.FAMILIES:
        files[family] = tmp_path / family
        F.save_official(tiny(family), family, files[family])
    arc = torch.load(files["arcface"], weights_only=True)
    assert {"conv1.weight", "layer1.0.bn1.weight", "features.weight", "fc.weight"} <= set(arc)
    mag = torch.load(files["magface"], weights_only=True)
    assert {"epoch", "arch", "state_dict", "optimizer"} <= set(mag)
    assert "features.module.layer1.0.bn1.weight" in mag["state_dict"]
    assert "features.module.features.running_var" in mag["state_dict"]
    assert "parallel_fc.weight" in mag["state_dict"]
    ada = torch.load(files["adaface"], weights_only=True)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "hyper_parameters"} <= set(ada)
    assert {"model.input_layer.0.weight", "model.body.0.res_layer.1.weight", "model.output_layer.3.weight",
            "head.kernel"} <= set(ada["state_dict"])
    _, info = F.load_official("magface", files["magface"])
    assert info["prefix"] == "features.module." and info["ignored_keys"] == 1
    _, info = F.load_official("adaface", files["adaface"])
    assert info["prefix"] == "model." and info["ignored_keys"] == 4


def _relayout(sd: dict, fmt: str) -> object:
    if fmt == "arcface-ddp":
        return {f"module.{k}": v for k, v in sd.items()}
    if fmt == "arcface-resume":  # arcface_torch checkpoint_gpu_N.pt
        return {"epoch": 3, "global_step": 10, "state_dict_backbone": sd, "state_dict_softmax_fc": {},
                "state_optimizer": {}, "state_lr_scheduler": {}}
    if fmt == "magface-dp":  # run/trainer.py: DataParallel(SoftmaxBuilder)
        d = {f"module.features.{k}": v for k, v in sd.items()}
        d["module.fc.weight"] = torch.zeros(DIM, 5)
        return {"epoch": 1, "arch": "iresnet18", "state_dict": d}
    if fmt == "magface-inf":  # NetworkBuilder_inf().state_dict()
        return {"state_dict": {f"features.{k}": v for k, v in sd.items()}}
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["arcface-ddp", "arcface-resume", "magface-dp", "magface-inf"])
def test_other_official_layouts_load(fmt, tmp_path):
    family = fmt.split("-")[0]
    m = tiny(family, seed=5)
    path = tmp_path / "ckpt.pth"
    torch.save(_relayout(m.state_dict(), fmt), path)
    loaded, info = F.load_official(family, path)
    x = pixels(2)
    assert np.array_equal(embed(loaded, x), embed(m, x))


@pytest.mark.parametrize("family", F.FAMILIES)
def test_architecture_is_inferred_from_the_keys(family, tmp_path):
    for arch in ARCHS[family]:
        path = tmp_path / f"{arch}.pth"
        F.save_official(F.build_backbone(family, arch, embedding_dim=DIM, widths=TINY), family, path)
        _, info = F.load_official(family, path)
        assert info["arch"] == arch
        _, info = F.load_official(family, path, arch=arch)
        assert info["arch"] == arch
    other = ARCHS[family][0]
    with pytest.raises(ModelFormatError, match=f"{path.name}.*not the {other}"):
        F.load_official(family, path, arch=other)


def _edit_saved(family: str, path: Path, edit) -> None:
    obj = torch.load(path, weights_only=True)
    sd = obj if family == "arcface" else obj["state_dict"]
    edit(sd)
    torch.save(obj, path)


_PREFIX = {"arcface": "", "magface": "features.module.", "adaface": "model."}
_A_KEY = {"arcface": "layer2.1.bn3.running_var", "magface": "layer3.0.downsample.1.weight",
          "adaface": "body.5.res_layer.2.bias"}


@pytest.mark.parametrize("family", F.FAMILIES)
def test_missing_backbone_key_is_refused(family, tmp_path):
    path = tmp_path / f"dropped-{family}.pth"
    F.save_official(tiny(family), family, path)
    key = _PREFIX[family] + _A_KEY[family]
    _edit_saved(family, path, lambda sd: sd.pop(key))
    with pytest.raises(ModelFormatError) as err:
        F.load_official(family, path)
    assert path.name in str(err.value) and key in str(err.value) and "missing" in str(err.value)


@pytest.mark.parametrize("family", F.FAMILIES)
def test_unexpected_backbone_key_is_refused(family, tmp_path):
    path = tmp_path / f"extra-{family}.pth"
    F.save_official(tiny(family), family, path)
    key = _PREFIX[family] + "layer1.0.se.fc1.weight"
    _edit_saved(family, path, lambda sd: sd.__setitem__(key, torch.zeros(2)))
    with pytest.raises(ModelFormatError) as err:
        F.load_official(family, path)
    assert path.name in str(err.value) and key in str(err.value) and "unexpected" in str(err.value)


@pytest.mark.parametrize("family", ["magface", "adaface"])
def test_stray_key_outside_the_backbone_is_refused(family, tmp_path):
    path = tmp_path / "stray.pth"
    F.save_official(tiny(family), family, path)
    _edit_saved(family, path, lambda sd: sd.__setitem__("teacher.conv1.weight", torch.zeros(1)))
    with pytest.raises(ModelFormatError, match="stray.pth.*teacher.conv1.weight"):
        F.load_official(family, path)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    m = tiny("arcface")
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    loaded, _ = F.load_official("arcface", path)
    assert np.array_equal(embed(loaded, pixels(1)), embed(m, pixels(1)))


def test_wrong_shape_and_wrong_family_are_refused(tmp_path):
    path = tmp_path / "ada.ckpt"
    F.save_official(tiny("adaface"), "adaface", path)
    with pytest.raises(ModelFormatError, match="ada.ckpt.*no iresnet backbone"):
        F.load_official("arcface", path)
    arc = tmp_path / "arc.pth"
    sd = tiny("arcface").state_dict()
    sd["layer1.0.conv2.weight"] = torch.zeros(TINY[0], TINY[0], 5, 5)
    torch.save(sd, arc)
    with pytest.raises(ModelFormatError, match="arc.pth.*shapes"):
        F.load_official("arcface", arc)


def test_corrupted_or_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pth"
    F.save_official(tiny("arcface"), "arcface", good)
    data = good.read_bytes()
    cases = {
        "random.pth": np.random.default_rng(0).bytes(5000),
        "truncated.pth": data[: len(data) // 2],
        "empty.pth": b"",
        "text.pth": b"this is not a checkpoint\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFormatError, match=name):
            F.load_official("arcface", tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ModelFormatError, match="list.pth.*not a state dict"):
        F.load_official("arcface", tmp_path / "list.pth")
    torch.save({"state_dict": {"conv1.weight": 3}}, tmp_path / "nontensor.pth")
    with pytest.raises(ModelFormatError, match="nontensor.pth"):
        F.load_official("arcface", tmp_path / "nontensor.pth")
    with pytest.raises(InputError, match="missing.pth"):
        F.load_official("arcface", tmp_path / "missing.pth")


def test_checkpoint_with_extra_objects_uses_the_restricted_reader(tmp_path):
    m = tiny("adaface")
    path = tmp_path / "lightning.ckpt"
    sd = {f"model.{k}": v for k, v in m.state_dict().items()}
    torch.save({"state_dict": sd, "hyper_parameters": argparse.Namespace(arch="ir_18", lr=0.1)}, path)
    loaded, info = F.load_official("adaface", path)
    assert info["unpickler"] == "restricted"
    assert np.array_equal(embed(loaded, pixels(1)), embed(m, pixels(1)))


class _Booby:
    """Pickles as a call of os.remove: a file named by a checkpoint must never run it."""

    def __init__(self, victim: str) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.remove, (self.victim,))


def test_restricted_reader_runs_no_code_from_the_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny("arcface").state_dict(), "payload": _Booby(str(victim))}, path)
    assert victim.exists()
    _, info = F.load_official("arcface", path)
    assert info["unpickler"] == "restricted"
    assert victim.read_text() == "still here"


def test_save_official_checks_the_family(tmp_path):
    with pytest.raises(InputError):
        F.save_official(tiny("arcface"), "magface", tmp_path / "x.pth")
    with pytest.raises(InputError):
        F.save_official(tiny("adaface"), "arcface", tmp_path / "x.pth")


# ----------------------------------------------------------------------------- preprocessing, export


@pytest.mark.parametrize("preset", sorted(F.PRESETS))
def test_preprocessed_equals_the_manual_convention(preset):
    m = tiny("arcface", seed=7)
    c = F.PRESETS[preset]
    x = pixels(2, seed=1)
    got = embed(F.Preprocessed(m, preset).eval(), x)
    want = embed(m, manual(x, c.channels, c.mean, c.std))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if c.channels == "bgr":  # the flip matters: feeding RGB gives something else
        assert not np.allclose(got, embed(m, manual(x, "rgb", c.mean, c.std)), atol=1e-3)


def test_preprocessed_state_dict_is_the_backbone():
    m = tiny("magface")
    p = F.Preprocessed(m, "magface")
    assert set(p.state_dict()) == {f"backbone.{k}" for k in m.state_dict()}


@pytest.mark.parametrize("family", F.FAMILIES)
def test_export_onnx_matches_torch(family, tmp_path):
    m = tiny(family, seed=11)
    path = tmp_path / f"{family}.onnx"
    F.export_onnx(m, F.PRESETS[family], path)
    info = onnx_input_info(path)
    assert info["name"] == "image" and info["output_name"] == "embedding"
    assert info["chip"] == 112 and info["dynamic_batch"] and info["output_dim"] == DIM
    assert info["convention"] == F.PRESETS[family]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = pixels(n, seed=n)
        (y,) = sess.run(None, {"image": x})
        want = embed(F.Preprocessed(m, family), x)
        assert y.shape == (n, DIM)
        assert cosine_rows(y, want).min() >= 0.9999
        np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_export_onnx_rejects_bad_input(tmp_path):
    m = tiny("arcface")
    with pytest.raises(InputError, match="bare backbone"):
        F.export_onnx(F.Preprocessed(m, "arcface"), "arcface", tmp_path / "x.onnx")
    with pytest.raises(InputError, match="96"):
        F.export_onnx(m, "arcface", tmp_path / "x.onnx", chip=96)
    assert not (tmp_path / "x.onnx").exists()
    m.train()
    F.export_onnx(m, "arcface", tmp_path / "ok.onnx")
    assert m.training  # mode restored


# ----------------------------------------------------------------------------- wrap_onnx


class _TinyBGRNet(torch.nn.Module):
    """A stand-in face model trained on BGR (x - 127.5) / 128 input."""

    def __init__(self, fixed_batch: int | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.fixed_batch = fixed_batch

    def forward(self, x):
        y = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))
        if self.fixed_batch:
            y = y.reshape(self.fixed_batch, -1)
        return self.fc(y)


def _export(net, path: Path, *, in_name="x", out_name="feat", side=32, dynamic=True) -> onnx.ModelProto:
    dummy = torch.zeros(1, 3, side, side)
    axes = {in_name: {0: "n"}, out_name: {0: "n"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (dummy,), str(path), dynamo=False, input_names=[in_name],
                          output_names=[out_name], dynamic_axes=axes, opset_version=13)
    return onnx.load(str(path))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_wrap_onnx_bakes_the_convention_in(tmp_path):
    original = _export(_TinyBGRNet(), tmp_path / "net.onnx")
    wrapped = wrap_onnx(original, F.PRESETS["paddle-bgr128"])
    assert [i.name for i in wrapped.graph.input] == ["image"]
    assert [o.name for o in wrapped.graph.output] == ["embedding"]
    assert original.graph.input[0].name == "x"  # the caller's model is untouched
    x = pixels(4, side=32, seed=2)
    want = _run(original, manual(x, "bgr", (127.5,) * 3, (128.0,) * 3))
    np.testing.assert_allclose(_run(wrapped, x), want, rtol=1e-5, atol=1e-5)
    # A wrong convention gives different embeddings (the test can fail).
    wrong = wrap_onnx(original, F.InputConvention("rgb", (127.5,) * 3, (128.0,) * 3))
    assert not np.allclose(_run(wrong, x), want, atol=1e-3)
    info = onnx_input_info(wrapped)
    assert info["shape"] == ["batch", 3, 32, 32] and info["output_shape"] == ["batch", 10]
    assert info["opset"] == 13 and info["convention"] == F.PRESETS["paddle-bgr128"]


def test_wrap_onnx_makes_a_fixed_batch_dynamic(tmp_path):
    original = _export(_TinyBGRNet(), tmp_path / "fixed.onnx", dynamic=False)
    assert onnx_input_info(original)["shape"][0] == 1
    wrapped = wrap_onnx(original, "paddle-bgr128")
    assert onnx_input_info(wrapped)["dynamic_batch"]
    x = pixels(3, side=32)
    want = np.concatenate([_run(original, manual(x[i:i + 1], "bgr", (127.5,) * 3, (128.0,) * 3))
                           for i in range(3)])
    np.testing.assert_allclose(_run(wrapped, x), want, rtol=1e-5, atol=1e-5)


def test_wrap_onnx_reports_a_batch_it_cannot_free(tmp_path):
    original = _export(_TinyBGRNet(fixed_batch=1), tmp_path / "baked.onnx", dynamic=False)
    with pytest.warns(UserWarning, match="stays fixed at 1"):
        wrapped = wrap_onnx(original, "paddle-bgr128", name="baked.onnx")
    assert onnx_input_info(wrapped)["shape"][0] == 1
    assert {p.key: p.value for p in wrapped.metadata_props}["facexplain.batch"] == "fixed:1"
    x = pixels(1, side=32)
    np.testing.assert_allclose(_run(wrapped, x), _run(original, manual(x, "bgr", (127.5,) * 3, (128.0,) * 3)),
                               rtol=1e-5, atol=1e-5)


def test_wrap_onnx_handles_names_already_taken(tmp_path):
    original = _export(_TinyBGRNet(), tmp_path / "named.onnx", in_name="image", out_name="embedding")
    wrapped = wrap_onnx(original, "imagenet")
    assert [i.name for i in wrapped.graph.input] == ["image"]
    assert [o.name for o in wrapped.graph.output] == ["embedding"]
    c = F.PRESETS["imagenet"]
    x = pixels(2, side=32)
    np.testing.assert_allclose(_run(wrapped, x), _run(original, manual(x, "rgb", c.mean, c.std)),
                               rtol=1e-5, atol=1e-5)


def test_wrap_onnx_from_a_path_with_dynamic_spatial_size(tmp_path):
    path = tmp_path / "anysize.onnx"
    net = _TinyBGRNet()
    dummy = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (dummy,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}}, opset_version=13)
    with pytest.raises(ModelFormatError, match="anysize.onnx.*chip"):
        wrap_onnx(path, "paddle-bgr128")
    wrapped = wrap_onnx(path, "paddle-bgr128", chip=40)
    assert onnx_input_info(wrapped)["chip"] == 40
    assert _run(wrapped, pixels(2, side=40)).shape == (2, 10)


def _graph_model(inputs, outputs=None) -> onnx.ModelProto:
    """A one-node model (Identity from the first input) with the given (name, type, shape) inputs."""
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (outputs or [("out", ["N", 8])])]
    nodes = [helper.make_node("Identity", [inputs[0][0]], [o.name]) for o in outs]
    g = helper.make_graph(nodes, "g", ins, outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("inputs,outputs,match", [
    ([("a", TensorProto.FLOAT, [1, 3, 8, 8]), ("b", TensorProto.FLOAT, [1, 3, 8, 8])], None, "exactly 1 input"),
    ([("a", TensorProto.FLOAT, [1, 3, 8])], None, "4-D"),
    ([("a", TensorProto.FLOAT, [1, 1, 8, 8])], None, "3 channels"),
    ([("a", TensorProto.FLOAT, [1, 3, 8, 9])], None, "square"),
    ([("a", TensorProto.UINT8, [1, 3, 8, 8])], None, "float32"),
    ([("a", TensorProto.FLOAT, [1, 3, 8, 8])], [("o1", ["N", 8]), ("o2", ["N", 8])], "exactly 1 output"),
    ([("a", TensorProto.FLOAT, [1, 3, 8, 8])], [("o", ["N", 8, 1, 1])], r"expected \(N, D\)"),
])
def test_wrap_onnx_refuses_models_that_do_not_fit(inputs, outputs, match):
    model = _graph_model(inputs, outputs)
    with pytest.raises(ModelFormatError, match=f"user.onnx.*{match}"):
        wrap_onnx(model, "arcface", name="user.onnx")


def test_wrap_onnx_names_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="absent.onnx"):
        wrap_onnx(tmp_path / "absent.onnx", "arcface")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a protobuf")
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        wrap_onnx(tmp_path / "junk.onnx", "arcface")
