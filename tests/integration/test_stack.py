"""``facexplain up`` / ``status`` / ``down`` as a user runs them (separate processes): the local
stack with two workers on the in-process engine comes up healthy on free ports, explains a pair
through ``facexplain client explain``, says it is already up when asked again, and goes down
leaving no process; a busy API port fails cleanly (exit 2, nothing left running); with a token
file and a TLS certificate the API requires both, `status` checks it over TLS, clients connect
with the token and the CA `up` names, and bad token/TLS options are one line before anything
starts; `--dashboard` starts the dashboard after the API (a client of it, with its token), in
`status` and stopped first by `down`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from explainer_service import cli
from explainer_service.demo import make_demo_pair
from explainer_service.stack import part_alive, read_stack, stop_stack
from tests.integration.procs import left_after, marked_env


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "explainer_service.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _none_left(mark: str, timeout: float = 10) -> list[int]:
    return left_after(mark, timeout)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "stack"
    yield folder
    stop_stack(folder, grace=5)  # whatever a failed test left running


@pytest.mark.slow
def test_up_status_explain_down_leaves_nothing_running(state: Path, tmp_path: Path) -> None:
    env, mark = marked_env()
    up = _cli(["up", "--workers", "2", "--engine", "local", "--grpc-port", "0", "--state", str(state)], env)
    assert up.returncode == 0, up.stdout + up.stderr
    stack = read_stack(state)
    assert stack is not None and f"API at {stack.api_address}" in up.stdout
    assert sorted(p.kind for p in stack.parts) == ["api", "redis", "worker", "worker"]
    assert all(part_alive(p) for p in stack.parts)
    from explainer_service.worker.app import model_threads

    for worker in (p for p in stack.parts if p.kind == "worker"):  # the two share the cores
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_text().split("\0")
        assert cmdline[cmdline.index("--threads") + 1] == str(model_threads(2))
    assert (state / "redis" / "appendonly.aof").exists() or (state / "redis" / "appendonlydir").exists()
    record = json.loads((state / "stack.json").read_text())
    assert {p["pid"] for p in record["parts"]} == {p.pid for p in stack.parts}

    status = _cli(["status", "--state", str(state)], env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 4 and "not healthy" not in status.stdout
    assert "0 queued" in status.stdout and stack.api_address in status.stdout

    again = _cli(["up", "--workers", "2", "--engine", "local", "--grpc-port", "0", "--state", str(state)], env)
    assert again.returncode == 0 and "already up" in again.stdout and stack.api_address in again.stdout
    assert read_stack(state) == stack  # nothing new started

    a, b = make_demo_pair(tmp_path / "demo")
    out = tmp_path / "out"
    assert cli.main(["client", "explain", str(a), str(b), "--server", stack.api_address, "--out", str(out),
                     "--masks", "32", "--seed", "1", "--no-progress"]) == 0
    for name in ("summary.json", "maps.npz", "figure.png"):
        assert (out / name).stat().st_size > 0
    status = _cli(["status", "--state", str(state)], env)
    assert "1 done" in status.stdout

    down = _cli(["down", "--state", str(state)], env)
    assert down.returncode == 0 and "api" in down.stdout and "redis" in down.stdout
    assert not any(part_alive(p) for p in stack.parts)
    assert _none_left(mark) == []
    assert not (state / "stack.json").exists() and not (state / "redis" / "redis.pid").exists()
    assert (state / "redis").is_dir()  # the data stays (jobs expire by their TTL) unless --purge
    status = _cli(["status", "--state", str(state)], env)
    assert status.returncode == 1 and "down" in status.stdout
    purge = _cli(["down", "--purge", "--state", str(state)], env)
    assert purge.returncode == 0 and not (state / "redis").exists()


@pytest.mark.slow
def test_the_default_engine_runs_the_embedded_triton_and_down_stops_it(state: Path, tmp_path: Path) -> None:
    env, mark = marked_env()
    up = _cli(["up", "--grpc-port", "0", "--state", str(state)], env, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    stack = read_stack(state)
    assert stack is not None and stack.engine == "auto" and stack.triton_url
    triton = next(p for p in stack.parts if p.kind == "triton")
    assert stack.triton_url == triton.address and triton.http_port and triton.http_port != triton.port
    worker = next(p for p in stack.parts if p.kind == "worker")
    assert stack.triton_url in Path(f"/proc/{worker.pid}/cmdline").read_text().replace("\0", " ")
    status = _cli(["status", "--state", str(state)], env)
    assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
    a, b = make_demo_pair(tmp_path / "demo")
    assert cli.main(["client", "explain", str(a), str(b), "--server", stack.api_address, "--out",
                     str(tmp_path / "out"), "--masks", "32", "--no-progress"]) == 0
    assert (tmp_path / "out" / "maps.npz").stat().st_size > 0
    down = _cli(["down", "--state", str(state)], env)
    assert down.returncode == 0 and "triton" in down.stdout
    assert _none_left(mark, timeout=30) == []  # tritonserver and its backend stubs included


def test_a_busy_api_port_fails_cleanly_with_nothing_left_running(state: Path) -> None:
    env, mark = marked_env()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        up = _cli(["up", "--engine", "local", "--grpc-port", str(port), "--state", str(state)], env)
    assert up.returncode == 2, up.stdout + up.stderr
    assert up.stderr.count("\n") == 1 and str(port) in up.stderr and "already in use" in up.stderr
    assert "Traceback" not in up.stderr
    assert _none_left(mark) == [] and read_stack(state) is None


def test_a_part_that_fails_to_start_stops_the_others_and_shows_its_log(state: Path, tmp_path: Path) -> None:
    # the API refuses to start without its token file; Redis and the worker were up by then
    missing = tmp_path / "no-such-token"
    env, mark = marked_env(FACEXPLAIN_TOKEN_FILE=str(missing))
    up = _cli(["up", "--engine", "local", "--grpc-port", "0", "--state", str(state)], env)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "redis" in up.stdout and "ready" in up.stdout  # started, then stopped again
    assert "the API (facexplain api) stopped while starting" in up.stderr and str(missing) in up.stderr
    assert "Traceback" not in up.stderr
    assert _none_left(mark) == [] and read_stack(state) is None


def test_a_host_we_cannot_listen_on_is_bad_input(state: Path) -> None:
    env, mark = marked_env()
    up = _cli(["up", "--engine", "local", "--host", "192.0.2.1", "--state", str(state)], env)  # RFC 5737
    assert up.returncode == 2 and "--host 192.0.2.1" in up.stderr and up.stderr.count("\n") == 1
    assert _none_left(mark) == [] and read_stack(state) is None


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl binary."""
    import shutil

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make the test certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.mark.slow
def test_up_with_a_token_and_tls_passes_them_to_the_api_and_status_checks_with_them(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from explainer_service.stack import _api_serving

    cert, key = _certificate(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-" + "x" * 20 + "\n")
    env, mark = marked_env()
    up = _cli(["up", "--engine", "local", "--grpc-port", "0", "--state", str(state), "--token-file", str(token_file),
               "--tls-cert", str(cert), "--tls-key", str(key), "--dashboard", "--dashboard-port", "0"], env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    stack = read_stack(state)
    assert stack is not None and stack.token_file == str(token_file) and stack.tls_ca == str(cert)
    assert "s3cret" not in (state / "stack.json").read_text()  # the path is recorded, never the token
    # up says how to connect: the address, the token and the CA
    hint = f"--server {stack.api_address} --token-file {token_file} --tls-ca {cert}"
    assert hint in up.stdout and "FACEXPLAIN_TOKEN" in up.stdout
    api = next(p for p in stack.parts if p.kind == "api")
    cmdline = Path(f"/proc/{api.pid}/cmdline").read_text().split("\0")
    for option, value in (("--token-file", token_file), ("--tls-cert", cert), ("--tls-key", key)):
        assert cmdline[cmdline.index(option) + 1] == str(value)

    # the dashboard reaches the API as a client does: the token and the CA
    dashboard = stack.parts[-1]
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{dashboard.pid}/environ").read_text().split("\0") if "=" in item)
    assert dashboard.kind == "dashboard" and environ["FACEXPLAIN_TLS_CA"] == str(cert)
    assert environ["FACEXPLAIN_TOKEN"] == "s3cret-" + "x" * 20

    status = _cli(["status", "--state", str(state)], env)
    assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
    assert "not healthy" not in status.stdout and "(token required, TLS)" in status.stdout
    # the check has to speak TLS: in plain text the API does not answer
    assert _api_serving(stack.api_address, tls_ca=cert.read_bytes())
    assert not _api_serving(stack.api_address, timeout=3)

    connect = ["--server", stack.api_address, "--timeout", "10"]
    assert cli.main(["client", "jobs", *connect, "--token-file", str(token_file), "--tls-ca", str(cert)]) == 0
    capsys.readouterr()
    assert cli.main(["client", "jobs", *connect, "--tls-ca", str(cert)]) == 2  # no token
    assert "token" in capsys.readouterr().err
    assert cli.main(["client", "jobs", *connect, "--token-file", str(token_file)]) == 75  # no TLS: no connection
    assert "failed to connect" in capsys.readouterr().err

    down = _cli(["down", "--state", str(state)], env)
    assert down.returncode == 0 and "api" in down.stdout and "redis" in down.stdout
    assert _none_left(mark) == [] and read_stack(state) is None


def test_bad_token_or_tls_options_are_one_line_before_anything_starts(state: Path, tmp_path: Path) -> None:
    env, mark = marked_env()
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("not a certificate\n")
    cases = [
        (["--token-file", str(tmp_path / "missing")], "token file"),
        (["--tls-cert", str(not_pem)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(not_pem), "--tls-key", str(not_pem)], f"--tls-cert {not_pem}: not a PEM file"),
        (["--tls-ca", str(not_pem)], "--tls-ca needs --tls-cert"),
    ]
    for extra, message in cases:
        up = _cli(["up", "--engine", "local", "--grpc-port", "0", "--state", str(state), *extra], env)
        assert up.returncode == 2 and message in up.stderr and up.stderr.count("\n") == 1, (extra, up.stderr)
        assert "Traceback" not in up.stderr
    assert _none_left(mark) == [] and read_stack(state) is None


@pytest.mark.slow
def test_up_with_the_dashboard_starts_it_after_the_api_and_down_stops_it(state: Path, tmp_path: Path) -> None:
    import urllib.request

    token_file = tmp_path / "token"
    token_file.write_text("dash-" + "y" * 24 + "\n")
    env, mark = marked_env()
    up = _cli(["up", "--engine", "local", "--grpc-port", "0", "--dashboard", "--dashboard-port", "0",
               "--token-file", str(token_file), "--state", str(state)], env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    stack = read_stack(state)
    assert stack is not None
    assert [p.kind for p in stack.parts] == ["redis", "worker", "api", "dashboard"]
    dashboard = stack.parts[-1]
    assert dashboard.address == f"http://127.0.0.1:{dashboard.port}" and f"dashboard at {dashboard.address}" in up.stdout
    with urllib.request.urlopen(f"{dashboard.address}/_stcore/health", timeout=10) as reply:  # noqa: S310
        assert reply.read().strip() == b"ok"
    # the dashboard is a client of this API, with its token
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{dashboard.pid}/environ").read_text().split("\0") if "=" in item)
    assert environ["FACEXPLAIN_SERVER"] == stack.api_address and environ["FACEXPLAIN_TOKEN"] == "dash-" + "y" * 24

    status = _cli(["status", "--state", str(state)], env)
    assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
    assert re.search(rf"dashboard\s+{dashboard.pid}\s+{dashboard.port}\s+healthy", status.stdout), status.stdout
    assert f", dashboard {dashboard.address}" in status.stdout

    down = _cli(["down", "--state", str(state)], env)
    assert down.returncode == 0 and down.stdout.startswith("stopped dashboard, api"), down.stdout
    assert _none_left(mark) == [] and read_stack(state) is None


def test_dashboard_options_that_cannot_work_are_one_line_before_anything_starts(state: Path, tmp_path: Path) -> None:
    env, mark = marked_env()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        up = _cli(["up", "--engine", "local", "--grpc-port", "0", "--dashboard", "--dashboard-port", str(port),
                   "--state", str(state)], env)
    assert up.returncode == 2 and f"--dashboard-port {port}" in up.stderr and up.stderr.count("\n") == 1, up.stderr
    assert _none_left(mark) == [] and read_stack(state) is None
