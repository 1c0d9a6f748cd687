"""Shards of a CorrRISE explanation: the accumulators and per-mask scores of disjoint mask ranges,
plain values to store and merge in any order (:class:`ShardResult`).

Pipeline role: the contract between the engines that compute shards (the NumPy engine of
:class:`~.corrrise.CorrRISE` and the device engine of :mod:`.corrrise_device`) and what stores,
merges and finishes them (``store/``, ``worker/``, :meth:`CorrRISE.finish <.corrrise.CorrRISE.finish>`).
It depends on the accumulators only, so both engines import it without importing each other.
Accumulators are fed in fixed blocks of :data:`ACCUMULATION_BLOCK` masks, so neither batching nor
sharding changes a map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..correlation import CorrelationAccumulator
from ..errors import InputError

__all__ = ["ShardResult", "ACCUMULATION_BLOCK", "SHARD_STATE_VERSION"]

#: Masks per accumulator update, whatever the batching (so batching never changes a map).
ACCUMULATION_BLOCK = 16
#: Version of :meth:`ShardResult.state`'s layout.
SHARD_STATE_VERSION = 1


def _coalesce(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, non-overlapping ranges with touching ones joined; InputError on an overlap."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo < out[-1][1]:
            raise InputError(f"shards overlap: masks [{out[-1][0]},{out[-1][1]}) and [{lo},{hi})")
        if out and lo == out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _merge_optional(
    x: CorrelationAccumulator | None, y: CorrelationAccumulator | None
) -> CorrelationAccumulator | None:
    """Both merged, or None when either is missing (a shard stored before even accumulators)."""
    return None if x is None or y is None else x.merge(y)


@dataclass
class ShardResult:
    """Accumulators and per-mask scores of the masks of ``ranges`` (sorted, disjoint [lo, hi)
    ranges of the configured set) for both faces, and the clean pair they were scored against.

    ``scores_a``/``scores_b`` (masks,) float64 follow the mask index over the ranges.
    ``emb_a``/``emb_b`` (D,) and ``score`` are the clean embeddings and cosine; ``identity``
    names the mask set, correlation, model and chip (shards merge only with equal identities);
    ``clean_passes`` counts the clean embeddings computed for the shards merged here (2 each).
    ``even_a``/``even_b`` accumulate the even-indexed masks only (the odd half is the whole minus
    them, :meth:`~explainer_service.correlation.CorrelationAccumulator.subtract`): the split-half
    maps of the uncertainty; None in a shard stored before they existed.
    """

    ranges: tuple[tuple[int, int], ...]
    acc_a: CorrelationAccumulator
    acc_b: CorrelationAccumulator
    scores_a: np.ndarray
    scores_b: np.ndarray
    emb_a: np.ndarray
    emb_b: np.ndarray
    score: float
    identity: str = ""
    clean_passes: int = 0
    even_a: CorrelationAccumulator | None = None
    even_b: CorrelationAccumulator | None = None

    @property
    def start(self) -> int:
        """First mask index covered."""
        return self.ranges[0][0] if self.ranges else 0

    @property
    def stop(self) -> int:
        """One past the last mask index covered."""
        return self.ranges[-1][1] if self.ranges else 0

    @property
    def masks(self) -> int:
        """Number of masks covered."""
        return sum(hi - lo for lo, hi in self.ranges)

    def covers(self, n_masks: int) -> bool:
        """True when the shard holds every mask of a set of ``n_masks``."""
        return self.ranges == ((0, int(n_masks)),)

    def merge(self, other: ShardResult) -> ShardResult:
        """The union of two shards with disjoint mask ranges, in any order; neither is changed.

        Merging is associative and commutative up to float64 rounding (the maps agree to ~1e-12).
        InputError when the ranges overlap, or the shards explain another pair or configuration.
        """
        if not isinstance(other, ShardResult):
            raise InputError(f"can only merge a ShardResult, got {type(other).__name__}")
        if self.identity != other.identity:
            raise InputError("cannot merge shards of different mask sets, correlations, models or chips")
        if not (np.array_equal(self.emb_a, other.emb_a) and np.array_equal(self.emb_b, other.emb_b)):
            raise InputError("cannot merge shards of different pairs (their clean embeddings differ)")
        ranges = _coalesce(list(self.ranges) + list(other.ranges))
        parts: list[tuple[int, np.ndarray, np.ndarray]] = []
        for shard in (self, other):
            at = 0
            for lo, hi in shard.ranges:
                n = hi - lo
                parts.append((lo, shard.scores_a[at : at + n], shard.scores_b[at : at + n]))
                at += n
        parts.sort(key=lambda p: p[0])
        return ShardResult(
            ranges,
            self.acc_a.merge(other.acc_a),
            self.acc_b.merge(other.acc_b),
            np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
            np.concatenate([p[2] for p in parts]) if parts else np.zeros(0),
            self.emb_a,
            self.emb_b,
            self.score,
            self.identity,
            self.clean_passes + other.clean_passes,
            _merge_optional(self.even_a, other.even_a),
            _merge_optional(self.even_b, other.even_b),
        )

    def state(self) -> dict[str, np.ndarray | int | float | str]:
        """The shard as plain values (NumPy arrays, ints, floats, strings), e.g. for
        ``np.savez(file, **shard.state())``; :meth:`from_state` rebuilds an equal shard."""
        out: dict[str, np.ndarray | int | float | str] = {
            "version": SHARD_STATE_VERSION,
            "ranges": np.asarray(self.ranges, np.int64).reshape(-1, 2),
            "scores_a": np.asarray(self.scores_a, np.float64).copy(),
            "scores_b": np.asarray(self.scores_b, np.float64).copy(),
            "emb_a": np.asarray(self.emb_a).copy(),
            "emb_b": np.asarray(self.emb_b).copy(),
            "score": float(self.score),
            "identity": self.identity,
            "clean_passes": int(self.clean_passes),
        }
        for face, acc in (("a", self.acc_a), ("b", self.acc_b)):
            for key, value in acc.state().items():
                out[f"acc_{face}.{key}"] = value
        for face, even in (("a", self.even_a), ("b", self.even_b)):
            if even is not None:
                for key, value in even.state().items():
                    out[f"even_{face}.{key}"] = value
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ShardResult:
        """Rebuild a shard from :meth:`state`'s mapping (also an ``np.load`` of it, whose scalars
        are 0-d arrays); InputError when keys are missing or values inconsistent."""
        if not isinstance(state, Mapping):
            raise InputError(f"a shard state must be a mapping, got {type(state).__name__}")
        required = ("version", "ranges", "scores_a", "scores_b", "emb_a", "emb_b", "score", "identity",
                    "clean_passes")
        missing = [k for k in required if k not in state]
        if missing:
            raise InputError(f"shard state lacks the keys {missing}")
        try:
            version = int(state["version"])
            if version != SHARD_STATE_VERSION:
                raise InputError(f"shard state version {version} is not {SHARD_STATE_VERSION}")
            ranges_arr = np.asarray(state["ranges"])
            if ranges_arr.dtype.kind not in "iu" or (ranges_arr.size and ranges_arr.ndim != 2):
                raise InputError("shard state ranges must be integer (K, 2)")
            ranges_list = [(int(lo), int(hi)) for lo, hi in ranges_arr.reshape(-1, 2)]
            scores_a = np.array(state["scores_a"], np.float64)
            scores_b = np.array(state["scores_b"], np.float64)
            emb_a = np.array(state["emb_a"])
            emb_b = np.array(state["emb_b"])
            score = float(state["score"])
            raw_identity = state["identity"]
            identity = raw_identity if isinstance(raw_identity, str) else str(np.asarray(raw_identity).item())
            clean_passes = int(state["clean_passes"])
            accs = []
            for face in ("a", "b"):
                prefix = f"acc_{face}."
                acc_state = {k[len(prefix):]: state[k] for k in state if k.startswith(prefix)}
                accs.append(CorrelationAccumulator.from_state(acc_state))
            evens: list[CorrelationAccumulator | None] = []
            for face in ("a", "b"):
                prefix = f"even_{face}."
                even_state = {k[len(prefix):]: state[k] for k in state if k.startswith(prefix)}
                evens.append(CorrelationAccumulator.from_state(even_state) if even_state else None)
        except InputError:
            raise
        except (TypeError, ValueError) as e:
            raise InputError(f"shard state has bad values ({e})") from None
        if any(lo < 0 or hi <= lo for lo, hi in ranges_list):
            raise InputError(f"shard state ranges must be non-empty [lo, hi) with lo >= 0, got {ranges_list}")
        ranges = _coalesce(ranges_list)
        n = sum(hi - lo for lo, hi in ranges)
        if scores_a.shape != (n,) or scores_b.shape != (n,):
            raise InputError(f"shard state scores must have shape ({n},), one per mask of its ranges")
        if accs[0].n != n or accs[1].n != n:
            raise InputError(f"shard state accumulators hold {accs[0].n}/{accs[1].n} masks, its ranges {n}")
        n_even = sum((hi + 1) // 2 - (lo + 1) // 2 for lo, hi in ranges)
        for even in evens:
            if even is not None and even.n != n_even:
                raise InputError(f"shard state even-mask accumulators hold {even.n} masks, its ranges {n_even}")
        if (evens[0] is None) != (evens[1] is None):
            raise InputError("shard state has the even-mask accumulator of one face only")
        return cls(ranges, accs[0], accs[1], scores_a, scores_b, emb_a, emb_b, score, identity, clean_passes,
                   evens[0], evens[1])
