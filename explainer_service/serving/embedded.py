"""The embedded Triton: the real ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships,
run on the CPU against an embedded copy of the model repository (Python backend + onnxruntime).

The server lives in its own virtual environment (``.venv-triton``: nvidia-pytriton pins numpy<2),
so the rest of the project stays unpinned. Its Python backend's stub embeds that environment's
interpreter: the environment's ``bin`` goes first on PATH (the embedded interpreter finds its
``pyvenv.cfg`` there) and the interpreter's shared library on LD_LIBRARY_PATH.

:class:`EmbeddedTriton` starts it on chosen (or free) loopback ports, waits for readiness, reports
a crash with the end of the server log, and stops it with its whole process group; the server is
also asked to die with the process that started it, so no orphan is left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..config import home_dir
from ..errors import BackendError, ModelNotReadyError
from .repository import BatchingConfig, build_embedded_repository

__all__ = ["TritonInstall", "find_triton", "EmbeddedTriton", "free_port", "triton_env_dir"]


def triton_env_dir() -> Path:
    """FACEXPLAIN_TRITON_ENV, else ``.venv-triton`` of this checkout."""
    env = os.environ.get("FACEXPLAIN_TRITON_ENV")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / ".venv-triton"


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
    env = env or triton_env_dir()
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


def _backend_dir(install: TritonInstall) -> Path:
    """A backend folder with the Python backend and the stub for the server env's Python (cached)."""
    dest = home_dir() / "triton" / f"backends-{install.version}-{install.stub.parent.name}"
    marker = dest / ".complete"
    if marker.exists():
        return dest
    home_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="backends.", dir=home_dir()))
    shutil.copytree(install.backends, tmp / "backends")
    shutil.copy2(install.stub, tmp / "backends" / "python" / "triton_python_backend_stub")
    (tmp / "backends" / ".complete").write_text(str(install.env))
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "backends", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedTriton:
    """A tritonserver process serving the repository's ready models on loopback.

    Args:
        grpc_port, http_port: ports (0: pick free ones).
        repository: the model repository (default: ``model_repository_dir()``).
        models: Triton names that must be ready before :meth:`start` returns (default: all served).
        startup_timeout: seconds to wait for readiness.
        intra_op_threads: onnxruntime threads per model instance (0: its default).
    """

    def __init__(
        self,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        repository: Path | None = None,
        models: list[str] | None = None,
        startup_timeout: float = 180.0,
        intra_op_threads: int = 0,
        batching: BatchingConfig | None = None,
        env: Path | None = None,
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.repository = repository
        self.required = models
        self.startup_timeout = startup_timeout
        self.intra_op_threads = intra_op_threads
        self.batching = batching
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.served: list[str] = []

    @property
    def url(self) -> str:
        """gRPC address, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / "tritonserver.log"

    def log_tail(self, lines: int = 8) -> str:
        """The server's error lines (first 5, shortened) and the last ``lines`` lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return ""
        errors = [ln[:400] for ln in text if ln.startswith("E")][:5]
        return "\n".join(errors + ["..."] + text[-lines:] if errors else text[-lines:])

    def start(self) -> "EmbeddedTriton":
        install = find_triton(self._env)
        backends = _backend_dir(install)
        home_dir().mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="triton-run.", dir=home_dir()))
        repo = self._workdir / "repository"
        self.served = build_embedded_repository(
            repo, self.repository, intra_op_threads=self.intra_op_threads, batching=self.batching
        )
        if not self.served:
            raise ModelNotReadyError("no model in the repository is ready to serve (run `make setup`)")
        missing = [m for m in (self.required or []) if m not in self.served]
        if missing:
            raise ModelNotReadyError(f"model(s) {', '.join(missing)} not in the repository or without weights")
        env = dict(os.environ)
        env["PATH"] = f"{install.env / 'bin'}:{env.get('PATH', '')}"
        ld = [str(install.libs), str(install.python_libdir)]
        env["LD_LIBRARY_PATH"] = ":".join(ld + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        cmd = [
            str(install.binary),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
        ]
        log = open(self._workdir / "tritonserver.log", "wb")  # noqa: SIM115 - owned by the process
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workdir,  # not the caller's folder: its modules must not shadow the models'
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        finally:
            log.close()
        try:
            self._wait_ready(self.required or self.served)
        except BaseException:
            self.stop()
            raise
        return self

    def _http(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
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
                raise BackendError(
                    f"tritonserver exited with code {code} while starting; end of its log "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            if self._http("/v2/health/ready") == 200 and all(
                self._http(f"/v2/models/{m}/ready") == 200 for m in models
            ):
                return
            time.sleep(0.2)
        raise BackendError(
            f"tritonserver not ready after {self.startup_timeout:.0f} s; end of its log:\n{self.log_tail()}"
        )

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
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
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "EmbeddedTriton":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
