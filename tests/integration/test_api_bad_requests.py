"""Regressions found by the fuzzing of ``tests/reliability/test_fuzz.py``, kept as plain tests on
an in-process API server (a real redis-server, no worker): each failed before its fix.

- Bytes that are not a valid message (a string field that is not UTF-8, a field cut short) were
  answered UNKNOWN ("Unexpected DecodeError"): now INVALID_ARGUMENT naming the call, also for a
  streaming call; with a token, a call without it is UNAUTHENTICATED whatever its bytes.
- An audit's inline image over FACEXPLAIN_MAX_IMAGE_BYTES was accepted and stored: now
  RESOURCE_EXHAUSTED naming the pair and the variable, as Verify and Explain answer.
- A dataset spec with a NUL character, or a path too long for the file system, was INTERNAL
  (ValueError, OSError): now INVALID_ARGUMENT.
- A message quoting request data carried its control characters (an ESC could drive the
  client's terminal): now escaped.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from explainer_service.api.pb import audit_pb2, service_pb2, types_pb2
from explainer_service.api.server import BackgroundServer, ServerConfig
from explainer_service.api.service import ApiService
from explainer_service.api.status import printable
from explainer_service.settings import get_settings
from explainer_service.store import EmbeddedRedis, RedisJobStore

SERVICE = "/facexplain.v1.Facexplain/"
IMAGE_LIMIT = 4096


def _send(channel: grpc.Channel, call: str, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[str, str]:
    try:
        if call == "WatchJob":
            for _ in channel.unary_stream(SERVICE + call)(body, timeout=30, metadata=metadata):
                pass
        else:
            channel.unary_unary(SERVICE + call)(body, timeout=30, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-bad"), startup_timeout=30) as server:
        yield server.url


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="module")
def address(redis_url: str, root: Path) -> Iterator[str]:
    base = get_settings()
    settings = dataclasses.replace(base, dataset_roots=(root,),
                                   limits=dataclasses.replace(base.limits, max_image_bytes=IMAGE_LIMIT))
    store = RedisJobStore(redis_url, prefix=f"bad{uuid.uuid4().hex[:8]}")
    queued: list[str] = []
    with ApiService(store, settings=settings, engine="local", enqueue=queued.append) as service, \
            BackgroundServer(service) as addr:
        yield addr
    store.close()


@pytest.mark.parametrize(("call", "body"), [
    ("Verify", b"\xff\xff\xff"),
    ("Verify", b"\x12\x02\xff\xfe"),      # VerifyRequest.model: not UTF-8
    ("GetJob", b"\x0a\x02\xff\xfe"),      # JobRef.id: not UTF-8
    ("WatchJob", b"\x0a\x05abc"),         # a field cut short, on a streaming call
    ("SubmitAudit", b"\x0a\x98\x80\x40"),  # inline pairs announced, not sent
])
def test_bytes_that_are_not_a_message_are_invalid_argument(address: str, call: str, body: bytes) -> None:
    with grpc.insecure_channel(address) as channel:
        code, message = _send(channel, call, body)
    assert code == "INVALID_ARGUMENT", (code, message)
    assert message.startswith(f"{call}: the request is not a valid facexplain.v1.")


def test_an_undecodable_call_without_the_token_is_unauthenticated(redis_url: str) -> None:
    store = RedisJobStore(redis_url, prefix=f"badtok{uuid.uuid4().hex[:8]}")
    token = uuid.uuid4().hex
    with ApiService(store, engine="local", enqueue=lambda job_id: None) as service, \
            BackgroundServer(service, ServerConfig(token=token)) as addr, grpc.insecure_channel(addr) as channel:
        assert _send(channel, "GetJob", b"\x0a\x02\xff\xfe")[0] == "UNAUTHENTICATED"
        code, message = _send(channel, "GetJob", b"\x0a\x02\xff\xfe", (("authorization", f"Bearer {token}"),))
        assert code == "INVALID_ARGUMENT" and "not a valid" in message
    store.close()


def test_an_audit_image_over_the_byte_limit_is_resource_exhausted(address: str) -> None:
    request = audit_pb2.SubmitAuditRequest()
    request.pairs.pairs.add(pair=types_pb2.ImagePair(a=types_pb2.Image(data=b"x" * 10),
                                                     b=types_pb2.Image(data=b"\x89PNG" + b"\0" * IMAGE_LIMIT)))
    with grpc.insecure_channel(address) as channel:
        code, message = _send(channel, "SubmitAudit", request.SerializeToString())
    assert code == "RESOURCE_EXHAUSTED"
    assert f"pair 0 image b: encoded image of {IMAGE_LIMIT + 4} bytes is over the limit {IMAGE_LIMIT}" in message
    assert "FACEXPLAIN_MAX_IMAGE_BYTES" in message


@pytest.mark.parametrize(("spec", "says"), [
    ("lfw:\x00", "NUL"),
    ("csv:inside\x00/../x.csv", "NUL"),
    ("lfw:" + "a/" * 3000, "cannot look up the path"),
])
def test_dataset_specs_that_no_file_system_takes_are_invalid_argument(address: str, spec: str, says: str) -> None:
    with grpc.insecure_channel(address) as channel:
        code, message = _send(channel, "SubmitAudit", audit_pb2.SubmitAuditRequest(dataset=spec).SerializeToString())
    assert code == "INVALID_ARGUMENT" and says in message, (code, message)


def test_control_characters_of_the_request_are_escaped_in_messages(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        code, message = _send(channel, "SubmitAudit",
                              audit_pb2.SubmitAuditRequest(dataset="lfw:\x1b[2J\x1f").SerializeToString())
    assert code == "INVALID_ARGUMENT" and message.isprintable()
    assert "\\x1b[2J\\x1f" in message
    assert printable("a\nb\x07") == "a\\nb\\x07" and printable("ok é") == "ok é"


def test_a_valid_request_still_gets_through(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        assert _send(channel, "ListModels", service_pb2.ListModelsRequest().SerializeToString()) == ("OK", "")
        code, message = _send(channel, "GetJob", service_pb2.JobRef(id="f" * 64).SerializeToString())
    assert code == "NOT_FOUND" and "no job" in message
