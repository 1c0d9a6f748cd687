"""gRPC server addresses (``--triton``, ``FACEXPLAIN_TRITON_URL``): parsed and checked once.

Accepted forms: ``HOST``, ``HOST:PORT``, ``[IPV6]``, ``[IPV6]:PORT``, each optionally behind
``grpc://`` (``http://`` and ``https://`` are refused: they name Triton's HTTP endpoint, not
its gRPC one). A missing port is Triton's default gRPC port (8001), never gRPC's own default
(443); a port outside 1..65535, an empty host or anything after the port is an
:class:`~explainer_service.errors.InputError` naming the text.
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import InputError
from ..settings import TRITON_DEFAULT_GRPC_PORT

__all__ = ["parse_grpc_address", "format_grpc_address"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def parse_grpc_address(text: str, default_port: int = TRITON_DEFAULT_GRPC_PORT) -> tuple[str, int]:
    """``(host, port)`` of a gRPC address; IPv6 hosts are returned without brackets.

    InputError (naming ``text``) for an empty address, a refused scheme, a bad host or a port
    that is not an integer in 1..65535.
    """
    raw = text
    s = text.strip()
    if not s:
        raise InputError("the Triton address is empty (expected HOST or HOST:PORT, e.g. 127.0.0.1:8001)")

    def bad(problem: str) -> InputError:
        return InputError(f"Triton address {raw!r}: {problem} (expected HOST, HOST:PORT or [IPV6]:PORT)")

    scheme, sep, rest = s.partition("://")
    if sep:
        if scheme.lower() in ("http", "https"):
            raise bad(f"{scheme}:// is Triton's HTTP endpoint; give its gRPC address (port 8001 by default)")
        if scheme.lower() != "grpc":
            raise bad(f"unknown scheme {scheme}://")
        s = rest
    if s.endswith("/"):
        s = s[:-1]
    if "/" in s or "?" in s or "#" in s or any(c.isspace() for c in s):
        raise bad("a path, query or space after the address")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise bad("'[' without ']'")
        host, tail = s[1:end], s[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        if tail and not tail.startswith(":"):
            raise bad(f"unexpected {tail!r} after ']'")
        port_text = tail[1:] if tail else None
    elif s.count(":") > 1:
        raise bad("an IPv6 address needs brackets, e.g. [::1]:8001")
    else:
        host, sep, port_text_ = s.partition(":")
        port_text = port_text_ if sep else None
        if not host:
            raise bad("no host")
        if not _HOSTNAME.match(host):
            raise bad(f"{host!r} is not a host name or address")
    if port_text is None:
        port = default_port
    else:
        if not port_text.isdigit() or not port_text.isascii():
            raise bad(f"port {port_text!r} is not a number")
        port = int(port_text)
    if not 1 <= port <= 65535:
        raise bad(f"port {port} is outside 1..65535")
    return host, port


def format_grpc_address(host: str, port: int) -> str:
    """``HOST:PORT`` (``[IPV6]:PORT`` for an IPv6 host), the form gRPC dials."""
    if not 1 <= int(port) <= 65535:
        raise InputError(f"port {port} is outside 1..65535")
    if ":" in host:
        return f"[{host}]:{int(port)}"
    return f"{host}:{int(port)}"
