"""Random patch masks of CorrRISE.

Pipeline: image -> alignment -> model -> **masks** and scores -> correlation -> maps.
This module makes the masks: each one is a chip-sized image of 1s with a few square patches pasted
on it. The explainer multiplies face image A by every mask, embeds the masked images and compares
them with the clean embedding of B; :mod:`explainer_service.correlation` then correlates those
scores with the mask values, pixel by pixel.

The scheme and its defaults follow Algorithm 1 of Lu, Xu and Ebrahimi, "Towards Visual Saliency
Explanations of Face Verification" (WACV 2024, arXiv:2305.08546): N = 500 masks of P = 10 patches of
30 x 30 px filled with random values, on 112 x 112 aligned faces. Other chip sizes scale the patch.

Randomness is an input: mask ``k`` is drawn from its own generator, seeded with the ``k``-th child
of ``SeedSequence(config.seed)``, so any split of the set into chunks or shards (``start``/``stop``)
reproduces, bit for bit, the masks of a single call. Nothing random happens at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "PAPER_CHIP",
    "PAPER_PATCH_SIZE",
    "PAPER_PATCHES",
    "PAPER_MASKS",
    "MASK_VALUES",
    "MaskConfig",
    "generate_masks",
    "mask_generator",
    "mask_coverage",
]

#: Side of the aligned face chip in the paper (px).
PAPER_CHIP = 112
#: Side of one square patch in the paper (px, on a 112 px chip).
PAPER_PATCH_SIZE = 30
#: Number of patches per mask in the paper.
PAPER_PATCHES = 10
#: Number of masks in the paper.
PAPER_MASKS = 500

#: Accepted values of :attr:`MaskConfig.values`.
MASK_VALUES = ("uniform", "binary")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class MaskConfig:
    """How to draw a set of CorrRISE masks; the defaults are the paper's.

    Attributes:
        n_masks: number of masks N in the set (>= 1; the correlation needs at least 2).
        patches: number of square patches P pasted on each mask (>= 1).
        patch_size: side S of a patch in pixels of the chip; ``None`` scales the paper's 30 px on
            112 px to the chip: ``round(30 * chip_size / 112)`` (at least 1).
        values: ``"uniform"``: a patch is filled with a value drawn from U[0, 1);
            ``"binary"``: a patch is filled with 0 (a black square, as in occlusion).
        per_pixel: with ``values="uniform"``, draw one U[0, 1) value per pixel of the patch instead
            of one per patch.
        clip_at_border: ``True``: the top-left corner of a patch is drawn uniformly in
            ``[-(S-1), chip_size-1]`` on both axes and the patch is clipped to the chip, so that
            every placement that overlaps the chip is equally likely and every pixel is covered
            with the same probability; ``False``: patches lie fully inside the chip (top-left in
            ``[0, chip_size-S]``), which covers the border less than the centre.
        seed: seed of the whole set (a non-negative integer).
    """

    n_masks: int = PAPER_MASKS
    patches: int = PAPER_PATCHES
    patch_size: int | None = None
    values: str = "uniform"
    per_pixel: bool = False
    clip_at_border: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.n_masks) or self.n_masks < 1:
            raise InputError(f"n_masks must be an integer >= 1, got {self.n_masks!r}")
        if not _is_int(self.patches) or self.patches < 1:
            raise InputError(f"patches must be an integer >= 1, got {self.patches!r}")
        if self.patch_size is not None and (not _is_int(self.patch_size) or self.patch_size < 1):
            raise InputError(
                f"patch_size must be None or an integer >= 1, got {self.patch_size!r}"
            )
        if self.values not in MASK_VALUES:
            raise InputError(f"values must be one of {MASK_VALUES}, got {self.values!r}")
        if not isinstance(self.per_pixel, (bool, np.bool_)):
            raise InputError(f"per_pixel must be a bool, got {self.per_pixel!r}")
        if self.per_pixel and self.values != "uniform":
            raise InputError(
                f'per_pixel=True needs values="uniform" (got values={self.values!r}): '
                "binary patches are all 0"
            )
        if not isinstance(self.clip_at_border, (bool, np.bool_)):
            raise InputError(f"clip_at_border must be a bool, got {self.clip_at_border!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values; :meth:`from_dict` rebuilds an equal config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskConfig:
        """A config from :meth:`to_dict`'s mapping; missing keys take the defaults. InputError for
        unknown keys or bad values."""
        if not isinstance(data, Mapping):
            raise InputError(f"mask options must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(f"unknown mask option(s) {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**dict(data))

    def params_for(self, chip_size: int) -> dict[str, Any]:
        """The mask set as a method reports it (plain values, the patch side resolved for the chip)."""
        return {
            "n_masks": self.n_masks,
            "patches": self.patches,
            "patch_size": self.patch_size_for(chip_size),
            "values": self.values,
            "per_pixel": self.per_pixel,
            "clip_at_border": self.clip_at_border,
            "seed": self.seed,
        }

    def patch_size_for(self, chip_size: int) -> int:
        """The side S (px) of a patch on a ``chip_size`` x ``chip_size`` chip.

        ``patch_size`` when set, else the paper's 30 px on 112 px scaled to the chip (112 -> 30,
        150 -> 40). Raises :class:`InputError` unless ``1 <= S <= chip_size``.
        """
        if not _is_int(chip_size) or chip_size < 1:
            raise InputError(f"chip_size must be an integer >= 1, got {chip_size!r}")
        if self.patch_size is None:
            return max(1, round(PAPER_PATCH_SIZE * int(chip_size) / PAPER_CHIP))
        if self.patch_size > chip_size:
            raise InputError(
                f"patch_size {self.patch_size} is larger than the chip ({chip_size} px)"
            )
        return int(self.patch_size)


def mask_generator(config: MaskConfig, k: int) -> np.random.Generator:
    """The random generator of mask ``k``: seeded by the ``k``-th child of ``SeedSequence(seed)``.

    Equal to ``np.random.default_rng(np.random.SeedSequence(config.seed).spawn(k + 1)[k])``, built
    directly, so mask ``k`` depends on nothing but ``(config, chip_size, k)``.
    """
    return np.random.default_rng(np.random.SeedSequence(int(config.seed), spawn_key=(int(k),)))


def generate_masks(
    config: MaskConfig, chip_size: int, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Masks ``start`` .. ``stop - 1`` of the set described by ``config``.

    Each mask is a chip-sized image of 1s on which ``config.patches`` square patches of side
    ``S = config.patch_size_for(chip_size)`` are pasted one after the other (a later patch
    overwrites an earlier one where they overlap), at random positions (see
    :attr:`MaskConfig.clip_at_border`) and with random values (see :attr:`MaskConfig.values`).
    Paper: Lu, Xu, Ebrahimi (WACV 2024), Algorithm 1, mask generation.

    Args:
        config: the set (number of masks, patches, seed, ...).
        chip_size: side of the square chip in pixels.
        start: index of the first mask, ``0 <= start <= stop``.
        stop: one past the index of the last mask, ``<= config.n_masks``; ``None``: ``n_masks``.

    Returns:
        float32 array (stop - start, chip_size, chip_size) with values in [0, 1]; identical,
        mask for mask, whatever ``start``/``stop`` chunking is used.
    """
    side = config.patch_size_for(chip_size)  # validates chip_size too
    size = int(chip_size)
    if stop is None:
        stop = config.n_masks
    if not _is_int(start) or not _is_int(stop):
        raise InputError(f"start and stop must be integers, got start={start!r}, stop={stop!r}")
    if not 0 <= start <= stop <= config.n_masks:
        raise InputError(
            f"start/stop must satisfy 0 <= start <= stop <= n_masks ({config.n_masks}), "
            f"got start={start}, stop={stop}"
        )

    n_patches = config.patches
    if config.clip_at_border:
        low, high = -(side - 1), size - 1  # every placement overlapping the chip
    else:
        low, high = 0, size - side  # placements fully inside the chip
    masks = np.ones((stop - start, size, size), dtype=np.float32)
    for i, k in enumerate(range(start, stop)):
        rng = mask_generator(config, k)
        corners = rng.integers(low, high, size=(n_patches, 2), endpoint=True)
        if config.values == "binary":
            fills = np.zeros((n_patches, 1, 1), dtype=np.float32)
        elif config.per_pixel:
            fills = rng.random((n_patches, side, side), dtype=np.float32)
        else:
            fills = rng.random((n_patches, 1, 1), dtype=np.float32)
        mask = masks[i]
        for p in range(n_patches):
            y, x = int(corners[p, 0]), int(corners[p, 1])
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + side, size), min(x + side, size)
            fill = fills[p]
            if config.per_pixel:
                fill = fill[y0 - y : y1 - y, x0 - x : x1 - x]
            mask[y0:y1, x0:x1] = fill
    return masks


def mask_coverage(masks: np.ndarray) -> np.ndarray:
    """Fraction of the masks in which each pixel is covered, i.e. differs from 1.

    Args:
        masks: (N, H, W) array of masks, N >= 1.

    Returns:
        float64 array (H, W) with values in [0, 1].
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise InputError(f"masks must be an (N, H, W) array with N >= 1, got shape {masks.shape}")
    return np.asarray(np.mean(masks != 1, axis=0, dtype=np.float64), np.float64)
