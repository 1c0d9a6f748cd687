"""Pairs prepared for an evaluation: matched pairs chosen over all folds, loaded and aligned once.

:func:`prepare_pairs` turns a :class:`~explainer_service.datasets.pairs.Dataset` into the aligned
chips that the evaluation (:mod:`explainer_service.evaluation`) and the sanity check consume, with
an optional synthetic occluder on image B and an optional chip cache. Nothing is dropped silently:
every skipped pair is reported under the image that failed, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..alignment import Aligner
from ..chip_cache import ChipCache
from ..errors import FacexplainError, InputError
from ..models.base import FaceModel
from ..occlusion import Occluder
from .loading import load_pairs_checked
from .occluded import occluded_dataset
from .pairs import Dataset
from .sources import ref_name

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
    """

    chips_a: np.ndarray
    chips_b: np.ndarray
    names: list[tuple[str, str]]
    matched_available: int
    skipped: dict[str, str]
    cache_hits: int = 0
    cache_misses: int = 0

    def summary(self) -> str:
        """One line: ``10 matched pairs of 2700; 1 skipped (...); chips: ...``."""
        text = f"{len(self.chips_a)} matched pairs of {self.matched_available}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped (unreadable image or no face)"
        if self.cache_hits or self.cache_misses:
            text += f"; chips: {self.cache_hits} from the cache, {self.cache_misses} aligned"
        return text


def prepare_pairs(
    dataset: Dataset,
    model: FaceModel,
    *,
    pairs: int,
    occlude: bool = False,
    seed: int = 0,
    cache: ChipCache | None = None,
) -> PreparedPairs:
    """Choose ``pairs`` matched pairs spread evenly over the dataset (so over all its folds), load
    and align them for ``model``'s chip.

    Args:
        dataset: the pair set.
        model: the face model (only its chip spec is used).
        pairs: how many matched pairs to prepare (a few spare ones stand in for pairs that cannot
            be loaded or aligned).
        occlude: give image B a seeded synthetic occluder (the occluded-set scenario; needs
            ArcFace-aligned crops).
        seed: the occluder's seed.
        cache: a chip cache to reuse aligned chips (None: align everything now).

    Raises:
        InputError: ``pairs < 1``, ``occlude`` on a dataset that is not aligned, no matched pairs,
            or no chosen pair could be loaded and aligned.
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
    # a few spare pairs stand in for ones that cannot be read or aligned
    want = min(len(matched), pairs + max(2, pairs // 10))
    idx = np.unique(np.linspace(0, len(matched) - 1, want).round().astype(int))
    loaded, report = load_pairs_checked([matched[i] for i in idx])
    skipped = dict(report.failures)
    aligner = Aligner(pre_aligned="arcface" if dataset.aligned else "auto")

    def align(image: np.ndarray, name: str) -> np.ndarray:
        if cache is None:
            return aligner.align(image, model.spec.chip, name).chip
        return cache.align(aligner, image, model.spec.chip, name)

    hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    chips_a: list[np.ndarray] = []
    chips_b: list[np.ndarray] = []
    names: list[tuple[str, str]] = []
    for lp in loaded:
        if len(chips_a) == pairs:
            break
        name_a, name_b = ref_name(lp.pair.a), ref_name(lp.pair.b)
        try:
            fa = align(lp.a, name_a)
        except FacexplainError as e:
            skipped[name_a] = f"pair dropped, image A (B: {name_b}) not aligned: {e}"
            continue
        try:
            fb = align(lp.b, name_b)
        except FacexplainError as e:
            skipped[name_b] = f"pair dropped, image B (A: {name_a}) not aligned: {e}"
            continue
        chips_a.append(fa)
        chips_b.append(fb)
        names.append((name_a, name_b))
    if not chips_a:
        raise InputError(f"{dataset.name}: none of the chosen pairs could be loaded and aligned")
    hits, misses = (cache.hits - hits0, cache.misses - misses0) if cache is not None else (0, 0)
    return PreparedPairs(np.stack(chips_a), np.stack(chips_b), names, len(matched), skipped, hits, misses)
