"""CorrRISETorch: CorrRISE whose shards run on a torch device (the model's GPU in deployment,
torch's CPU device in the tests), the library's explicit choice of the device engine.

Pipeline role: the method class over :func:`~.corrrise_device.run_shard_on_device` (Lu, Xu,
Ebrahimi, WACV 2024 workshops, Algorithm 1, in PyTorch); same config, shards and ``finish`` as
:class:`~.corrrise.CorrRISE`, which hands its shards to the same engine by itself for a
TorchFaceModel on an accelerator. The engine's functions (``run_shard_on_device``, ``device_of``)
and the device masks (``device_masks``, ``mask_draws``) are re-exported from here.
"""

from __future__ import annotations

import numpy as np

from ..masks_torch import device_masks, mask_draws
from ..models.base import FaceModel
from ..progress import Progress
from .corrrise import CorrRISE, CorrRISEConfig
from .corrrise_device import device_of, run_shard_on_device
from .shards import ShardResult

__all__ = ["CorrRISETorch", "run_shard_on_device", "device_of", "device_masks", "mask_draws"]


class CorrRISETorch(CorrRISE):
    """CorrRISE whose shards run on a torch device (:func:`run_shard_on_device`); same config,
    maps (within float32 rounding of the embeddings), shards and ``finish`` as :class:`CorrRISE`.

    ``device``: None (default) the model's device for a TorchFaceModel, else ``"cpu"``; or any
    torch device name. The plain :class:`CorrRISE` picks this engine by itself for a TorchFaceModel
    on an accelerator; this class is for asking for it (any model, any device).
    """

    def __init__(self, model: FaceModel, config: CorrRISEConfig | None = None, *, device: str | None = None) -> None:
        super().__init__(model, config)
        self.device = device

    def run_shard(
        self,
        chip_a: np.ndarray,
        chip_b: np.ndarray,
        start: int,
        stop: int,
        *,
        embeddings: tuple[np.ndarray, np.ndarray] | None = None,
        progress: Progress | None = None,
    ) -> ShardResult:
        """Masks [start, stop) on the device; see :meth:`CorrRISE.run_shard`."""
        return run_shard_on_device(self, chip_a, chip_b, start, stop, embeddings=embeddings, progress=progress,
                                   device=self.device)
