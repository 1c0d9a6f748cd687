"""`facexplain models import`: official formats (random weights) and real ONNX models, served by
the embedded Triton and checked against their torch / onnxruntime references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainer_service.cli import main
from explainer_service.models.registry import get_spec
from explainer_service.serving.client import TritonFaceModel
from explainer_service.serving.embedded import EmbeddedTriton

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch", reason="the torch extra is part of `make test` setup")

from explainer_service.models import families  # noqa: E402
from explainer_service.models.convert import sha256_file  # noqa: E402

FAMILIES = {"arcface": "arcface_r50", "magface": "magface_r50", "adaface": "adaface_ir50"}


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("repository")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEXPLAIN_MODEL_REPOSITORY", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """Full-size backbones with random weights, saved as each family's authors save them."""
    out = {}
    d = tmp_path_factory.mktemp("checkpoints")
    for i, family in enumerate(FAMILIES):
        module = families.randomize_weights(families.build_backbone(family), seed=i)
        suffix = ".ckpt" if family == "adaface" else ".pth"
        path = d / f"{family}{suffix}"
        families.save_official(module, family, path)
        out[family] = (path, module.eval())
    return out


@pytest.fixture(scope="module")
def imported(repo, official_files):
    assert main(["setup"]) == 0  # the default model too, so the server has its usual set
    for family, (path, _) in official_files.items():
        code = main(["models", "import", str(path), "--name", FAMILIES[family], "--family", family])
        assert code == 0
    return official_files


def test_official_formats_import_serve_and_agree(repo, imported):
    chips = np.random.default_rng(1).uniform(0, 255, (6, 3, 112, 112)).astype(np.float32)
    with EmbeddedTriton(repository=repo) as server:
        assert set(FAMILIES.values()) <= set(server.served)
        for family, (path, module) in imported.items():
            name = FAMILIES[family]
            record = json.loads((repo / name / "facexplain.json").read_text())
            assert record["family"] == family and record["embedding_dim"] == 512
            assert record["source"]["sha256"] == sha256_file(path)
            assert 'backend: "onnxruntime"' in (repo / name / "config.pbtxt").read_text()
            conv = families.PRESETS[family]
            with torch.no_grad():
                ref = module(torch.from_numpy(conv.to_network(chips))).numpy()
            import onnxruntime as ort

            sess = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
            local = sess.run(None, {"image": chips})[0]
            with TritonFaceModel(server.url, get_spec(name), batch_size=4) as m:
                served = m.embed(chips)
            assert cosines(local, ref).min() >= 0.9999, family
            assert cosines(served, ref).min() >= 0.9999, family
            assert cosines(served, local).min() >= 0.99999, family


def test_model_without_threshold_explains_with_unknown_decision(repo, imported, tmp_path):
    rng = np.random.default_rng(2)
    from PIL import Image

    for k in "ab":
        Image.fromarray(rng.integers(0, 255, (112, 112, 3)).astype(np.uint8)).save(tmp_path / f"{k}.png")
    code = main(["explain", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "arcface_r50",
                 "--out", str(tmp_path / "out"), "--masks", "20", "--no-progress", "--engine", "local"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["decision"] == "unknown" and summary["threshold"] is None
    assert np.load(tmp_path / "out" / "maps.npz")["s_a"].shape == (112, 112)


def test_import_errors_are_clear_and_replace_nothing(repo, imported, tmp_path, capsys):
    arc_path = imported["arcface"][0]
    onnx_before = (repo / "arcface_r50" / "1" / "model.onnx").read_bytes()
    bad = tmp_path / "broken.pth"
    bad.write_bytes(arc_path.read_bytes()[:1000])
    cases = [
        (["models", "import", str(bad), "--name", "x1", "--family", "arcface"], "broken.pth"),
        (["models", "import", str(arc_path), "--name", "x2", "--family", "adaface"], "arcface.pth"),
        (["models", "import", str(arc_path), "--name", "dlib-resnet-v1", "--family", "arcface"], "built-in"),
        (["models", "import", str(imported["magface"][0]), "--name", "arcface_r50", "--family", "magface"], "--force"),
        (["models", "import", str(tmp_path / "none.onnx"), "--name", "x3", "--family", "onnx", "--preset", "arcface"], "no such file"),
        (["models", "import", str(arc_path), "--name", "Bad Name", "--family", "arcface"], "model name"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)
    assert (repo / "arcface_r50" / "1" / "model.onnx").read_bytes() == onnx_before
    assert not (repo / "x1").exists() and not (repo / "x2").exists()


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(
    "filename, preset, readme_accuracy",
    [("mobilefacenet-ms1mv3.onnx", "paddle-bgr128", 99.27), ("mobilefacenet-arcface-ms1m.onnx", "imagenet", 98.90)],
)
def test_real_mobilefacenets_verify_lfw_through_triton(repo, shared_dir, lfw_dir, filename, preset, readme_accuracy, capsys):
    """Importing each real model with its convention, serving it, and verifying LFW: the accuracy
    lands within 0.5 points of ../shared/README.md, which proves the preprocessing is applied right."""
    name = filename.split(".")[0]
    assert main(["models", "import", str(shared_dir / "models" / filename), "--name", name,
                 "--family", "onnx", "--preset", preset]) == 0
    capsys.readouterr()
    assert main(["models", "calibrate", name, "--dataset", f"lfw:{lfw_dir}", "--images", "aligned112",
                 "--engine", "auto"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("accuracy ")[1].split(" %")[0])
    assert abs(accuracy - readme_accuracy) <= 0.5, out
    record = json.loads((repo / name.replace("-", "_") / "facexplain.json").read_text())
    assert 0.0 < record["threshold"] < 0.6
