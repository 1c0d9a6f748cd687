"""corrrise_scores in the embedded Triton (real tritonserver, CPU): it says which engine made its
masks — the NumPy path here, since the embedded repository's instances are KIND_CPU (and, when
.venv-triton lacks torch, torch could not be used anyway) — its scores equal the client's own, and
bench/bench_gpu_corrrise.py's Triton mode runs end to end against it (a dry run of the GPU figure)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.models.convert import ensure_default_model
from explainer_service.models.registry import get_spec
from explainer_service.pipeline import load_face_model
from explainer_service.serving.embedded import EmbeddedTriton, find_triton
from explainer_service.serving.repository import CORRRISE_MODEL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = get_spec("dlib-resnet-v1")


@pytest.fixture(scope="module")
def server():
    ensure_default_model()
    srv = EmbeddedTriton().start()
    yield srv
    srv.stop()


def _server_has_torch() -> bool:
    python = find_triton().env / "bin" / "python"
    return subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0


def test_the_response_names_the_engine_and_the_scores_are_the_clients(server):
    import tritonclient.grpc as grpcclient

    size = SPEC.chip.size
    chip = np.random.default_rng(3).uniform(0, 255, (3, size, size)).astype(np.float32)
    model = load_face_model()
    ref = model.embed(np.random.default_rng(4).uniform(0, 255, (1, 3, size, size)).astype(np.float32))[0]
    config = MaskConfig(n_masks=20, seed=2, patches=3)
    params = {"model": "dlib_resnet_v1", "start": 5, "stop": 17, "chunk": 8, "masks": asdict(config)}
    inputs = [grpcclient.InferInput("image", [3, size, size], "FP32"),
              grpcclient.InferInput("reference", [len(ref)], "FP32"),
              grpcclient.InferInput("request", [1], "BYTES")]
    inputs[0].set_data_from_numpy(chip)
    inputs[1].set_data_from_numpy(ref.astype(np.float32))
    inputs[2].set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object))
    client = grpcclient.InferenceServerClient(server.url)
    try:
        result = client.infer(CORRRISE_MODEL, inputs)
    finally:
        client.close()
    engine = result.as_numpy("engine")[0].decode()
    print(f"corrrise_scores engine in the embedded Triton: {engine} (torch in its env: {_server_has_torch()})")
    assert engine == "numpy"  # KIND_CPU instances with mask_engine auto keep the host path
    emb = model.embed(chip[None] * generate_masks(config, size, 5, 17)[:, None]).astype(np.float64)
    expected = emb @ ref / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref.astype(np.float64)))
    np.testing.assert_allclose(result.as_numpy("scores"), expected, atol=1e-5)


def test_bench_triton_mode_runs_against_the_server(server, capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu_corrrise", ROOT / "bench" / "bench_gpu_corrrise.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--triton", server.url, "--masks", "24", "--pairs", "2", "--reps", "1",
                             "--per-eval", "32"])
    result = bench.run_triton(args)
    (row,) = result["rows"]
    assert row["model"] == "dlib-resnet-v1" and row["engine"] == "numpy" and row["url"] == server.url
    assert row["server_masks_s"] > 0 and row["client_masks_s"] > 0 and row["server_masks_pairs_per_s"] > 0
    assert row["max_abs_diff_vs_client_masks"] <= 1e-5  # the same maps with masks made on either side
    assert "dlib-resnet-v1 via Triton" in capsys.readouterr().out
