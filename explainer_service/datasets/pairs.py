"""Pairs and datasets: the types every reader returns, and the fold helpers readers share.

A :class:`Pair` is two :data:`~explainer_service.datasets.sources.ImageRef` s, whether they show the
same person, and its 0-based fold; a :class:`Dataset` is a named tuple of pairs in protocol order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..fileio import read_regular_text
from .sources import ImageRef

__all__ = ["ALIGNED_DIR", "DEFAULT_FOLDS", "Pair", "Dataset", "consecutive_folds"]

#: The folder of ArcFace-aligned 112x112 crops that mirrors a dataset's image folder.
ALIGNED_DIR = "aligned112"
#: Folds of the LFW-style protocols (LFW, CPLFW, CALFW, insightface .bin).
DEFAULT_FOLDS = 10


@dataclass(frozen=True)
class Pair:
    """Two images (paths or in-memory sources), whether they show the same person, and the fold."""

    a: ImageRef
    b: ImageRef
    same: bool
    fold: int


@dataclass(frozen=True)
class Dataset:
    """A named pair set.

    Attributes:
        name: short name (``"lfw"``, ``"cfp-fp"``, the .bin/.csv file stem, ...).
        pairs: the pairs, grouped by fold in protocol order (a tuple; lists are converted).
        aligned: whether the images are ArcFace-aligned 112x112 crops (no detection needed).
        source: where it was read from (the spec string), for reports.
    """

    name: str
    pairs: tuple[Pair, ...]
    aligned: bool
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def folds(self) -> list[int]:
        """The distinct fold numbers, ascending."""
        return sorted({p.fold for p in self.pairs})


def consecutive_folds(n: int, folds: int = DEFAULT_FOLDS) -> list[int]:
    """Fold of each of ``n`` pairs split into ``min(folds, n)`` consecutive folds, the first
    ``n % k`` one pair longer: the split of scikit-learn's ``KFold(shuffle=False)`` that
    insightface's ``verification.py`` uses."""
    if n <= 0:
        return []
    k = min(folds, n)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [f for f, size in enumerate(sizes) for _ in range(size)]


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped); InputError naming ``what`` if unreadable
    or not a regular file (a FIFO is refused, never read)."""
    return read_regular_text(path, what).splitlines()
