"""Explanation maps of one face pair and the verification verdict that comes with them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError
from .uncertainty import Uncertainty, UncertaintyOptions, map_uncertainty

__all__ = ["Explanation", "decide", "restate"]


def decide(score: float, threshold: float | None) -> str:
    """"match" when score >= threshold, "non-match" below it, "unknown" without a threshold."""
    if threshold is None:
        return "unknown"
    return "match" if score >= threshold else "non-match"


@dataclass(frozen=True)
class Explanation:
    """Signed saliency maps of a pair (A, B) on the model's chip.

    ``s_a``/``s_b`` (H, W) float32 in [-1, 1]: positive where the model finds the pair similar,
    negative where it finds it dissimilar. ``score`` is the clean cosine similarity.
    ``scores_a``/``scores_b`` (N,) are the per-mask scores behind the maps (may be empty).

    ``masks``: the number of perturbed images per face the method scored (CorrRISE's N, RISE's
    masks, LIME's samples, xFace's occlusions, MinPlus's candidates over all steps); 0 for methods
    that perturb nothing (Grad-CAM, Grad-CAM++). ``forward_passes``: model evaluations the
    explanation spent, both faces, the clean pair included (``2 * masks + 2`` for the perturbation
    methods; 2 for the gradient methods, whose one backward pass is not counted).

    ``uncertainty``: how sure the maps are (per-pixel intervals, significance masks, split-half
    agreement; :mod:`explainer_service.uncertainty`) for the correlation maps of CorrRISE; None for
    methods that do not estimate it.
    """

    s_a: np.ndarray
    s_b: np.ndarray
    score: float
    threshold: float | None
    model: str
    masks: int
    method: str = "corrrise"
    params: dict[str, Any] = field(default_factory=dict)
    scores_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scores_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    forward_passes: int = 0
    uncertainty: Uncertainty | None = None

    @property
    def decision(self) -> str:
        return decide(self.score, self.threshold)

    @property
    def similar_a(self) -> np.ndarray:
        out: np.ndarray = np.maximum(self.s_a, 0)
        return out

    @property
    def dissimilar_a(self) -> np.ndarray:
        out: np.ndarray = np.maximum(-self.s_a, 0)
        return out

    @property
    def similar_b(self) -> np.ndarray:
        out: np.ndarray = np.maximum(self.s_b, 0)
        return out

    @property
    def dissimilar_b(self) -> np.ndarray:
        out: np.ndarray = np.maximum(-self.s_b, 0)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no arrays)."""
        return {
            "model": self.model,
            "method": self.method,
            "score": round(float(self.score), 6),
            "threshold": None if self.threshold is None else round(float(self.threshold), 6),
            "decision": self.decision,
            "masks": int(self.masks),
            "forward_passes": int(self.forward_passes),
            "params": self.params,
            "map_shape": list(self.s_a.shape),
            "s_a_range": [round(float(self.s_a.min()), 6), round(float(self.s_a.max()), 6)],
            "s_b_range": [round(float(self.s_b.min()), 6), round(float(self.s_b.max()), 6)],
            "uncertainty": None if self.uncertainty is None else self.uncertainty.summary(),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The maps and per-mask scores as float32 arrays (for ``maps.npz``), and the uncertainty's
        arrays when there are any (``ci_low_a``... float32, ``significant_a``... bool)."""
        f = np.float32
        out = {
            "s_a": self.s_a.astype(f),
            "s_b": self.s_b.astype(f),
            "similar_a": self.similar_a.astype(f),
            "dissimilar_a": self.dissimilar_a.astype(f),
            "similar_b": self.similar_b.astype(f),
            "dissimilar_b": self.dissimilar_b.astype(f),
            "scores_a": np.asarray(self.scores_a, f),
            "scores_b": np.asarray(self.scores_b, f),
        }
        if self.uncertainty is not None and self.uncertainty.has_arrays:
            out.update(self.uncertainty.arrays())
        return out


def restate(explanation: Explanation, options: UncertaintyOptions) -> Explanation:
    """``explanation`` with its uncertainty stated at ``options``: intervals at ``options.level``
    and significance masks at false-discovery rate ``options.q`` from its own maps and mask count
    (exactly what CorrRISE's ``finish(shard, q=, level=)`` gives: neither depends on anything
    else), its split-half figures kept. Unchanged when it has no uncertainty (a method that does not
    estimate one) or when the options are already its own."""
    unc = explanation.uncertainty
    if not isinstance(options, UncertaintyOptions):
        raise InputError(f"options must be UncertaintyOptions, got {type(options).__name__}")
    if unc is None or (unc.q == options.q and unc.level == options.level):
        return explanation
    rank = unc.method == "fisher-z-spearman"
    faces = []
    for r, old in ((explanation.s_a, unc.a), (explanation.s_b, unc.b)):
        new = map_uncertainty(r, unc.n, q=options.q, level=options.level, rank=rank)
        faces.append(replace(new, split_half_r=old.split_half_r, predicted_r=old.predicted_r))
    return replace(explanation, uncertainty=Uncertainty(unc.method, options.level, options.q, unc.n, *faces))
