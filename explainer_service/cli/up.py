"""``facexplain up``, ``status`` and ``down``: the local stack (Redis, Triton, workers, the gRPC
API, optionally the dashboard) started in the background, shown, and stopped. A thin shim over :mod:`explainer_service.stack`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILURE, EXIT_OK
from ..settings import get_settings
from ..stack import DEFAULT_DASHBOARD_PORT
from .common import add_triton_arg

if TYPE_CHECKING:
    from ..stack import Stack

__all__ = ["register_up"]


def _add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", default=None, metavar="DIR",
                   help=f"the stack's folder: pids, ports, logs, Redis data (default: {get_settings().stack_dir})")


def register_up(sub: Any) -> None:
    settings = get_settings()
    up = sub.add_parser(
        "up",
        help="start the local service in the background (Redis, Triton, workers, the gRPC API)",
        description="Start an embedded Redis (unless --redis), the embedded Triton (unless --triton or --engine "
        "local), K workers and the gRPC API in the background, wait until each is healthy, print the API address. "
        "`facexplain down` stops them.",
    )
    up.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes (default 1)")
    up.add_argument("--grpc-port", dest="api_port", type=int, default=settings.api_port, metavar="P",
                    help=f"the API's port, 0 for a free one (default: FACEXPLAIN_API_PORT, else {settings.api_port})")
    up.add_argument("--redis", default=None, metavar="URL",
                    help="use this running Redis instead of starting one under the state folder")
    add_triton_arg(up)
    up.add_argument("--engine", default="auto", choices=["auto", "triton", "local"],
                    help="where the models run: auto/triton (--triton, else the embedded Triton), local "
                    "(in-process onnxruntime in every worker and the API; no Triton)")
    up.add_argument("--host", default=None,
                    help=f"address the API listens on (default: FACEXPLAIN_BIND_HOST, else {settings.bind_host})")
    up.add_argument("--token-file", default=None, metavar="FILE",
                    help="the API requires the bearer token in FILE on every call but health "
                    "(default: FACEXPLAIN_TOKEN_FILE, else no token)")
    up.add_argument("--tls-cert", default=None, metavar="PEM", help="the API serves TLS with this certificate; with --tls-key")
    up.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key; with --tls-cert")
    up.add_argument("--tls-ca", default=None, metavar="PEM",
                    help="the CA clients trust to reach the API, used by `status` (default: the certificate itself, "
                    "right for a self-signed one)")
    up.add_argument("--dashboard", action="store_true",
                    help="also start the dashboard (facexplain dashboard) against the API, on --host")
    up.add_argument("--dashboard-port", type=int, default=DEFAULT_DASHBOARD_PORT, metavar="P",
                    help=f"the dashboard's port, 0 for a free one (default {DEFAULT_DASHBOARD_PORT})")
    _add_state(up)
    up.set_defaults(func=_cmd_up)

    st = sub.add_parser("status", help="each part of the local service (pid, port, healthy) and the jobs")
    _add_state(st)
    st.set_defaults(func=_cmd_status)

    dn = sub.add_parser("down", help="stop the local service started by `facexplain up`")
    _add_state(dn)
    dn.add_argument("--purge", action="store_true",
                    help="also remove the Redis data and the logs (default: kept; jobs expire by their TTL)")
    dn.set_defaults(func=_cmd_down)


def _state(args: argparse.Namespace) -> Path:
    return Path(args.state).expanduser() if args.state else get_settings().stack_dir


def _cmd_up(args: argparse.Namespace) -> int:
    from ..stack import StackAlreadyUpError, StackConfig, start_stack

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value).expanduser()

    config = StackConfig(state=_state(args), workers=args.workers, api_port=args.api_port, redis_url=args.redis,
                         triton_url=args.triton, engine=args.engine, host=args.host, token_file=path(args.token_file),
                         tls_cert=path(args.tls_cert), tls_key=path(args.tls_key), tls_ca=path(args.tls_ca),
                         dashboard=args.dashboard, dashboard_port=args.dashboard_port)
    try:
        stack = start_stack(config, say=lambda text: print(text, flush=True))
    except StackAlreadyUpError as e:
        print(str(e))
        return EXIT_OK
    print(f"facexplain is up: API at {stack.api_address} (state {config.state}; `facexplain down"
          f"{'' if args.state is None else f' --state {config.state}'}` stops it)", flush=True)
    dashboard = next((p for p in stack.parts if p.kind == "dashboard"), None)
    if dashboard is not None:
        print(f"dashboard at {dashboard.address} (open it in a browser)", flush=True)
    print(connect_hint(stack), flush=True)
    return EXIT_OK


def connect_hint(stack: Stack) -> str:
    """How a client reaches the stack's API: what it needs (a token, the CA) and an example."""
    options = (f" --token-file {stack.token_file}" if stack.token_file else "") + (
        f" --tls-ca {stack.tls_ca}" if stack.tls_ca else "")
    example = f"  facexplain client jobs --server {stack.api_address}{options}"
    needs = []
    if stack.token_file:
        needs.append(f"the bearer token in {stack.token_file} (--token-file, or FACEXPLAIN_TOKEN=<token>)")
    if stack.tls_ca:
        needs.append(f"TLS trusting {stack.tls_ca} (--tls-ca)")
    if not needs:
        return f"clients need no token (plain text, no TLS), e.g.\n{example}"
    return f"clients need {' and '.join(needs)}, e.g.\n{example}"


def _cmd_status(args: argparse.Namespace) -> int:
    from ..stack import part_alive, part_healthy, read_stack, worker_replies

    state = _state(args)
    stack = read_stack(state)
    if stack is None:
        print(f"facexplain is down (no stack in {state})")
        return EXIT_FAILURE
    healthy_all = True
    answered = worker_replies(stack.redis_url, [p.pid for p in stack.parts if p.kind == "worker" and part_alive(p)])
    print(f"{'part':<10} {'pid':>8}  {'port':>6}  state")
    for part in stack.parts:
        alive = part_alive(part)
        healthy = alive and (part.pid in answered if part.kind == "worker" else part_healthy(part, stack))
        healthy_all &= healthy
        word = "healthy" if healthy else ("running, not healthy" if alive else "not running")
        print(f"{part.name:<10} {part.pid:>8}  {part.port or '-':>6}  {word}")
    security = ", ".join(w for w, on in (("token required", stack.token_file), ("TLS", stack.tls_ca)) if on)
    print(f"API {stack.api_address}" + (f" ({security})" if security else "")
          + f", store {_redacted(stack.redis_url)}, engine {stack.engine}"
          + (f", Triton {stack.triton_url}" if stack.triton_url else "")
          + "".join(f", dashboard {p.address}" for p in stack.parts if p.kind == "dashboard"))
    print("jobs: " + _job_counts(stack.redis_url))
    return EXIT_OK if healthy_all else EXIT_FAILURE


def _redacted(url: str) -> str:
    from ..store.redis_store import redact_url

    return str(redact_url(url))


def _job_counts(url: str) -> str:
    from ..errors import FacexplainError
    from ..store import RedisJobStore

    try:
        with RedisJobStore(url) as store:
            counts = store.count_by_state()
    except FacexplainError as e:
        return f"unknown (the store does not answer: {str(e).splitlines()[0]})"
    return ", ".join(f"{n} {state.value}" for state, n in counts.items())


def _cmd_down(args: argparse.Namespace) -> int:
    from ..stack import read_stack, stop_stack

    state = _state(args)
    if read_stack(state) is None and not args.purge:
        print(f"facexplain is not up (no stack in {state})")
        return EXIT_OK
    stopped = stop_stack(state, purge=args.purge)
    print(f"stopped {', '.join(stopped) if stopped else 'nothing (no part was running)'}"
          + ("; Redis data and logs removed" if args.purge else ""))
    return EXIT_OK
