"""LIME (Ribeiro, Singh, Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
Classifier", KDD 2016) adapted to face verification.

LIME fits an interpretable, locally weighted linear model to the black box around one input. For
images (the authors' ``lime_image``) the interpretable features are superpixels, each on (original
pixels) or off (replaced by a substrate). Here the black box's output is the pair's similarity: for
face A (and symmetrically B)

1. segment A into F superpixels (``segment_chip``);
2. draw N binary vectors z_k in {0, 1}^F (each superpixel on with probability 1/2), z_1 = all ones
   (the clean image), as ``lime_image`` does;
3. score each: y_k = cos(f(A_{z_k}), f(B)), where A_z keeps the superpixels that are on and fills
   the others with the substrate (0 by default);
4. weight each sample by lime's kernel on the cosine distance to the all-ones vector,
   w_k = sqrt(exp(-d_k^2 / width^2)), width 0.25 (``lime_image``'s default);
5. fit a ridge regression (alpha 1, with an unpenalised intercept, as ``lime``'s default
   ``Ridge(alpha=1)``) by the closed form of weighted least squares (``fit_weighted_ridge``);
6. paint each superpixel with its coefficient: the (S, S) map. Positive = keeping the superpixel
   raises the similarity.

Segmentation: SLIC by default (``n_segments=50``, ``compactness=10``), not ``lime_image``'s
quickshift. Quickshift with lime's parameters (kernel_size 4, max_dist 200, ratio 0.2) was tuned on
299 px ImageNet images; on our 112/150 px aligned faces it yields only about 8 to 20 segments (a
whole cheek or the forehead is one feature), and its count varies from face to face. SLIC gives a
chosen number of compact superpixels of similar size on any chip; quickshift stays available with
lime's parameters (``segmentation="quickshift"``).

Randomness: the samples of face A come from ``default_rng([seed, 0])``, those of B from
``default_rng([seed, 1])``; the segmentation is deterministic. ``perturbations_per_eval`` only
changes how the samples are batched.

Cost per pair: 2 + 2N forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .perturbation import (
    DEFAULT_PERTURBATIONS_PER_EVAL,
    CleanPair,
    Evaluator,
    Maps,
    PerturbationMethod,
    _Group,
    _is_number,
    _require_at_most,
    _require_chip_size,
    _require_choice,
    _require_int,
    _require_positive,
)

__all__ = [
    "LIME",
    "LIMEConfig",
    "SEGMENTATIONS",
    "SUBSTRATES",
    "segment_chip",
    "lime_samples",
    "lime_kernel_weights",
    "fit_weighted_ridge",
]

SEGMENTATIONS = ("slic", "quickshift")
SUBSTRATES = ("zero", "mean")


@dataclass(frozen=True)
class LIMEConfig:
    """LIME's options (lime_image's defaults except the segmentation, see the module docstring,
    and N = 500 samples for CorrRISE's budget instead of lime_image's 1000).

    Attributes:
        n_samples: samples N per face (>= 2), the first being the clean image.
        segmentation: ``"slic"`` or ``"quickshift"`` (skimage.segmentation).
        n_segments, compactness: SLIC's target number of superpixels (at most the chip's pixels)
            and compactness.
        kernel_size, max_dist, ratio: quickshift's parameters (lime_image's defaults; the kernel
            at most the chip side).
        substrate: what an "off" superpixel becomes: ``"zero"`` (black) or ``"mean"`` (its mean
            colour, lime_image's ``hide_color=None``).
        kernel_width: width of the exponential kernel on the cosine distance (> 0).
        alpha: ridge penalty (>= 0; 0 is plain weighted least squares).
        seed: seed of the samples (non-negative integer).
        perturbations_per_eval: perturbed images per model call (>= 1); speed and memory only.
    """

    n_samples: int = 500
    segmentation: str = "slic"
    n_segments: int = 50
    compactness: float = 10.0
    kernel_size: float = 4.0
    max_dist: float = 200.0
    ratio: float = 0.2
    substrate: str = "zero"
    kernel_width: float = 0.25
    alpha: float = 1.0
    seed: int = 0
    perturbations_per_eval: int = DEFAULT_PERTURBATIONS_PER_EVAL

    def __post_init__(self) -> None:
        _require_int("n_samples", self.n_samples, 2)
        _require_choice("segmentation", self.segmentation, SEGMENTATIONS)
        _require_int("n_segments", self.n_segments, 1)
        _require_positive("compactness", self.compactness)
        _require_positive("kernel_size", self.kernel_size)
        _require_positive("max_dist", self.max_dist)
        if not _is_number(self.ratio) or not 0.0 <= float(self.ratio) <= 1.0:
            raise InputError(f"ratio must be a number in [0, 1], got {self.ratio!r}")
        _require_choice("substrate", self.substrate, SUBSTRATES)
        _require_positive("kernel_width", self.kernel_width)
        if not _is_number(self.alpha) or not 0.0 <= float(self.alpha) < float("inf"):
            raise InputError(f"alpha must be a number >= 0, got {self.alpha!r}")
        _require_int("seed", self.seed, 0)
        _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the segmentation fits a ``chip_size`` chip: at most one superpixel
        per pixel (``n_segments <= chip_size**2``) and a quickshift kernel no wider than the chip."""
        size = _require_chip_size(chip_size)
        _require_at_most("n_segments", self.n_segments, size * size, f"the chip's pixels ({size * size})")
        _require_at_most("kernel_size", float(self.kernel_size), size, f"the chip side ({size} px)")


def segment_chip(chip: np.ndarray, config: LIMEConfig) -> np.ndarray:
    """Superpixels of a (S, S, 3) RGB chip: int (S, S) labels 0 .. F-1 (consecutive)."""
    from skimage.segmentation import quickshift, slic  # heavy import, only when LIME runs

    img = np.clip(np.asarray(chip, np.float64), 0, 255) / 255.0
    if config.segmentation == "slic":
        labels = slic(
            img, n_segments=config.n_segments, compactness=float(config.compactness), start_label=0,
            channel_axis=-1,
        )
    else:
        labels = quickshift(
            img, kernel_size=float(config.kernel_size), max_dist=float(config.max_dist),
            ratio=float(config.ratio), rng=config.seed,
        )
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int64)


def lime_samples(n_samples: int, n_features: int, seed: int, face: int) -> np.ndarray:
    """bool (N, F) on/off vectors of one face (0 = A, 1 = B): row 0 all on, the others uniform."""
    rng = np.random.default_rng([int(seed), int(face)])
    z = rng.integers(0, 2, size=(n_samples, n_features)).astype(bool)
    z[0] = True
    return z


def lime_kernel_weights(samples: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's sample weights, float64 (N,): sqrt(exp(-d^2 / width^2)) with d the cosine distance
    between each (N, F) binary row and the all-ones vector, d = 1 - sqrt(k / F) for k features on
    (1 for an all-off row, as sklearn's ``pairwise_distances(metric="cosine")`` gives)."""
    z = np.asarray(samples, np.float64)
    n_on = z.sum(axis=1)
    f = z.shape[1]
    d = 1.0 - np.sqrt(n_on / f)
    weights: np.ndarray = np.sqrt(np.exp(-(d**2) / float(kernel_width) ** 2))
    return weights


def fit_weighted_ridge(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[float, np.ndarray]:
    """Minimise sum_k w_k (y_k - b - x_k . c)^2 + alpha |c|^2 over the intercept b and coefficients c.

    Closed form (what sklearn's ``Ridge(alpha).fit(x, y, sample_weight=w)`` computes): centre x and
    y on their weighted means, solve (Xc^T W Xc + alpha I) c = Xc^T W yc, b = mean(y) - mean(x) . c.

    Args:
        x: (N, F) features; y: (N,) targets; weights: (N,) non-negative, not all 0; alpha >= 0.

    Returns:
        (b, c) with c float64 (F,). With alpha = 0 and a singular system: the minimum-norm c.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.asarray(weights, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or w.shape != (x.shape[0],):
        raise InputError(f"x must be (N, F), y and weights (N,); got {x.shape}, {y.shape}, {w.shape}")
    if np.any(w < 0) or w.sum() <= 0:
        raise InputError("weights must be non-negative and not all zero")
    sw = w.sum()
    x_mean = (w @ x) / sw
    y_mean = float(w @ y) / sw
    xc = x - x_mean
    yc = y - y_mean
    gram = xc.T @ (w[:, None] * xc) + float(alpha) * np.eye(x.shape[1])
    rhs = xc.T @ (w * yc)
    if alpha > 0:
        coef = np.linalg.solve(gram, rhs)
    else:
        coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return y_mean - float(x_mean @ coef), coef


class LIME(PerturbationMethod[LIMEConfig]):
    """LIME over a FaceModel; ``attribute`` explains one pair (both faces), 2N + 2 forward passes.

    Returns maps (S, S) float32 (each superpixel painted with its ridge coefficient);
    ``scores_a``/``scores_b`` (N,) hold the samples' similarities.
    """

    name = "lime"
    config_class = LIMEConfig

    @classmethod
    def forward_passes_for(cls, config: LIMEConfig, chip_size: int) -> int:
        config.check_for_chip(chip_size)
        return 2 + 2 * config.n_samples

    def _substrate(self, chip: np.ndarray, segments: np.ndarray) -> np.ndarray:
        if self.config.substrate == "zero":
            return np.zeros_like(chip)
        n = int(segments.max()) + 1
        counts = np.bincount(segments.ravel(), minlength=n)[:, None]
        sums = np.stack([np.bincount(segments.ravel(), chip[..., c].ravel(), n) for c in range(3)], 1)
        substrate: np.ndarray = (sums / counts)[segments].astype(np.float32)
        return substrate

    def _explain(self, pair: CleanPair, evaluate: Evaluator) -> Maps:
        cfg = self.config
        n = cfg.n_samples
        faces = []
        for face, chip in enumerate((pair.a, pair.b)):
            segments = segment_chip(chip, cfg)
            z = lime_samples(n, int(segments.max()) + 1, cfg.seed, face)
            faces.append((chip, segments, z, self._substrate(chip, segments)))

        def render(
            chip: np.ndarray, segments: np.ndarray, z: np.ndarray, fill: np.ndarray
        ) -> Callable[[int, int], np.ndarray]:
            def make(lo: int, hi: int) -> np.ndarray:
                keep = z[lo:hi][:, segments][..., None]  # (n, S, S, 1)
                return np.where(keep, chip[None], fill[None]).astype(np.float32)

            return make

        groups = [_Group(n, render(*faces[0]), pair.emb_b), _Group(n, render(*faces[1]), pair.emb_a)]
        scores = evaluate(groups)
        maps = []
        for (_, segments, z, _), y in zip(faces, scores, strict=True):
            _, coef = fit_weighted_ridge(z, y, lime_kernel_weights(z, cfg.kernel_width), cfg.alpha)
            maps.append(coef[segments].astype(np.float32))
        extra = {"n_superpixels": [int(f[1].max()) + 1 for f in faces]}
        return Maps(maps[0], maps[1], scores[0], scores[1], extra)
