"""``facexplain dashboard``: the Streamlit dashboard against a running API, in the foreground.

A thin shim: check the options, find the app (``dashboard/app.py``), then replace this process
by ``python -m streamlit run dashboard/app.py`` with headless flags, so that signals (Ctrl-C,
SIGTERM from ``facexplain down``) reach the server itself and the pid a supervisor records is
the dashboard's. The dashboard reaches the API at ``FACEXPLAIN_SERVER`` with the bearer token in
``FACEXPLAIN_TOKEN`` (both set here from ``--server`` / ``--token-file``), over TLS trusting the CA
certificate whose path is ``FACEXPLAIN_TLS_CA`` (from ``--tls-ca``; unset: plain text); Streamlit answers
``GET http://HOST:PORT/_stcore/health`` with ``ok`` once it is up.

Where the app is found (it lives beside the package, not in it): ``FACEXPLAIN_DASHBOARD_APP``
when set, else ``dashboard/app.py`` of the checkout the package runs from (an editable install),
else ``dashboard/app.py`` under the current folder (the Docker image's ``/app``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["register_dashboard", "find_app", "check_server", "check_tls_ca", "dashboard_command",
           "DEFAULT_DASHBOARD_PORT"]

#: Streamlit's customary port.
DEFAULT_DASHBOARD_PORT = 8501
_CHECKOUT = Path(__file__).resolve().parents[2]


def register_dashboard(sub: Any) -> None:
    from ..settings import get_settings

    api_port = get_settings().api_port
    p = sub.add_parser(
        "dashboard",
        help="run the Streamlit dashboard against a running API (facexplain api / up)",
        description="Serve the dashboard (explanations, audits, evaluation tables, models) in the foreground "
        "until Ctrl-C or SIGTERM. It is a client of the API at --server; open http://HOST:PORT in a browser. "
        "Streamlit's GET /_stcore/health answers 'ok' once it is up.",
    )
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help=f"the API server (default: FACEXPLAIN_SERVER, else 127.0.0.1:{api_port})")
    p.add_argument("--port", type=int, default=DEFAULT_DASHBOARD_PORT,
                   help=f"port the dashboard listens on (default {DEFAULT_DASHBOARD_PORT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the dashboard listens on (default 127.0.0.1; 0.0.0.0 inside a container)")
    p.add_argument("--token-file", default=None,
                   help="the API's bearer token, in a file (default: FACEXPLAIN_TOKEN)")
    p.add_argument("--tls-ca", default=None, metavar="PEM",
                   help="CA certificate (PEM) to trust: reach an API that serves TLS (facexplain api --tls-cert)")
    p.set_defaults(func=_cmd_dashboard)


def find_app(environ: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The dashboard's entry script (see the module docstring); InputError naming the places
    looked at when there is none."""
    from ..settings import Settings, get_settings

    given = (get_settings() if environ is None else Settings.from_env(environ)).dashboard_app
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(f"FACEXPLAIN_DASHBOARD_APP {given}: no such file")
        return path.resolve()
    candidates = list(dict.fromkeys([_CHECKOUT / "dashboard" / "app.py", (cwd or Path.cwd()) / "dashboard" / "app.py"]))
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise InputError(f"the dashboard app is not found (looked at {looked}); set FACEXPLAIN_DASHBOARD_APP")


def check_server(text: str) -> str:
    """``text`` if it is ``HOST:PORT`` (port 1..65535); InputError naming it otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or any(c.isspace() for c in text.strip()) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"--server {text!r}: expected HOST:PORT of the API server, e.g. 127.0.0.1:50051")
    return text.strip()


def check_tls_ca(text: str) -> Path:
    """The absolute path of ``--tls-ca``'s file when it can be read and holds a PEM certificate;
    InputError naming it otherwise (so that the dashboard never starts with a CA it cannot use)."""
    path = Path(text).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"--tls-ca {text}: cannot be read ({e.strerror or e})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InputError(f"--tls-ca {text}: not a PEM certificate (no BEGIN CERTIFICATE line)")
    return path.resolve()


def dashboard_command(
    app: Path, *, server: str, host: str, port: int, token: str | None, tls_ca: Path | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run the dashboard ``app`` headless on ``host:port`` against
    the API at ``server`` (over TLS trusting the PEM file ``tls_ca`` when given; the app's
    folder's parent goes first on PYTHONPATH so that ``import dashboard`` finds it)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in [1, 65535], got {port}")
    if not host or any(c.isspace() for c in host):
        raise InputError(f"--host {host!r}: expected an address to listen on, e.g. 127.0.0.1")
    env = dict(os.environ if environ is None else environ)
    env["FACEXPLAIN_SERVER"] = check_server(server)
    if token:
        env["FACEXPLAIN_TOKEN"] = token
    if tls_ca is not None:
        env["FACEXPLAIN_TLS_CA"] = str(tls_ca)
    else:
        env.pop("FACEXPLAIN_TLS_CA", None)
    root = str(app.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)])
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    argv = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
    ]
    return argv, env


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ..settings import get_settings

    settings = get_settings()
    if importlib.util.find_spec("streamlit") is None:
        raise InputError("the dashboard needs streamlit (pip install 'streamlit==1.67.0')")
    if args.token_file:
        from ..api.server import read_token

        token: str | None = read_token(args.token_file)
    else:
        token = settings.token
    server = check_server(args.server or settings.client_server)
    ca_file = args.tls_ca or (str(settings.tls_ca) if settings.tls_ca else None)
    tls_ca = check_tls_ca(ca_file) if ca_file else None
    argv, env = dashboard_command(find_app(), server=server, host=args.host, port=args.port, token=token,
                                  tls_ca=tls_ca)
    over = f", TLS trusting {tls_ca}" if tls_ca is not None else ""
    print(f"facexplain dashboard: serving on http://{args.host}:{args.port} (API {env['FACEXPLAIN_SERVER']}{over})",
          flush=True)
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # never returns
    return 0  # pragma: no cover
