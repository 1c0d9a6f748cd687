"""A disk cache of aligned chips.

Aligning a dataset's raw photos (face detection and landmarks) is the slow part of preparing an
evaluation, and the same pairs are evaluated again and again (other methods, steps, models with
the same chip). A chip is stored under a key made of the image's pixels, the chip spec and the
aligner's settings, so a changed image or setting can never return a stale chip. A missing,
unreadable or corrupted entry is simply aligned again; a cache folder that cannot be written
only costs speed. Failures (no face) are not cached.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write
from .settings import get_settings
from .spec import ChipSpec

__all__ = ["ChipCache", "default_chip_cache_dir"]

log = logging.getLogger(__name__)

#: bump when the alignment code changes what it produces for the same input and settings
CACHE_VERSION = 2


def default_chip_cache_dir() -> Path:
    """FACEXPLAIN_HOME/chips (``Settings.chip_cache_dir``)."""
    return get_settings().chip_cache_dir


class ChipCache:
    """Aligned chips on disk, keyed by pixels + chip spec + aligner settings (detector included)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_chip_cache_dir()
        self.hits = 0
        self.misses = 0
        self._warned = False

    def __repr__(self) -> str:
        return f"ChipCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"

    @staticmethod
    def key(image: np.ndarray, spec: ChipSpec, aligner: Any) -> str:
        """The entry's name: SHA-256 of the settings and of the image's pixels."""
        img = np.ascontiguousarray(image)
        settings = (
            f"v{CACHE_VERSION}|{spec.kind}|{spec.size}|{aligner.multiple_faces}|{aligner.upsample}|"
            f"{aligner.pre_aligned}|{aligner.refine_landmarks}|{aligner.detector}|"
            f"{img.shape}|{img.dtype}"
        )
        h = hashlib.sha256(settings.encode())
        h.update(img.tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def align(self, aligner: Any, image: np.ndarray, spec: ChipSpec, name: str = "<array>") -> np.ndarray:
        """The chip of ``image`` for ``spec``: from the cache, or aligned by ``aligner`` and stored.
        Alignment errors (e.g. no face) propagate and are not cached."""
        path = self.path(self.key(image, spec, aligner))
        chip = self._read(path, spec)
        if chip is not None:
            self.hits += 1
            return chip
        aligned: np.ndarray = aligner.align(image, spec, name).chip
        self.misses += 1
        self._write(path, aligned)
        return aligned

    def _read(self, path: Path, spec: ChipSpec) -> np.ndarray | None:
        try:
            chip = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if not isinstance(chip, np.ndarray) or chip.shape != (spec.size, spec.size, 3) or chip.dtype != np.uint8:
            return None
        return chip

    def _write(self, path: Path, chip: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)

            def write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(chip, np.uint8), allow_pickle=False)

            atomic_write(path, write)
        except OSError as e:
            if not self._warned:
                log.warning("chip cache %s is not writable (%s); continuing without storing chips", self.root, e)
                self._warned = True
