"""Choosing K pairs spread over a pair list's folds, and replacements for the ones that fail.

:class:`PairDraw` is pure index bookkeeping (no image is read here): it chooses ``k`` pairs spread
evenly over the list (pairs are grouped by fold in protocol order, so the choice covers every
fold), and when a chosen pair is dropped (an unreadable image, no face) it draws a replacement:

1. from the unused pairs of the *same fold and label* (``same``), in a fixed pseudo-random order
   of that fold and label (the same dataset always gives the same replacements, whatever the
   evaluation's seed);
2. when that fold has no unused pair of the label left, from the fold with the most unused pairs
   of the label (counted in :attr:`PairDraw.cross_fold`);
3. when no unused pair of the label is left, None: the caller delivers fewer than ``k`` pairs and
   says so.

The first choice is the one ``facexplain evaluate`` always made: the first ``k`` of
``k + max(2, k // 10)`` evenly spaced positions, so results recorded before replacements existed
are reproduced when no pair is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .pairs import Pair

__all__ = ["PairDraw", "evenly_spread"]

# Seeds the order of each (fold, label) pool: fixed, so replacements never depend on a run's seed.
_POOL_SEED = 0x5EED


def evenly_spread(n: int, k: int) -> list[int]:
    """``min(k, n)`` distinct indices of ``range(n)`` spread evenly, ascending: the first ``k`` of
    ``k + max(2, k // 10)`` evenly spaced positions (``facexplain evaluate``'s choice)."""
    if n <= 0 or k <= 0:
        return []
    want = min(n, k + max(2, k // 10))
    idx = np.unique(np.linspace(0, n - 1, want).round().astype(int))
    return [int(i) for i in idx[:k]]


class PairDraw:
    """``k`` pairs of ``pairs`` spread over the folds, with replacements drawn for dropped ones.

    Args:
        pairs: the candidate pairs (their ``fold`` and ``same`` are used).
        k: how many pairs to deliver (>= 1; more than ``len(pairs)`` gives all of them).

    Attributes:
        chosen: the first choice, ``min(k, len(pairs))`` indices into ``pairs``, ascending.
        replaced: replacements drawn so far.
        cross_fold: of those, replacements taken from another fold (the dropped pair's fold had
            no unused pair of its label left).
    """

    def __init__(self, pairs: Sequence[Pair], k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._pairs = list(pairs)
        self.chosen: tuple[int, ...] = tuple(evenly_spread(len(self._pairs), k))
        used = set(self.chosen)
        self._pools: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(self._pairs):
            if i not in used:
                self._pools.setdefault((p.fold, p.same), []).append(i)
        for (fold, same), pool in self._pools.items():
            order = np.random.default_rng([_POOL_SEED, fold, int(same)]).permutation(len(pool))
            # popped from the end: reverse so the first drawn is order[0]
            self._pools[(fold, same)] = [pool[j] for j in order[::-1]]
        self.replaced = 0
        self.cross_fold = 0

    def replace(self, index: int) -> int | None:
        """A replacement for the dropped pair ``index``: an unused pair of the same fold and label,
        else of the same label in the fold with the most unused ones (ties: the lowest fold), else
        None (no unused pair of that label is left). Each pair is handed out at most once."""
        pair = self._pairs[index]
        key = (pair.fold, pair.same)
        if not self._pools.get(key):
            others = [(len(pool), -fold) for (fold, same), pool in self._pools.items() if same == pair.same and pool]
            if not others:
                return None
            _, neg_fold = max(others)
            key = (-neg_fold, pair.same)
            self.cross_fold += 1
        self.replaced += 1
        return self._pools[key].pop()

    def left(self, same: bool) -> int:
        """Unused pairs of label ``same`` still available as replacements."""
        return sum(len(pool) for (_, s), pool in self._pools.items() if s == same)
