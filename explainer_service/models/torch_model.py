"""A FaceModel over a PyTorch module (CPU or CUDA, fp32 or fp16): used by the GPU benchmark and
by gradient-based explanation methods. The module takes float32 RGB NCHW in [0, 255]."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..spec import ModelSpec

__all__ = ["TorchFaceModel"]


class TorchFaceModel:
    """``embed`` through ``module`` on ``device`` with ``dtype`` ("float32" or "float16")."""

    def __init__(
        self, module: Any, spec: ModelSpec, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 64
    ) -> None:
        import torch

        if dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be float32 or float16, got {dtype!r}")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self._torch = torch
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.module = module.to(self.device, self.dtype).eval()
        self.spec = spec
        self.batch_size = batch_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.asarray(images, np.float32)
        s = self.spec.chip.size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise InputError(f"{self.spec.name} expects (N, 3, {s}, {s}) input, got {x.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                t = torch.from_numpy(x[i : i + self.batch_size]).to(self.device, non_blocking=True)
                out.append(self.module(t.to(self.dtype)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        return np.concatenate(out)
