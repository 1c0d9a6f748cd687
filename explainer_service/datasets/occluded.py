"""Occluded pair sets: one image of every pair covered by a seeded synthetic occluder.

Occluded images are not stored: each pair carries an :class:`OccludedImage` (source image,
occluder, index) that recomputes its pixels and mask on load (a millisecond; deterministic), so
there is no cache folder and no memory cost. :func:`occluder_mask` returns the mask of such an
image for evaluation. The occluders themselves are drawn by :mod:`explainer_service.occlusion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InputError
from ..occlusion import Occluder
from .pairs import Dataset, Pair
from .sources import ImageRef, load_pair_image

__all__ = ["OccludedImage", "occluded_dataset", "occluder_mask"]


@dataclass(frozen=True)
class OccludedImage:
    """An occluded variant of a dataset image, computed on load (an :class:`ImageSource`).

    Attributes:
        source: the original image reference.
        occluder: the generator.
        index: the draw index (the pair's index in its dataset).
    """

    source: ImageRef
    occluder: Occluder
    index: int

    @property
    def name(self) -> str:
        kind, seed = self.occluder.kind_for(self.index), self.occluder.seed
        return f"{self.source}[occluded:{kind},seed={seed},index={self.index}]"

    def load_with_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """``(occluded image (H, W, 3) uint8, occluder mask (H, W) bool)``."""
        return self.occluder.occlude(load_pair_image(self.source), self.index)

    def load(self) -> np.ndarray:
        return self.load_with_mask()[0]

    def mask(self) -> np.ndarray:
        return self.load_with_mask()[1]

    def __str__(self) -> str:
        return self.name


def occluder_mask(ref: ImageRef) -> np.ndarray | None:
    """The ``(H, W)`` bool occluder mask of an :class:`OccludedImage`, None for any other image."""
    return ref.mask() if isinstance(ref, OccludedImage) else None


def occluded_dataset(
    dataset: Dataset, occluder: Occluder, which: Literal["a", "b"] = "b", *, allow_unaligned: bool = False
) -> Dataset:
    """The occluded variant of a pair set: image ``which`` of pair ``i`` becomes
    ``OccludedImage(image, occluder, i)``; labels and folds are kept.

    Raises:
        InputError: ``which`` not ``"a"``/``"b"``; a dataset whose images are not ArcFace-aligned
            (the occluders are placed from the template) unless ``allow_unaligned``.
    """
    if which not in ("a", "b"):
        raise InputError(f"which must be 'a' or 'b', got {which!r}")
    if not isinstance(occluder, Occluder):
        raise InputError(f"occluder must be an Occluder, got {type(occluder).__name__}")
    if not dataset.aligned and not allow_unaligned:
        raise InputError(
            f"dataset {dataset.name!r} is not ArcFace-aligned; occluders follow the 112x112 template "
            "(read the aligned112 mirror, e.g. lfw-aligned:PATH, or pass allow_unaligned=True)"
        )
    pairs = []
    for i, p in enumerate(dataset.pairs):
        if which == "a":
            pairs.append(Pair(OccludedImage(p.a, occluder, i), p.b, p.same, p.fold))
        else:
            pairs.append(Pair(p.a, OccludedImage(p.b, occluder, i), p.same, p.fold))
    name = f"{dataset.name}+occ-{occluder.kind}-s{occluder.seed}"
    return Dataset(
        name,
        tuple(pairs),
        dataset.aligned,
        f"{dataset.source} occluded ({occluder.kind}, seed {occluder.seed}, {which})",
    )
