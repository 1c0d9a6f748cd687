"""``facexplain api``: the gRPC API server alone, in the foreground (one part of the service).

A thin shim: parse, check the job store answers, start the server (``api.server.serve``) and say
where it listens, in one line on stdout (``facexplain api: serving on HOST:PORT ...``), then run
until SIGTERM or Ctrl-C. The workers run elsewhere (``facexplain worker``) with the same
``--redis``; models for Verify and the partial maps are opened on first use on ``--engine``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, InputError
from ..settings import get_settings
from .common import add_triton_arg, engine_of, triton_url

__all__ = ["register_api"]


def register_api(sub: Any) -> None:
    settings = get_settings()
    p = sub.add_parser(
        "api",
        help="run the gRPC API server (the workers run apart: facexplain worker)",
        description="Serve the facexplain.v1 gRPC API (plus grpc.health.v1 and reflection) on a job store "
        "in Redis until SIGTERM or Ctrl-C. Prints 'facexplain api: serving on HOST:PORT' once it listens.",
    )
    p.add_argument("--redis", default=None, metavar="URL",
                   help=f"the job store and broker (default: FACEXPLAIN_REDIS_URL, else {settings.redis_url})")
    p.add_argument("--host", default=None,
                   help=f"address to listen on (default: FACEXPLAIN_BIND_HOST, else {settings.bind_host})")
    p.add_argument("--port", type=int, default=None,
                   help=f"port to listen on, 0 for a free one (default: FACEXPLAIN_API_PORT, else {settings.api_port})")
    p.add_argument("--engine", default="auto", choices=["auto", "triton", "local"],
                   help="where Verify and partial maps run the model: auto (--triton/FACEXPLAIN_TRITON_URL, else an "
                   "embedded Triton), triton, local (in-process onnxruntime)")
    add_triton_arg(p)
    p.add_argument("--token-file", default=None,
                   help="require this bearer token on every call but health (default: FACEXPLAIN_TOKEN_FILE)")
    p.add_argument("--tls-cert", default=None, help="TLS certificate (PEM); with --tls-key")
    p.add_argument("--tls-key", default=None, help="TLS private key (PEM); with --tls-cert")
    p.add_argument("--dataset-root", action="append", default=[], metavar="DIR",
                   help="a folder whose datasets SubmitAudit may read (repeatable; default: FACEXPLAIN_DATASET_ROOTS); "
                   "a spec outside every root is refused")
    p.set_defaults(func=_cmd_api)


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as e:
        raise InputError(f"{what} {path}: cannot be read ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{what} {path}: empty")
    return data


def _cmd_api(args: argparse.Namespace) -> int:
    from ..api.server import ServerConfig, read_token, serve
    from ..api.service import ApiService
    from ..store import RedisJobStore
    from ..store.redis_store import redact_url

    settings = get_settings()
    if args.dataset_root:
        roots = []
        for raw in args.dataset_root:
            root = Path(raw).expanduser()
            if not root.is_dir():
                raise InputError(f"--dataset-root {raw}: not a folder")
            roots.append(root.resolve())
        settings = dataclasses.replace(settings, dataset_roots=tuple(roots))
    if args.port is not None and not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.token_file:
        overrides["token"] = read_token(args.token_file)
    if args.tls_cert:
        overrides["tls_cert"] = _read(args.tls_cert, "--tls-cert")
        overrides["tls_key"] = _read(args.tls_key, "--tls-key")
    config = ServerConfig.from_settings(settings, **overrides)
    url = args.redis or settings.redis_url
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = engine_of(args)
    with RedisJobStore(url, settings=settings) as store:
        store.ping()  # a store that does not answer is exit 75 now, not a server that fails every call
        with ApiService(store, settings=settings, engine=engine, triton_url=triton_url(args), redis_url=url) as service:

            def ready(api: Any) -> None:
                auth = "token required" if config.token else "no token"
                tls = "TLS" if config.tls_cert else "plain text"
                print(f"facexplain api: serving on {api.address} (store {redact_url(url)}, engine {engine}, "
                      f"{auth}, {tls})", flush=True)

            serve(service, config, on_ready=ready)
    return EXIT_OK
