"""Fixtures of the integration tests: real servers on free loopback ports, always stopped.

``redis_server``: one embedded redis-server (the job-store configuration: AOF, noeviction,
loopback) for the session, in a temporary folder. ``job_store``: a RedisJobStore on it whose keys
carry a prefix of their own (tests never see each other's jobs); its keys are removed after the
test. Tests that kill or restart Redis start their own :class:`EmbeddedRedis`.

``pair``: the demo pair's encoded bytes (a module may define its own ``pair``, e.g. as paths);
``local_model``: the default model in-process (onnxruntime), opened once per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from explainer_service.pipeline import open_face_model
from explainer_service.store import EmbeddedRedis, RedisJobStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")), startup_timeout=30)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def job_store(redis_server: EmbeddedRedis) -> Iterator[RedisJobStore]:
    store = RedisJobStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:10]}", timeout_s=5)
    try:
        yield store
    finally:
        import redis

        client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{store.prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
            store.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    from explainer_service.demo import make_demo_pair

    a, b = make_demo_pair(tmp_path_factory.mktemp("pair"))
    return a.read_bytes(), b.read_bytes()


@pytest.fixture(scope="module")
def local_model() -> Iterator[Any]:
    with open_face_model(engine="local") as model:
        yield model
