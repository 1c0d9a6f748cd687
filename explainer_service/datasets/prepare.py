"""Pairs prepared for an evaluation: matched pairs chosen over all folds, loaded and aligned once.

:func:`prepare_pairs` turns a :class:`~explainer_service.datasets.pairs.Dataset` into the aligned
chips that the evaluation (:mod:`explainer_service.evaluation`) and the sanity check consume, with
an optional synthetic occluder on image B and an optional chip cache. Nothing is dropped silently:
every dropped pair is counted under its reason (:mod:`~explainer_service.datasets.drops`) and
reported under the image that failed; a dropped pair is replaced by another of the same fold
(:class:`~explainer_service.datasets.draw.PairDraw`), so ``pairs=K`` delivers K pairs whenever
the dataset has them, and says so when it has not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..alignment import Aligner
from ..chip_cache import ChipCache
from ..errors import FacexplainError, InputError
from ..models.base import FaceModel
from ..occlusion import Occluder
from .draw import PairDraw
from .drops import DROP_REASONS, count_drops, describe_drops, drop_reason
from .occluded import occluded_dataset
from .pairs import Dataset, Pair
from .sources import ImageRef, load_pair_image, ref_name

__all__ = ["PreparedPairs", "prepare_pairs"]


@dataclass(frozen=True)
class PreparedPairs:
    """Aligned chips of the matched pairs chosen for an evaluation, and what was left out.

    Attributes:
        chips_a, chips_b: ``(P, S, S, 3)`` uint8 chips of images A and B, pair by pair.
        names: ``(name A, name B)`` of each prepared pair.
        matched_available: matched pairs in the dataset.
        skipped: one reason per image that made its pair be dropped (unreadable, or no face),
            keyed by that image's name.
        cache_hits, cache_misses: chips read from the chip cache / aligned now (both 0 without a
            cache).
        requested: the pairs asked for (``pairs``; P is smaller only when the dataset has too few
            matched pairs with two usable images).
        dropped: dropped pairs per reason (every reason of
            :data:`~explainer_service.datasets.drops.DROP_REASONS`, 0 when none).
        replaced: dropped pairs replaced by another matched pair.
        cross_fold: of those, replacements from another fold (the fold had none left).
    """

    chips_a: np.ndarray
    chips_b: np.ndarray
    names: list[tuple[str, str]]
    matched_available: int
    skipped: dict[str, str]
    cache_hits: int = 0
    cache_misses: int = 0
    requested: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    replaced: int = 0
    cross_fold: int = 0

    @property
    def shortfall(self) -> int:
        """Pairs asked for but not delivered (0 when all were)."""
        return max(0, self.requested - len(self.chips_a))

    def summary(self) -> str:
        """One line: ``40 matched pairs of 350; 30 dropped (2 unreadable image, 28 no face), 30
        replaced from the same fold; chips: ...``, ending with the shortfall when there is one."""
        text = f"{len(self.chips_a)} matched pairs of {self.matched_available}"
        if sum(self.dropped.values()):
            text += f"; {describe_drops(self.dropped)}"
            if self.replaced:
                text += f", {self.replaced} replaced"
                text += (f" ({self.cross_fold} from another fold)" if self.cross_fold else " from the same fold")
        if self.cache_hits or self.cache_misses:
            text += f"; chips: {self.cache_hits} from the cache, {self.cache_misses} aligned"
        if self.shortfall:
            text += (f"; only {len(self.chips_a)} of the {self.requested} pairs asked: the dataset has no more "
                     "matched pairs with two usable images")
        return text

    def report(self) -> dict[str, Any]:
        """What the evaluation's JSON records about the pairs: asked, delivered, dropped per reason,
        replaced (and from another fold), the shortfall."""
        return {"requested": self.requested, "delivered": len(self.chips_a), "matched_available": self.matched_available,
                "dropped": dict(self.dropped), "dropped_total": sum(self.dropped.values()),
                "replaced": self.replaced, "replaced_cross_fold": self.cross_fold, "shortfall": self.shortfall}


def prepare_pairs(
    dataset: Dataset,
    model: FaceModel,
    *,
    pairs: int,
    occlude: bool = False,
    seed: int = 0,
    cache: ChipCache | None = None,
    face: str = "largest",
    detector: str | None = None,
) -> PreparedPairs:
    """Choose ``pairs`` matched pairs spread evenly over the dataset (so over all its folds), load
    and align them for ``model``'s chip; a pair that cannot be loaded or aligned is dropped,
    counted under its reason, and replaced by another matched pair of its fold
    (:class:`~explainer_service.datasets.draw.PairDraw`).

    Args:
        dataset: the pair set.
        model: the face model (only its chip spec is used).
        pairs: how many matched pairs to prepare.
        occlude: give image B a seeded synthetic occluder (the occluded-set scenario; needs
            ArcFace-aligned crops).
        seed: the occluder's seed (the pairs chosen do not depend on it).
        cache: a chip cache to reuse aligned chips (None: align everything now).
        face: with several faces in an image, ``"largest"`` or ``"refuse"`` (the Aligner's
            ``multiple_faces``).
        detector: the face detector (None: the Aligner's default).

    Raises:
        InputError: ``pairs < 1``, ``occlude`` on a dataset that is not aligned, no matched pairs,
            an unknown ``face`` or ``detector``, or no chosen pair could be loaded and aligned.
    """
    if pairs < 1:
        raise InputError(f"--pairs must be >= 1, got {pairs}")
    if occlude:
        if not dataset.aligned:
            raise InputError(
                f"{dataset.name}: --occlude draws occluders on ArcFace-aligned crops; use the dataset's "
                "aligned variant (e.g. lfw-aligned:PATH)"
            )
        dataset = occluded_dataset(dataset, Occluder(seed=seed), which="b")
    matched = [p for p in dataset.pairs if p.same]
    if not matched:
        raise InputError(f"{dataset.name}: no matched pairs to evaluate")
    options: dict[str, Any] = {"multiple_faces": face, "pre_aligned": "arcface" if dataset.aligned else "auto"}
    if detector is not None:
        options["detector"] = detector
    aligner = Aligner(**options)
    draw = PairDraw(matched, pairs)
    hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    chips = _ChipSource(aligner, model.spec.chip, cache)
    chips_a: list[np.ndarray] = []
    chips_b: list[np.ndarray] = []
    names: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    reasons: list[str] = []
    for first in draw.chosen:
        index: int | None = first
        while index is not None:
            pair = matched[index]
            got = chips.pair(pair)
            if isinstance(got, _Failure):
                skipped.setdefault(got.name, got.message)
                reasons.append(got.reason)
                index = draw.replace(index)
                continue
            chips_a.append(got[0])
            chips_b.append(got[1])
            names.append((ref_name(pair.a), ref_name(pair.b)))
            break
    if not chips_a:
        raise InputError(f"{dataset.name}: none of the chosen pairs could be loaded and aligned "
                         f"({describe_drops(count_drops(reasons))})")
    hits, misses = (cache.hits - hits0, cache.misses - misses0) if cache is not None else (0, 0)
    return PreparedPairs(np.stack(chips_a), np.stack(chips_b), names, len(matched), skipped, hits, misses,
                         requested=pairs, dropped=count_drops(reasons), replaced=draw.replaced,
                         cross_fold=draw.cross_fold)


@dataclass(frozen=True)
class _Failure:
    """Why an image could not be used: its name, the drop reason, the message for ``skipped``."""

    name: str
    reason: str
    message: str


class _ChipSource:
    """Loads and aligns each distinct image once (a replacement pair often shares an image with a
    pair tried before): the chip, or the failure with its reason."""

    def __init__(self, aligner: Aligner, chip: Any, cache: ChipCache | None) -> None:
        self._aligner, self._chip, self._cache = aligner, chip, cache
        self._known: dict[Any, np.ndarray | _Failure] = {}

    def image(self, ref: ImageRef) -> np.ndarray | _Failure:
        if ref not in self._known:
            name = ref_name(ref)
            try:
                image = load_pair_image(ref)
            except InputError as e:
                self._known[ref] = _Failure(name, drop_reason(e, stage="load"), str(e))
                return self._known[ref]
            try:
                if self._cache is None:
                    chip = self._aligner.align(image, self._chip, name).chip
                else:
                    chip = self._cache.align(self._aligner, image, self._chip, name)
            except FacexplainError as e:
                if not isinstance(e, InputError):
                    raise
                self._known[ref] = _Failure(name, drop_reason(e, stage="align"), f"not aligned: {e}")
                return self._known[ref]
            self._known[ref] = chip
        return self._known[ref]

    def pair(self, pair: Pair) -> tuple[np.ndarray, np.ndarray] | _Failure:
        """Both chips, or the failure of the first image that failed (its message names the other
        image of the pair and which side failed)."""
        a = self.image(pair.a)
        if isinstance(a, _Failure):
            return _Failure(a.name, a.reason, f"pair dropped, image A (B: {ref_name(pair.b)}) {a.message}")
        b = self.image(pair.b)
        if isinstance(b, _Failure):
            return _Failure(b.name, b.reason, f"pair dropped, image B (A: {ref_name(pair.a)}) {b.message}")
        return a, b
