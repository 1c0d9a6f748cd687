"""A literal transcription of the paper's Algorithm 1 (CorrRISE), kept as a reference.

One masked image per model call and a per-pixel Python loop for the correlation: slow on purpose.
Tests check the batched, streaming engine against it; the benchmark measures the speed-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["corrrise_literal"]


def _pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx = sum(x) / n
    my = sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def corrrise_literal(
    embed_one: Callable[[np.ndarray], np.ndarray],
    image_a: np.ndarray,
    image_b: np.ndarray,
    masks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(S_A, S_B) for images (H, W, C) float and masks (N, H, W); ``embed_one`` embeds one image."""

    def cos(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))

    f_a = embed_one(image_a)
    f_b = embed_one(image_b)
    s_a: list[float] = []
    s_b: list[float] = []
    for m in masks:
        s_a.append(cos(embed_one(image_a * m[..., None]), f_b))
        s_b.append(cos(embed_one(image_b * m[..., None]), f_a))
    n, h, w = masks.shape
    out_a = np.zeros((h, w), np.float32)
    out_b = np.zeros((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            col = [float(v) for v in masks[:, i, j]]
            out_a[i, j] = _pearson(col, s_a)
            out_b[i, j] = _pearson(col, s_b)
    return out_a, out_b
