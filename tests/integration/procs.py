"""Find the processes a test started, and only those (other tests may run servers meanwhile)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

MARK = "FACEXPLAIN_TEST_MARK"


def marked_env(**extra: str) -> tuple[dict[str, str], str]:
    """A copy of the environment with a fresh mark (inherited by every descendant) and ``extra``."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "FACEXPLAIN_TRITON_URL"}
    env.update(extra)
    env[MARK] = mark
    return env, mark


def marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ``mark`` (descendants of a marked start)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in data.split(b"\0"):
            found.append(int(entry.name))
    return found


def left_after(mark: str, timeout: float = 10.0) -> list[int]:
    """The processes of ``mark`` still alive once they all ended or ``timeout`` passed ([]: none)."""
    deadline = time.monotonic() + timeout
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    return marked_processes(mark)


def children(name: str | None, parent: int | None = None) -> list[int]:
    """Pids of live children of ``parent`` (default: this process) whose command is ``name``
    (None: any command)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if (name is None or comm == name[:15]) and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process ``pid`` listens on (IPv4 and IPv6; an
    IPv4-mapped IPv6 address is given as the IPv4 one)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            out.append((_address(hex_addr, v6), int(hex_port, 16)))
    return out


def _address(hex_addr: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # each 32-bit word is host order
    v6addr = ipaddress.IPv6Address(words)
    return str(v6addr.ipv4_mapped or v6addr)  # ::ffff:127.0.0.1 is 127.0.0.1
