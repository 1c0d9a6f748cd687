"""Atomic file writes (a reader sees the old file or the new one, never half of either) and
reads of regular files only (a FIFO or a device named as an input never blocks a read).

Every output of facexplain (summary, maps, figures, tables, model records, cached chips) goes
through :func:`atomic_write`. The new file gets the permissions an ordinary ``open()`` would
give it (0666 less the umask), not the 0600 of a temporary file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_file_mode",
    "open_regular",
    "read_regular_text",
]


def default_file_mode() -> int:
    """0666 less the process umask (what ``open(path, "w")`` creates)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *, mode: int | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The temporary file is removed on every failure (including KeyboardInterrupt); ``mode``
    defaults to :func:`default_file_mode`. Returns ``path``.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, mode=mode)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


_KIND = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def _not_regular(name: str, mode: int) -> InputError:
    for test, what in _KIND:
        if test(mode):
            return InputError(f"{name}: {what}")
    return InputError(f"{name}: not a regular file")


def _os_error(name: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{name}: no such file")
    if isinstance(exc, NotADirectoryError):
        return InputError(f"{name}: no such file (a folder in the path is a file)")
    if isinstance(exc, PermissionError):
        return InputError(f"{name}: cannot read (permission denied)")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{name}: is a directory")
    return InputError(f"{name}: cannot open ({exc.strerror or type(exc).__name__})")


def open_regular(name: str) -> int:
    """A read-only descriptor of the regular file ``name``; never blocks (a FIFO is refused by
    ``stat`` before any open, and opened without blocking should it appear in between).
    InputError naming the file for a missing, unreadable or non-regular one."""
    try:
        st = os.stat(name)
    except ValueError:  # an embedded NUL byte
        raise InputError(f"{name!r}: not a valid file name") from None
    except OSError as exc:
        raise _os_error(name, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(name, st.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise _os_error(name, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(name, st.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_text(path: str | Path, what: str) -> str:
    """The UTF-8 text (a BOM dropped) of the regular file ``path``; InputError naming the file
    and ``what`` it should hold when it is missing, not a regular file, unreadable or not UTF-8."""
    name = str(path)
    with os.fdopen(open_regular(name), "rb") as f:
        try:
            data = f.read()
        except OSError as exc:
            raise InputError(f"{name}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: {what} is not UTF-8 text") from None
