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

Options (second round, all measured in docs/benchmarks.md; the defaults above won): SLIC
superpixels of each face added to the basis (``superpixels``), the penalty chosen per face by GCV
(``ridge=None``), the fitted per-pixel effect instead of its smoothed correlation
(``output="effect"``: sharper, far less reproducible at N = 500) and the map averaged within
superpixels (``pool``). With superpixels or pooling the maps depend on the chips:
:meth:`CorrRISEPlus.finish` then needs them (``chips=``).

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
from scipy import sparse

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
    "grid_labels",
    "superpixel_labels",
    "region_matrix",
    "ridge_fit",
    "RIDGE_GRID",
    "OUTPUTS",
    "fit_map",
    "region_pool",
]


#: Grids of the regression basis (cells per side), chosen in docs/benchmarks.md.
DEFAULT_GRIDS: tuple[int, ...] = (4, 8)
#: Ridge penalty relative to the mean variance of the features.
DEFAULT_RIDGE = 1.0
#: What the map shows: ``"effect"`` the fitted per-pixel effect of occlusion (region effects
#: painted), ``"correlation"`` the fitted correlation with the paper's masks (the effect smoothed
#: by the masks' covariance, the first corrrise-plus).
OUTPUTS = ("effect", "correlation")


@dataclass(frozen=True)
class CorrRISEPlusConfig:
    """Everything that defines a CorrRISE+ explanation.

    ``masks``: CorrRISE's masks (the paper's defaults: N=500, 1,002 forward passes per pair);
    ``clip_at_border`` must stay True (the closed-form mask covariance assumes it).
    ``grids``: cells per side of each grid of the regression basis (each >= 1, at most the chip's
    side). ``superpixels``: SLIC superpixel counts of each face (:func:`superpixel_labels`) added
    to the basis (each >= 2; () for none). ``ridge``: ridge penalty relative to the mean feature
    variance (>= 0), or None to choose it per face by GCV (:func:`ridge_fit`). ``output``: one of
    :data:`OUTPUTS` (:func:`fit_map`). ``pool``: SLIC superpixel counts over which the map is
    averaged at the end (:func:`region_pool`; () for none). ``residual``: add the sample correction
    (``output="correlation"`` only; an estimate that converges to the paper's map as N grows).
    ``perturbations_per_eval``: images per model call, as CorrRISE's (speed only, never the maps).
    With ``superpixels`` or ``pool`` the maps depend on the chips: :meth:`CorrRISEPlus.finish`
    needs them.
    """

    masks: MaskConfig = field(default_factory=MaskConfig)
    grids: tuple[int, ...] = DEFAULT_GRIDS
    superpixels: tuple[int, ...] = ()
    ridge: float | None = DEFAULT_RIDGE
    output: str = "correlation"
    pool: tuple[int, ...] = ()
    residual: bool = False
    perturbations_per_eval: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.masks, MaskConfig):
            raise InputError(f"masks must be a MaskConfig, got {type(self.masks).__name__}")
        if self.masks.n_masks < 3:
            raise InputError(f"CorrRISE+ needs at least 3 masks, got {self.masks.n_masks}")
        if not self.masks.clip_at_border:
            raise InputError("CorrRISE+ needs clip_at_border=True (its mask covariance assumes it)")
        for name, least, may_be_empty in (("grids", 1, False), ("superpixels", 2, True), ("pool", 2, True)):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not (value or may_be_empty):
                what = "a tuple" if may_be_empty else "a non-empty tuple"
                raise InputError(f"{name} must be {what} of integers >= {least}, got {value!r}")
            for g in value:
                _require_int(name, g, least)
            object.__setattr__(self, name, tuple(int(g) for g in value))
        if self.ridge is not None and (
            isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float, np.integer, np.floating))
            or not (np.isfinite(self.ridge) and self.ridge >= 0)
        ):
            raise InputError(f"ridge must be a finite number >= 0 or None (GCV), got {self.ridge!r}")
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise InputError(f"residual must be a bool, got {self.residual!r}")
        if self.residual and self.output != "correlation":
            raise InputError("residual=true needs output=correlation")
        if self.perturbations_per_eval is not None:
            _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    @property
    def needs_chips(self) -> bool:
        """Whether the maps depend on the chips (superpixels in the basis or the pooling)."""
        return bool(self.superpixels or self.pool)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the masks and every grid fit a ``chip_size`` chip."""
        self.masks.patch_size_for(chip_size)
        for g in self.grids:
            if g > chip_size:
                raise InputError(f"grids: {g} cells per side is more than the chip's {chip_size} px")
        for name in ("superpixels", "pool"):
            for n in getattr(self, name):
                if n > chip_size * chip_size:
                    raise InputError(f"{name}: {n} superpixels is more than the chip's pixels")

    def corrrise(self) -> CorrRISEConfig:
        """The CorrRISE config that draws and scores the same masks."""
        return CorrRISEConfig(masks=self.masks, correlation="pearson", perturbations_per_eval=self.perturbations_per_eval)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "masks": self.masks.to_dict(),
            "grids": list(self.grids),
            "superpixels": list(self.superpixels),
            "ridge": None if self.ridge is None else float(self.ridge),
            "output": self.output,
            "pool": list(self.pool),
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
        for name in ("grids", "superpixels", "pool"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
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


#: Candidate ridge penalties of the GCV choice, relative to the mean feature variance.
RIDGE_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3, 3, 25))


def grid_labels(chip_size: int, grid: int) -> np.ndarray:
    """Cell index of every pixel of a ``grid`` x ``grid`` partition (:func:`cell_edges`):
    int64 (S, S), cells row-major."""
    e = cell_edges(chip_size, grid)
    idx = np.searchsorted(e, np.arange(int(chip_size)), side="right") - 1
    out: np.ndarray = (idx[:, None] * int(grid) + idx[None, :]).astype(np.int64)
    return out


def superpixel_labels(chip: np.ndarray, n_segments: int, compactness: float = 10.0) -> np.ndarray:
    """SLIC superpixels of a (S, S, 3) uint8 RGB chip, as LIME segments it
    (:func:`~explainer_service.methods.lime.segment_chip`): int64 (S, S) labels 0 .. F-1,
    deterministic from the chip."""
    from .lime import LIMEConfig, segment_chip

    return segment_chip(chip, LIMEConfig(n_segments=int(n_segments), compactness=float(compactness)))


def region_matrix(labels: Sequence[np.ndarray]) -> sparse.csr_matrix:
    """A[p, j] = [p in region j] / area_j over the regions of every (S, S) label map in order:
    sparse float64 (S * S, sum of region counts). ``occlusion (N, S*S) @ A`` are the regions' mean
    occlusions (the features); ``A @ beta`` paints each region's per-pixel effect."""
    blocks = []
    for lab in labels:
        flat = np.asarray(lab).ravel()
        _, inv = np.unique(flat, return_inverse=True)
        area = np.bincount(inv).astype(np.float64)
        blocks.append(sparse.csr_matrix((1.0 / area[inv], (np.arange(flat.size), inv)),
                                        shape=(flat.size, area.size)))
    matrix: sparse.csr_matrix = sparse.hstack(blocks, format="csr")
    return matrix


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float | None = None) -> tuple[np.ndarray, float]:
    """Ridge coefficients of y on x (both centred inside), penalty ``ridge`` x the mean feature
    variance, or with ``ridge=None`` the penalty of :data:`RIDGE_GRID` that minimises the
    generalised cross-validation error GCV = N RSS / (N - 1 - df)^2 (one SVD of x; Golub, Heath,
    Wahba 1979). Returns (beta (J,), the penalty used, relative)."""
    xc = np.asarray(x, np.float64) - np.mean(x, axis=0)
    yc = np.asarray(y, np.float64) - np.mean(y)
    n, j = xc.shape
    u, sv, vt = _svd(xc)
    scale = float(sv @ sv) / j  # trace of the Gram matrix / J
    uty = u.T @ yc
    rest = float(yc @ yc - uty @ uty)
    if ridge is None:
        best = (np.inf, RIDGE_GRID[0])
        for rel in RIDGE_GRID:
            shrink = sv**2 / (sv**2 + rel * scale)
            rss = rest + float((((1.0 - shrink) * uty) ** 2).sum())
            df = float(shrink.sum())
            gcv = n * rss / max(n - 1.0 - df, 1e-9) ** 2
            if gcv < best[0]:
                best = (gcv, rel)
        rel = best[1]
    else:
        rel = float(ridge)
    denom = sv**2 + rel * scale
    keep = (denom > 0) & (sv > 1e-10 * (sv.max() if sv.size else 0.0))  # a null direction gets 0
    coef = np.divide(sv, denom, out=np.zeros_like(sv), where=keep)
    beta: np.ndarray = vt.T @ (coef * uty)
    return beta, rel


def _svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD; LAPACK's divide-and-conquer driver (gesdd, NumPy's) fails to converge on some
    rank-deficient bases (e.g. superpixels with nested cells), then the QR-iteration one (gesvd)."""
    try:
        u, sv, vt = np.linalg.svd(x, full_matrices=False)
    except np.linalg.LinAlgError:
        from scipy.linalg import svd

        u, sv, vt = svd(x, full_matrices=False, lapack_driver="gesvd")
    return u, sv, vt


def fit_map(
    occlusion: np.ndarray,
    scores: np.ndarray,
    regions: sparse.csr_matrix | np.ndarray,
    cov: np.ndarray,
    ridge: float | None = None,
    output: str = "effect",
    residual: bool = False,
) -> np.ndarray:
    """The CorrRISE+ map of one face from its masks' occlusions and scores.

    The scores are regressed (:func:`ridge_fit`) on the regions' mean occlusions
    x = occlusion @ regions; e = regions @ beta is the fitted effect on the score of occluding
    each pixel (a sum of the effects of the regions that hold it). ``output="effect"`` maps
    -e C+ / (sigma_D sigma_s), C+ the sum of C's positive values (the near offsets): about the
    correlation CorrRISE would measure where the effect is locally constant; ``"correlation"`` maps -(C * e) / (sigma_D sigma_s) (C the masks' occlusion
    covariance, :func:`occlusion_covariance`; * is a convolution): the fitted correlation of the
    pixel's occlusion with the score, to which ``residual`` adds the sample correction.

    Args:
        occlusion: (N, S * S) occlusion 1 - M of each mask.
        scores: (N,) per-mask scores.
        regions: (S * S, J) :func:`region_matrix` of the basis (sparse or dense).
        cov: (2S - 1, 2S - 1) :func:`occlusion_covariance` of the masks.
        ridge: relative penalty, None to choose it by GCV.
        output: one of :data:`OUTPUTS`.
        residual: with ``output="correlation"`` only.

    Returns:
        float32 (S, S) in [-1, 1]; 0 everywhere when the scores do not vary.
    """
    from scipy.signal import fftconvolve

    occ = np.asarray(occlusion)
    s = np.asarray(scores, np.float64)
    n = occ.shape[0]
    size = (cov.shape[0] + 1) // 2
    if s.shape != (n,) or n < 3 or occ.shape[1] != size * size or regions.shape[0] != size * size:
        raise InputError(f"need (N, S*S) occlusions and (N,) scores with N >= 3, got {occ.shape} and {s.shape}")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    sc = s - s.mean()
    var_s = float(sc @ sc) / (n - 1)
    if var_s <= 1e-24 * max(1.0, float(s.mean()) ** 2):
        return np.zeros((size, size), np.float32)
    x = np.asarray(sparse.csr_matrix(regions).T.dot(occ.T).T, np.float64)
    beta, _ = ridge_fit(x, s, ridge)
    effect = np.asarray(regions @ beta, np.float64).reshape(size, size)
    sigma_d = float(np.sqrt(cov[size - 1, size - 1]))
    if output == "effect":
        raw = effect * float(cov[cov > 0].sum())
    else:
        raw = fftconvolve(effect, cov, mode="same")
        if residual:
            xc = x - x.mean(axis=0)
            oc = occ - occ.mean(axis=0)
            raw = raw + ((oc.T @ (sc - xc @ beta)) / (n - 1)).reshape(size, size)
    out = -raw / (sigma_d * np.sqrt(var_s))
    if output == "effect":  # not a correlation: scaled into [-1, 1] when it exceeds it (ranks kept)
        out = out / max(1.0, float(np.abs(out).max()))
    result: np.ndarray = np.clip(out, -1.0, 1.0).astype(np.float32)
    return result


def region_pool(saliency: np.ndarray, labels: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over the label maps of each pixel's region mean of ``saliency``: (S, S) -> float32
    (S, S). With one label map, every region is painted with the map's mean over it (ranks follow
    the regions, as LIME's superpixels do); the map's mean is kept."""
    sal = np.asarray(saliency, np.float64).ravel()
    out = np.zeros_like(sal)
    for lab in labels:
        _, inv = np.unique(np.asarray(lab).ravel(), return_inverse=True)
        out += (np.bincount(inv, weights=sal) / np.bincount(inv))[inv]
    pooled: np.ndarray = (out / max(len(labels), 1)).reshape(np.shape(saliency)).astype(np.float32)
    return pooled


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
        self._cov: np.ndarray | None = None

    @classmethod
    def forward_passes_for(cls, config: CorrRISEPlusConfig, chip_size: int) -> int:
        """Model evaluations of one pair: 2N masked chips and the clean pair."""
        config.check_for_chip(chip_size)
        return 2 + 2 * config.masks.n_masks

    def forward_passes(self) -> int:
        """Model evaluations of one pair on this model's chip."""
        return self.forward_passes_for(self.config, self.model.spec.chip.size)

    def _known(self) -> np.ndarray:
        """The exact occlusion covariance of this config on this chip (computed once)."""
        if self._cov is None:
            self._cov = occlusion_covariance(self.config.masks, self.model.spec.chip.size)
        return self._cov

    def face_map(self, chip: np.ndarray | None, occlusion: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The map of one face from its masks' (N, S * S) occlusions and (N,) scores; ``chip`` the
        face's (S, S, 3) uint8 chip (needed when :attr:`CorrRISEPlusConfig.needs_chips`)."""
        cfg = self.config
        size = self.model.spec.chip.size
        if cfg.needs_chips and chip is None:
            raise InputError("corrrise-plus with superpixels or pool needs the chips to make its maps")
        sp = {}
        if chip is not None and cfg.needs_chips:
            c = np.asarray(chip)
            if c.shape != (size, size, 3):
                raise InputError(f"the chip must be ({size}, {size}, 3), got {c.shape}")
            sp = {n: superpixel_labels(c, n) for n in sorted(set(cfg.superpixels) | set(cfg.pool))}
        regions = region_matrix([grid_labels(size, g) for g in cfg.grids] + [sp[n] for n in cfg.superpixels])
        out = fit_map(occlusion, scores, regions, self._known(), cfg.ridge, cfg.output, cfg.residual)
        if cfg.pool:
            out = region_pool(out, [sp[n] for n in cfg.pool])
        return out

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

    def finish(
        self, shard: ShardResult, score: float | None = None, *, chips: tuple[np.ndarray, np.ndarray] | None = None
    ) -> Explanation:
        """Maps from a shard covering any masks of the set (at least 3); exact for any merge order,
        since it reads the per-mask scores and regenerates the masks. ``chips`` (A, B): the pair's
        chips, needed when the config's maps depend on them (superpixels, pool)."""
        if not isinstance(shard, ShardResult):
            raise InputError(f"finish needs a ShardResult, got {type(shard).__name__}")
        if shard.identity and shard.identity != self._sampler._identity():
            raise InputError("the shard was computed with another mask set, model or chip")
        if shard.masks < 3:
            raise InputError(f"CorrRISE+ needs at least 3 scored masks, the shard has {shard.masks}")
        cfg = self.config
        size = self.model.spec.chip.size
        masks = np.concatenate([generate_masks(cfg.masks, size, lo, hi) for lo, hi in shard.ranges])
        occ = 1.0 - masks.reshape(len(masks), -1).astype(np.float64)
        del masks
        chip_a, chip_b = (None, None) if chips is None else chips
        s_a = self.face_map(chip_a, occ, shard.scores_a)
        s_b = self.face_map(chip_b, occ, shard.scores_b)
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
            "superpixels": list(self.config.superpixels),
            "ridge": None if self.config.ridge is None else float(self.config.ridge),
            "output": self.config.output,
            "pool": list(self.config.pool),
            "residual": bool(self.config.residual),
        }

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model. 2N + 2 forward passes;
        ``progress(done, total)`` counts masks."""
        shard = self.run_shard(chip_a, chip_b, 0, self.config.masks.n_masks, progress=progress)
        return self.finish(shard, chips=(chip_a, chip_b))
