"""MinPlus (Mery & Morris, "On Black-Box Explanation for Face Verification", WACV 2022; also used in
Mery, "True Black-Box Explanation in Facial Analysis", CVPR 2022 workshops).

MinPlus combines two greedy searches over Gaussian-shaped regions of the probe face, both driven
only by the matching score (black box):

* **removal ("minus")**: start from the clean face; at every step try removing each remaining
  candidate region (a Gaussian mask g_c centred on a grid point c), keep the removal that lowers
  the similarity most, and add its score drop to the map on that region;
* **insertion ("plus")**: start from the fully removed face (all substrate); at every step try
  inserting each remaining candidate region, keep the insertion that raises the similarity most,
  and add its score gain to the map on that region;
* **MinPlus** = removal map + insertion map.

For face A (B is symmetric, compared with the clean A) with the current removed fraction R (0 at
the start) and the candidate's union R_c = 1 - (1 - R)(1 - g_c):

    image_c = A * (1 - R_c) + substrate * R_c,     s_c = cos(f(image_c), f(B))
    c* = argmin_c s_c,   H^- += (s_prev - s_c*) g_c*,   R = R_c*,   s_prev = s_c*

and the same for insertion with the inserted fraction I (0 at the start),
image_c = A * I_c + substrate * (1 - I_c), c* = argmax_c s_c, H^+ += (s_c* - s_prev) g_c*.
Each chosen region leaves the candidate set (no region is chosen twice).

What the paper does not pin down, and what we chose (every deviation is listed in docs/methods.md):
the substrate (0 = black here, like RISE/LIME/xFace in this package; ``substrate="blur"`` replaces
with a Gaussian blur of the face), the Gaussian width and candidate grid (sigma 7 px and a stride
of 14 px on a 112 px chip, scaled with the chip: an 8 x 8 grid), the number of greedy steps (10,
bounded so that the cost stays comparable with the other baselines; regions never chosen keep 0),
the union of overlapping Gaussians (probabilistic union above) and how the two maps are combined
(plain sum, both being in units of cosine similarity). Ties go to the first candidate in row-major
order. Everything is deterministic (no seed).

All candidates of a step, for the four searches (A minus/plus, B minus/plus), are embedded together
in chunks of ``perturbations_per_eval`` images; the choice of a step depends only on the scores, so
the chunking never changes the result.

Cost per pair, K candidates and T steps (mode "minplus"): 2 + 2 * (2 * sum_{t<T} (K - t) + 1) =
2 + 4 * (T * K - T * (T - 1) / 2) + 2 forward passes; K = 64, T = 10: 2,384. Modes "minus" and
"plus" alone cost about half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Progress
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
)
from .xface import gaussian_blur

__all__ = [
    "MinPlus",
    "MinPlusConfig",
    "MinPlusResult",
    "GreedyPath",
    "MODES",
    "SUBSTRATES",
    "PAPER_CHIP",
    "MIN_SIGMA",
    "minplus_stride",
    "minplus_grid",
    "minplus_centres",
    "minplus_sigma",
    "minplus_gaussians",
    "minplus_forward_passes",
]

MODES = ("minplus", "minus", "plus")
SUBSTRATES = ("zero", "blur")
#: Chip side (px) on which the default sigma and stride are given.
PAPER_CHIP = 112
_DEFAULT_SIGMA = 7.0
#: Narrowest Gaussian region or blur (px): below it the Gaussian is one pixel, or underflows.
MIN_SIGMA = 0.1
_DEFAULT_STRIDE = 14


@dataclass(frozen=True)
class MinPlusConfig:
    """MinPlus's options.

    Attributes:
        steps: greedy steps T per search (>= 1, at most the number of candidates).
        sigma: standard deviation of a Gaussian region in chip pixels (:data:`MIN_SIGMA` to the
            chip side); ``None``: 7 px on 112 px scaled to the chip.
        stride: spacing of the candidate centres in chip pixels (at most the chip side); ``None``:
            14 px on 112 px scaled.
            The centres form a g x g grid, g = max(1, round(S / stride)), centred on the chip.
        substrate: what a removed pixel becomes: ``"zero"`` (black) or ``"blur"`` (a Gaussian blur
            of the face with ``blur_sigma``).
        blur_sigma: blur of the ``"blur"`` substrate in chip pixels (:data:`MIN_SIGMA` to the chip
            side); ``None``: the region's sigma.
        mode: ``"minplus"`` (removal + insertion), ``"minus"`` (removal only) or ``"plus"``.
        perturbations_per_eval: perturbed images per model call (>= 1); speed and memory only.
    """

    steps: int = 10
    sigma: float | None = None
    stride: int | None = None
    substrate: str = "zero"
    blur_sigma: float | None = None
    mode: str = "minplus"
    perturbations_per_eval: int = DEFAULT_PERTURBATIONS_PER_EVAL

    def __post_init__(self) -> None:
        _require_int("steps", self.steps, 1)
        for name in ("sigma", "blur_sigma"):
            v = getattr(self, name)
            if v is not None and (not _is_number(v) or not 0 < float(v) < float("inf")):
                raise InputError(f"{name} must be None or a finite number > 0, got {v!r}")
        if self.stride is not None:
            _require_int("stride", self.stride, 1)
        _require_choice("substrate", self.substrate, SUBSTRATES)
        _require_choice("mode", self.mode, MODES)
        _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError naming the parameter unless the search fits a ``chip_size`` chip: stride and
        sigmas at most the chip side (sigmas at least :data:`MIN_SIGMA`), and at most as many
        steps as there are candidate regions."""
        size = _require_chip_size(chip_size)
        if self.stride is not None:
            _require_at_most("stride", self.stride, size, f"the chip side ({size} px)")
        for name in ("sigma", "blur_sigma"):
            v = getattr(self, name)
            if v is not None and not MIN_SIGMA <= float(v) <= size:
                raise InputError(f"{name} {v} must be in [{MIN_SIGMA}, {size}] px on a {size} px chip")
        g = minplus_grid(self, size)
        if self.steps > g * g:
            raise InputError(
                f"steps {self.steps} must be at most the number of candidate regions ({g * g}: a {g} x {g} "
                f"grid, stride {minplus_stride(self, size)} px on a {size} px chip)"
            )


def minplus_sigma(config: MinPlusConfig, chip_size: int) -> float:
    """Sigma (px) of a region on a ``chip_size`` chip."""
    if config.sigma is not None:
        return float(config.sigma)
    return _DEFAULT_SIGMA * chip_size / PAPER_CHIP


def minplus_stride(config: MinPlusConfig, chip_size: int) -> int:
    """Spacing (px) of the candidate centres on a ``chip_size`` chip: the configured one, else
    14 px on 112 px scaled."""
    if config.stride is not None:
        return int(config.stride)
    return max(1, round(_DEFAULT_STRIDE * chip_size / PAPER_CHIP))


def minplus_grid(config: MinPlusConfig, chip_size: int) -> int:
    """Side g of the grid of candidate centres: max(1, round(S / stride))."""
    return max(1, int(round(chip_size / minplus_stride(config, chip_size))))


def minplus_centres(config: MinPlusConfig, chip_size: int) -> np.ndarray:
    """Candidate centres (row, col) in pixel coordinates, float64 (g*g, 2), row-major: the centres
    of a g x g grid of equal cells covering the chip, g = max(1, round(S / stride))."""
    _require_int("chip_size", chip_size, 1)
    g = minplus_grid(config, chip_size)
    axis = (np.arange(g) + 0.5) * chip_size / g - 0.5
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)


def minplus_gaussians(centres: np.ndarray, sigma: float, chip_size: int) -> np.ndarray:
    """Regions g_c(x) = exp(-|x - c|^2 / (2 sigma^2)), float64 (K, S, S), peak ~1 at the centre."""
    coords = np.arange(chip_size, dtype=np.float64)
    dy = (coords[None, :] - centres[:, 0:1]) ** 2  # (K, S)
    dx = (coords[None, :] - centres[:, 1:2]) ** 2
    regions: np.ndarray = np.exp(-(dy[:, :, None] + dx[:, None, :]) / (2.0 * sigma * sigma))
    return regions


def minplus_forward_passes(n_candidates: int, steps: int, mode: str = "minplus") -> int:
    """Forward passes of one pair: 2 clean + for each face and each search sum_{t<T}(K - t)
    (+1 for the all-substrate start of an insertion search)."""
    per_search = steps * n_candidates - steps * (steps - 1) // 2
    searches = {"minplus": 2, "minus": 1, "plus": 1}[mode]
    extra = 0 if mode == "minus" else 1
    return 2 + 2 * (searches * per_search + extra)


@dataclass(frozen=True)
class GreedyPath:
    """One greedy search on one face.

    Attributes:
        kind: ``"minus"`` (removal) or ``"plus"`` (insertion).
        order: indices (T,) of the chosen candidates, in the order chosen.
        centres: (T, 2) their centres (row, col) in pixels.
        scores: (T + 1,) similarity before the first step (clean face for removal, all substrate
            for insertion) and after each step.
        saliency: (S, S) float64 partial map sum_t change_t * g_t, with change = before - after
            for a removal and after - before for an insertion (positive = supports "same").
    """

    kind: str
    order: np.ndarray
    centres: np.ndarray
    scores: np.ndarray
    saliency: np.ndarray


@dataclass(frozen=True)
class MinPlusResult:
    """The searches of a pair (None where the mode skips them) and the clean score."""

    score: float
    minus_a: GreedyPath | None
    plus_a: GreedyPath | None
    minus_b: GreedyPath | None
    plus_b: GreedyPath | None

    def map_a(self) -> np.ndarray:
        return _combine(self.minus_a, self.plus_a)

    def map_b(self) -> np.ndarray:
        return _combine(self.minus_b, self.plus_b)


def _combine(minus: GreedyPath | None, plus: GreedyPath | None) -> np.ndarray:
    parts = [p.saliency for p in (minus, plus) if p is not None]
    combined: np.ndarray = np.sum(parts, axis=0)
    return combined


class _Search:
    """State of one greedy search on one face."""

    def __init__(self, kind: str, chip: np.ndarray, substrate: np.ndarray, gaussians: np.ndarray,
                 reference: np.ndarray, start_score: float) -> None:
        self.kind = kind
        self.chip = chip
        self.substrate = substrate
        self.gaussians = gaussians
        self.reference = reference
        size = chip.shape[0]
        self.amount = np.zeros((size, size), np.float64)  # removed (minus) or inserted (plus) fraction
        self.remaining = list(range(len(gaussians)))
        self.order: list[int] = []
        self.scores = [start_score]
        self.saliency = np.zeros((size, size), np.float64)

    def _union(self, c: int) -> np.ndarray:
        union: np.ndarray = 1.0 - (1.0 - self.amount) * (1.0 - self.gaussians[c])
        return union

    def render(self, lo: int, hi: int) -> np.ndarray:
        amounts = np.stack([self._union(c) for c in self.remaining[lo:hi]])[..., None]
        chip = self.chip[None].astype(np.float64)
        sub = self.substrate[None].astype(np.float64)
        if self.kind == "minus":
            img = chip * (1.0 - amounts) + sub * amounts
        else:
            img = chip * amounts + sub * (1.0 - amounts)
        rendered: np.ndarray = img.astype(np.float32)
        return rendered

    def group(self) -> _Group:
        return _Group(len(self.remaining), self.render, self.reference)

    def step(self, scores: np.ndarray) -> None:
        j = int(np.argmin(scores)) if self.kind == "minus" else int(np.argmax(scores))
        c = self.remaining.pop(j)
        before, after = self.scores[-1], float(scores[j])
        change = before - after if self.kind == "minus" else after - before
        self.saliency += change * self.gaussians[c]
        self.amount = self._union(c)
        self.order.append(c)
        self.scores.append(after)

    def path(self, centres: np.ndarray) -> GreedyPath:
        order = np.asarray(self.order, np.int64)
        return GreedyPath(self.kind, order, centres[order], np.asarray(self.scores), self.saliency)


class MinPlus(PerturbationMethod[MinPlusConfig]):
    """MinPlus over a FaceModel; ``attribute`` explains one pair (both faces) with
    ``minplus_forward_passes(K, T, mode)`` forward passes (2,384 with the defaults).

    Returns maps (S, S) float32 = removal map + insertion map; ``scores_a``/``scores_b`` are
    empty (the per-step scores are in :meth:`run`'s GreedyPath objects).
    """

    name = "minplus"
    config_class = MinPlusConfig

    @classmethod
    def forward_passes_for(cls, config: MinPlusConfig, chip_size: int) -> int:
        config.check_for_chip(chip_size)
        return minplus_forward_passes(len(minplus_centres(config, chip_size)), config.steps, config.mode)

    def params(self) -> dict[str, Any]:
        cfg = self.config
        size = self.model.spec.chip.size
        k = len(minplus_centres(cfg, size))
        return {
            **asdict(cfg),
            "sigma_px": minplus_sigma(cfg, size),
            "candidates": k,
            "forward_passes": minplus_forward_passes(k, cfg.steps, cfg.mode),
        }

    def _substrate(self, chip: np.ndarray, sigma: float) -> np.ndarray:
        if self.config.substrate == "zero":
            return np.zeros_like(chip)
        s = float(self.config.blur_sigma if self.config.blur_sigma is not None else sigma)
        k = min(2 * int(np.ceil(3 * s)) + 1, 2 * chip.shape[0] - 1)  # odd, shorter than the reflection
        return np.stack([gaussian_blur(chip[..., c], k, s) for c in range(3)], -1).astype(np.float32)

    def run(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> MinPlusResult:
        """The greedy searches of the pair (see the module docstring), all of a step batched."""
        return self._search(self.prepare(chip_a, chip_b), self.evaluator(progress))

    def _search(self, pair: CleanPair, evaluate: Evaluator) -> MinPlusResult:
        cfg = self.config
        size = self.model.spec.chip.size
        centres = minplus_centres(cfg, size)
        cfg.check_for_chip(size)
        sigma = minplus_sigma(cfg, size)
        gaussians = minplus_gaussians(centres, sigma, size)
        a, b, score = pair.a, pair.b, pair.score

        kinds = [m for m in ("minus", "plus") if cfg.mode in (m, "minplus")]
        faces = {"A": (a, self._substrate(a, sigma), pair.emb_b), "B": (b, self._substrate(b, sigma), pair.emb_a)}
        # removal starts from the clean score; insertion from the all-substrate image (1 pass per face)
        starts = {("minus", "A"): score, ("minus", "B"): score}
        if "plus" in kinds:
            def whole(image: np.ndarray) -> Callable[[int, int], np.ndarray]:
                return lambda lo, hi: image[None]

            empty = [_Group(1, whole(sub), ref) for _, sub, ref in faces.values()]
            sa, sb = evaluate(empty)
            starts[("plus", "A")], starts[("plus", "B")] = float(sa[0]), float(sb[0])
        searches = {
            (kind, face): _Search(kind, chip, sub, gaussians, ref, starts[(kind, face)])
            for face, (chip, sub, ref) in faces.items()
            for kind in kinds
        }
        keys = list(searches)
        for _ in range(cfg.steps):
            scores = evaluate([searches[key].group() for key in keys])
            for key, s in zip(keys, scores, strict=True):
                searches[key].step(s)

        def path(kind: str, face: str) -> GreedyPath | None:
            s = searches.get((kind, face))
            return None if s is None else s.path(centres)

        return MinPlusResult(score, path("minus", "A"), path("plus", "A"), path("minus", "B"), path("plus", "B"))

    def _explain(self, pair: CleanPair, evaluate: Evaluator) -> Maps:
        res = self._search(pair, evaluate)
        return Maps(res.map_a().astype(np.float32), res.map_b().astype(np.float32))
