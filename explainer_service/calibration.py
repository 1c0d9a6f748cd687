"""Threshold calibration of a face model on a labelled pair set (the LFW k-fold protocol)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .alignment import Aligner
from .datasets import Pair, load_pair_image
from .errors import InputError
from .models.base import FaceModel, cosine_to, to_model_input
from .verification import KFoldResult, kfold_accuracy

__all__ = ["PairScores", "score_pairs", "calibrate"]


@dataclass(frozen=True)
class PairScores:
    """Cosine scores of the pairs whose two images could be aligned, and the images that could not."""

    scores: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    failures: dict[str, str] = field(default_factory=dict)
    skipped_pairs: int = 0


def _name(ref: object) -> str:
    """A file path as is; an in-memory image (.bin entry, occluded copy) by its name."""
    return str(ref) if isinstance(ref, Path) else str(getattr(ref, "name", ref))


def score_pairs(
    pairs: Iterable[Pair],
    model: FaceModel,
    *,
    aligner: Aligner | None = None,
    batch: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> PairScores:
    """Align and embed every distinct image once, then score each pair; failures are counted."""
    pairs = list(pairs)
    aligner = aligner or Aligner()
    paths = sorted({p for pair in pairs for p in (pair.a, pair.b)}, key=_name)
    emb: dict[object, np.ndarray] = {}
    failures: dict[str, str] = {}
    chips: list[np.ndarray] = []
    pending: list[object] = []

    def flush() -> None:
        if pending:
            out = model.embed(to_model_input(np.stack(chips)))
            emb.update(zip(pending, out, strict=True))
            chips.clear()
            pending.clear()

    for i, path in enumerate(paths):
        try:
            image = load_pair_image(path)
            chips.append(aligner.align(image, model.spec.chip, _name(path)).chip)
            pending.append(path)
        except InputError as e:
            failures[_name(path)] = str(e)
        if len(chips) >= batch:
            flush()
        if progress is not None:
            progress(i + 1, len(paths))
    flush()
    kept = [p for p in pairs if p.a in emb and p.b in emb]
    scores = np.array([cosine_to(emb[p.a][None], emb[p.b])[0] for p in kept])
    return PairScores(
        scores=scores,
        same=np.array([p.same for p in kept], bool),
        folds=np.array([p.fold for p in kept], int),
        failures=failures,
        skipped_pairs=len(pairs) - len(kept),
    )


def calibrate(scored: PairScores) -> KFoldResult:
    """k-fold accuracy (threshold chosen on the other folds) and the threshold of all pairs."""
    if len(scored.scores) == 0:
        raise InputError("no pair could be scored: nothing to calibrate on")
    return kfold_accuracy(scored.scores, scored.same, scored.folds)
