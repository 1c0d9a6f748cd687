"""Loading a pair set's images with a report: unreadable images skip their pairs, never silently."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .pairs import Dataset, Pair
from .sources import ImageRef, load_pair_image

__all__ = ["LoadedPair", "LoadReport", "load_pairs_checked"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPair:
    """A pair and its two decoded images, ``(H, W, 3)`` uint8 RGB, read-only and shared between
    the pairs that use the same image."""

    pair: Pair
    a: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pairs_checked` kept and skipped.

    Attributes:
        total: pairs considered.
        loaded: pairs whose two images loaded.
        skipped: pairs dropped because an image could not be loaded (``total - loaded``).
        failures: one reason per unreadable image, keyed by its path or name.
    """

    total: int
    loaded: int
    skipped: int
    failures: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: ``kept 2998 of 3000 pairs; skipped 2 (1 unreadable image)``."""
        if not self.skipped:
            return f"kept all {self.total} pairs"
        return (
            f"kept {self.loaded} of {self.total} pairs; skipped {self.skipped} "
            f"({len(self.failures)} unreadable image{'s' if len(self.failures) != 1 else ''})"
        )


def load_pairs_checked(
    dataset: Dataset | Iterable[Pair],
    *,
    loader: Callable[[ImageRef], np.ndarray] = load_pair_image,
) -> tuple[list[LoadedPair], LoadReport]:
    """Load the images of every pair, each distinct image once; skip the pairs with an unreadable
    image and say so: the report counts the skipped pairs and gives a reason per image, and a
    warning is logged when anything was skipped.

    Only :class:`~explainer_service.errors.InputError` (a bad image) is caught; other errors
    propagate.
    """
    pairs = list(dataset.pairs if isinstance(dataset, Dataset) else dataset)
    cache: dict[Any, np.ndarray | None] = {}
    failures: dict[str, str] = {}

    def get(ref: ImageRef) -> np.ndarray | None:
        if ref not in cache:
            try:
                img = loader(ref)
                img.flags.writeable = False
                cache[ref] = img
            except InputError as e:
                failures[str(ref)] = str(e)
                cache[ref] = None
        return cache[ref]

    out: list[LoadedPair] = []
    for pair in pairs:
        a, b = get(pair.a), get(pair.b)
        if a is not None and b is not None:
            out.append(LoadedPair(pair, a, b))
    report = LoadReport(len(pairs), len(out), len(pairs) - len(out), failures)
    if report.skipped:
        first = next(iter(failures.values()))
        log.warning("%s; first failure: %s", report.summary(), first)
    return out, report
