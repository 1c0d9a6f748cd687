"""docker-compose.yml's dashboard service runs a real ``facexplain dashboard`` command against the
api service, finds the app where it mounts it (and where the image copies it), and is published on the
host's loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest

from explainer_service.cli import build_parser
from explainer_service.cli.dashboard import find_app

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra")

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_service_is_a_client_of_the_api_service():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    svc = services["dashboard"]
    args = build_parser().parse_args(svc["command"][1:])  # every option exists and parses
    assert svc["command"][0] == "facexplain" and args.command == "dashboard"
    api = build_parser().parse_args(services["api"]["command"][1:])
    assert args.server == f"api:{api.port}" and args.host == "0.0.0.0"
    assert svc["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]
    assert str(args.port) in " ".join(svc["healthcheck"]["test"]) and "/_stcore/health" in svc["healthcheck"]["test"][-1]
    assert "api" in svc["depends_on"] and "redis" not in svc["depends_on"] and "triton" not in svc["depends_on"]
    (mount,) = svc["volumes"]
    host, target, _ = mount.split(":")
    assert (ROOT / host / "app.py").is_file()
    assert target == "/app/dashboard"  # the image's WORKDIR is /app: found as ./dashboard/app.py
    docker = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in docker
    assert "COPY dashboard ./dashboard" in docker.splitlines()  # the image runs it without the mount too
    assert find_app({}, cwd=ROOT) == ROOT / "dashboard" / "app.py"
