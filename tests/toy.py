"""A toy face model with answers known by hand, for unit tests of the explanation engine.

Its embedding is (pixels of region R, pixels of region Q, a constant block) / 255, so only R and Q
matter: masking R of either face lowers the similarity of a pair that agrees on R (similar region),
and masking a bright occluder in Q of B that A lacks raises it (dissimilar region).
"""

from __future__ import annotations

import numpy as np

from explainer_service.spec import ChipSpec, ModelSpec

SIZE = 32
R = (slice(4, 14), slice(4, 28))    # rows, cols: "eyes"
Q = (slice(18, 28), slice(8, 24))   # rows, cols: "mouth", occluded in B


class ToyModel:
    def __init__(self, size: int = SIZE) -> None:
        self.spec = ModelSpec("toy", ChipSpec("arcface", size), 0, threshold=0.9)
        self.calls = 0
        self.images = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float64)
        self.calls += 1
        self.images += len(x)
        n = len(x)
        r = x[:, :, R[0], R[1]].reshape(n, -1)
        q = x[:, :, Q[0], Q[1]].reshape(n, -1)
        const = np.full((n, 64), 128.0)
        return (np.concatenate([r, q, const], axis=1) / 255.0).astype(np.float32)


def toy_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chips (SIZE, SIZE, 3) uint8: same texture in R; Q dark in A, a bright occluder in B."""
    rng = np.random.default_rng(seed)
    a = rng.integers(40, 200, size=(SIZE, SIZE, 3)).astype(np.uint8)
    a[Q[0], Q[1]] = 0
    b = a.copy()
    b[Q[0], Q[1]] = 255
    return a, b
