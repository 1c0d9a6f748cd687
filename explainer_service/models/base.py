"""The FaceModel interface: embed a batch of chips. Backends (onnxruntime, Triton) implement it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..spec import ModelSpec

__all__ = ["FaceModel", "to_model_input", "cosine_to"]


@runtime_checkable
class FaceModel(Protocol):
    """Anything that turns chips into embeddings.

    ``embed`` takes float32 (N, 3, S, S) RGB pixel values in [0, 255] (S = ``spec.chip.size``)
    and returns float32 (N, D) embeddings, not necessarily normalised.
    """

    spec: ModelSpec

    def embed(self, images: np.ndarray) -> np.ndarray: ...


def to_model_input(chips: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) or (S, S, 3) uint8/float chips -> float32 (N, 3, S, S), the model's input."""
    x = np.asarray(chips)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def cosine_to(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of (N, D) ``embeddings`` with the (D,) ``reference``, float64."""
    e = np.asarray(embeddings, np.float64)
    r = np.asarray(reference, np.float64)
    norms = np.linalg.norm(e, axis=1) * np.linalg.norm(r)
    cos: np.ndarray = (e @ r) / np.maximum(norms, 1e-12)
    return cos
