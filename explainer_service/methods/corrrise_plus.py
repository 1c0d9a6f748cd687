"""CorrRISE+ (issue 11 §1): the paper's CorrRISE map estimated with less variance at the same budget.

The target is the paper's map (Lu, Xu, Ebrahimi, WACV 2024 workshops, Algorithm 1):
S(p) = corr(M(p), s) over the mask distribution, for both faces. CorrRISE estimates it with N
sample correlations, one per pixel; CorrRISE+ spends the same N masks (2N + 2 forward passes) and
the same scores but uses what is known exactly about the masks: their distribution.

Write D = 1 - M for the occlusion of a mask. The covariance of D between two pixels,
C(p - q) = Cov(D(p), D(q)), has a closed form for the paper's masks (P square patches of side S,
corners uniform over every placement that overlaps the chip, later patches over earlier ones;
:func:`occlusion_covariance`). The per-mask scores are regressed (ridge) on a basis of cell
occlusions x_j = mean of D over cell j of one or more coarse grids, and that fit is used as a
control variate (the regression estimator, ``residual=True``):

    cov(D(p), s) ~= Cov_N(D(p), s) - (Cov_N(D(p), x) - K(p, x)) beta,

where Cov_N are sample covariances over the N masks, K(p, j) = mean over q in cell j of
C(p - q) is known exactly, and beta the ridge coefficients. With ``residual=False`` (the
default) only the fitted part K(p, x) beta is kept: a smoother, model-based map, the most
reproducible at the paper's budget. The map is
S(p) = -cov(D(p), s) / (sigma_D sigma_s): a correlation as in the paper, positive where keeping a
pixel raises the similarity ("similar"), negative where it lowers it ("dissimilar").

Masks are CorrRISE's own (the same :class:`~explainer_service.masks.MaskConfig`, seeds and
shards), so :meth:`CorrRISEPlus.run_shard` returns CorrRISE's shards and :meth:`CorrRISEPlus.finish`
is exact for any merge of them: it uses the per-mask scores (kept by mask index) and regenerates
the masks. Measurements and the choice of the defaults: docs/benchmarks.md, "corrrise-plus".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError
from ..explanation import Explanation
from ..masks import MaskConfig, generate_masks
from ..models.base import FaceModel
from ..progress import Progress
from .corrrise import CorrRISE, CorrRISEConfig, ShardResult
from .perturbation import _require_int

__all__ = [
    "CorrRISEPlus",
    "CorrRISEPlusConfig",
    "DEFAULT_GRIDS",
    "DEFAULT_RIDGE",
    "occlusion_covariance",
    "cell_edges",
    "cell_features",
    "cell_kernel",
    "regression_map",
]

#: Grids of the regression basis (cells per side), chosen in docs/benchmarks.md.
DEFAULT_GRIDS: tuple[int, ...] = (4, 8)
#: Ridge penalty relative to the mean variance of the features.
DEFAULT_RIDGE = 1.0


@dataclass(frozen=True)
class CorrRISEPlusConfig:
    """Everything that defines a CorrRISE+ explanation.

    ``masks``: CorrRISE's masks (the paper's defaults: N=500, 1,002 forward passes per pair);
    ``clip_at_border`` must stay True (the closed-form mask covariance assumes it).
    ``grids``: cells per side of each grid of the regression basis (each >= 1, at most the chip's
    side). ``ridge``: ridge penalty relative to the mean feature variance (>= 0).
    ``residual``: add the sample correction (an estimate that converges to the paper's map as N
    grows); False (the default, the most reproducible at N=500 in docs/benchmarks.md) keeps the
    fitted part only. ``perturbations_per_eval``: images per model call, as
    CorrRISE's (speed only, never the maps).
    """

    masks: MaskConfig = field(default_factory=MaskConfig)
    grids: tuple[int, ...] = DEFAULT_GRIDS
    ridge: float = DEFAULT_RIDGE
    residual: bool = False
    perturbations_per_eval: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.masks, MaskConfig):
            raise InputError(f"masks must be a MaskConfig, got {type(self.masks).__name__}")
        if self.masks.n_masks < 3:
            raise InputError(f"CorrRISE+ needs at least 3 masks, got {self.masks.n_masks}")
        if not self.masks.clip_at_border:
            raise InputError("CorrRISE+ needs clip_at_border=True (its mask covariance assumes it)")
        if isinstance(self.grids, (str, bytes)) or not isinstance(self.grids, Sequence) or not self.grids:
            raise InputError(f"grids must be a non-empty tuple of integers >= 1, got {self.grids!r}")
        for g in self.grids:
            _require_int("grids", g, 1)
        object.__setattr__(self, "grids", tuple(int(g) for g in self.grids))
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float, np.integer, np.floating)) or not (
            np.isfinite(self.ridge) and self.ridge >= 0
        ):
            raise InputError(f"ridge must be a finite number >= 0, got {self.ridge!r}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise InputError(f"residual must be a bool, got {self.residual!r}")
        if self.perturbations_per_eval is not None:
            _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the masks and every grid fit a ``chip_size`` chip."""
        self.masks.patch_size_for(chip_size)
        for g in self.grids:
            if g > chip_size:
                raise InputError(f"grids: {g} cells per side is more than the chip's {chip_size} px")

    def corrrise(self) -> CorrRISEConfig:
        """The CorrRISE config that draws and scores the same masks."""
        return CorrRISEConfig(masks=self.masks, correlation="pearson", perturbations_per_eval=self.perturbations_per_eval)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "masks": self.masks.to_dict(),
            "grids": list(self.grids),
            "ridge": float(self.ridge),
            "residual": bool(self.residual),
            "perturbations_per_eval": self.perturbations_per_eval,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorrRISEPlusConfig:
        """A config from :meth:`to_dict`'s mapping; InputError for unknown keys or bad values."""
        if not isinstance(data, Mapping):
            raise InputError(f"a CorrRISE+ config must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(f"unknown CorrRISE+ option(s) {', '.join(unknown)} (known: {', '.join(known)})")
        values = dict(data)
        if "masks" in values and not isinstance(values["masks"], MaskConfig):
            values["masks"] = MaskConfig.from_dict(values["masks"])
        if "grids" in values and isinstance(values["grids"], list):
            values["grids"] = tuple(values["grids"])
        return cls(**values)


def occlusion_covariance(config: MaskConfig, chip_size: int) -> np.ndarray:
    """C(dy, dx) = Cov(D(p), D(p + (dy, dx))) of the occlusion D = 1 - M of ``config``'s masks.

    Closed form (``clip_at_border=True``): one patch of side S covers a pixel with probability
    c = S^2 / L^2 (L = chip + S - 1 placements per axis) and two pixels at offset d with
    a(d) = (S - |dy|)^+ (S - |dx|)^+ / L^2. Reading the P patches from the last pasted, the pixels
    share a value when the first patch to cover either covers both:
    P(same) = a (1 - n^P) / (1 - n) with n = 1 - 2c + a; both are covered with probability
    1 - 2u + n^P, u = (1 - c)^P. Then E[D(p) D(q)] = P(same) m2 + (P(both) - P(same)) mu^2 and
    E[D] = (1 - u) mu, with mu, m2 the mean and second moment of one patch's occlusion
    (uniform fill: 1/2, 1/3; binary: 1, 1; one value per pixel: pixels of a patch independent).

    Returns:
        float64 (2 * chip - 1, 2 * chip - 1), offset (dy, dx) at index (dy + chip - 1, dx + chip - 1).
    """
    if not config.clip_at_border:
        raise InputError("the closed-form mask covariance needs clip_at_border=True")
    side = config.patch_size_for(chip_size)
    size = int(chip_size)
    span = float(size + side - 1)
    d = np.arange(-(size - 1), size, dtype=np.float64)
    overlap = np.maximum(side - np.abs(d), 0.0)
    a = np.outer(overlap, overlap) / span**2
    c = side * side / span**2
    n = 1.0 - 2.0 * c + a
    p = config.patches
    u = (1.0 - c) ** p
    geom = np.where(a > 0, (1.0 - n**p) / np.where(a > 0, 1.0 - n, 1.0), 0.0)
    same = a * geom
    both = 1.0 - 2.0 * u + n**p
    if config.values == "binary":
        mu, m2 = 1.0, 1.0
    else:
        mu, m2 = 0.5, 1.0 / 3.0
    same_moment = np.full_like(a, m2)
    if config.per_pixel:
        same_moment[:] = mu * mu
        same_moment[size - 1, size - 1] = m2
    second = same * same_moment + (both - same) * mu * mu
    mean = (1.0 - u) * mu
    out: np.ndarray = second - mean * mean
    return out


def cell_edges(chip_size: int, grid: int) -> np.ndarray:
    """Cell boundaries of a ``grid`` x ``grid`` partition of a ``chip_size`` side: (grid + 1,) ints."""
    return np.round(np.linspace(0, int(chip_size), int(grid) + 1)).astype(np.int64)


def cell_features(occlusion: np.ndarray, grids: Sequence[int]) -> np.ndarray:
    """Mean occlusion of every cell of every grid: (N, H, W) -> (N, sum of grid^2), cells row-major,
    grids in order."""
    occ = np.asarray(occlusion, np.float64)
    n, h, _ = occ.shape
    cols = []
    for g in grids:
        e = cell_edges(h, g)
        rows = np.add.reduceat(occ, e[:-1], axis=1)
        sums = np.add.reduceat(rows, e[:-1], axis=2)
        area = np.outer(np.diff(e), np.diff(e)).astype(np.float64)
        cols.append((sums / area).reshape(n, -1))
    return np.concatenate(cols, axis=1)


def cell_kernel(cov: np.ndarray, chip_size: int, grids: Sequence[int]) -> np.ndarray:
    """K[p, j] = mean over q in cell j of C(p - q), from :func:`occlusion_covariance`'s ``cov``:
    the exact covariance of D(p) and feature j. Returns float64 (H * W, sum of grid^2)."""
    size = int(chip_size)
    integral = np.zeros((cov.shape[0] + 1, cov.shape[1] + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(cov, axis=0), axis=1)
    pix = np.arange(size)
    cols = []
    for g in grids:
        e = cell_edges(size, g)
        for i in range(g):
            # offsets p - q for q in [e[i], e[i+1]): index p - q + size - 1
            hy = pix - e[i] + size  # one past the largest offset index
            ly = pix - e[i + 1] + size
            for j in range(g):
                hx = pix - e[j] + size
                lx = pix - e[j + 1] + size
                box = (integral[np.ix_(hy, hx)] - integral[np.ix_(ly, hx)]
                       - integral[np.ix_(hy, lx)] + integral[np.ix_(ly, lx)])
                cols.append(box.ravel() / ((e[i + 1] - e[i]) * (e[j + 1] - e[j])))
    return np.stack(cols, axis=1)


def regression_map(
    masks: np.ndarray,
    scores: np.ndarray,
    kernel: np.ndarray,
    sigma_d: float,
    grids: Sequence[int],
    ridge: float = DEFAULT_RIDGE,
    residual: bool = True,
) -> np.ndarray:
    """The CorrRISE+ map of one face (see the module docstring).

    Args:
        masks: (N, H, W) mask values M in [0, 1].
        scores: (N,) per-mask similarity scores.
        kernel: (H * W, J) :func:`cell_kernel` of the masks' distribution for ``grids``.
        sigma_d: standard deviation of one pixel's occlusion (sqrt of C(0)).
        grids: the grids of the basis (J = sum of grid^2).
        ridge: penalty relative to the mean feature variance.
        residual: add the sample correction (False: the fitted part only).

    Returns:
        float32 (H, W) in [-1, 1]; 0 everywhere when the scores do not vary.
    """
    m = np.asarray(masks)
    s = np.asarray(scores, np.float64)
    n, h, w = m.shape
    if s.shape != (n,) or n < 3:
        raise InputError(f"need (N, H, W) masks and (N,) scores with N >= 3, got {m.shape} and {s.shape}")
    sc = s - s.mean()
    var_s = float(sc @ sc) / (n - 1)
    if var_s <= 1e-24 * max(1.0, float(s.mean()) ** 2):
        return np.zeros((h, w), np.float32)
    occ = 1.0 - m.reshape(n, -1).astype(np.float64)
    x = cell_features(occ.reshape(n, h, w), grids)
    xc = x - x.mean(axis=0)
    gram = xc.T @ xc
    lam = float(ridge) * float(np.trace(gram)) / gram.shape[0]
    beta = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ sc)
    cov = kernel @ beta
    if residual:
        oc = occ - occ.mean(axis=0)
        cov = cov + (oc.T @ (sc - xc @ beta)) / (n - 1)
    out = -cov / (float(sigma_d) * np.sqrt(var_s))
    result: np.ndarray = np.clip(out, -1.0, 1.0).reshape(h, w).astype(np.float32)
    return result


class CorrRISEPlus:
    """CorrRISE+ over a FaceModel; one ``attribute`` call explains one pair (2N + 2 forward passes,
    the same masks and scores as CorrRISE with the same mask config)."""

    name = "corrrise-plus"

    def __init__(self, model: FaceModel, config: CorrRISEPlusConfig | None = None) -> None:
        if config is not None and not isinstance(config, CorrRISEPlusConfig):
            raise InputError(f"CorrRISE+ needs a CorrRISEPlusConfig, got {type(config).__name__}")
        self.model = model
        self.config = config or CorrRISEPlusConfig()
        self.config.check_for_chip(model.spec.chip.size)
        self._sampler = CorrRISE(model, self.config.corrrise())
        self._kernel: np.ndarray | None = None
        self._sigma_d = 0.0

    @classmethod
    def forward_passes_for(cls, config: CorrRISEPlusConfig, chip_size: int) -> int:
        """Model evaluations of one pair: 2N masked chips and the clean pair."""
        config.check_for_chip(chip_size)
        return 2 + 2 * config.masks.n_masks

    def forward_passes(self) -> int:
        """Model evaluations of one pair on this model's chip."""
        return self.forward_passes_for(self.config, self.model.spec.chip.size)

    def _known(self) -> tuple[np.ndarray, float]:
        """The exact cell kernel and sigma_D of this config on this chip (computed once)."""
        if self._kernel is None:
            size = self.model.spec.chip.size
            cov = occlusion_covariance(self.config.masks, size)
            self._kernel = cell_kernel(cov, size, self.config.grids)
            self._sigma_d = float(np.sqrt(cov[size - 1, size - 1]))
        return self._kernel, self._sigma_d

    def run_shard(
        self,
        chip_a: np.ndarray,
        chip_b: np.ndarray,
        start: int,
        stop: int,
        *,
        embeddings: tuple[np.ndarray, np.ndarray] | None = None,
        progress: Progress | None = None,
    ) -> ShardResult:
        """CorrRISE's shard of masks [start, stop) (:meth:`CorrRISE.run_shard`); merge shards with
        :meth:`ShardResult.merge` and make the maps with :meth:`finish`."""
        return self._sampler.run_shard(chip_a, chip_b, start, stop, embeddings=embeddings, progress=progress)

    def finish(self, shard: ShardResult, score: float | None = None) -> Explanation:
        """Maps from a shard covering any masks of the set (at least 3); exact for any merge order,
        since it reads the per-mask scores and regenerates the masks."""
        if not isinstance(shard, ShardResult):
            raise InputError(f"finish needs a ShardResult, got {type(shard).__name__}")
        if shard.identity and shard.identity != self._sampler._identity():
            raise InputError("the shard was computed with another mask set, model or chip")
        if shard.masks < 3:
            raise InputError(f"CorrRISE+ needs at least 3 scored masks, the shard has {shard.masks}")
        cfg = self.config
        size = self.model.spec.chip.size
        masks = np.concatenate([generate_masks(cfg.masks, size, lo, hi) for lo, hi in shard.ranges])
        kernel, sigma_d = self._known()
        s_a, s_b = (regression_map(masks, s, kernel, sigma_d, cfg.grids, cfg.ridge, cfg.residual)
                    for s in (shard.scores_a, shard.scores_b))
        spec = self.model.spec
        return Explanation(
            s_a=s_a,
            s_b=s_b,
            score=float(shard.score if score is None else score),
            threshold=spec.threshold,
            model=spec.name,
            masks=shard.masks,
            method=self.name,
            params=self.params(),
            scores_a=shard.scores_a.astype(np.float32),
            scores_b=shard.scores_b.astype(np.float32),
            forward_passes=2 * shard.masks + shard.clean_passes,
        )

    def params(self) -> dict[str, Any]:
        """The mask set and estimator as plain values (patch size resolved for the chip)."""
        return {
            **self.config.masks.params_for(self.model.spec.chip.size),
            "grids": list(self.config.grids),
            "ridge": float(self.config.ridge),
            "residual": bool(self.config.residual),
        }

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model. 2N + 2 forward passes;
        ``progress(done, total)`` counts masks."""
        shard = self.run_shard(chip_a, chip_b, 0, self.config.masks.n_masks, progress=progress)
        return self.finish(shard)
