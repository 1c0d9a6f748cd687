"""Evaluation of explanation methods on a pair set: Deletion and Insertion per method (Table 1).

A library function with a thin CLI (``facexplain evaluate``) so that the queued audit service can
call it: align the matched pairs once, explain each pair with every method, then run the batched
Deletion/Insertion curves over all pairs of each method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .metrics import CausalCurve, CausalMetric
from .models.base import FaceModel

__all__ = [
    "METHODS", "build_method", "MethodResult", "evaluate_methods", "explain_pairs", "score_maps",
]

#: The methods ``facexplain evaluate --methods`` knows, in the paper's order.
METHODS = ("corrrise", "rise", "lime", "xface", "minplus", "gradcam", "gradcampp")


def build_method(
    name: str,
    model: FaceModel,
    *,
    seed: int = 0,
    budget: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Any:
    """An explanation method by name over ``model``; ``budget`` sets the number of perturbations
    of the sampling methods (CorrRISE, RISE, LIME) for an equal-cost comparison;
    ``perturbations_per_eval`` the perturbed images per model call of the perturbation methods
    (speed and memory only, never the maps; None: each method's default)."""
    batch = {} if perturbations_per_eval is None else {"perturbations_per_eval": perturbations_per_eval}
    if name == "corrrise":
        from .masks import MaskConfig
        from .methods.corrrise import CorrRISE, CorrRISEConfig

        masks = MaskConfig(seed=seed) if budget is None else MaskConfig(seed=seed, n_masks=budget)
        return CorrRISE(model, CorrRISEConfig(masks=masks, **batch))
    if name == "rise":
        from .methods.rise import RISE, RISEConfig

        return RISE(model, RISEConfig(seed=seed, **({} if budget is None else {"n_masks": budget}), **batch))
    if name == "lime":
        from .methods.lime import LIME, LIMEConfig

        return LIME(model, LIMEConfig(seed=seed, **({} if budget is None else {"n_samples": budget}), **batch))
    if name == "xface":
        from .methods.xface import XFace, XFaceConfig

        return XFace(model, XFaceConfig(**batch))
    if name == "minplus":
        from .methods.minplus import MinPlus, MinPlusConfig

        return MinPlus(model, MinPlusConfig(**batch))
    if name in ("gradcam", "gradcampp"):
        from .methods.gradcam import GradCAM, GradCAMPlusPlus, GradTarget

        target = GradTarget.from_model_name(model.spec.name)
        return (GradCAM if name == "gradcam" else GradCAMPlusPlus)(target)
    raise InputError(f"unknown method {name!r} (known: {', '.join(METHODS)})")


@dataclass(frozen=True)
class MethodResult:
    """One method's Deletion and Insertion curves over the pairs, and its explanation speed."""

    method: str
    deletion: CausalCurve
    insertion: CausalCurve
    pairs: int
    explain_seconds: float
    metric_seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d_lo, d_hi = self.deletion.confidence_interval()
        i_lo, i_hi = self.insertion.confidence_interval()
        return {
            "method": self.method,
            "deletion": round(self.deletion.auc, 2),
            "insertion": round(self.insertion.auc, 2),
            "pairs": self.pairs,
            "deletion_ci95": [round(d_lo, 2), round(d_hi, 2)],
            "insertion_ci95": [round(i_lo, 2), round(i_hi, 2)],
            "explain_pairs_per_s": round(self.pairs / self.explain_seconds, 4) if self.explain_seconds else None,
            "metric_pairs_per_s": round(self.pairs / self.metric_seconds, 2) if self.metric_seconds else None,
        }


def evaluate_methods(
    chips_a: np.ndarray,
    chips_b: np.ndarray,
    model: FaceModel,
    methods: list[str] | tuple[str, ...],
    *,
    steps: np.ndarray | None = None,
    substrate: str = "zeros",
    perturb: str = "probe",
    threshold: float | None = None,
    seed: int = 0,
    budget: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    build: Callable[..., Any] = build_method,
) -> list[MethodResult]:
    """Deletion/Insertion of each method on matched pairs given as aligned chips (P, S, S, 3)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    if len(chips_a) != len(chips_b) or len(chips_a) == 0:
        raise InputError("evaluation needs the same, non-zero number of A and B chips")
    results = []
    for name in methods:
        method = build(name, model, seed=seed, budget=budget)
        t0 = time.perf_counter()
        ma, mb, params = explain_pairs(
            method, chips_a, chips_b, progress=None if progress is None else (lambda i, n, m=name: progress(m, i, n))
        )
        t1 = time.perf_counter()
        d, ins = score_maps(chips_a, chips_b, ma, mb, model, steps=steps, substrate=substrate, perturb=perturb,
                            threshold=threshold)
        t2 = time.perf_counter()
        results.append(MethodResult(name, d, ins, len(chips_a), t1 - t0, t2 - t1, params))
    return results


def explain_pairs(
    method: Any,
    chips_a: np.ndarray,
    chips_b: np.ndarray,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Maps (P, S, S) of A and of B of each pair by ``method``, and the method's parameters."""
    maps_a, maps_b, params = [], [], {}
    for i, (a, b) in enumerate(zip(chips_a, chips_b)):
        ex = method.attribute(a, b)
        maps_a.append(ex.s_a)
        maps_b.append(ex.s_b)
        params = dict(getattr(ex, "params", {}))
        if progress is not None:
            progress(i + 1, len(chips_a))
    return np.stack(maps_a), np.stack(maps_b), params


def score_maps(
    chips_a: np.ndarray,
    chips_b: np.ndarray,
    maps_a: np.ndarray,
    maps_b: np.ndarray,
    model: FaceModel,
    *,
    steps: np.ndarray | None = None,
    substrate: str = "zeros",
    perturb: str = "probe",
    threshold: float | None = None,
) -> tuple[CausalCurve, CausalCurve]:
    """The Deletion and Insertion curves of given maps over the pairs (maps computed once can be
    scored with several step sets or substrates)."""
    deletion = CausalMetric(model, "deletion", steps=steps, substrate=substrate, perturb=perturb)
    insertion = CausalMetric(model, "insertion", steps=steps, substrate=substrate, perturb=perturb)
    return (
        deletion.curve(chips_a, chips_b, maps_a, maps_b, threshold=threshold),
        insertion.curve(chips_a, chips_b, maps_a, maps_b, threshold=threshold),
    )
