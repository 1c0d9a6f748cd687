"""docker-compose.yml (the GPU deployment) stays valid: every path, port and command it names exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_gpu_reservation(compose):
    services = compose["services"]
    assert set(services) >= {"triton", "facexplain"}
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["facexplain"]["depends_on"]["triton"]["condition"] == "service_healthy"
    # NVIDIA's Triton container with torch for the server-side masks on the GPU (docker/triton/Dockerfile)
    build = services["triton"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    assert build["args"]["TRITON_IMAGE"].startswith("nvcr.io/nvidia/tritonserver:")
    assert f"ARG TRITON_IMAGE={build['args']['TRITON_IMAGE']}" in dockerfile.splitlines()
    assert "FROM ${TRITON_IMAGE}" in dockerfile.splitlines()
    assert not services["triton"]["image"].startswith("nvcr.io/")  # never retags NVIDIA's image


def test_every_host_path_exists(compose):
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("./") and host != "./demo-out":  # demo-out is created by the run
                assert (ROOT / host).exists(), f"{name}: {host} missing"
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_triton_serves_the_mounted_repository(compose):
    triton = compose["services"]["triton"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in triton["volumes"]}
    repo_arg = next(a for a in triton["command"] if a.startswith("--model-repository="))
    target = repo_arg.split("=", 1)[1]
    assert mounts[target] == "./model_repository"
    # the healthcheck asks for a model that the mounted repository configures
    model = re.search(r"/v2/models/([^/]+)/ready", " ".join(triton["healthcheck"]["test"])).group(1)
    config = ROOT / "model_repository" / model / "config.pbtxt"
    assert config.is_file() and 'backend: "onnxruntime"' in config.read_text()
    assert "KIND_GPU" in config.read_text()
    ports = {int(p.split(":")[1]) for p in triton["ports"]}
    assert ports == {8000, 8001, 8002}


def test_facexplain_service_points_at_triton_and_runs_a_real_module(compose):
    svc = compose["services"]["facexplain"]
    env = svc["environment"]
    host, port = env["FACEXPLAIN_TRITON_URL"].split(":")
    assert host == "triton" and int(port) in {int(p.split(":")[1]) for p in compose["services"]["triton"]["ports"]}
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert mounts[env["FACEXPLAIN_MODEL_REPOSITORY"]] == "./model_repository"
    cmd = svc["command"]
    assert cmd[:2] == ["python", "-m"] and importlib.util.find_spec(cmd[2]) is not None
    out = cmd[cmd.index("--out") + 1]
    assert out in mounts  # the explanation lands on the host


def test_no_secrets_in_the_file():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)(password|secret|token|api[_-]?key)\s*[:=]", text)


def test_dockerfile_installs_the_package_and_copies_what_it_needs():
    docker = (ROOT / "Dockerfile").read_text()
    for line in docker.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert "pip install ." in docker


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_service_parts_run_real_commands_against_redis_and_triton(compose):
    from explainer_service.cli import build_parser

    services = compose["services"]
    assert {"redis", "api", "worker"} <= set(services)
    triton_ports = {int(p.split(":")[1]) for p in services["triton"]["ports"]}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[0] == "redis-server"
    assert _flag(redis_cmd, "--appendonly") == "yes" and _flag(redis_cmd, "--appendfsync") == "everysec"
    assert _flag(redis_cmd, "--maxmemory-policy") == "noeviction"
    assert "ports" not in services["redis"]  # the store is reached on the compose network only
    data = services["redis"]["volumes"][0].split(":")
    assert data[1] == "/data" and data[0] in compose["volumes"]
    for name in ("api", "worker"):
        svc = services[name]
        cmd = svc["command"]
        assert cmd[0] == "facexplain"
        args = build_parser().parse_args(cmd[1:])  # every option exists and parses
        assert args.command == name
        assert args.redis == "redis://redis:6379/0" and args.engine == "triton"
        host, port = args.triton.split(":")
        assert host == "triton" and int(port) in triton_ports
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["depends_on"]["triton"]["condition"] == "service_healthy"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts[svc["environment"]["FACEXPLAIN_MODEL_REPOSITORY"]] == "./model_repository"
    api = build_parser().parse_args(services["api"]["command"][1:])
    published = [p.split(":") for p in services["api"]["ports"]]
    assert published == [["127.0.0.1", str(api.port), str(api.port)]]  # the host's loopback only
    assert api.host == "0.0.0.0"  # inside its container, so that the published port reaches it


def test_triton_image_gives_the_python_backend_torch_and_corrrise_scores_the_gpu(compose):
    """The Triton image installs torch into the Python the backend runs (and fails its build if torch
    does not import); the committed corrrise_scores config runs KIND_GPU instances that pick the device
    path by themselves (mask_engine auto), as render_corrrise_config writes it."""
    from explainer_service.serving.repository import render_corrrise_config

    build = compose["services"]["triton"]["build"]
    docker = (ROOT / build["context"] / build["dockerfile"]).read_text()
    run = " ".join(line for line in docker.splitlines() if not line.startswith("#"))
    assert "python3 -m pip install" in run and '"torch==${TORCH_VERSION}"' in run
    assert 'python3 -c "import numpy, torch, torch.utils.dlpack' in run
    config = (ROOT / "model_repository" / "corrrise_scores" / "config.pbtxt").read_text()
    assert config == render_corrrise_config("gpu")
    assert "kind: KIND_GPU" in config and '"mask_engine" value: { string_value: "auto" }' in config
