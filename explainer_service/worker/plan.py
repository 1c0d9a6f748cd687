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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..methods.corrrise import ACCUMULATION_BLOCK, DEFAULT_UNTIL_STEP, check_until

__all__ = [
    "Unit", "plan_shards", "plan_explain", "retry_delay", "SHARDED_METHODS", "Until", "UNTIL_WAVE_SHARDS",
    "UNTIL_METHODS", "shard_masks_of",
]

#: Methods whose work is split into mask shards (the others run as one task): each has
#: ``run_shard(chip_a, chip_b, lo, hi)`` returning CorrRISE's ``ShardResult`` and ``finish(merged)``,
#: and its job's ``total`` is its number of masks.
SHARDED_METHODS = frozenset({"corrrise", "corrrise-plus"})


#: Methods that stop early on their maps' agreement (``attribute_until``).
UNTIL_METHODS = frozenset({"corrrise"})
#: Step shards per wave of an early-stopping job: run at once by as many workers, checked together
#: (a wave's masks past the stopping point are computed and not used).
UNTIL_WAVE_SHARDS = 2


@dataclass(frozen=True)
class Until:
    """Early stopping of a CorrRISE job: draw ``step``-mask shards of the seeded set until both
    maps' predicted split-half agreement reaches ``agreement`` or ``max_masks`` are spent (the
    rule and schedule of ``CorrRISE.attribute_until``). InputError for bad values
    (``check_until``)."""

    agreement: float
    max_masks: int
    step: int = DEFAULT_UNTIL_STEP

    def __post_init__(self) -> None:
        check_until(self.agreement, self.max_masks, self.step)
        object.__setattr__(self, "agreement", float(self.agreement))
        object.__setattr__(self, "max_masks", int(self.max_masks))
        object.__setattr__(self, "step", int(self.step))

    @property
    def wave(self) -> int:
        """Masks per wave: :data:`UNTIL_WAVE_SHARDS` steps."""
        return UNTIL_WAVE_SHARDS * self.step

    def wave_end(self, frontier: int) -> int:
        """The end of the wave after the masks [0, ``frontier``) (0: the first wave's end)."""
        return min(int(frontier) + self.wave, self.max_masks)

    def wave_start(self, frontier: int) -> int:
        """Where the wave ending at ``frontier`` began (waves end at multiples of :attr:`wave`,
        the last at ``max_masks``)."""
        return max(0, (int(frontier) - 1) // self.wave * self.wave)

    def boundaries(self, lo: int, hi: int) -> list[int]:
        """The step ends in (lo, hi] where the rule is checked: multiples of ``step`` and
        ``max_masks``."""
        ends = list(range((lo // self.step + 1) * self.step, min(hi, self.max_masks) + 1, self.step))
        if lo < self.max_masks <= hi and (not ends or ends[-1] != self.max_masks):
            ends.append(self.max_masks)
        return ends

    def to_dict(self) -> dict[str, Any]:
        """``{"agreement": R, "max_masks": M, "step": S}`` (a job's ``until`` parameters)."""
        return {"agreement": self.agreement, "max_masks": self.max_masks, "step": self.step}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Until | None:
        """The ``until`` parameters of a job's params, or None (no early stopping); InputError
        when they are malformed."""
        raw = params.get("until") if isinstance(params, Mapping) else None
        if raw is None:
            return None
        if not isinstance(raw, Mapping) or set(raw) - {"agreement", "max_masks", "step"} or not {
            "agreement", "max_masks"
        } <= set(raw):
            raise InputError(f"until parameters must be {{agreement, max_masks, step}}, got {raw!r}")
        return cls(raw["agreement"], raw["max_masks"], raw.get("step", DEFAULT_UNTIL_STEP))


def shard_masks_of(params: Mapping[str, Any], shard_masks: int) -> int:
    """Masks per shard of a job with ``params``: its ``until`` step, else ``shard_masks``."""
    until = Until.from_params(params)
    return shard_masks if until is None else until.step


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
