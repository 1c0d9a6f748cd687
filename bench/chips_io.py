"""Aligned chips to and from lossless PNG (the GPU evaluation's carried inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_chips(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each (N, S, S, 3) uint8 array as one lossless PNG of N chips stacked vertically (half the
    size of a compressed npz, which matters under the device's 64 MiB transfer limit)."""
    for name, chips in arrays.items():
        n, s = chips.shape[0], chips.shape[1]
        Image.fromarray(np.ascontiguousarray(chips).reshape(n * s, s, 3)).save(folder / f"{name}.png", optimize=True)


def load_chips(folder: Path, name: str) -> np.ndarray:
    """The chips saved by save_chips (square chips: the width is the chip size)."""
    img = np.asarray(Image.open(Path(folder) / f"{name}.png").convert("RGB"))
    s = img.shape[1]
    return img.reshape(-1, s, s, 3)
