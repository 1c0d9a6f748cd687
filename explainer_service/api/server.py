"""The gRPC server of the API: ``grpc.aio`` with the Facexplain servicer, health, reflection, auth.

- Services: ``facexplain.v1.Facexplain`` (:class:`~.servicer.FacexplainServicer`), the standard
  ``grpc.health.v1.Health`` (service ``""`` and ``facexplain.v1.Facexplain``: SERVING while the
  store answers, checked every ``health_interval_s``; NOT_SERVING when it does not) and server
  reflection.
- Limits: messages up to ``Settings.limits.max_message_bytes`` both ways (FACEXPLAIN_MAX_MESSAGE_BYTES;
  larger ones are RESOURCE_EXHAUSTED by grpc itself), at most ``max_concurrent_rpcs`` calls at once
  (more: RESOURCE_EXHAUSTED at once, never a silent wait) and ``max_concurrent_streams`` per
  connection.
- Auth: with a token (``--token-file``), every call but health and reflection needs the metadata
  ``authorization: Bearer <token>`` (compared in constant time); otherwise UNAUTHENTICATED.
  Optional TLS from a certificate and key (PEM).

:func:`serve` runs a server until SIGTERM/SIGINT (``facexplain api``); :class:`BackgroundServer`
runs one in a thread of the calling process (tests, ``facexplain up``'s in-process use).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import FacexplainError, InputError
from ..settings import Settings, get_settings
from .decoding import DecodeInterceptor
from .pb import SERVICE_NAME, service_pb2_grpc
from .service import ApiService
from .servicer import DEFAULT_WATCH_FALLBACK_S, DEFAULT_WATCH_POLL_S, FacexplainServicer

__all__ = [
    "ServerConfig",
    "ApiServer",
    "TokenInterceptor",
    "BackgroundServer",
    "read_token",
    "start_server",
    "serve",
    "OPEN_METHOD_PREFIXES",
]

log = logging.getLogger(__name__)

#: Calls that need no token: health checks and reflection.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_HEALTH_SERVICES = ("", SERVICE_NAME)


def read_token(path: str | Path) -> str:
    """The bearer token in file ``path`` (surrounding whitespace dropped); InputError naming the
    file when it cannot be read, is empty, or holds characters a metadata value cannot carry."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"token file {p}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not text:
        raise InputError(f"token file {p}: empty")
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise InputError(f"token file {p}: the token must be printable ASCII without spaces")
    return text


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens. ``port`` 0 picks a free one (see :attr:`ApiServer.port`)."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    max_message_bytes: int = 136 * 1024 * 1024
    max_concurrent_rpcs: int = 256
    max_concurrent_streams: int = 100
    health_interval_s: float = 2.0
    watch_poll_s: float = DEFAULT_WATCH_POLL_S
    watch_fallback_s: float = DEFAULT_WATCH_FALLBACK_S
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"API port must be in [0, 65535], got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.max_message_bytes < 1024:
            raise InputError(f"max message size {self.max_message_bytes} bytes is too small")

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> ServerConfig:
        """A config with the settings' bind host, API port, message limit and token file, then
        ``overrides``."""
        s = settings or get_settings()
        values: dict[str, Any] = {
            "host": s.bind_host,
            "port": s.api_port,
            "max_message_bytes": s.limits.max_message_bytes,
            "token": None if s.token_file is None else read_token(s.token_file),
        }
        values.update(overrides)
        return cls(**values)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED for a call without ``authorization: Bearer <token>`` (health and reflection
    excepted). The refusal has the shape of the method it refuses (unary or streaming)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        method = str(handler_call_details.method or "")
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        given = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                break
        if given and hmac.compare_digest(given, self._expected):
            return handler
        message = "a token is required (authorization: Bearer <token>)" if not given else "the token is not valid"
        return _refusal(handler, message)


def _refusal(handler: Any, message: str) -> Any:
    async def unary(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None  # pragma: no cover - abort raises; this makes it a generator

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
    return grpc.unary_unary_rpc_method_handler(unary, des, ser)


@dataclass
class ApiServer:
    """A started server: the grpc.aio server, the port it listens on, its health servicer."""

    server: Any
    port: int
    host: str
    health: Any
    service: ApiService
    servicer: FacexplainServicer | None = None
    _health_task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let running ones finish for ``grace_s``, then end them."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for name in _HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        if self.servicer is not None:  # the job-events listener and its Redis connection
            await self.servicer.aclose()


async def _health_now(service: ApiService) -> Any:
    """SERVING when the store answers now, else NOT_SERVING."""
    try:
        await asyncio.to_thread(service.ping)
        return health_pb2.HealthCheckResponse.SERVING
    except FacexplainError:
        return health_pb2.HealthCheckResponse.NOT_SERVING


async def _watch_health(service: ApiService, servicer: Any, interval_s: float, last: Any) -> None:
    """Keep the health status true to the store, checked every ``interval_s`` (``last``: the
    status set before the server started)."""
    while True:
        await asyncio.sleep(interval_s)
        status = await _health_now(service)
        if status != last:
            for name in _HEALTH_SERVICES:
                await servicer.set(name, status)
            log.warning("health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
            last = status


async def start_server(service: ApiService, config: ServerConfig) -> ApiServer:
    """Build, bind and start the server (in the running event loop). InputError when the address
    cannot be bound (the port is taken)."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.so_reuseport", 0),
    ]
    # the token first: a call without it is UNAUTHENTICATED whatever its bytes; then requests decoded
    # in the call, so bytes that are not a message are INVALID_ARGUMENT (grpc.aio says UNKNOWN)
    interceptors: list[Any] = [TokenInterceptor(config.token)] if config.token else []
    interceptors.append(DecodeInterceptor([SERVICE_NAME]))
    server = grpc.aio.server(
        interceptors=interceptors, options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs
    )
    servicer = FacexplainServicer(service, watch_poll_s=config.watch_poll_s, watch_fallback_s=config.watch_fallback_s)
    service_pb2_grpc.add_FacexplainServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    for name in _HEALTH_SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    target = f"{host}:{config.port}"
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            port = server.add_secure_port(target, grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)]))
        else:
            port = server.add_insecure_port(target)
    except RuntimeError as e:
        raise InputError(f"the API cannot listen on {target}: {e} (is the port taken?)") from None
    if not port:
        raise InputError(f"the API cannot listen on {target} (is the port taken?)")
    await server.start()
    api = ApiServer(server=server, port=int(port), host=config.host, health=health_servicer, service=service,
                    servicer=servicer)
    # the first check before the server is announced: once started, health says how it is
    first = await _health_now(service)
    if first != health_pb2.HealthCheckResponse.SERVING:
        log.warning("health: NOT_SERVING (the job store does not answer)")
    for name in _HEALTH_SERVICES:
        await health_servicer.set(name, first)
    api._health_task = asyncio.create_task(_watch_health(service, health_servicer, config.health_interval_s, first))
    return api


def serve(service: ApiService, config: ServerConfig, *, on_ready: Callable[[ApiServer], None] | None = None) -> None:
    """Run the server until SIGTERM or SIGINT, then stop it gracefully (``config.grace_s``)."""

    async def main() -> None:
        api = await start_server(service, config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(api)
        try:
            await stop.wait()
        finally:
            await api.stop(config.grace_s)

    asyncio.run(main())


class BackgroundServer:
    """A server on its own event loop in a daemon thread of this process; a context manager whose
    value is the address ``HOST:PORT``. :meth:`start` returns once the server listens."""

    def __init__(self, service: ApiService, config: ServerConfig | None = None) -> None:
        self.service = service
        self.config = config or ServerConfig()
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api: ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 30.0) -> str:
        self._thread = threading.Thread(target=self._main, name="facexplain-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise InputError(f"the API server did not start within {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self.address

    def _main(self) -> None:
        async def main() -> None:
            try:
                self._api = await start_server(self.service, self.config)
            except BaseException as e:
                self._error = e
                self._ready.set()
                return
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self.address = self._api.address
            self._ready.set()
            await self._stop.wait()
            await self._api.stop(self.config.grace_s)

        asyncio.run(main())

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
