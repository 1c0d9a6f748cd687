"""What a run owns outside its own process, so that none of it outlives the run.

Shared-memory regions (``/dev/shm``) and the embedded server's temporary folder carry the pid of
the process that made them: ``facexplain_<pid>_<tag>_...`` and ``<runtime_dir>/triton-<pid>-<tag>``.
They are released on every ordinary exit path by their owners (try/finally, context managers;
:func:`unwind_on_sigterm` makes SIGTERM unwind like Ctrl-C instead of killing outright), and the
ones whose owner died without releasing them (SIGKILL, a crash) are removed by
:func:`clean_stale` at the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = [
    "SHM_DIR",
    "SHM_PREFIX",
    "new_tag",
    "shm_names",
    "remove_shm",
    "pid_alive",
    "make_run_dir",
    "clean_stale",
    "unwind_on_sigterm",
]

#: where POSIX shared-memory names live on Linux
SHM_DIR = Path("/dev/shm")
#: every shared-memory name of ours starts with this, then the owner pid
SHM_PREFIX = "facexplain_"
_SHM_OWNED = re.compile(r"^facexplain_(\d+)_")
_RUN_DIR = re.compile(r"^triton-(\d+)-[0-9a-f]+$")


def new_tag() -> str:
    """``<pid>_<random>``: names built on it are recognisably this process's."""
    return f"{os.getpid()}_{uuid.uuid4().hex[:10]}"


def shm_names(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Names under ``shm_dir`` that start with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(shm_dir) if n.startswith(prefix))
    except OSError:
        return []


def remove_shm(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink every shared-memory name starting with ``prefix``; the names removed."""
    removed = []
    for name in shm_names(prefix, shm_dir):
        try:
            os.unlink(shm_dir / name)
            removed.append(name)
        except OSError:  # gone meanwhile, or someone else's
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (of any user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_run_dir(parent: Path) -> Path:
    """A new folder ``parent/triton-<pid>-<random>`` (``parent`` is created if needed)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"triton-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def clean_stale(runtime_dir: Path | None, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove the shared memory and run folders left by processes that no longer exist; what
    was removed (names and paths). Those of live processes, and anything not named by us, stay."""
    removed: list[str] = []
    dead: dict[int, bool] = {}

    def is_dead(pid: int) -> bool:
        if pid not in dead:
            dead[pid] = pid != os.getpid() and not pid_alive(pid)
        return dead[pid]

    for name in shm_names(SHM_PREFIX, shm_dir):
        m = _SHM_OWNED.match(name)
        if m and is_dead(int(m.group(1))):
            try:
                os.unlink(shm_dir / name)
                removed.append(name)
            except OSError:
                pass
    if runtime_dir is not None and runtime_dir.is_dir():
        for entry in runtime_dir.iterdir():
            m = _RUN_DIR.match(entry.name)
            if m and entry.is_dir() and not entry.is_symlink() and is_dead(int(m.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


class _SigtermGuard:
    """Reference-counted SIGTERM handler that raises SystemExit(143) in the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._previous: object = None

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def acquire(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        with self._lock:
            if self._users == 0:
                if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                    return False  # the program handles SIGTERM itself
                self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and signal.getsignal(signal.SIGTERM) is self._handler:
                signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]


_GUARD = _SigtermGuard()


def unwind_on_sigterm() -> Callable[[], None]:
    """Until the returned function is called, SIGTERM raises SystemExit(143) in the main thread
    (so ``finally`` blocks release what they hold) instead of ending the process at once.

    Only where SIGTERM has its default action, and only from the main thread; elsewhere nothing
    changes. The returned release function may be called more than once.
    """
    held = _GUARD.acquire()
    lock = threading.Lock()
    done = False

    def release() -> None:
        nonlocal done
        with lock:
            if held and not done:
                done = True
                _GUARD.release()

    return release
