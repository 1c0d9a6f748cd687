"""The embedded Triton: the real ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships,
run on the CPU against an embedded copy of the model repository (Python backend + onnxruntime).

The server lives in its own virtual environment (``.venv-triton``: nvidia-pytriton pins numpy<2),
so the rest of the project stays unpinned. Its Python backend's stub embeds that environment's
interpreter: the environment's ``bin`` goes first on PATH (the embedded interpreter finds its
``pyvenv.cfg`` there) and the interpreter's shared library on LD_LIBRARY_PATH.

:class:`EmbeddedTriton` starts it on chosen (or free) ports of ``Settings.bind_host`` (loopback
unless asked otherwise; gRPC and HTTP only, no metrics), waits for readiness, reports a failed
start with its cause on the first line (a busy port, a model that does not load), and stops it
with its whole process group. Nothing of a run outlives it: the server is asked to die with the
process that started it, SIGTERM unwinds the starter like Ctrl-C, the run's folder (under
``Settings.runtime_dir``) and the Python backend's shared memory carry the starter's pid and are
removed at stop, and those of runs killed outright are removed at the next start
(:mod:`.leftovers`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError, BackendUnavailableError, InputError, ModelNotReadyError
from ..fileio import atomic_write_bytes
from ..settings import Settings, get_settings
from .address import format_grpc_address
from .leftovers import SHM_PREFIX, clean_stale, make_run_dir, new_tag, remove_shm, unwind_on_sigterm
from .repository import BatchingConfig, build_embedded_repository

__all__ = ["TritonInstall", "find_triton", "EmbeddedTriton", "free_port", "port_free", "triton_env_dir"]

#: name of the copy of the last failed start's server log, in ``Settings.runtime_dir``
FAILED_START_LOG = "last-failed-start.log"


def triton_env_dir() -> Path:
    """The environment holding tritonserver (``Settings.triton_env``)."""
    return get_settings().triton_env


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of a pip-installed tritonserver are."""

    env: Path
    binary: Path
    backends: Path
    stub: Path
    libs: Path
    python_libdir: Path
    version: str


def find_triton(env: Path | None = None) -> TritonInstall:
    """Locate tritonserver in the server environment; ModelNotReadyError saying how to set it up."""
    env = env or get_settings().triton_env
    hint = "run `make setup` (it creates .venv-triton with nvidia-pytriton)"
    python = env / "bin" / "python"
    if not python.exists():
        raise ModelNotReadyError(f"{env}: no Triton server environment; {hint}")
    try:
        out = subprocess.run(
            [
                str(python),
                "-c",
                "import json, sys, sysconfig, pathlib, pytriton, importlib.metadata as m;"
                "print(json.dumps({'site': str(pathlib.Path(pytriton.__file__).parent.parent),"
                "'libdir': sysconfig.get_config_var('LIBDIR'),"
                "'py': f'{sys.version_info[0]}.{sys.version_info[1]}',"
                "'version': m.version('nvidia-pytriton')}))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        info = json.loads(out)
    except (subprocess.SubprocessError, ValueError, OSError) as e:
        raise ModelNotReadyError(f"{env}: nvidia-pytriton is not usable there ({e}); {hint}") from None
    site = Path(info["site"])
    dist = site / "pytriton" / "tritonserver"
    install = TritonInstall(
        env=env,
        binary=dist / "bin" / "tritonserver",
        backends=dist / "backends",
        stub=dist / "python_backend_stubs" / info["py"] / "triton_python_backend_stub",
        libs=site / "nvidia_pytriton.libs",
        python_libdir=Path(info["libdir"]),
        version=info["version"],
    )
    for p in (install.binary, install.backends, install.stub):
        if not p.exists():
            raise ModelNotReadyError(f"{p}: missing from nvidia-pytriton {install.version}; {hint}")
    return install


def _backend_dir(install: TritonInstall, home: Path) -> Path:
    """A backend folder with the Python backend and the stub for the server env's Python (cached)."""
    dest = home / "triton" / f"backends-{install.version}-{install.stub.parent.name}"
    marker = dest / ".complete"
    if marker.exists():
        return dest
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="backends.", dir=home))
    try:
        shutil.copytree(install.backends, tmp / "backends")
        shutil.copy2(install.stub, tmp / "backends" / "python" / "triton_python_backend_stub")
        (tmp / "backends" / ".complete").write_text(str(install.env))
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "backends", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (no one else listens there, whatever
    socket options they used)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _connect_host(bind_host: str) -> str:
    """Where a client on this machine reaches a server bound to ``bind_host``."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


_GLOG = re.compile(r"^[EWIF]\d{4} [\d:.]+\s+\d+ [^\]]*\]\s*")
_IN_USE = re.compile(r"failed to start (GRPC|HTTP|Metrics) service: .*?Socket '([^']*?):(\d+)' already in use", re.I)
_NOISE = ("CudaDriverHelper has not been initialized",)


def _error_lines(log: str) -> list[str]:
    """The log's error messages without glog's prefix and without known harmless ones."""
    out = []
    for line in log.splitlines():
        if not line.startswith("E"):
            continue
        msg = _GLOG.sub("", line).strip().strip('"').strip()
        if msg and not any(n in msg for n in _NOISE) and msg not in out:
            out.append(msg)
    return out


def _port_in_use(log: str) -> tuple[str, int] | None:
    """(service, port) of the first "already in use" failure in a server log."""
    m = _IN_USE.search(log)
    if m is None:
        return None
    service = {"grpc": "gRPC", "http": "HTTP", "metrics": "metrics"}[m.group(1).lower()]
    return service, int(m.group(3))


def _startup_cause(log: str) -> str:
    """One line saying why a server failed to start, from its log."""
    busy = _port_in_use(log)
    if busy is not None:
        return f"{busy[0]} port {busy[1]} is already in use"
    errors = _error_lines(log)
    if errors:
        first = errors[0]
        return first if len(first) <= 300 else first[:297] + "..."
    return "no error in its log"


class _PortBusy(Exception):
    def __init__(self, service: str, port: int) -> None:
        super().__init__(f"{service} port {port}")
        self.service = service
        self.port = port


class EmbeddedTriton:
    """A tritonserver process serving the repository's ready models, on loopback by default.

    Args:
        grpc_port, http_port: ports (0: pick free ones, and pick again if another process takes
            one first).
        repository: the model repository (default: ``Settings.model_repository``).
        models: Triton names that must be ready before :meth:`start` returns (default: all served).
        startup_timeout: seconds to wait for readiness (default: ``Settings.startup_timeout_s``).
        intra_op_threads: onnxruntime threads per model instance (0: its default).
        batching: overrides every model's dynamic batching (benchmarks).
        env: the environment holding tritonserver (default: ``Settings.triton_env``).
        bind_host: the address the server listens on (default: ``Settings.bind_host``).
        settings: where the defaults come from (default: :func:`get_settings`).
    """

    def __init__(
        self,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        repository: Path | None = None,
        models: list[str] | None = None,
        startup_timeout: float | None = None,
        intra_op_threads: int = 0,
        batching: BatchingConfig | None = None,
        env: Path | None = None,
        bind_host: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        for name, port in (("grpc_port", grpc_port), ("http_port", http_port)):
            if not 0 <= port <= 65535:
                raise InputError(f"{name} {port} is outside 0..65535 (0: a free port)")
        if grpc_port and grpc_port == http_port:
            raise InputError(f"gRPC and HTTP need different ports, both are {grpc_port}")
        self.bind_host = self.settings.bind_host if bind_host is None else bind_host
        self._fixed = {"gRPC": grpc_port, "HTTP": http_port}
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.repository = repository
        self.required = models
        self.startup_timeout = self.settings.startup_timeout_s if startup_timeout is None else startup_timeout
        self.intra_op_threads = intra_op_threads
        self.batching = batching
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._shm_prefix: str | None = None
        self._release_sigterm: Callable[[], None] | None = None
        self.served: list[str] = []

    @property
    def url(self) -> str:
        """gRPC address a client on this machine dials, ``127.0.0.1:PORT`` by default."""
        return format_grpc_address(_connect_host(self.bind_host), self.grpc_port)

    @property
    def pid(self) -> int | None:
        """The server's pid (also its process group), while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path | None:
        """The server's log while it runs (removed at :meth:`stop`)."""
        return None if self._workdir is None else self._workdir / "tritonserver.log"

    def _log_text(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 8) -> str:
        """The server's error lines (first 5, shortened) and the last ``lines`` lines of its log."""
        text = self._log_text().splitlines()
        errors = [ln[:400] for ln in text if ln.startswith("E")][:5]
        return "\n".join(errors + ["..."] + text[-lines:] if errors else text[-lines:])

    def start(self) -> EmbeddedTriton:
        """Start the server and wait until the required models are ready.

        InputError for a port given by the caller that is in use; ModelNotReadyError when no
        (or a required) model can be served; BackendError when the server fails to start (its
        cause on the first line), BackendUnavailableError when it is not ready in time.
        """
        if self._proc is not None:
            raise BackendError(f"this Triton is already running at {self.url}")
        runtime = self.settings.runtime_dir
        clean_stale(runtime)
        install = find_triton(self._env or self.settings.triton_env)
        backends = _backend_dir(install, self.settings.home)
        self._release_sigterm = unwind_on_sigterm()
        try:
            self._workdir = make_run_dir(runtime)
            repo = self._workdir / "repository"
            self.served = build_embedded_repository(
                repo, self.repository, intra_op_threads=self.intra_op_threads, batching=self.batching
            )
            if not self.served:
                raise ModelNotReadyError("no model in the repository is ready to serve (run `make setup`)")
            missing = [m for m in (self.required or []) if m not in self.served]
            if missing:
                raise ModelNotReadyError(f"model(s) {', '.join(missing)} not in the repository or without weights")
            for attempt in range(3):
                self._pick_ports()
                try:
                    self._launch(install, backends, self._workdir)
                    return self
                except _PortBusy as busy:
                    self._kill()
                    if self._fixed.get(busy.service) or attempt == 2:
                        raise self._busy_error(busy.service, busy.port) from None
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _busy_error(self, service: str, port: int) -> InputError:
        return InputError(
            f"{service} port {port} on {self.bind_host} is already in use (another server?); "
            "choose another port, or 0 for a free one"
        )

    def _pick_ports(self) -> None:
        taken: set[int] = set()
        for service, attr in (("gRPC", "grpc_port"), ("HTTP", "http_port")):
            fixed = self._fixed[service]
            if fixed:
                if not port_free(self.bind_host, fixed):
                    raise self._busy_error(service, fixed)
                port = fixed
            else:
                port = free_port(self.bind_host)
                while port in taken or port in self._fixed.values():
                    port = free_port(self.bind_host)
            taken.add(port)
            setattr(self, attr, port)

    def _launch(self, install: TritonInstall, backends: Path, workdir: Path) -> None:
        env = dict(os.environ)
        env["PATH"] = f"{install.env / 'bin'}:{env.get('PATH', '')}"
        ld = [str(install.libs), str(install.python_libdir)]
        env["LD_LIBRARY_PATH"] = ":".join(ld + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        self._shm_prefix = f"{SHM_PREFIX}{new_tag()}_py_"
        cmd = [
            str(install.binary),
            f"--model-repository={workdir / 'repository'}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            f"--grpc-address={self.bind_host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.bind_host}",
            f"--http-port={self.http_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
        ]
        log = open(workdir / "tritonserver.log", "wb")  # noqa: SIM115 - owned by the process
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,  # not the caller's folder: its modules must not shadow the models'
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        finally:
            log.close()
        self._wait_ready(self.required or self.served)

    def _http(self, path: str) -> int:
        host = format_grpc_address(_connect_host(self.bind_host), self.http_port)
        try:
            with urllib.request.urlopen(f"http://{host}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, OSError):
            return 0

    def _wait_ready(self, models: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll() if self._proc else -1
            if code is not None:
                text = self._log_text()
                busy = _port_in_use(text)
                if busy is not None:
                    raise _PortBusy(*busy)
                raise BackendError(self._failure(f"tritonserver exited with code {code} while starting", text))
            if self._http("/v2/health/ready") == 200 and all(
                self._http(f"/v2/models/{m}/ready") == 200 for m in models
            ):
                return
            time.sleep(0.2)
        raise BackendUnavailableError(
            self._failure(
                f"tritonserver not ready after {self.startup_timeout:.0f} s (FACEXPLAIN_STARTUP_TIMEOUT)",
                self._log_text(),
            )
        )

    def _failure(self, what: str, log: str) -> str:
        """``what: cause`` on the first line, then the other errors and where the log was kept."""
        lines = [f"{what}: {_startup_cause(log)}"]
        lines += [e[:300] for e in _error_lines(log)[1:5]]
        if log:
            try:
                self.settings.runtime_dir.mkdir(parents=True, exist_ok=True)
                kept = atomic_write_bytes(self.settings.runtime_dir / FAILED_START_LOG, log.encode())
                lines.append(f"(the server's whole log: {kept})")
            except OSError:
                pass
        return "\n".join(lines)

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def _kill(self, timeout: float = 20.0) -> None:
        """End the server's process group (SIGTERM, then SIGKILL) and unlink its shared memory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)  # a stopped server cannot act on SIGTERM
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc is not None:
            try:  # stubs left in the group after the server itself exited
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._shm_prefix is not None:
            remove_shm(self._shm_prefix)
            self._shm_prefix = None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started (SIGTERM, then SIGKILL); remove its
        shared memory and its folder. Safe to call more than once."""
        try:
            self._kill(timeout)
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            if self._release_sigterm is not None:
                self._release_sigterm()
                self._release_sigterm = None

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
