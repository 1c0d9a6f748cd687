"""Fixtures of the integration tests: real servers on free loopback ports, always stopped.

``redis_server``: one embedded redis-server (the job-store configuration: AOF, noeviction,
loopback) for the session, in a temporary folder. ``job_store``: a RedisJobStore on it whose keys
carry a prefix of their own (tests never see each other's jobs); its keys are removed after the
test. Tests that kill or restart Redis start their own :class:`EmbeddedRedis`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
