"""Per-pixel correlation of CorrRISE: from masks and scores to a signed saliency map.

Pipeline: image -> alignment -> model -> masks and scores -> **correlation** -> maps.
Given N masks (N, H, W) applied to face image A and the N cosine scores between each masked A and
the clean B, the saliency of a pixel is the Pearson correlation coefficient between the N scores and
the N mask values at that pixel (Lu, Xu, Ebrahimi, "Towards Visual Saliency Explanations of Face
Verification", WACV 2024, arXiv:2305.08546, Algorithm 1). A mask value is the fraction of A kept at
that pixel, so a positive coefficient marks a region whose presence raises the similarity
("similar" region) and a negative one a region whose presence lowers it ("dissimilar" region).

The coefficient is computed by :class:`CorrelationAccumulator`, a streaming estimator whose memory
is O(H * W) whatever N: masks and scores come in batches (chunks on one worker, shards on several);
partial accumulators merge exactly and serialize to plain arrays and numbers.

Numerical method: each batch is reduced with the two-pass algorithm (means first, then centred sums
of squares and cross-products, in float64), and batches are combined with the pairwise update of
Chan, Golub and LeVeque ("Updating formulae and a pairwise algorithm for computing sample
variances", 1979) extended to co-moments. No sum of raw squares is ever differenced, so there is no
catastrophic cancellation, and merging is exact up to float64 rounding, in any order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InputError

__all__ = [
    "CONSTANT_RTOL",
    "CorrelationAccumulator",
    "pearson_map",
    "spearman_map",
    "split_signed",
]

#: A variable whose variance is at most ``CONSTANT_RTOL * mean**2`` (relative standard deviation
#: at most 1e-6, ten times float32 rounding) is treated as constant: its correlation is 0.
#: Exactly constant data leave a float64 variance of order 1e-32 * mean**2, far below.
CONSTANT_RTOL = 1e-12

# Masks are reduced in sub-batches of at most this many float64 elements (32 MiB of temporaries).
_CHUNK_ELEMENTS = 1 << 22

_STATE_KEYS = ("n", "mean_s", "m2_s", "mean_m", "m2_m", "c_ms")


class CorrelationAccumulator:
    """Streaming per-pixel Pearson correlation between scalar scores and mask values.

    Keeps, in float64, the number of samples ``n``, the mean ``mean_s`` and centred sum of squares
    ``m2_s`` of the scores (scalars), and per pixel (arrays of ``shape``) the mean ``mean_m`` and
    centred sum of squares ``m2_m`` of the mask values and the centred co-moment
    ``c_ms = sum((m - mean_m) * (s - mean_s))``. Memory is O(H * W) whatever the number of samples.

    Usage::

        acc = CorrelationAccumulator((H, W))
        for masks, scores in batches:   # masks (n, H, W), scores (n,)
            acc.update(masks, scores)
        saliency = acc.pearson()        # (H, W) float32 in [-1, 1]
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        """An empty accumulator for masks of ``shape`` (e.g. ``(H, W)``)."""
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise InputError(f"shape must be a tuple of positive integers, got {shape!r}") from None
        if len(shape) < 1 or any(d < 1 for d in shape):
            raise InputError(f"shape must be a tuple of positive integers, got {shape!r}")
        self._shape = shape
        self._n = 0
        self._mean_s = 0.0
        self._m2_s = 0.0
        self._mean_m = np.zeros(shape, dtype=np.float64)
        self._m2_m = np.zeros(shape, dtype=np.float64)
        self._c_ms = np.zeros(shape, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one mask, e.g. ``(H, W)``."""
        return self._shape

    @property
    def n(self) -> int:
        """Number of (mask, score) samples accumulated so far."""
        return self._n

    def update(self, masks: np.ndarray, scores: np.ndarray) -> None:
        """Add a batch of samples.

        Args:
            masks: (n, *shape) mask values (any real dtype; finite).
            scores: (n,) similarity scores, one per mask (finite).

        Raises:
            InputError: wrong shapes, or non-finite scores or masks; the accumulator is then
                unchanged.
        """
        masks = np.asarray(masks)
        scores = np.asarray(scores)
        if masks.shape[1:] != self._shape or masks.ndim != len(self._shape) + 1:
            raise InputError(
                f"masks must have shape (n, {', '.join(map(str, self._shape))}), "
                f"got {masks.shape}"
            )
        if scores.shape != (masks.shape[0],):
            raise InputError(
                f"scores must have shape ({masks.shape[0]},), one per mask, got {scores.shape}"
            )
        if masks.dtype.kind not in "biuf" or scores.dtype.kind not in "biuf":
            raise InputError(
                f"masks and scores must be real numbers, got {masks.dtype} and {scores.dtype}"
            )
        scores = scores.astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise InputError("scores must be finite (found NaN or infinity)")
        n = masks.shape[0]
        if n == 0:
            return
        pixels = int(np.prod(self._shape))
        flat = masks.reshape(n, pixels)
        step = max(1, _CHUNK_ELEMENTS // pixels)
        batch = CorrelationAccumulator(self._shape)  # committed only once every chunk is valid
        for i in range(0, n, step):
            batch._merge_batch(*_batch_moments(flat[i : i + step], scores[i : i + step]))
        self._merge_batch(
            batch._n, batch._mean_s, batch._m2_s, batch._mean_m, batch._m2_m, batch._c_ms
        )

    def _merge_batch(
        self,
        n_b: int,
        mean_s_b: float,
        m2_s_b: float,
        mean_m_b: np.ndarray,
        m2_m_b: np.ndarray,
        c_ms_b: np.ndarray,
    ) -> None:
        """Fold the moments of another sample set into this one (Chan et al.'s pairwise update)."""
        mean_m_b = mean_m_b.reshape(self._shape)
        m2_m_b = m2_m_b.reshape(self._shape)
        c_ms_b = c_ms_b.reshape(self._shape)
        n_a = self._n
        if n_b == 0:
            return
        if n_a == 0:
            self._n = n_b
            self._mean_s, self._m2_s = mean_s_b, m2_s_b
            self._mean_m = np.array(mean_m_b, dtype=np.float64)
            self._m2_m = np.array(m2_m_b, dtype=np.float64)
            self._c_ms = np.array(c_ms_b, dtype=np.float64)
            return
        n = n_a + n_b
        weight = n_a * n_b / n
        d_s = mean_s_b - self._mean_s
        d_m = mean_m_b - self._mean_m
        self._mean_s = self._mean_s + d_s * (n_b / n)
        self._m2_s = self._m2_s + m2_s_b + d_s * d_s * weight
        self._mean_m = self._mean_m + d_m * (n_b / n)
        self._m2_m = self._m2_m + m2_m_b + d_m * d_m * weight
        self._c_ms = self._c_ms + c_ms_b + d_m * (d_s * weight)
        self._n = n

    def merge(self, other: CorrelationAccumulator) -> CorrelationAccumulator:
        """A new accumulator holding the union of this one's samples and ``other``'s.

        The two must have been fed disjoint samples of masks of the same shape; neither is changed.
        The result equals, to float64 rounding, one accumulator fed all samples.
        """
        if not isinstance(other, CorrelationAccumulator):
            raise InputError(f"can only merge a CorrelationAccumulator, got {type(other).__name__}")
        if other.shape != self._shape:
            raise InputError(
                f"cannot merge accumulators of different shapes: {self._shape} and {other.shape}"
            )
        merged = CorrelationAccumulator.from_state(self.state())
        merged._merge_batch(
            other._n, other._mean_s, other._m2_s, other._mean_m, other._m2_m, other._c_ms
        )
        return merged

    def subtract(self, part: CorrelationAccumulator) -> CorrelationAccumulator:
        """A new accumulator of this one's samples that are not in ``part`` (a sub-set of them,
        e.g. the even-indexed masks): the inverse of :meth:`merge`, so that
        ``whole.subtract(part).merge(part)`` equals ``whole`` up to float64 rounding.

        Chan et al.'s update solved for the other part: with n_r = n - n_p,
        mean_r = mean + (mean - mean_p) n_p / n_r and m2_r = m2 - m2_p - d^2 n_p n_r / n
        (d = mean_r - mean_p), the same for the co-moment. Exact in exact arithmetic; each
        difference is of sums of non-negative terms of one order, so it loses a few bits at most.
        InputError when ``part`` has more samples or another shape.
        """
        if not isinstance(part, CorrelationAccumulator):
            raise InputError(f"can only subtract a CorrelationAccumulator, got {type(part).__name__}")
        if part.shape != self._shape:
            raise InputError(f"cannot subtract accumulators of different shapes: {self._shape} and {part.shape}")
        n_p = part._n
        n_r = self._n - n_p
        if n_r < 0:
            raise InputError(f"cannot subtract {n_p} samples from an accumulator of {self._n}")
        rest = CorrelationAccumulator(self._shape)
        if n_r == 0:
            return rest
        if n_p == 0:
            return CorrelationAccumulator.from_state(self.state())
        n = self._n
        mean_s = self._mean_s + (self._mean_s - part._mean_s) * (n_p / n_r)
        mean_m = self._mean_m + (self._mean_m - part._mean_m) * (n_p / n_r)
        weight = n_p * n_r / n
        d_s = mean_s - part._mean_s
        d_m = mean_m - part._mean_m
        rest._n = n_r
        rest._mean_s = mean_s
        rest._m2_s = max(self._m2_s - part._m2_s - d_s * d_s * weight, 0.0)
        rest._mean_m = mean_m
        rest._m2_m = np.maximum(self._m2_m - part._m2_m - d_m * d_m * weight, 0.0)
        rest._c_ms = self._c_ms - part._c_ms - d_m * (d_s * weight)
        return rest

    def pearson(self) -> np.ndarray:
        """Per-pixel Pearson correlation between mask values and scores.

        Returns:
            float32 array of ``shape`` (H, W) in [-1, 1]. It is 0.0, never NaN, where the mask
            values did not vary, where the scores did not vary (variance at most
            ``CONSTANT_RTOL * mean**2``), and everywhere while ``n < 2``.
        """
        out = np.zeros(self._shape, dtype=np.float64)
        if self._n < 2:
            return out.astype(np.float32)
        if self._m2_s <= CONSTANT_RTOL * self._n * self._mean_s**2:
            return out.astype(np.float32)
        varies = self._m2_m > CONSTANT_RTOL * self._n * np.square(self._mean_m)
        denom = np.sqrt(self._m2_m * self._m2_s)
        np.divide(self._c_ms, denom, out=out, where=varies & (denom > 0))
        np.clip(out, -1.0, 1.0, out=out)
        return out.astype(np.float32)

    def state(self) -> dict[str, np.ndarray | int | float]:
        """The accumulator as plain values, e.g. to store a partial result.

        Keys: ``n`` (int), ``mean_s``, ``m2_s`` (float), ``mean_m``, ``m2_m``, ``c_ms`` (float64
        arrays of ``shape``, copies). :meth:`from_state` rebuilds an equal accumulator.
        """
        return {
            "n": int(self._n),
            "mean_s": float(self._mean_s),
            "m2_s": float(self._m2_s),
            "mean_m": self._mean_m.copy(),
            "m2_m": self._m2_m.copy(),
            "c_ms": self._c_ms.copy(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray | int | float]) -> CorrelationAccumulator:
        """Rebuild an accumulator from :meth:`state`'s dictionary (validated; InputError if bad)."""
        if not isinstance(state, Mapping):
            raise InputError(f"state must be a mapping, got {type(state).__name__}")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise InputError(f"state lacks the keys {missing}")
        try:
            n_value = state["n"]
            n = int(n_value)
            if n != n_value:
                raise ValueError
            mean_s = float(state["mean_s"])
            m2_s = float(state["m2_s"])
            arrays = [np.array(state[key], dtype=np.float64) for key in ("mean_m", "m2_m", "c_ms")]
        except (TypeError, ValueError):
            raise InputError("state has non-numeric values") from None
        if n < 0:
            raise InputError(f"state n must be >= 0, got {n}")
        shape = arrays[0].shape
        if any(a.shape != shape for a in arrays) or len(shape) < 1:
            raise InputError(
                "state arrays mean_m, m2_m, c_ms must share one non-scalar shape, got "
                f"{[a.shape for a in arrays]}"
            )
        finite = np.isfinite(mean_s) and np.isfinite(m2_s)
        if not (finite and all(np.isfinite(a).all() for a in arrays)):
            raise InputError("state values must be finite")
        acc = cls(shape)
        acc._n = n
        acc._mean_s, acc._m2_s = mean_s, m2_s
        acc._mean_m, acc._m2_m, acc._c_ms = arrays
        return acc


def _batch_moments(
    masks: np.ndarray, scores: np.ndarray
) -> tuple[int, float, float, np.ndarray, np.ndarray, np.ndarray]:
    """Two-pass moments of one batch: masks (b, P), scores (b,) float64 -> (b, means, sums)."""
    b = masks.shape[0]
    m = masks.astype(np.float64)  # a copy, centred in place below
    mean_m = m.mean(axis=0)
    if not np.all(np.isfinite(mean_m)):
        raise InputError("masks must be finite (found NaN or infinity)")
    m -= mean_m
    mean_s = float(scores.mean())
    d_s = scores - mean_s
    m2_s = float(d_s @ d_s)
    m2_m = np.einsum("ij,ij->j", m, m)
    c_ms = d_s @ m
    return b, mean_s, m2_s, mean_m, m2_m, c_ms


def _checked_pair(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    scores = np.asarray(scores)
    if masks.ndim < 2:
        raise InputError(f"masks must be an (N, H, W) array, got shape {masks.shape}")
    if scores.shape != (masks.shape[0],):
        raise InputError(
            f"scores must have shape ({masks.shape[0]},), one per mask, got {scores.shape}"
        )
    return masks, scores


def pearson_map(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """CorrRISE saliency: per-pixel Pearson correlation of mask values with scores, in one shot.

    Args:
        masks: (N, H, W) mask values.
        scores: (N,) similarity scores.

    Returns:
        (H, W) float32 in [-1, 1]; 0 where masks or scores are constant, or N < 2.
    """
    masks, scores = _checked_pair(masks, scores)
    acc = CorrelationAccumulator(masks.shape[1:])
    acc.update(masks, scores)
    return acc.pearson()


def spearman_map(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-pixel Spearman rank correlation of mask values with scores.

    Masks are ranked along N pixel by pixel and scores ranked once, ties getting the mean of their
    ranks; the result is the Pearson correlation of the ranks.

    Args:
        masks: (N, H, W) mask values.
        scores: (N,) similarity scores.

    Returns:
        (H, W) float32 in [-1, 1]; 0 where masks or scores are constant, or N < 2.
    """
    masks, scores = _checked_pair(masks, scores)
    if not np.all(np.isfinite(scores)):
        raise InputError("scores must be finite (found NaN or infinity)")
    if not np.all(np.isfinite(masks)):
        raise InputError("masks must be finite (found NaN or infinity)")
    if masks.shape[0] == 0:
        return np.zeros(masks.shape[1:], dtype=np.float32)
    n = masks.shape[0]
    # Rank along N with each pixel's N values contiguous: same ranks as rankdata(masks, axis=0),
    # about twice as fast.
    by_pixel = np.ascontiguousarray(masks.reshape(n, -1).T)
    from scipy.stats import rankdata  # SciPy only for the Spearman option

    ranks = rankdata(by_pixel, axis=-1).T.reshape(masks.shape)
    return pearson_map(ranks, rankdata(scores))


def split_signed(saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a signed saliency map into its "similar" and "dissimilar" parts.

    Args:
        saliency: signed map S (H, W).

    Returns:
        ``(max(S, 0), max(-S, 0))``, both non-negative and of S's shape and dtype: the regions that
        raise the similarity and the magnitude of those that lower it. ``S = pos - neg``.
    """
    saliency = np.asarray(saliency)
    zero = np.zeros((), dtype=saliency.dtype)
    positive = np.maximum(saliency, zero) + zero  # + 0 turns -0.0 into 0.0
    negative = np.maximum(-saliency, zero) + zero
    return positive, negative
