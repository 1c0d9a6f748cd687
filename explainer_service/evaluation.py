"""Evaluation of explanation methods on a pair set: Deletion and Insertion per method (Table 1).

A library function with a thin CLI (``facexplain evaluate``) so that the queued audit service can
call it: align the matched pairs once, explain each pair with every method, then run the batched
Deletion/Insertion curves over all pairs of each method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .methods import registry
from .methods.base import SaliencyMethod
from .methods.registry import METHOD_NAMES
from .metrics import CausalCurve, CausalMetric
from .models.base import FaceModel
from .progress import Progress

__all__ = [
    "METHODS", "MethodResult", "evaluate_methods", "explain_pairs", "score_maps", "check_methods",
]

#: The methods ``facexplain evaluate --methods`` knows, in the paper's order (the registry's).
METHODS = METHOD_NAMES


def check_methods(names: Sequence[str], option: str = "methods") -> list[str]:
    """The method names, checked against the registry: InputError naming ``option``, the unknown
    names and the known ones when any is unknown or none is given."""
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown or not names:
        raise InputError(
            f"{option}: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(METHOD_NAMES)})"
        )
    return names


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
    forward_passes: int | None = None

    def row(self) -> dict[str, Any]:
        """The table row: AUCs, 95 % intervals over pairs ([low, high], None with one pair), speeds,
        the forward passes of one pair (None: not known) and each pair's AUCs, in the pairs' order
        (for paired comparisons of runs made at different times)."""

        def interval(curve: CausalCurve) -> list[float] | None:
            ci = curve.confidence_interval()
            return None if ci is None else [round(ci[0], 2), round(ci[1], 2)]

        return {
            "method": self.method,
            "deletion": round(self.deletion.auc, 2),
            "insertion": round(self.insertion.auc, 2),
            "pairs": self.pairs,
            "deletion_ci95": interval(self.deletion),
            "insertion_ci95": interval(self.insertion),
            "explain_pairs_per_s": round(self.pairs / self.explain_seconds, 4) if self.explain_seconds else None,
            "metric_pairs_per_s": round(self.pairs / self.metric_seconds, 2) if self.metric_seconds else None,
            "forward_passes": self.forward_passes,
            "deletion_per_pair": [round(float(v), 4) for v in self.deletion.per_pair_auc()],
            "insertion_per_pair": [round(float(v), 4) for v in self.insertion.per_pair_auc()],
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
    build: Callable[..., SaliencyMethod] = registry.build,
) -> list[MethodResult]:
    """Deletion/Insertion of each method on matched pairs given as aligned chips (P, S, S, 3).

    Each method is made by ``build(name, model, seed=seed, budget=budget)`` (the registry's
    :func:`~explainer_service.methods.registry.build`); ``progress(method, done, total)`` counts
    pairs explained.
    """
    methods = check_methods(list(methods))
    if len(chips_a) != len(chips_b) or len(chips_a) == 0:
        raise InputError("evaluation needs the same, non-zero number of A and B chips")
    results = []
    for name in methods:
        method = build(name, model, seed=seed, budget=budget)
        t0 = time.perf_counter()
        ma, mb, params = explain_pairs(method, chips_a, chips_b, progress=_per_method(progress, name))
        t1 = time.perf_counter()
        d, ins = score_maps(chips_a, chips_b, ma, mb, model, steps=steps, substrate=substrate, perturb=perturb,
                            threshold=threshold)
        t2 = time.perf_counter()
        passes = registry.forward_passes(name, model.spec.chip.size, **({} if budget is None else {"budget": budget}))
        results.append(MethodResult(name, d, ins, len(chips_a), t1 - t0, t2 - t1, params, passes))
    return results


def _per_method(progress: Callable[[str, int, int], None] | None, name: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


def explain_pairs(
    method: SaliencyMethod,
    chips_a: np.ndarray,
    chips_b: np.ndarray,
    *,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Maps (P, S, S) of A and of B of each pair by ``method``, and the method's parameters."""
    maps_a, maps_b = [], []
    params: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(chips_a, chips_b, strict=True)):
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
