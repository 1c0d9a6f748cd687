"""The embedded Triton (real tritonserver binary from nvidia-pytriton) and the gRPC client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from explainer_service.cli import main
from explainer_service.errors import BackendError, ModelNotReadyError
from explainer_service.models.convert import ensure_default_model
from explainer_service.models.registry import get_spec
from explainer_service.pipeline import load_face_model
from explainer_service.serving.client import TritonFaceModel
from explainer_service.serving.embedded import EmbeddedTriton, free_port
from tests.integration.procs import marked_env, marked_processes

pytestmark = pytest.mark.integration

SPEC = get_spec("dlib-resnet-v1")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def server():
    ensure_default_model()
    srv = EmbeddedTriton().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (37, 3, 150, 150)).astype(np.float32)


@pytest.mark.parametrize("shm", [False, True])
@pytest.mark.parametrize("batch", [1, 8, 256])
def test_triton_embeddings_equal_in_process(server, images, shm, batch):
    ref = load_face_model().embed(images)
    with TritonFaceModel(server.url, SPEC, batch_size=batch, shared_memory=shm, max_in_flight=3) as m:
        out = m.embed(images)
    assert out.shape == (37, 128)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_missing_model_and_unreachable_server_are_clear_errors(server):
    with pytest.raises(ModelNotReadyError, match="has no model 'nope'.*dlib_resnet_v1"):
        TritonFaceModel(server.url, replace(SPEC, name="nope"))
    with pytest.raises(BackendError, match=f"127.0.0.1:{free_port()}|cannot be reached"):
        TritonFaceModel(f"127.0.0.1:{free_port()}", SPEC, retries=0)


def test_explain_through_triton_equals_local(server, lfw_dir, tmp_path):
    a = lfw_dir / "aligned112" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    b = lfw_dir / "aligned112" / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    common = ["--masks", "40", "--seed", "3", "--no-progress"]
    assert main(["explain", str(a), str(b), "--out", str(tmp_path / "t"), "--triton", server.url, *common]) == 0
    assert main(["explain", str(a), str(b), "--out", str(tmp_path / "l"), "--engine", "local", *common]) == 0
    t, lo = np.load(tmp_path / "t" / "maps.npz"), np.load(tmp_path / "l" / "maps.npz")
    np.testing.assert_allclose(t["s_a"], lo["s_a"], atol=1e-5)
    np.testing.assert_allclose(t["s_b"], lo["s_b"], atol=1e-5)
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["engine"] == f"triton {server.url}"


def test_default_engine_starts_and_stops_an_embedded_server(lfw_dir, tmp_path):
    a = lfw_dir / "aligned112" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    env, mark = marked_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "explainer_service.cli", "embed", str(a)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    seen: set[int] = set()
    while proc.poll() is None:  # the server this run started, and only it (others may run Triton too)
        seen.update(p for p in marked_processes(mark) if p != proc.pid)
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert seen, "the run started no server"
    row = json.loads(out)
    local = load_face_model()
    from explainer_service.pipeline import embed_files

    np.testing.assert_allclose(row["embedding"], embed_files([a], local)[0], atol=1e-5)
    assert marked_processes(mark) == []  # nothing left running


def test_server_crash_is_reported_not_hung():
    srv = EmbeddedTriton().start()
    pgid = srv.pid
    assert pgid is not None
    model = TritonFaceModel(srv.url, SPEC, timeout_s=5, retries=1, backoff_s=0.05)
    os.killpg(pgid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="Triton at"):
        model.embed(np.zeros((2, 3, 150, 150), np.float32))
    assert time.monotonic() - t0 < 15
    model.close()
    srv.stop()


def test_a_broken_model_file_fails_startup_with_the_log(tmp_path):
    from explainer_service.models.store import read_record, write_record

    record = read_record("dlib-resnet-v1")
    write_record(record, tmp_path)
    (tmp_path / "dlib_resnet_v1" / "1").mkdir()
    (tmp_path / "dlib_resnet_v1" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    srv = EmbeddedTriton(repository=tmp_path, startup_timeout=60)
    with pytest.raises(BackendError, match="tritonserver exited|not ready"):
        srv.start()
    assert srv._proc is None


def test_serve_command_runs_until_sigterm_and_leaves_no_process():
    grpc, http = free_port(), free_port()
    env, mark = marked_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "explainer_service.cli", "serve", "--grpc-port", str(grpc), "--http-port", str(http)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "Triton ready" in line, proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/dlib_resnet_v1/ready", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    assert marked_processes(mark) == []


def test_committed_gpu_configs_are_generated_from_the_records():
    """model_repository/*/config.pbtxt are outputs of render_config: one source of truth."""
    from explainer_service.models.store import SLOTS, read_record
    from explainer_service.serving.repository import render_config

    repo = Path(__file__).resolve().parents[2] / "model_repository"
    for slot in SLOTS:
        assert (repo / slot.name / "config.pbtxt").read_text() == render_config(slot, "gpu")
    assert (repo / "dlib_resnet_v1" / "config.pbtxt").read_text() == render_config(read_record("dlib-resnet-v1"), "gpu")


def test_server_side_masks_give_the_same_maps(server):
    from explainer_service.masks import MaskConfig
    from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig

    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 255, (150, 150, 3)).astype(np.uint8) for _ in range(2))
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=70, seed=9, patches=4), perturbations_per_eval=30)
    ref = CorrRISE(load_face_model(), cfg).attribute(a, b)
    with TritonFaceModel(server.url, SPEC, batch_size=8, server_masks=True) as m:
        assert m.server_masks
        ex = CorrRISE(m, cfg).attribute(a, b)
    np.testing.assert_allclose(ex.scores_a, ref.scores_a, atol=1e-6)
    np.testing.assert_allclose(ex.s_a, ref.s_a, atol=1e-5)
    np.testing.assert_allclose(ex.s_b, ref.s_b, atol=1e-5)
    with TritonFaceModel(server.url, SPEC, server_masks=False) as m:
        assert not m.server_masks


def test_a_bad_server_side_request_is_an_error_not_a_crash(server):
    from explainer_service.masks import MaskConfig

    chip = np.zeros((3, 150, 150), np.float32)
    ref = np.ones(128, np.float32)
    with TritonFaceModel(server.url, SPEC, server_masks=True, retries=0) as m:
        with pytest.raises(BackendError, match="bad corrrise request"):
            m._score_one(
                chip, ref, {"model": "dlib_resnet_v1", "start": 0, "stop": 5, "masks": {"n_masks": -3}}
            )
        # the model still works afterwards
        sa, sb = m.score_masks(chip, ref, chip, ref, MaskConfig(n_masks=10), 0, 10)
        assert sa.shape == (10,) and np.isfinite(sa).all()


def test_triton_serves_what_the_torch_twin_computes(server):
    torch = pytest.importorskip("torch", reason="the torch extra is part of `make test` setup")
    from explainer_service.models.convert import dlib_source_path
    from explainer_service.models.dlib_format import read_dlib_resnet
    from explainer_service.models.torch_dlib import build_torch

    x = np.random.default_rng(3).uniform(0, 255, (5, 3, 150, 150)).astype(np.float32)
    with torch.no_grad():
        ref = build_torch(read_dlib_resnet(dlib_source_path()))(torch.from_numpy(x)).numpy().astype(np.float64)
    with TritonFaceModel(server.url, SPEC) as m:
        out = m.embed(x).astype(np.float64)
    cos = np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999
