"""Deletion and Insertion (the paper's Algorithm 2): how faithful saliency maps are to the model.

For each step p of the removal/insertion schedule, the top-p fraction of the probe's most salient
pixels are removed (Deletion: replaced by a substrate) or inserted into the substrate (Insertion);
the verification accuracy of the matched pairs at the clean threshold is measured, and the area
under the accuracy curve (x normalised to [0, 1], trapezoid rule, x100 as in the paper's Table 1)
is the score: low Deletion and high Insertion mean faithful maps.

The metric is a small object over a FaceModel (after RISE's ``CausalMetric``); the curve maths are
pure functions; the substrate is an injected callable. Every perturbed image of a step, across
all pairs, goes through the model in large batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .models.base import FaceModel, cosine_to, to_model_input

__all__ = [
    "MODES",
    "SUBSTRATES",
    "resolve_substrate",
    "auc",
    "default_steps",
    "top_fraction_masks",
    "CausalCurve",
    "CausalMetric",
]

MODES = ("deletion", "insertion")
Substrate = Callable[[np.ndarray], np.ndarray]


def _zeros(chip: np.ndarray) -> np.ndarray:
    return np.zeros_like(chip, dtype=np.float32)


def _mean(chip: np.ndarray) -> np.ndarray:
    return np.broadcast_to(chip.reshape(-1, chip.shape[-1]).mean(axis=0), chip.shape).astype(np.float32)


def _blur(chip: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(chip.astype(np.float32), sigma=(sigma, sigma, 0))


#: Substrates by name: what removed pixels become (zeros: the paper's default).
SUBSTRATES: dict[str, Substrate] = {"zeros": _zeros, "mean": _mean, "blur": _blur}


def resolve_substrate(name_or_fn: str | Substrate) -> Substrate:
    """A substrate callable (S, S, 3) -> (S, S, 3) float32, by name or as given."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return SUBSTRATES[name_or_fn]
    except KeyError:
        raise InputError(f"substrate must be one of {', '.join(SUBSTRATES)}, got {name_or_fn!r}") from None


def default_steps(n: int = 11) -> np.ndarray:
    """Fractions 0, 1/(n-1), ..., 1 (n=11: the paper's 0, 10, ..., 100 %)."""
    if n < 2:
        raise InputError(f"the curve needs at least 2 steps, got {n}")
    return np.linspace(0.0, 1.0, n)


def auc(values: Sequence[float] | np.ndarray, xs: Sequence[float] | np.ndarray | None = None) -> float:
    """Area under a curve sampled at ``xs`` (default: evenly over [0, 1]), trapezoid rule, x100.

    ``values`` may be (n,) or (..., n): the area is taken along the last axis (per-pair curves).
    """
    v = np.asarray(values, dtype=np.float64)
    x = np.linspace(0.0, 1.0, v.shape[-1]) if xs is None else np.asarray(xs, dtype=np.float64)
    if x.shape[-1] != v.shape[-1] or v.shape[-1] < 2:
        raise InputError("auc needs at least 2 points and one x per value")
    span = x[-1] - x[0]
    if span <= 0:
        raise InputError("auc needs increasing x values")
    area = np.sum((v[..., 1:] + v[..., :-1]) * np.diff(x) / 2.0, axis=-1) / span
    return area * 100.0 if np.ndim(area) else float(area * 100.0)


def top_fraction_masks(saliency: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Boolean (len(fractions), H, W): the round(f * H * W) most salient pixels for each fraction.

    Ties are broken by pixel order (a stable sort), so the masks are nested and deterministic.
    """
    s = np.asarray(saliency, dtype=np.float64)
    if s.ndim != 2 or not np.all(np.isfinite(s)):
        raise InputError(f"saliency must be a finite (H, W) map, got shape {s.shape}")
    order = np.argsort(-s.ravel(), kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    counts = np.rint(np.asarray(fractions, dtype=np.float64) * s.size).astype(np.int64)
    return (rank[None, :] < counts[:, None]).reshape(len(counts), *s.shape)


@dataclass(frozen=True)
class CausalCurve:
    """Accuracy of the matched pairs at each step, with the per-pair scores and decisions.

    ``scores`` (pairs, steps) cosine scores; ``kept`` (pairs, steps) bool, score >= threshold.
    """

    mode: str
    steps: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    threshold: float

    @property
    def accuracy(self) -> np.ndarray:
        """(steps,) fraction of pairs still verified as the same person."""
        accuracy: np.ndarray = self.kept.mean(axis=0)
        return accuracy

    @property
    def auc(self) -> float:
        """Area under the accuracy curve, x100 (the paper's Deletion/Insertion number)."""
        return auc(self.accuracy, self.steps)

    def per_pair_auc(self) -> np.ndarray:
        """(pairs,) AUC of each pair's 0/1 curve; their mean is :attr:`auc`."""
        return auc(self.kept.astype(np.float64), self.steps)  # type: ignore[return-value]

    def confidence_interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Normal-approximation interval of :attr:`auc` over pairs (mean +- z * standard error);
        None with fewer than 2 pairs (no spread to estimate), never NaN."""
        per = self.per_pair_auc()
        if len(per) < 2:
            return None
        half = z * per.std(ddof=1) / np.sqrt(len(per))
        return (float(per.mean() - half), float(per.mean() + half))


class CausalMetric:
    """Deletion or Insertion over a FaceModel.

    Args:
        model: the face model (its ``spec.threshold`` is the default threshold).
        mode: "deletion" or "insertion".
        steps: the fractions of pixels (default: 0, 0.1, ..., 1).
        substrate: "zeros" (default), "mean", "blur", or a callable.
        perturb: "probe" (B only, default) or "both" (A by its map and B by its map).
        batch_size: perturbed chips per model call.
    """

    def __init__(
        self,
        model: FaceModel,
        mode: str,
        *,
        steps: np.ndarray | Sequence[float] | None = None,
        substrate: str | Substrate = "zeros",
        perturb: str = "probe",
        batch_size: int = 128,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if perturb not in ("probe", "both"):
            raise InputError(f"perturb must be 'probe' or 'both', got {perturb!r}")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.mode = mode
        self.steps = default_steps() if steps is None else np.asarray(steps, dtype=np.float64)
        if self.steps.ndim != 1 or len(self.steps) < 2 or np.any(np.diff(self.steps) <= 0):
            raise InputError("steps must be at least 2 increasing fractions in [0, 1]")
        if self.steps[0] < 0 or self.steps[-1] > 1:
            raise InputError("steps must lie in [0, 1]")
        self.substrate = resolve_substrate(substrate)
        self.perturb = perturb
        self.batch_size = batch_size

    def _perturbed(self, chip: np.ndarray, saliency: np.ndarray) -> np.ndarray:
        """(steps, S, S, 3) float32: the chip with the top pixels removed, or only those inserted."""
        masks = top_fraction_masks(saliency, self.steps)[..., None]
        x = chip.astype(np.float32)
        base = self.substrate(chip).astype(np.float32)
        if self.mode == "deletion":
            return np.where(masks, base[None], x[None])
        return np.where(masks, x[None], base[None])

    def _embed(self, chips: np.ndarray) -> np.ndarray:
        out = [self.model.embed(to_model_input(chips[i : i + self.batch_size])) for i in range(0, len(chips), self.batch_size)]
        return np.concatenate(out)

    def curve(
        self,
        chips_a: np.ndarray,
        chips_b: np.ndarray,
        maps_a: np.ndarray,
        maps_b: np.ndarray,
        *,
        threshold: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CausalCurve:
        """The curve over matched pairs: chips (P, S, S, 3), maps (P, S, S).

        Scores compare the perturbed probe B with the clean A (both perturbed with ``perturb="both"``).
        """
        thr = self.model.spec.threshold if threshold is None else threshold
        if thr is None:
            raise InputError(f"model {self.model.spec.name} has no threshold: calibrate it or pass one")
        chips_a, chips_b = np.asarray(chips_a), np.asarray(chips_b)
        maps_a, maps_b = np.asarray(maps_a), np.asarray(maps_b)
        p = len(chips_b)
        if not (len(chips_a) == p == len(maps_a) == len(maps_b)) or p == 0:
            raise InputError("chips and maps must be given for the same, non-zero number of pairs")
        if maps_b.shape[1:] != chips_b.shape[1:3]:
            raise InputError(f"maps {maps_b.shape[1:]} must match the chips {chips_b.shape[1:3]}")
        n = len(self.steps)
        scores = np.empty((p, n))
        # pairs in groups whose perturbed images fill about one batch of the model
        group = max(1, self.batch_size // n)
        for lo in range(0, p, group):
            hi = min(lo + group, p)
            probes = np.concatenate([self._perturbed(chips_b[i], maps_b[i]) for i in range(lo, hi)])
            emb_b = self._embed(probes).reshape(hi - lo, n, -1)
            if self.perturb == "both":
                refs = np.concatenate([self._perturbed(chips_a[i], maps_a[i]) for i in range(lo, hi)])
                emb_a = self._embed(refs).reshape(hi - lo, n, -1)
                for j in range(hi - lo):
                    e_a, e_b = emb_a[j].astype(np.float64), emb_b[j].astype(np.float64)
                    scores[lo + j] = np.sum(e_a * e_b, 1) / np.maximum(
                        np.linalg.norm(e_a, axis=1) * np.linalg.norm(e_b, axis=1), 1e-12
                    )
            else:
                clean_a = self._embed(chips_a[lo:hi].astype(np.float32))
                for j in range(hi - lo):
                    scores[lo + j] = cosine_to(emb_b[j], clean_a[j])
            if progress is not None:
                progress(hi, p)
        return CausalCurve(self.mode, self.steps.copy(), scores, scores >= thr, float(thr))
