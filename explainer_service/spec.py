"""Contract types of the pipeline: which chip a model wants and what a model is.

The bottom layer: alignment, models, serving, methods and the service all depend on these and
they depend on nothing of the package but its errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["CHIP_KINDS", "ChipSpec", "DLIB_CHIP", "ARCFACE_CHIP", "ModelSpec"]

#: The chip kinds alignment can cut.
CHIP_KINDS = ("dlib", "arcface")
_MIN_CHIP, _MAX_CHIP = 16, 4096


@dataclass(frozen=True)
class ChipSpec:
    """Which face chip to make.

    Attributes:
        kind: ``"dlib"`` (dlib's face chip, padding 0.25) or ``"arcface"`` (ArcFace template crop).
        size: side in pixels; dlib's model wants 150, ArcFace models 112 (the template is scaled
            by ``size / 112``).
    """

    kind: str
    size: int

    def __post_init__(self) -> None:
        if self.kind not in CHIP_KINDS:
            raise InputError(f"chip kind must be one of {CHIP_KINDS}, got {self.kind!r}")
        if (
            not isinstance(self.size, (int, np.integer))
            or isinstance(self.size, bool)
            or not _MIN_CHIP <= self.size <= _MAX_CHIP
        ):
            raise InputError(
                f"chip size must be an integer in [{_MIN_CHIP}, {_MAX_CHIP}], got {self.size!r}"
            )
        object.__setattr__(self, "size", int(self.size))


DLIB_CHIP = ChipSpec("dlib", 150)
ARCFACE_CHIP = ChipSpec("arcface", 112)


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a face model.

    ``threshold`` is on the cosine similarity of the two embeddings: score >= threshold is a match;
    None means not calibrated (the decision is then "unknown").
    """

    name: str
    chip: ChipSpec
    embedding_dim: int
    threshold: float | None
    description: str = ""
