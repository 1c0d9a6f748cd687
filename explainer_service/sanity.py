"""The model-parameter randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency
Maps", NeurIPS 2018), cascading from the top layers down.

The layers of the model's PyTorch twin are re-initialised one stage at a time, from the output
towards the input; at each stage every method explains the same pairs again, and the maps are
compared with those of the trained model by Spearman rank correlation and SSIM. A method whose
maps depend on what the model learned must drift away as more layers are randomised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .methods.base import SaliencyMethod
from .spec import ModelSpec

__all__ = [
    "dlib_stages", "randomize_layers", "map_similarity", "SanityRow", "cascading_randomization", "method_on_twin",
]


def method_on_twin(name: str, module: Any, spec: ModelSpec, *, batch_size: int = 64, **params: Any) -> SaliencyMethod:
    """Method ``name`` (the registry's) over a PyTorch twin ``module`` (trained or randomised) of
    the model ``spec``: perturbation methods embed through it, gradient methods differentiate it."""
    from .methods.registry import build
    from .models.torch_model import TorchFaceModel

    return build(name, TorchFaceModel(module, spec, batch_size=batch_size), **params)


def dlib_stages(module: Any) -> list[str]:
    """Top-first layer groups of the dlib twin: ``fc``, ``blocks.13`` ... ``blocks.0``, ``stem``."""
    names = ["fc"] + [f"blocks.{i}" for i in reversed(range(len(module.blocks)))] + ["stem"]
    return names


def randomize_layers(module: Any, names: list[str], *, seed: int = 0) -> Any:
    """A deep copy of ``module`` whose parameters under ``names`` are redrawn from a normal
    distribution with each tensor's own mean and standard deviation (seeded)."""
    import torch

    out = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed)
    found: set[str] = set()
    with torch.no_grad():
        for pname, p in out.named_parameters():
            if any(pname == n or pname.startswith(n + ".") for n in names):
                found.update(n for n in names if pname == n or pname.startswith(n + "."))
                std = float(p.std()) if p.numel() > 1 else 0.0
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype) * (std or 1e-2) + float(p.mean())
                p.copy_(noise)
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"no parameters under layer(s) {', '.join(missing)}")
    return out.eval()


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of two (H, W) maps; SSIM on maps scaled to [0, 1]."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"maps must be (H, W) of one shape, got {a.shape} and {b.shape}")
    rho = 0.0 if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a.ravel(), b.ravel()).statistic)

    def unit(m: np.ndarray) -> np.ndarray:
        span = np.ptp(m)
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    ssim = float(structural_similarity(unit(a), unit(b), data_range=1.0))
    return rho, ssim


@dataclass(frozen=True)
class SanityRow:
    """Mean similarity of a method's maps to the trained model's after randomising down to ``stage``."""

    method: str
    stage: str
    layers_randomized: int
    spearman: float
    ssim: float
    #: 95 % half-width of the Spearman mean over the compared maps (two per pair); 0 when trained
    spearman_ci95: float = 0.0
    #: how many maps were compared
    maps: int = 0


def cascading_randomization(
    module: Any,
    stages: list[str],
    methods: list[str],
    chips_a: np.ndarray,
    chips_b: np.ndarray,
    make_method: Callable[[str, Any], SaliencyMethod],
    *,
    seed: int = 0,
    measure_at: list[int] | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> list[SanityRow]:
    """Rows for each method at stage 0 (trained vs itself: 1, 1) and after randomising the first
    k stages (top first) for each k in ``measure_at`` (default: every k).

    ``make_method(name, module)`` builds a method over a (possibly randomised) twin; both faces'
    maps of every pair are compared.
    """
    if len(chips_a) != len(chips_b) or len(chips_a) == 0:
        raise InputError("the sanity check needs the same, non-zero number of A and B chips")

    def maps(name: str, mod: Any) -> list[np.ndarray]:
        m = make_method(name, mod)
        out = []
        for a, b in zip(chips_a, chips_b, strict=True):
            ex = m.attribute(a, b)
            out += [ex.s_a, ex.s_b]
        return out

    rows = []
    reference = {name: maps(name, module) for name in methods}
    for name in methods:
        rows.append(SanityRow(name, "trained", 0, 1.0, 1.0, 0.0, len(reference[name])))
    ks = list(range(1, len(stages) + 1)) if measure_at is None else sorted(set(measure_at))
    if any(k < 1 or k > len(stages) for k in ks):
        raise InputError(f"stages to measure must be within 1..{len(stages)}")
    for k in ks:
        randomized = randomize_layers(module, stages[:k], seed=seed)
        for name in methods:
            if progress is not None:
                progress(name, stages[k - 1])
            sims = np.array([map_similarity(r, m) for r, m in zip(reference[name], maps(name, randomized), strict=True)])
            half = 1.96 * float(sims[:, 0].std(ddof=1)) / np.sqrt(len(sims)) if len(sims) > 1 else float("nan")
            rows.append(
                SanityRow(name, stages[k - 1], k, float(sims[:, 0].mean()), float(sims[:, 1].mean()), half, len(sims))
            )
    return rows
