"""What every explanation method looks like: one class per method, one ``attribute`` entry point.

A method is built from the model it explains (a FaceModel for perturbation methods, a PyTorch twin
for gradient methods) and a frozen config; ``attribute(chip_a, chip_b)`` returns an
:class:`~explainer_service.explanation.Explanation` whose ``s_a``/``s_b`` (H, W) float32 maps rank
pixels by how much they support the pair's similarity (higher = more important for "same").
Deletion/Insertion (``metrics``) only use that ranking, so methods whose maps are unsigned
(RISE, Grad-CAM) fit the same interface as CorrRISE's signed maps. ``methods.registry`` builds
any of them by name.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..explanation import Explanation
from ..progress import Progress

__all__ = ["SaliencyMethod", "Progress"]


@runtime_checkable
class SaliencyMethod(Protocol):
    """An explanation method for a face pair. ``name`` is its short id (``corrrise``, ``rise``...)."""

    name: str

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Maps of both chips ((S, S, 3) uint8 RGB aligned for the model); ``progress(done, total)``
        is told how the work advances."""
        ...
