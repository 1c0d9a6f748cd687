"""Job change notifications without a server: the channel names (``store.keys``) and the
waiter a watcher sleeps on (``store.events.JobWaiter``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from explainer_service.errors import InputError
from explainer_service.store import keys as K
from explainer_service.store.events import JobEvents, JobWaiter


def test_channel_names_round_trip_under_their_prefix_only():
    job = "ab" * 32
    channel = K.events_channel(job, "fx")
    assert channel == "fx:job:{" + job + "}:events"
    assert K.job_id_of_channel(channel, "fx") == job
    assert K.job_id_of_channel(channel.encode(), "fx") == job
    assert K.job_id_of_channel(channel, "fx2") is None  # another store's jobs
    assert K.job_id_of_channel("fx:job:{../x}:events", "fx") is None
    assert K.job_id_of_channel("fx:job:{a}:result", "fx") is None
    assert K.events_pattern("t-1.x") == "t-1.x:job:*:events"
    with pytest.raises(InputError, match="key prefix"):
        K.events_pattern("a*b")
    with pytest.raises(InputError, match="malformed"):
        K.events_channel("a b", "fx")


def test_a_waiter_wakes_on_a_notification_and_times_out_without_one():
    async def main() -> tuple[bool, float, bool, float, int]:
        waiter = JobWaiter()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, waiter.wake)
        t0 = time.perf_counter()
        woken = await waiter.wait(10)
        woke_s = time.perf_counter() - t0
        waiter.clear()
        t0 = time.perf_counter()
        timed_out = not await waiter.wait(0.1)
        return woken, woke_s, timed_out, time.perf_counter() - t0, waiter.wakeups

    woken, woke_s, timed_out, waited_s, wakeups = asyncio.run(main())
    assert woken and woke_s < 5
    assert timed_out and 0.09 <= waited_s < 5
    assert wakeups == 1


def test_a_store_without_notifications_has_no_events_and_bad_periods_are_refused():
    assert JobEvents.for_store(object()) is None
    with pytest.raises(InputError, match="timeouts must be > 0"):
        JobEvents("redis://127.0.0.1:1/0", timeout_s=0)
