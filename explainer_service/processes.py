"""facexplain commands run as process groups of their own: started with their output in a log,
found ready by a line of that log, stopped together with their children.

What runs the parts of the service apart uses it (the benchmarks, the tests that start
``facexplain api`` / ``worker`` themselves); :mod:`explainer_service.stack` keeps its own records
of the parts it starts for ``facexplain up``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import BackendError

__all__ = ["start_command", "stop_groups", "wait_for_line", "api_address", "log_tail"]


def start_command(args: list[str], log: Path, *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``facexplain ARGS`` (this interpreter) in a new session, its stdout and stderr appended to
    ``log``; the process group is the returned process's pid."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "explainer_service.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env=None if env is None else dict(env), start_new_session=True,
        )


def stop_groups(procs: Iterable[subprocess.Popen[bytes]], *, grace_s: float = 20.0) -> None:
    """SIGTERM to every process group at once, SIGKILL to those still running after ``grace_s``;
    every process is reaped."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a log (empty when it is not there)."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_for_line(log: Path, proc: subprocess.Popen[bytes], marker: str, *, timeout: float = 60.0,
                  what: str = "the process", after: int = 0) -> str:
    """The first line of ``log`` from byte ``after`` on (a restarted process appends to its old
    log) that holds ``marker``; BackendError with the log's tail when the process ends or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with log.open("rb") as f:
                f.seek(after)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            if marker in line:
                return line
        if proc.poll() is not None:
            raise BackendError(f"{what} exited ({proc.returncode}) before it was ready:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise BackendError(f"{what} was not ready within {timeout:.0f} s:\n{log_tail(log)}")
        time.sleep(0.1)


def api_address(log: Path, proc: subprocess.Popen[bytes], *, timeout: float = 60.0) -> str:
    """The ``HOST:PORT`` a ``facexplain api`` process says it serves on (its first log line)."""
    line = wait_for_line(log, proc, "serving on ", timeout=timeout, what="facexplain api")
    return line.split("serving on ", 1)[1].split()[0]
