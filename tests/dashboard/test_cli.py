"""``facexplain dashboard``: the command it runs (headless flags, the API and token in the
environment, the app found), bad options as one line with exit 2, and a real start that answers
Streamlit's health check and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from explainer_service import cli
from explainer_service.cli.dashboard import check_server, check_tls_ca, dashboard_command, find_app
from explainer_service.errors import InputError
from tests.integration.procs import marked_env, marked_processes

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"


def test_the_command_is_streamlit_headless_on_the_given_address_with_the_api_in_its_environment():
    argv, env = dashboard_command(APP, server="10.0.0.5:6000", host="0.0.0.0", port=8600, token="s3cret",
                                  environ={"PATH": "/bin", "PYTHONPATH": "/x"})
    assert argv == [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless=true",
                    "--server.address=0.0.0.0", "--server.port=8600", "--browser.gatherUsageStats=false"]
    assert env["FACEXPLAIN_SERVER"] == "10.0.0.5:6000" and env["FACEXPLAIN_TOKEN"] == "s3cret"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/x"] and env["PATH"] == "/bin"
    _, env = dashboard_command(APP, server="h:1", host="127.0.0.1", port=1, token=None, environ={})
    assert "FACEXPLAIN_TOKEN" not in env and "FACEXPLAIN_TLS_CA" not in env


def test_tls_ca_is_checked_and_passed_by_path(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert check_tls_ca(str(ca)) == ca.resolve()
    _, env = dashboard_command(APP, server="h:1", host="127.0.0.1", port=1, token=None, tls_ca=ca,
                               environ={"FACEXPLAIN_TLS_CA": "/stale.pem"})
    assert env["FACEXPLAIN_TLS_CA"] == str(ca)
    _, env = dashboard_command(APP, server="h:1", host="127.0.0.1", port=1, token=None,
                               environ={"FACEXPLAIN_TLS_CA": "/stale.pem"})
    assert "FACEXPLAIN_TLS_CA" not in env  # plain text unless --tls-ca says otherwise
    with pytest.raises(InputError, match=r"--tls-ca .*missing.pem: cannot be read"):
        check_tls_ca(str(tmp_path / "missing.pem"))
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(InputError, match="not a PEM certificate"):
        check_tls_ca(str(key))


@pytest.mark.parametrize("text", ["", "host", "host:", ":50051", "host:0", "host:70000", "host:port", "a b:1"])
def test_a_bad_server_address_is_named(text):
    with pytest.raises(InputError, match="expected HOST:PORT"):
        check_server(text)
    assert check_server(" [::1]:50051 ") == "[::1]:50051"


def test_bad_options_are_one_line_and_exit_2(capsys):
    assert cli.main(["dashboard", "--server", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facexplain: error: --server 'nowhere': expected HOST:PORT") and err.count("\n") == 1
    assert cli.main(["dashboard", "--port", "0"]) == 2
    assert "--port must be in [1, 65535]" in capsys.readouterr().err
    assert cli.main(["dashboard", "--token-file", "/no/such/token"]) == 2
    assert "token file /no/such/token: cannot be read" in capsys.readouterr().err
    assert cli.main(["dashboard", "--tls-ca", "/no/such/ca.pem"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facexplain: error: --tls-ca /no/such/ca.pem: cannot be read") and err.count("\n") == 1


def test_the_app_is_found_in_the_checkout_or_where_the_environment_says(tmp_path: Path):
    assert find_app({}) == APP
    other = tmp_path / "app.py"
    other.write_text("")
    assert find_app({"FACEXPLAIN_DASHBOARD_APP": str(other)}) == other
    with pytest.raises(InputError, match="FACEXPLAIN_DASHBOARD_APP .*: no such file"):
        find_app({"FACEXPLAIN_DASHBOARD_APP": str(tmp_path / "missing.py")})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_start_answers_the_health_check_and_stops_on_sigterm(tmp_path: Path):
    port = _free_port()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    env, mark = marked_env(HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "explainer_service.cli", "dashboard", "--server", "127.0.0.1:1", "--port", str(port),
         "--token-file", str(token)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
                    health = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert health == "ok"
        assert marked_processes(mark) == [proc.pid]  # exec'd: the pid is the server's, no wrapper
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"FACEXPLAIN_SERVER=127.0.0.1:1" in environ and b"FACEXPLAIN_TOKEN=t0ken" in environ
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    assert out.startswith(f"facexplain dashboard: serving on http://127.0.0.1:{port} (API 127.0.0.1:1)")
    assert not marked_processes(mark)
