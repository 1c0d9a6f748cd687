"""How sure a correlation map is: per-pixel intervals, a significance mask and a convergence figure.

Pipeline: masks and scores -> correlation -> maps -> **uncertainty** -> results.
A CorrRISE map holds, per pixel, the correlation r of N mask values with N scores. This module
turns r and N into what an auditor needs to read the map (pure NumPy/SciPy, vectorized):

- an interval per pixel, from Fisher's z = atanh(r): z is roughly normal with standard error
  1/sqrt(N - 3) when the (mask value, score) pairs are bivariate normal (Fisher 1921). CorrRISE's
  pairs are not normal (mask values are mixtures of U[0,1) and 1), so the interval is an
  approximation; its coverage on a model whose true map is known is measured by the tests. For the
  Spearman option the same interval is put on the rank correlation with the standard error
  sqrt(1.06 / (N - 3)) of Fieller, Hartley and Pearson (Biometrika 1957);
- a p-value per pixel from t = r sqrt((N - 2) / (1 - r^2)) with N - 2 degrees of freedom (exact
  for Pearson under independence and normality; what ``scipy.stats.spearmanr`` uses for ranks),
  and a significance mask that controls the false-discovery rate at ``q`` over the pixels with
  the step-up procedure of Benjamini and Hochberg (1995);
- a convergence figure: the split-half agreement, the Pearson r over pixels between the map of the
  even-indexed masks and the map of the odd-indexed ones, and its Spearman-Brown prediction
  2r / (1 + r) for the agreement of two independent full-size maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_Q",
    "SPEARMAN_VARIANCE_FACTOR",
    "MapUncertainty",
    "Uncertainty",
    "UncertaintyOptions",
    "benjamini_hochberg",
    "correlation_p_values",
    "correlation_se",
    "fisher_interval",
    "map_uncertainty",
    "spearman_brown",
    "split_half_r",
]

#: Coverage of the per-pixel intervals.
DEFAULT_LEVEL = 0.95
#: False-discovery rate of the significance mask.
DEFAULT_Q = 0.05
#: Variance of Fisher's z of a Spearman coefficient is ``1.06 / (N - 3)`` (Fieller et al. 1957).
SPEARMAN_VARIANCE_FACTOR = 1.06
#: ``|r|`` is clipped below 1 by this much before atanh, so a perfect correlation stays finite.
_R_MAX = 1.0 - 1e-12


def _checked(r: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(r, np.float64)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4:
        raise InputError(f"n must be an integer >= 4 (masks behind the correlation), got {n!r}")
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1.0):
        raise InputError("correlations must be finite and in [-1, 1]")
    return arr


def _z_se(n: int, rank: bool) -> float:
    return math.sqrt((SPEARMAN_VARIANCE_FACTOR if rank else 1.0) / (n - 3))


def fisher_interval(
    r: np.ndarray, n: int, *, level: float = DEFAULT_LEVEL, rank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel confidence interval of a correlation from Fisher's z.

    Args:
        r: correlations, any shape (e.g. (H, W)), in [-1, 1].
        n: number of samples (masks) behind each correlation (>= 4).
        level: coverage in (0, 1).
        rank: True for a Spearman coefficient (standard error ``sqrt(1.06 / (n - 3))``).

    Returns:
        ``(low, high)`` float64 arrays of ``r``'s shape: ``tanh(atanh(r) -+ z_{(1+level)/2} * se)``.
    """
    from scipy.special import ndtri

    arr = _checked(r, n)
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise InputError(f"level must be in (0, 1), got {level!r}")
    z = np.arctanh(np.clip(arr, -_R_MAX, _R_MAX))
    half = float(ndtri(0.5 + level / 2.0)) * _z_se(n, rank)
    # min/max: an interval always holds its r (|r| = 1 is clipped before atanh)
    return np.minimum(np.tanh(z - half), arr), np.maximum(np.tanh(z + half), arr)


def correlation_se(r: np.ndarray, n: int, *, rank: bool = False) -> np.ndarray:
    """Standard error of each correlation, Fisher's z's carried back by the delta method:
    ``(1 - r^2) * se_z`` (float64, ``r``'s shape)."""
    arr = _checked(r, n)
    out: np.ndarray = (1.0 - np.square(arr)) * _z_se(n, rank)
    return out


def correlation_p_values(r: np.ndarray, n: int) -> np.ndarray:
    """Two-sided p-value of each correlation against 0: t = r sqrt((n-2)/(1-r^2)), Student's t with
    n - 2 degrees of freedom (float64, ``r``'s shape; 0 where |r| = 1)."""
    from scipy.special import stdtr

    arr = _checked(r, n)
    dof = n - 2
    with np.errstate(divide="ignore"):
        t = np.abs(arr) * np.sqrt(dof / np.maximum(1.0 - np.square(arr), 0.0))
    p: np.ndarray = np.clip(2.0 * stdtr(dof, -t), 0.0, 1.0)
    return p


def benjamini_hochberg(p_values: np.ndarray, q: float = DEFAULT_Q) -> np.ndarray:
    """Which hypotheses the Benjamini-Hochberg step-up procedure rejects at false-discovery rate q.

    With the m p-values sorted, p_(1) <= ... <= p_(m), let k be the largest i with
    p_(i) <= q i / m; the k smallest are rejected (none when there is no such i).

    Args:
        p_values: p-values in [0, 1], any shape (e.g. (H, W)).
        q: the false-discovery rate in (0, 1).

    Returns:
        bool array of ``p_values``' shape, True where rejected ("significant").
    """
    p = np.asarray(p_values, np.float64)
    if not (isinstance(q, (int, float)) and 0.0 < q < 1.0):
        raise InputError(f"q must be in (0, 1), got {q!r}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InputError("p-values must be in [0, 1]")
    flat = p.ravel()
    m = flat.size
    if m == 0:
        return np.zeros(p.shape, bool)
    order = np.argsort(flat, kind="stable")
    below = flat[order] <= q * np.arange(1, m + 1) / m
    out = np.zeros(m, bool)
    if below.any():
        k = int(np.flatnonzero(below)[-1]) + 1
        out[order[:k]] = True
    return out.reshape(p.shape)


def split_half_r(map_even: np.ndarray, map_odd: np.ndarray) -> float:
    """Pearson r over pixels between two maps of one shape (0.0 when either is constant)."""
    x = np.asarray(map_even, np.float64).ravel()
    y = np.asarray(map_odd, np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise InputError(f"split-half maps must share a shape of 2+ pixels, got {np.shape(map_even)} "
                         f"and {np.shape(map_odd)}")
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    if denom == 0.0:
        return 0.0
    return float(np.clip(float(x @ y) / denom, -1.0, 1.0))


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """Spearman-Brown prediction of the reliability of a ``factor`` times longer test:
    ``factor * r / (1 + (factor - 1) * r)``; for split halves, the agreement expected between two
    independent full-size maps (r <= -1 gives -1)."""
    denom = 1.0 + (factor - 1.0) * r
    if denom <= 0.0:
        return -1.0
    return float(np.clip(factor * r / denom, -1.0, 1.0))


@dataclass(frozen=True, eq=False)
class MapUncertainty:
    """The uncertainty of one map (H, W).

    ``ci_low``/``ci_high`` (H, W) float32: the interval of each pixel's correlation;
    ``significant`` (H, W) bool: pixels whose correlation differs from 0 under the false-discovery
    control; the arrays are None in a result read from a summary alone.
    ``significant_fraction``: the share of significant pixels; ``split_half_r``: agreement of the
    even- and odd-mask half maps (None when unknown); ``predicted_r``: its Spearman-Brown
    prediction for two full-size maps.
    """

    significant_fraction: float
    split_half_r: float | None
    predicted_r: float | None
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    significant: np.ndarray | None = None


def map_uncertainty(
    r: np.ndarray,
    n: int,
    *,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
    q: float = DEFAULT_Q,
    level: float = DEFAULT_LEVEL,
    rank: bool = False,
) -> MapUncertainty:
    """Everything :class:`MapUncertainty` holds for a map ``r`` (H, W) of ``n`` masks;
    ``halves``: the maps of the even- and odd-indexed masks (None: no split-half figures)."""
    low, high = fisher_interval(r, n, level=level, rank=rank)
    significant = benjamini_hochberg(correlation_p_values(r, n), q)
    sh = None if halves is None else split_half_r(*halves)
    return MapUncertainty(
        significant_fraction=float(significant.mean()),
        split_half_r=sh,
        predicted_r=None if sh is None else spearman_brown(sh),
        ci_low=low.astype(np.float32),
        ci_high=high.astype(np.float32),
        significant=significant,
    )


def _opt_round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """The uncertainty of a pair's maps: ``method`` names the interval (``"fisher-z"``, or
    ``"fisher-z-spearman"`` for rank correlations), ``level`` its coverage, ``q`` the
    false-discovery rate of the significance masks, ``n`` the masks behind the maps; ``a``/``b``
    per face."""

    method: str
    level: float
    q: float
    n: int
    a: MapUncertainty
    b: MapUncertainty

    @classmethod
    def of_maps(
        cls,
        s_a: np.ndarray,
        s_b: np.ndarray,
        n: int,
        *,
        halves_a: tuple[np.ndarray, np.ndarray] | None = None,
        halves_b: tuple[np.ndarray, np.ndarray] | None = None,
        q: float = DEFAULT_Q,
        level: float = DEFAULT_LEVEL,
        rank: bool = False,
    ) -> Uncertainty:
        """The uncertainty of correlation maps ``s_a``/``s_b`` (H, W) of ``n`` masks."""
        return cls(
            method="fisher-z-spearman" if rank else "fisher-z",
            level=float(level),
            q=float(q),
            n=int(n),
            a=map_uncertainty(s_a, n, halves=halves_a, q=q, level=level, rank=rank),
            b=map_uncertainty(s_b, n, halves=halves_b, q=q, level=level, rank=rank),
        )

    @property
    def has_arrays(self) -> bool:
        """Whether the per-pixel arrays are present (not a summary read alone)."""
        return all(m.ci_low is not None and m.ci_high is not None and m.significant is not None
                   for m in (self.a, self.b))

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``uncertainty`` object (no arrays)."""
        return {
            "method": self.method,
            "level": self.level,
            "q": self.q,
            "n": self.n,
            "significant_fraction_a": round(self.a.significant_fraction, 6),
            "significant_fraction_b": round(self.b.significant_fraction, 6),
            "split_half_r_a": _opt_round(self.a.split_half_r),
            "split_half_r_b": _opt_round(self.b.split_half_r),
            "predicted_r_a": _opt_round(self.a.predicted_r),
            "predicted_r_b": _opt_round(self.b.predicted_r),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """``maps.npz``'s arrays: ``ci_low_a``, ``ci_high_a``, ``ci_low_b``, ``ci_high_b`` (float32)
        and ``significant_a``, ``significant_b`` (bool); InputError without arrays."""
        if not self.has_arrays:
            raise InputError("this uncertainty has no arrays (it was read from a summary alone)")
        out: dict[str, np.ndarray] = {}
        for face, m in (("a", self.a), ("b", self.b)):
            out[f"ci_low_{face}"] = np.asarray(m.ci_low, np.float32)
            out[f"ci_high_{face}"] = np.asarray(m.ci_high, np.float32)
            out[f"significant_{face}"] = np.asarray(m.significant, bool)
        return out

    @classmethod
    def from_summary(
        cls, d: Any, where: str = "uncertainty", arrays: dict[str, np.ndarray] | None = None
    ) -> Uncertainty:
        """Inverse of :meth:`summary` (with :meth:`arrays`' arrays when given); InputError naming a
        missing or malformed key."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected an object, got {type(d).__name__}")

        def num(key: str) -> float:
            if key not in d:
                raise InputError(f"{where}: missing key {key!r}")
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"{where}.{key}: expected a finite number, got {v!r}")
            return float(v)

        def opt_num(key: str) -> float | None:
            return None if d.get(key) is None else num(key)

        method = d.get("method")
        if not isinstance(method, str):
            raise InputError(f"{where}.method: expected a string, got {method!r}")
        n = d.get("n")
        if isinstance(n, bool) or not isinstance(n, int):
            raise InputError(f"{where}.n: expected an integer, got {n!r}")
        faces = []
        for face in ("a", "b"):
            frac = num(f"significant_fraction_{face}")
            parts = [None, None, None] if arrays is None else [
                arrays[f"{k}_{face}"] for k in ("ci_low", "ci_high", "significant")]
            faces.append(MapUncertainty(frac, opt_num(f"split_half_r_{face}"), opt_num(f"predicted_r_{face}"),
                                        *parts))
        return cls(method, num("level"), num("q"), n, faces[0], faces[1])


#: Keys and dtypes of :meth:`Uncertainty.arrays`.
ARRAY_KEYS: dict[str, type[np.generic]] = {
    f"{k}_{face}": (np.bool_ if k == "significant" else np.float32)
    for face in ("a", "b") for k in ("ci_low", "ci_high", "significant")
}


def _fraction(value: object, name: str) -> float:
    """``value`` as a float in (0, 1); InputError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
        math.isfinite(float(value)) and 0.0 < float(value) < 1.0
    ):
        raise InputError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UncertaintyOptions:
    """How a map's uncertainty is stated: ``q``, the false-discovery rate of the significance masks
    (Benjamini-Hochberg), and ``level``, the coverage of the per-pixel intervals; both in (0, 1),
    defaults :data:`DEFAULT_Q` and :data:`DEFAULT_LEVEL`. The options change no map and no
    split-half figure, only the intervals and significance masks read from them
    (:func:`~explainer_service.explanation.restate`). Carried as ``fdr_q``/``ci_level`` (CLI ``--fdr-q``/``--ci-level``, the
    API's ExplainRequest, an explain job's ``uncertainty`` parameters)."""

    q: float = DEFAULT_Q
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", _fraction(self.q, "fdr_q"))
        object.__setattr__(self, "level", _fraction(self.level, "ci_level"))

    @property
    def is_default(self) -> bool:
        """Whether both options are the defaults (a job without them keeps its old content id)."""
        return self.q == DEFAULT_Q and self.level == DEFAULT_LEVEL

    def to_dict(self) -> dict[str, float]:
        """``{"fdr_q": q, "ci_level": level}``."""
        return {"fdr_q": self.q, "ci_level": self.level}

    @classmethod
    def from_dict(cls, d: Any, where: str = "uncertainty") -> UncertaintyOptions:
        """Inverse of :meth:`to_dict` (missing keys take the defaults); InputError naming an
        unknown key or a bad value."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in ("fdr_q", "ci_level"))
        if unknown:
            raise InputError(f"{where}: unknown option(s) {', '.join(unknown)} (fdr_q, ci_level)")
        return cls(q=d.get("fdr_q", DEFAULT_Q), level=d.get("ci_level", DEFAULT_LEVEL))
