"""Fixtures of the reliability tests (``make test-reliability``): the service's parts as real
processes that a test may kill and start again.

Every test under ``tests/reliability`` is marked ``reliability`` (``make test`` leaves them out),
``integration`` and ``slow``.

``service``: a :class:`Service` in the test's temporary folder. It starts a redis-server of its
own (:meth:`Service.start_redis`; SIGKILL and restart on the same port and data folder:
:meth:`kill_redis`, :meth:`restart_redis`), ``facexplain worker`` and ``facexplain api``
processes (:meth:`start`, each in its own process group with a log in the folder;
:meth:`kill` SIGKILLs a group), all carrying one environment mark, so that at the end every
process the test started, and only those, is stopped and checked gone (nothing left running).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from explainer_service.processes import start_command, stop_groups, wait_for_line
from explainer_service.store import EmbeddedRedis, RedisJobStore
from tests.integration.procs import children, marked_env, marked_processes

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            for mark in ("reliability", "integration", "slow"):
                item.add_marker(mark)


class Service:
    """The processes of one test (see the module docstring).

    Args:
        root: the test's folder (Redis data, logs).
        env: extra environment of every process (``FACEXPLAIN_*`` settings).
    """

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env, self.mark = marked_env(**env)
        self.redis: EmbeddedRedis | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- redis ----------------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        assert self.redis is not None, "start_redis first"
        return self.redis.url

    def start_redis(self, port: int = 0) -> str:
        self.redis = EmbeddedRedis(self.root / "redis", port=port, startup_timeout=60).start()
        self.env["FACEXPLAIN_REDIS_URL"] = self.redis.url
        return self.redis.url

    def kill_redis(self) -> int:
        """SIGKILL redis-server (no AOF flush on the way out); returns its port."""
        assert self.redis is not None
        port = self.redis.port
        self.redis.kill()
        self.redis.stop()  # releases the SIGTERM hook; the process is gone already
        return port

    def restart_redis(self, port: int) -> None:
        """redis-server again on ``port`` and the same data folder (it reloads the AOF)."""
        self.redis = EmbeddedRedis(self.root / "redis", port=port, startup_timeout=60).start()

    def store(self) -> RedisJobStore:
        return RedisJobStore(self.redis_url, timeout_s=5)

    # -- processes ------------------------------------------------------------------------------

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self, name: str, args: list[str], *, ready: str, timeout: float = 120) -> subprocess.Popen[bytes]:
        """``facexplain ARGS`` as part ``name`` in its own process group; waits until its log
        shows ``ready`` (AssertionError with the log's tail when it exits or times out)."""
        log = self.log(name)
        size = log.stat().st_size if log.exists() else 0
        proc = start_command(args, log, env=self.env)
        self.procs[name] = proc
        wait_for_line(log, proc, ready, timeout=timeout, what=name, after=size)
        return proc

    def start_worker(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(name, ["worker", "--redis", self.redis_url, "--concurrency", "1", *extra], ready=" ready.")

    def start_api(self, port: int, *extra: str) -> str:
        """``facexplain api`` on ``port``; its address."""
        self.start("api", ["api", "--redis", self.redis_url, "--engine", "local", "--port", str(port), *extra],
                   ready="serving on ")
        return f"127.0.0.1:{port}"

    def pool_children(self, name: str) -> list[int]:
        """Pids of the live children of part ``name``'s main process (a worker's pool)."""
        return children(None, self.procs[name].pid)

    def kill(self, name: str) -> None:
        """SIGKILL part ``name``'s whole process group and reap it."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """Stop every part (SIGTERM, SIGKILL after 20 s) and Redis; assert nothing is left."""
        stop_groups(self.procs.values(), grace_s=20)
        self.procs = {}
        if self.redis is not None:
            self.redis.stop()
        deadline = time.monotonic() + 15
        while marked_processes(self.mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = marked_processes(self.mark)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left running: {left}"


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Builds :class:`Service` objects in the test's folder (``service_factory(FACEXPLAIN_X="1")``)
    and stops every one at the end."""
    made: list[Service] = []

    def make(**env: str) -> Service:
        root = tmp_path / f"service{len(made)}"
        root.mkdir(parents=True, exist_ok=True)
        made.append(Service(root, **env))
        return made[-1]

    try:
        yield make
    finally:
        for svc in made:
            svc.stop()
