"""Progress reporting: one callback type for every long computation, and a reporter for logs.

A computation calls ``progress(done, total)`` as it goes (masks, perturbed images, pairs);
what the caller does with it (a terminal bar, a log line, a job record) is the caller's business.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "LogProgress"]

#: ``progress(done, total)``: ``done`` units of ``total`` finished so far.
Progress = Callable[[int, int], None]


class LogProgress:
    """A :data:`Progress` that writes a line at most every ``every`` seconds (and at the end),
    for runs whose stderr is not a terminal (nohup, CI, a worker's log)."""

    def __init__(self, label: str, *, every: float = 30.0, stream: TextIO | None = None) -> None:
        self.label = label
        self.every = float(every)
        self.stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._last = self._start

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self._start
        pct = 100.0 * done / total if total else 100.0
        rate = f", {done / elapsed:.2f}/s" if elapsed > 0 and done else ""
        print(f"{self.label}: {done}/{total} ({pct:.0f} %, {elapsed:.0f} s{rate})", file=self.stream, flush=True)
