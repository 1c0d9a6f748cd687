"""CorrRISE's masks made on a torch device, bit-identical to :func:`.masks.generate_masks`.

Pipeline role: the device twin of :mod:`explainer_service.masks`, used by both device paths of
issue 11 §3 — the in-process engine (:mod:`explainer_service.methods.corrrise_torch`) and the
Triton model ``corrrise_scores`` (``serving/corrrise_backend_model.py``; this module is copied
beside it with ``masks.py`` and ``errors.py``, so it imports nothing else of the package).

Only the random draws of mask ``k`` (its patch corners and fill values, a few dozen numbers) come
from the host, from the same generator (:func:`~explainer_service.masks.mask_generator`, seeded by
``(seed, k)``) and in the same calls as ``generate_masks``; they are cached per mask range, so a
batch of pairs draws them once. The patches are pasted on the device in the generator's order (a
later patch overwrites an earlier one). Pasting only selects values, so the masks are equal bit for
bit whatever the device. PyTorch is imported on first use.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .masks import MaskConfig, mask_generator

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DRAW_CACHE_SIZE", "mask_draws", "paste_masks", "device_masks"]

#: Mask ranges whose random draws are kept (per process), so a batch of pairs draws its masks once.
DRAW_CACHE_SIZE = 16


@functools.lru_cache(maxsize=DRAW_CACHE_SIZE)
def mask_draws(config: MaskConfig, chip_size: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The random draws of masks [start, stop): patch corners and fill values.

    The same calls on the same generator as :func:`~explainer_service.masks.generate_masks`:
    ``corners`` (n, P, 2) int64 (row, column of each patch's top-left, possibly negative with
    ``clip_at_border``) and ``fills`` (n, P, F, F) float32, F = 1 (one value per patch, 0 for
    binary masks) or the patch side (``per_pixel``). Cached per range (read-only arrays).
    InputError for a range outside the set.
    """
    side = config.patch_size_for(chip_size)
    size = int(chip_size)
    if not 0 <= start <= stop <= config.n_masks:
        raise InputError(f"masks [{start}, {stop}) are not in the set of {config.n_masks}")
    low, high = (-(side - 1), size - 1) if config.clip_at_border else (0, size - side)
    n, p = stop - start, config.patches
    f = side if config.per_pixel else 1
    corners = np.empty((n, p, 2), np.int64)
    fills = np.zeros((n, p, f, f), np.float32)
    for i, k in enumerate(range(start, stop)):
        rng = mask_generator(config, k)
        corners[i] = rng.integers(low, high, size=(p, 2), endpoint=True)
        if config.values != "binary":
            fills[i] = rng.random((p, f, f), dtype=np.float32)
    corners.flags.writeable = False
    fills.flags.writeable = False
    return corners, fills


def device_masks(
    config: MaskConfig, chip_size: int, start: int, stop: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Masks [start, stop) as a float32 tensor (n, S, S) on ``device``, equal bit for bit to
    ``generate_masks(config, chip_size, start, stop)``: the draws of :func:`mask_draws` pasted on
    the device patch after patch."""
    import torch

    side = config.patch_size_for(chip_size)
    corners_np, fills_np = mask_draws(config, int(chip_size), int(start), int(stop))
    return paste_masks(torch.from_numpy(corners_np.copy()).to(device), torch.from_numpy(fills_np.copy()).to(device),
                       side, int(chip_size))


def paste_masks(corners: torch.Tensor, fills: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Masks (n, S, S) float32 from the draws on their device: ``corners`` (n, P, 2) int64 and
    ``fills`` (n, P, F, F) float32 (a slice of :func:`mask_draws`'s arrays), patches of ``side``
    pixels on an ``size`` x ``size`` chip; clipping to the chip is implicit."""
    import torch

    n, p = corners.shape[:2]
    dev = corners.device
    pix = torch.arange(size, device=dev)
    y = corners[..., 0:1]  # (n, P, 1)
    x = corners[..., 1:2]
    rows = (pix >= y) & (pix < y + side)  # (n, P, S)
    cols = (pix >= x) & (pix < x + side)
    masks = torch.ones((n, size, size), dtype=torch.float32, device=dev)
    per_pixel = fills.shape[-1] > 1
    if per_pixel:
        ri = (pix - y).clamp(0, side - 1)  # (n, P, S): row inside the patch
        ci = (pix - x).clamp(0, side - 1)
        ni = torch.arange(n, device=dev)[:, None, None]
    for j in range(p):
        covered = rows[:, j, :, None] & cols[:, j, None, :]  # (n, S, S)
        if per_pixel:
            value = fills[:, j][ni, ri[:, j, :, None], ci[:, j, None, :]]
        else:
            value = fills[:, j, :, :]  # (n, 1, 1)
        masks = torch.where(covered, value, masks)
    return masks
