"""gRPC addresses: every accepted form, and a clear InputError naming the text otherwise."""

from __future__ import annotations

import pytest

from explainer_service.errors import InputError
from explainer_service.serving.address import format_grpc_address, parse_grpc_address
from explainer_service.settings import TRITON_DEFAULT_GRPC_PORT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:8001", ("localhost", 8001)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("triton.example.org", ("triton.example.org", TRITON_DEFAULT_GRPC_PORT)),
        ("10.0.0.7", ("10.0.0.7", 8001)),
        ("[::1]:8500", ("::1", 8500)),
        ("[fe80::1]", ("fe80::1", 8001)),
        ("grpc://host:1", ("host", 1)),
        ("GRPC://host:65535/", ("host", 65535)),
        ("  my_host-2:8001  ", ("my_host-2", 8001)),
    ],
)
def test_accepted_forms(text, expected):
    assert parse_grpc_address(text) == expected


def test_missing_port_is_the_given_default_never_443():
    assert parse_grpc_address("host") == ("host", 8001)
    assert parse_grpc_address("host", default_port=1234) == ("host", 1234)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("host:99999", "outside 1..65535"),
        ("host:0", "outside 1..65535"),
        ("host:-1", "not a number"),
        ("host:80a", "not a number"),
        ("host:", "not a number"),
        (":8001", "no host"),
        ("::1", "needs brackets"),
        ("::1:8001", "needs brackets"),
        ("[::1", "without"),
        ("[nothost]:8001", "not an IPv6 address"),
        ("[::1]x", "unexpected"),
        ("[::1]:70000", "outside"),
        ("http://host:8000", "HTTP endpoint"),
        ("https://host", "HTTP endpoint"),
        ("ftp://host:1", "unknown scheme"),
        ("host:8001/v2", "path"),
        ("ho st:8001", "space"),
        ("-host:8001", "not a host name"),
        ("host!:8001", "not a host name"),
    ],
)
def test_bad_addresses_name_the_text_and_the_problem(text, why):
    with pytest.raises(InputError, match=why) as info:
        parse_grpc_address(text)
    assert repr(text) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_address(text):
    with pytest.raises(InputError, match="empty"):
        parse_grpc_address(text)


def test_format_round_trips():
    for text in ["h:1", "127.0.0.1:8001", "[::1]:8001"]:
        assert format_grpc_address(*parse_grpc_address(text)) == text
    assert format_grpc_address("::1", 8001) == "[::1]:8001"
    with pytest.raises(InputError):
        format_grpc_address("h", 0)
