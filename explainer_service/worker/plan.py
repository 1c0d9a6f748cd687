"""How a job is cut into worker tasks, and when a failed task is tried again: pure functions.

A job of a mask-sampling method (CorrRISE, and corrrise-plus, which spends CorrRISE's own shards;
:data:`SHARDED_METHODS`) of N masks becomes mask shards [lo, hi) (:func:`plan_shards`): every shard but
the last holds ``shard_masks`` masks rounded up to a multiple of the accumulation block
(``methods.corrrise.ACCUMULATION_BLOCK``), so shard boundaries fall on block boundaries and each
shard is a few seconds of work. Any other method is one task for the whole pair
(:func:`plan_explain`). A task's unit is named like the store's leases (``"shard:0-96"``,
``"job"``). :func:`retry_delay` is the backoff of a retryable failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..methods.corrrise import ACCUMULATION_BLOCK

__all__ = ["Unit", "plan_shards", "plan_explain", "retry_delay", "SHARDED_METHODS"]

#: Methods whose work is split into mask shards (the others run as one task): each has
#: ``run_shard(chip_a, chip_b, lo, hi)`` returning CorrRISE's ``ShardResult`` and ``finish(merged)``,
#: and its job's ``total`` is its number of masks.
SHARDED_METHODS = frozenset({"corrrise", "corrrise-plus"})


def _count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Unit:
    """One task of a job: masks [lo, hi) of a sharded method, or the whole pair (lo, hi None)."""

    lo: int | None = None
    hi: int | None = None

    @property
    def sharded(self) -> bool:
        return self.lo is not None

    @property
    def lease(self) -> str:
        """The unit's name in the store's leases (``keys.lease_unit``)."""
        return "job" if self.lo is None else f"shard:{self.lo}-{self.hi}"


def plan_shards(n_masks: int, shard_masks: int, *, block: int = ACCUMULATION_BLOCK) -> list[tuple[int, int]]:
    """Masks [0, n_masks) as consecutive shards [lo, hi) of ``shard_masks`` rounded up to a
    multiple of ``block`` (the last shard takes the rest).

    >>> plan_shards(100, 40, block=16)
    [(0, 48), (48, 96), (96, 100)]
    """
    n = _count(n_masks, "masks of a job", 1)
    size = _count(shard_masks, "masks per shard", 1)
    step = _count(block, "accumulation block", 1)
    size = -(-size // step) * step
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def plan_explain(method: str, total: int, shard_masks: int) -> list[Unit]:
    """The tasks of an explain job: mask shards of a sharded method (``total`` masks), else one."""
    if method in SHARDED_METHODS:
        return [Unit(lo, hi) for lo, hi in plan_shards(total, shard_masks)]
    return [Unit()]


def retry_delay(attempt: int, *, base: float = 1.0, cap: float = 30.0, jitter: float = 0.0) -> float:
    """Seconds before retry number ``attempt`` (0 first): ``base * 2**attempt`` up to ``cap``,
    stretched by ``jitter`` in [0, 1) (a caller's random draw, so workers do not retry in step)."""
    n = _count(attempt, "retry attempt", 0)
    if not 0.0 <= jitter < 1.0:
        raise InputError(f"jitter must be in [0, 1), got {jitter!r}")
    if not (base > 0 and cap >= base):
        raise InputError(f"retry delays need 0 < base <= cap, got base {base!r}, cap {cap!r}")
    return min(cap, base * 2.0 ** min(n, 32)) * (1.0 + jitter)
