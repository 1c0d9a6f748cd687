"""Wake-ups for watchers of jobs: :class:`JobEvents`, one pub/sub connection per event loop.

Every write of :class:`~explainer_service.store.RedisJobStore` that changes a job (state,
progress, cancel flag, a stored shard, pair or result, a delete) publishes a word on the job's
channel (``keys.events_channel``: ``fx:job:{<id>}:events``) in the same Lua script that writes,
so a notification never precedes the change it announces. :class:`JobEvents` listens to all of
them with one ``PSUBSCRIBE`` on ``keys.events_pattern`` (one connection and one reader task
however many jobs are watched, no thread) and wakes the :class:`JobWaiter` of each watcher of
that job. A watcher re-reads the job when woken, or after a fallback period: Redis pub/sub is
at-most-once (a message published while the connection is down is lost), so a lost notification
costs at most that period, and when the connection drops every watcher is woken to re-read.

Use (in the event loop, e.g. a grpc.aio handler)::

    events = JobEvents.for_store(store)          # None when the store publishes nothing
    async with events.subscribe(job_id) as waiter:
        while True:
            waiter.clear()                       # before reading: a change after it wakes us
            record = await asyncio.to_thread(store.get_job, job_id)
            ...
            await waiter.wait(1.0 if events.live else 0.2)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..errors import InputError
from . import keys as K

__all__ = ["JobEvents", "JobWaiter", "DEFAULT_RECONNECT_S"]

log = logging.getLogger(__name__)

#: Longest pause between two attempts to reconnect the listener (the first is 0.1 s).
DEFAULT_RECONNECT_S = 2.0
#: Seconds one read of the listener waits for a message before it checks the connection again.
_READ_S = 1.0


class JobWaiter:
    """One watcher's wake-up: set by :class:`JobEvents` when its job changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        #: notifications received (for tests and logs)
        self.wakeups = 0

    def clear(self) -> None:
        """Forget earlier notifications (call it before reading the job)."""
        self._event.clear()

    def wake(self) -> None:
        self.wakeups += 1
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification at most ``timeout`` seconds: True when one came."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class JobEvents:
    """Notifications of job changes under one key prefix, for the watchers of one event loop.

    Args:
        url: the store's Redis URL.
        prefix: the store's key prefix.
        timeout_s: connect timeout of the listener's connection.
        reconnect_s: the longest pause between reconnect attempts.

    The listener starts on the first :meth:`subscribe` (in the running loop) and runs until
    :meth:`aclose` or the loop's end. :attr:`live` says whether it is subscribed now.
    """

    def __init__(
        self, url: str, *, prefix: str = K.DEFAULT_PREFIX, timeout_s: float = 5.0,
        reconnect_s: float = DEFAULT_RECONNECT_S,
    ) -> None:
        if not timeout_s > 0 or not reconnect_s > 0:
            raise InputError(f"timeouts must be > 0 s, got {timeout_s!r} and {reconnect_s!r}")
        self.url = url
        self.prefix = K.check_prefix(prefix)
        self.timeout_s = float(timeout_s)
        self.reconnect_s = float(reconnect_s)
        self._waiters: dict[str, set[JobWaiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._live = False

    @classmethod
    def for_store(cls, store: Any) -> JobEvents | None:
        """The events of a :class:`~explainer_service.store.RedisJobStore` (its URL, prefix and
        timeout); None for a store that publishes nothing."""
        from .redis_store import RedisJobStore

        if not isinstance(store, RedisJobStore):
            return None
        return cls(store.url, prefix=store.prefix, timeout_s=store.timeout_s)

    @property
    def live(self) -> bool:
        """Whether the listener is subscribed (notifications arrive) now."""
        return self._live

    @property
    def watched(self) -> int:
        """Jobs with at least one waiter."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[JobWaiter]:
        """A waiter woken whenever job ``job_id`` changes, for the block's duration."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="facexplain-job-events")
        waiter = JobWaiter()
        self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[job_id]

    async def aclose(self) -> None:
        """Stop the listener and close its connection (waiters are woken one last time)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind in ("psubscribe", b"psubscribe"):
            self._live = True
            self._wake_all()  # anything missed while not subscribed: re-read
            return
        if kind not in ("pmessage", b"pmessage"):
            return
        job_id = K.job_id_of_channel(message.get("channel") or b"", self.prefix)
        for waiter in self._waiters.get(job_id or "", ()):
            waiter.wake()

    async def _listen(self) -> None:
        import redis.asyncio as aioredis
        import redis.exceptions as rex
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pause = 0.1
        pattern = K.events_pattern(self.prefix)
        while True:
            client: Any = None
            pubsub: Any = None
            try:
                client = aioredis.Redis.from_url(
                    self.url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
                    health_check_interval=10, retry=Retry(NoBackoff(), 0), decode_responses=False,
                )
                pubsub = client.pubsub()
                await pubsub.psubscribe(pattern)
                while True:
                    self._dispatch(await pubsub.get_message(timeout=_READ_S))
                    pause = 0.1
            except (rex.RedisError, OSError, ValueError) as e:
                if self._live:
                    log.warning("job events: listener lost (%s); watchers poll until it is back", type(e).__name__)
                self._live = False
                self._wake_all()
            finally:
                self._live = False
                for closing in (pubsub, client):
                    if closing is not None:
                        with contextlib.suppress(Exception):
                            await closing.aclose()
            await asyncio.sleep(pause)
            pause = min(self.reconnect_s, pause * 2)
