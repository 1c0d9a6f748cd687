"""The local stack of ``facexplain up``: Redis, Triton, workers, the gRPC API and (asked for) the
dashboard in the background.

Every part runs detached in its own process group (so ``up`` can return and ``down`` can stop a
part with all its children) and is written down in one folder, the *state* folder::

    STATE/stack.json        the parts: name, pid, process start time, port, address, log
    STATE/redis/            the embedded Redis: append-only file, redis.log, redis.pid
    STATE/logs/PART.log     stdout and stderr of each other part

A part is *alive* while its pid runs with the start time recorded (a reused pid is not ours) and
*healthy* when it answers its own check: Redis PING, Triton's HTTP ``/v2/health/ready``, the API's
``grpc.health.v1`` SERVING (over TLS and with the bearer token when the API has them), a worker's reply to a Celery ``ping`` (the broker's remote-control
channel: a reply proves the worker consumes from this Redis, which a log line or a pid cannot),
the dashboard's ``GET /_stcore/health`` answering ``ok``.

:func:`start_stack` starts the parts in dependency order and waits for each; a part that fails
stops the ones already started (BackendError with the part's log tail). With a token file or a TLS
certificate and key the API requires them (``facexplain api --token-file/--tls-cert/--tls-key``);
the record keeps their paths, never the token, so ``status`` can check the API as a client would.
:func:`stop_stack` sends
SIGTERM to each group (newest first; Redis last, so it flushes its AOF after the others are gone),
SIGKILL after a grace, and removes the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BackendError, BackendUnavailableError, InputError
from .serving.embedded import free_port, port_free
from .settings import Settings, get_settings

__all__ = [
    "Part",
    "StackConfig",
    "Stack",
    "StackAlreadyUpError",
    "read_stack",
    "start_stack",
    "stop_stack",
    "part_alive",
    "part_healthy",
    "STACK_FILE",
    "DEFAULT_DASHBOARD_PORT",
]

STACK_FILE = "stack.json"
_GRACE_S = 20.0
#: The dashboard's default port (Streamlit's customary one; ``facexplain dashboard --port``).
DEFAULT_DASHBOARD_PORT = 8501


class StackAlreadyUpError(BackendError):
    """``up`` on a state folder whose stack runs (exit 0 in ``facexplain up``: nothing to do)."""


@dataclass(frozen=True)
class StackConfig:
    """What ``facexplain up`` starts.

    Args:
        state: the state folder (see the module docstring).
        workers: ``facexplain worker`` processes (each with concurrency 1).
        api_port: the API's port (0: a free one).
        redis_url: a running Redis to use (None: start the embedded one under STATE/redis).
        triton_url: a running Triton to use (None: start the embedded one, unless engine is local).
        engine: auto (Triton: given or embedded), triton (the same, named), local (onnxruntime in
            each process; no Triton).
        host: the address the API listens on (default: ``Settings.bind_host``).
        token_file: the API requires the bearer token in this file (None: no token).
        tls_cert, tls_key: the API serves TLS with this certificate and key (PEM; both or none).
        tls_ca: the certificate authority a client trusts to reach the API (PEM; default: the
            certificate itself, right for a self-signed one); ``status`` checks with it.
        dashboard: also start ``facexplain dashboard`` against the API (after it), on ``host``.
        dashboard_port: the dashboard's port (0: a free one).
    """

    state: Path
    workers: int = 1
    api_port: int = 0
    redis_url: str | None = None
    triton_url: str | None = None
    engine: str = "auto"
    host: str | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    dashboard: bool = False
    dashboard_port: int = DEFAULT_DASHBOARD_PORT

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise InputError(f"--workers must be in [1, 64], got {self.workers}")
        if not 0 <= self.api_port <= 65535:
            raise InputError(f"--grpc-port must be in [0, 65535], got {self.api_port}")
        if self.engine not in {"auto", "triton", "local"}:
            raise InputError(f"--engine must be auto, triton or local, got {self.engine!r}")
        if self.engine == "local" and self.triton_url:
            raise InputError("--triton and --engine local exclude each other")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise InputError("--tls-ca needs --tls-cert and --tls-key (the API serves plain text without them)")
        if not 0 <= self.dashboard_port <= 65535:
            raise InputError(f"--dashboard-port must be in [0, 65535], got {self.dashboard_port}")

    def check_files(self) -> None:
        """InputError naming the first of the token, certificate, key or CA file that cannot be
        used (read before anything starts)."""
        from .api.server import read_token

        if self.token_file is not None:
            read_token(self.token_file)
        for option, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key), ("--tls-ca", self.tls_ca)):
            if path is None:
                continue
            try:
                data = path.read_bytes()
            except OSError as e:
                raise InputError(f"{option} {path}: cannot be read ({e.strerror or e})") from None
            if b"-----BEGIN " not in data:
                raise InputError(f"{option} {path}: not a PEM file (no -----BEGIN line)")


@dataclass(frozen=True)
class Part:
    """One running part: ``kind`` is redis, triton, worker, api or dashboard (its address is its
    URL)."""

    name: str
    kind: str
    pid: int
    started: int  # the process's start time (clock ticks after boot, /proc/PID/stat field 22)
    port: int = 0
    address: str = ""
    log: str = ""
    http_port: int = 0  # Triton's HTTP port (its readiness check)


@dataclass
class Stack:
    """The record of a started stack (``STATE/stack.json``)."""

    state: Path
    redis_url: str
    api_address: str
    engine: str
    triton_url: str | None = None
    parts: list[Part] = field(default_factory=list)
    token_file: str | None = None  # the API's token file (the path; the token is not recorded)
    tls_ca: str | None = None  # what a client trusts to reach the API over TLS (None: plain text)

    def save(self) -> None:
        data = {
            "redis_url": self.redis_url, "api_address": self.api_address, "engine": self.engine,
            "triton_url": self.triton_url, "token_file": self.token_file, "tls_ca": self.tls_ca,
            "parts": [asdict(p) for p in self.parts],
        }
        tmp = self.state / (STACK_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state / STACK_FILE)


def read_stack(state: Path) -> Stack | None:
    """The stack recorded in ``state`` (None: no record). BackendError for an unreadable record."""
    path = state / STACK_FILE
    try:
        data = json.loads(path.read_text())
        return Stack(
            state=state, redis_url=str(data["redis_url"]), api_address=str(data["api_address"]),
            engine=str(data["engine"]), triton_url=data.get("triton_url"),
            parts=[Part(**p) for p in data["parts"]],
            token_file=data.get("token_file"), tls_ca=data.get("tls_ca"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackendError(f"{path}: not a stack record ({e}); remove it if nothing runs") from None


# -- processes ---------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The process's start time, None if it does not run (a zombie does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


def part_alive(part: Part) -> bool:
    """Whether the part's process runs (the same process: its start time matches)."""
    return part.pid > 0 and _start_time(part.pid) == part.started


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            return True
    return False


def stop_part(part: Part, *, grace: float = _GRACE_S) -> bool:
    """SIGTERM the part's process group, SIGKILL what is left after ``grace`` s. True when it ran."""
    if not part_alive(part):
        return False
    _signal_group(part.pid, signal.SIGTERM)
    _signal_group(part.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(part.pid)
        if not _group_alive(part.pid):
            return True
        time.sleep(0.05)
    _signal_group(part.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_alive(part.pid) and time.monotonic() < deadline:
        _reap(part.pid)
        time.sleep(0.05)
    return True


def _launch(name: str, kind: str, args: list[str], logs: Path, *, port: int = 0, address: str = "",
            http_port: int = 0) -> Part:
    """``python -m explainer_service.cli ARGS`` detached in its own session, output to its log."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "explainer_service.cli", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    started = _start_time(proc.pid)
    # the Popen object is dropped: the process outlives this one (down stops it through the record)
    proc.returncode = 0  # keeps Popen's destructor from warning about a process still running
    return Part(name=name, kind=kind, pid=proc.pid, started=-1 if started is None else started,
                port=port, address=address, log=str(log), http_port=http_port)


def log_tail(part: Part, lines: int = 12) -> str:
    """The last lines of the part's log (its cause, when it failed)."""
    try:
        text = Path(part.log).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


# -- health ------------------------------------------------------------------------------------


def _redis_ping(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _triton_ready(http_port: int, host: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=timeout) as r:  # noqa: S310
            return int(r.status) == 200
    except OSError:
        return False


def _api_serving(address: str, timeout: float = 1.0, *, tls_ca: bytes | None = None, token: str | None = None) -> bool:
    """grpc.health.v1 SERVING, asked as a client asks: over TLS trusting ``tls_ca`` when given,
    with the bearer token when given."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca))
                   if tls_ca is not None else grpc.insecure_channel(address))
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout, metadata=metadata)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _api_check(stack: Stack) -> Callable[[], bool]:
    """The API's health check with the stack's TLS CA and token (read now: a file that is gone
    or unreadable is left out, and the check then fails as a client would)."""
    from .api.server import read_token

    tls_ca: bytes | None = None
    token: str | None = None
    if stack.tls_ca:
        try:
            tls_ca = Path(stack.tls_ca).read_bytes()
        except OSError:
            return lambda: False
    if stack.token_file:
        with contextlib.suppress(InputError):
            token = read_token(stack.token_file)
    address = stack.api_address
    return lambda: _api_serving(address, tls_ca=tls_ca, token=token)


def _dashboard_ok(url: str, timeout: float = 1.0) -> bool:
    """Streamlit's ``GET URL/_stcore/health`` answers ``ok``."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as r:  # noqa: S310
            return int(r.status) == 200 and r.read(16).strip() == b"ok"
    except OSError:
        return False


def worker_replies(redis_url: str, pids: Sequence[int], timeout: float = 1.0) -> set[int]:
    """The pids among ``pids`` whose worker answered a Celery ping on this broker (a worker is
    named ``facexplain-PID@HOST``)."""
    from celery import Celery

    if not pids:
        return set()
    app = Celery("facexplain-stack", broker=redis_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_max_retries = 0
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # noqa: BLE001 - a broker that does not answer: nobody replied
        return set()
    finally:
        app.close()
    wanted = {f"facexplain-{pid}@": pid for pid in pids}
    found = set()
    for reply in replies:
        for node in reply:
            for prefix, pid in wanted.items():
                if str(node).startswith(prefix):
                    found.add(pid)
    return found


def part_healthy(part: Part, stack: Stack) -> bool:
    """Whether the part runs and answers its check (see the module docstring)."""
    if not part_alive(part):
        return False
    if part.kind == "redis":
        return _redis_ping(stack.redis_url)
    if part.kind == "triton":
        return _triton_ready(part.http_port, _host_of(part.address))
    if part.kind == "api":
        return _api_check(stack)()
    if part.kind == "worker":
        return part.pid in worker_replies(stack.redis_url, [part.pid])
    if part.kind == "dashboard":
        return _dashboard_ok(part.address)
    return False


def _worker_check(redis_url: str, pid: int) -> Callable[[], bool]:
    return lambda: pid in worker_replies(redis_url, [pid])


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0] or "127.0.0.1"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _connect_host(bind_host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


def _wait(what: str, part: Part, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part_alive(part):
            _reap(part.pid)
            raise BackendError(f"{what} stopped while starting; the end of its log ({part.log}):\n{log_tail(part)}")
        if check():
            return
        time.sleep(0.2)
    raise BackendUnavailableError(
        f"{what} not healthy after {timeout:.0f} s (FACEXPLAIN_STARTUP_TIMEOUT); the end of its log "
        f"({part.log}):\n{log_tail(part)}"
    )


# -- up and down -------------------------------------------------------------------------------


def start_stack(
    config: StackConfig, *, settings: Settings | None = None, say: Callable[[str], None] | None = None
) -> Stack:
    """Start the parts of ``config`` and wait until each is healthy; the record is in the state
    folder. StackAlreadyUpError when its stack runs; BackendError (a part's log tail) or
    BackendUnavailableError (not healthy in time) after stopping what was started; InputError for
    a busy port or an unusable folder, before anything starts."""
    from .store.server import EmbeddedRedis

    settings = settings or get_settings()
    say = say or (lambda _text: None)
    state = config.state
    existing = read_stack(state)
    if existing is not None:
        alive = [p.name for p in existing.parts if part_alive(p)]
        if alive and len(alive) == len(existing.parts):
            raise StackAlreadyUpError(f"the stack of {state} is already up: API at {existing.api_address}")
        if alive:
            raise BackendError(
                f"the stack of {state} is partly running ({', '.join(alive)}); run `facexplain down --state {state}` first"
            )
        (state / STACK_FILE).unlink(missing_ok=True)
    host = config.host or settings.bind_host
    try:
        free_port(host)
    except OSError as e:
        raise InputError(f"--host {host}: cannot listen on this address ({e.strerror or e})") from None
    config.check_files()
    if config.api_port and not port_free(host, config.api_port):
        raise InputError(f"--grpc-port {config.api_port} on {host} is already in use (another server?); "
                         "choose another port, or 0 for a free one")
    if config.dashboard and config.dashboard_port and not port_free(host, config.dashboard_port):
        raise InputError(f"--dashboard-port {config.dashboard_port} on {host} is already in use (another server?); "
                         "choose another port, or 0 for a free one")
    logs = state / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{state}: cannot create the state folder ({e.strerror or e})") from None
    timeout = settings.startup_timeout_s
    tls_ca = config.tls_ca or config.tls_cert
    token_file = config.token_file or settings.token_file  # without --token-file the API reads FACEXPLAIN_TOKEN_FILE
    stack = Stack(state=state, redis_url=config.redis_url or "", api_address="", engine=config.engine,
                  triton_url=config.triton_url, token_file=None if token_file is None else str(token_file.resolve()),
                  tls_ca=None if tls_ca is None else str(tls_ca.resolve()))
    api_args = [] if config.token_file is None else ["--token-file", str(config.token_file.resolve())]
    if config.tls_cert is not None and config.tls_key is not None:
        api_args += ["--tls-cert", str(config.tls_cert.resolve()), "--tls-key", str(config.tls_key.resolve())]
    try:
        # Redis: the embedded one (detached; its pid is its process group) or the given one
        if config.redis_url is None:
            redis = EmbeddedRedis(state / "redis", detach=True, settings=settings).start()
            if redis.pid is None:
                raise BackendError("the embedded Redis did not start")
            stack.redis_url = redis.url
            part = Part(name="redis", kind="redis", pid=redis.pid, started=_start_time(redis.pid) or -1,
                        port=redis.port, address=redis.url, log=str(redis.log_path))
            stack.parts.append(part)
            stack.save()
            say(f"redis   pid {part.pid}  {redis.url}")
        elif not _redis_ping(config.redis_url, timeout=3.0):
            raise BackendUnavailableError(f"Redis at {config.redis_url} does not answer PING")
        # Triton: the given one, the embedded one (facexplain serve, detached), or none (local)
        engine = config.engine
        if engine != "local" and config.triton_url is None and settings.triton_url is None:
            grpc_port, http_port = free_port(host), free_port(host)
            while http_port == grpc_port:
                http_port = free_port(host)
            addr = f"{_connect_host(host)}:{grpc_port}"
            part = _launch("triton", "triton", ["serve", "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
                           logs, port=grpc_port, address=addr, http_port=http_port)
            stack.parts.append(part)
            stack.save()
            _wait("Triton (facexplain serve)", part, lambda: _triton_ready(http_port, _connect_host(host)), timeout)
            stack.triton_url = addr
            say(f"triton  pid {part.pid}  {addr}")
        elif engine != "local":
            stack.triton_url = config.triton_url or settings.triton_url
        model_args = ["--engine", "local"] if engine == "local" else ["--engine", "triton", "--triton", str(stack.triton_url)]
        # workers; on the local engine the K processes share the cores (K processes with a thread
        # per core each ran half as fast on 2 cores: worker.app.model_threads)
        worker_args = list(model_args)
        if engine == "local":
            from .worker.app import model_threads

            worker_args += ["--threads", str(model_threads(config.workers))]
        workers = []
        for i in range(config.workers):
            part = _launch(f"worker-{i + 1}", "worker", ["worker", "--redis", stack.redis_url, *worker_args], logs)
            stack.parts.append(part)
            workers.append(part)
        stack.save()
        # the API (while the workers start)
        port = config.api_port or free_port(host)
        api = _launch("api", "api", ["api", "--redis", stack.redis_url, "--host", host, "--port", str(port),
                                     *model_args, *api_args], logs, port=port, address=f"{_connect_host(host)}:{port}")
        stack.parts.append(api)
        stack.api_address = api.address
        stack.save()
        for part in workers:
            _wait(f"worker {part.name}", part, _worker_check(stack.redis_url, part.pid), timeout)
            say(f"{part.name:<7} pid {part.pid}  ready")
        what = "the API (facexplain api)"
        if stack.tls_ca:  # the usual cause of a TLS API that never answers: the name it is reached by
            what += f" (TLS: the certificate must name {_host_of(api.address)}, the address clients use)"
        _wait(what, api, _api_check(stack), timeout)
        say(f"api     pid {api.pid}  {api.address}")
        if config.dashboard:
            dash_port = config.dashboard_port or free_port(host)
            token_args = ["--token-file", stack.token_file] if stack.token_file else []
            if stack.tls_ca:  # the dashboard trusts what status trusts
                token_args += ["--tls-ca", stack.tls_ca]
            url = f"http://{_url_host(_connect_host(host))}:{dash_port}"
            dash = _launch("dashboard", "dashboard", ["dashboard", "--server", api.address, "--host", host, "--port",
                                                     str(dash_port), *token_args], logs, port=dash_port, address=url)
            stack.parts.append(dash)
            stack.save()
            _wait("the dashboard (facexplain dashboard)", dash, lambda: _dashboard_ok(url), timeout)
            say(f"dashboard pid {dash.pid}  {url}")
    except BaseException:
        stop_stack(state, stack=stack)
        raise
    return stack


def stop_stack(state: Path, *, stack: Stack | None = None, purge: bool = False, grace: float = _GRACE_S) -> list[str]:
    """Stop every part of the stack of ``state`` (the API first, Redis last) and remove the
    record; ``purge`` also removes the Redis data and logs. The names of the parts that ran."""
    stack = stack if stack is not None else read_stack(state)
    stopped = []
    if stack is not None:
        order = {"dashboard": 0, "api": 1, "worker": 2, "triton": 3, "redis": 4}
        for part in sorted(stack.parts, key=lambda p: order.get(p.kind, 9)):
            if stop_part(part, grace=grace):
                stopped.append(part.name)
    for path in (state / STACK_FILE, state / "redis" / "redis.pid"):
        path.unlink(missing_ok=True)
    if purge:
        for folder in (state / "redis", state / "logs"):
            shutil.rmtree(folder, ignore_errors=True)
    return stopped
