"""RISE (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018) adapted to face verification.

RISE explains a scalar output by averaging random masks weighted by the output they produce. Here
the output is the pair's similarity: for masks M_1..M_N (the same set for both faces)

    s^A_k = cos(f(A * M_k), f(B))        S_A = sum_k s^A_k M_k / (N p)
    s^B_k = cos(f(B * M_k), f(A))        S_B = sum_k s^B_k M_k / (N p)

so S_A(x) estimates E[s^A | pixel x kept] (the paper's Monte-Carlo estimate of the importance).

Masks as in the paper and its code (github.com/eclique/RISE): a binary s x s grid whose cells are 1
with probability p, bilinearly upsampled (skimage ``resize``, ``order=1``, ``mode="reflect"``, no
anti-aliasing) to (s + 1) * C pixels, C = ceil(S / s), then cropped to S x S at a random shift
(dy, dx) in [0, C)^2. The upsampling is done here with a fixed (up, s) interpolation matrix that
reproduces that ``resize`` call exactly (tests check it against skimage), so nothing heavier than
NumPy is imported. Masked pixels become 0 (black), as in the paper.

Randomness comes from ``np.random.default_rng(seed)``: all grids, then all shifts, drawn once per
explanation; masks are rebuilt from them chunk by chunk, so memory stays O(chunk * S^2) and the
chunking (``perturbations_per_eval``) never changes a mask, a score or the maps.

Cost per pair: 2 + 2N forward passes (two clean embeddings, N masked A, N masked B).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError, LimitExceededError
from .perturbation import (
    DEFAULT_PERTURBATIONS_PER_EVAL,
    CleanPair,
    Evaluator,
    Maps,
    PerturbationMethod,
    _Group,
    _is_int,
    _is_number,
    _require_at_most,
    _require_chip_size,
    _require_int,
)

__all__ = [
    "RISE",
    "RISEConfig",
    "rise_cell_size",
    "rise_grids",
    "rise_masks",
    "upsample_matrix",
    "DEFAULT_PERTURBATIONS_PER_EVAL",
]

#: Most grid cells of one mask set (n_masks * grid^2): the bool grids stay under 1 GB.
MAX_GRID_CELLS = 1_000_000_000
#: Grid cells drawn per block from the generator (bounds the float64 draw to about 64 MB).
_GRID_DRAW_CELLS = 8_000_000
#: Masks per block when the map is accumulated (fixed, so the sum order never depends on batching).
_MAP_BLOCK = 64


# --------------------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RISEConfig:
    """RISE's options; the defaults are the paper's (s = 8, p = 0.5) with N = 500 masks, CorrRISE's
    budget (the paper uses N = 4000 on ImageNet).

    Attributes:
        n_masks: number of masks N (>= 1).
        grid: side s of the random binary grid (>= 1; at most the chip side, see
            :meth:`check_for_chip`).
        p: probability that a grid cell is kept (0 < p <= 1).
        seed: seed of the mask set (non-negative integer).
        perturbations_per_eval: perturbed images per model call (>= 1); speed and memory only.
    """

    n_masks: int = 500
    grid: int = 8
    p: float = 0.5
    seed: int = 0
    perturbations_per_eval: int = DEFAULT_PERTURBATIONS_PER_EVAL

    def __post_init__(self) -> None:
        _require_int("n_masks", self.n_masks, 1)
        _require_int("grid", self.grid, 1)
        if not _is_number(self.p) or not 0.0 < float(self.p) <= 1.0:
            raise InputError(f"p must be a number in (0, 1], got {self.p!r}")
        _require_int("seed", self.seed, 0)
        _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the grid fits a ``chip_size`` chip: at most one cell per pixel
        (``grid <= chip_size``), so the grids and the upsampling stay chip-sized."""
        size = _require_chip_size(chip_size)
        _require_at_most("grid", self.grid, size, f"the chip side ({size} px)")
        cells = self.n_masks * self.grid * self.grid
        if cells > MAX_GRID_CELLS:
            raise LimitExceededError(
                f"RISE's grids would hold {cells} cells (n_masks {self.n_masks} x grid {self.grid}^2), over "
                f"{MAX_GRID_CELLS}: lower n_masks (or budget) or grid"
            )


def rise_cell_size(chip_size: int, grid: int) -> int:
    """C = ceil(S / s): the side of one upsampled grid cell in pixels."""
    _require_int("chip_size", chip_size, 1)
    _require_int("grid", grid, 1)
    return -(-int(chip_size) // int(grid))


def upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix W with ``W @ v`` = skimage ``resize(v, n_out, order=1,
    mode="reflect", anti_aliasing=False)`` for a 1-D ``v`` of length ``n_in``.

    ``resize`` maps output pixel o to input coordinate c = (o + 0.5) * n_in / n_out - 0.5 and
    interpolates linearly, mirroring indices about the edge pixels (scipy's ``mirror`` mode).
    Applied on both axes, ``W @ G @ W.T`` is the 2-D bilinear resize of a grid G.
    """
    _require_int("n_in", n_in, 1)
    _require_int("n_out", n_out, 1)
    w = np.zeros((n_out, n_in), np.float64)
    last = n_in - 1

    def mirror(i: int) -> int:
        if last == 0:
            return 0
        period = 2 * last
        i = abs(i) % period
        return period - i if i > last else i

    for o in range(n_out):
        c = (o + 0.5) * n_in / n_out - 0.5
        i0 = math.floor(c)
        t = c - i0
        w[o, mirror(i0)] += 1.0 - t
        w[o, mirror(i0 + 1)] += t
    return w


def rise_grids(config: RISEConfig, chip_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The random part of a mask set: bool grids (N, s, s) (True = kept cell) and int shifts (N, 2)
    ``(dy, dx)`` in [0, C). Drawn from ``default_rng(seed)``: the grids first, then the shifts."""
    cell = rise_cell_size(chip_size, config.grid)
    rng = np.random.default_rng(config.seed)
    # drawn in blocks (the same stream as one draw) so no (N, s, s) float64 array is ever made
    grids = np.empty((config.n_masks, config.grid, config.grid), bool)
    per_block = max(1, _GRID_DRAW_CELLS // (config.grid * config.grid))
    for lo in range(0, config.n_masks, per_block):
        hi = min(lo + per_block, config.n_masks)
        grids[lo:hi] = rng.random((hi - lo, config.grid, config.grid)) < config.p
    shifts = rng.integers(0, cell, size=(config.n_masks, 2))
    return grids, shifts


class _MaskSet:
    """Grids and shifts of one explanation; builds masks [lo, hi) on demand."""

    def __init__(self, config: RISEConfig, chip_size: int) -> None:
        self.size = int(chip_size)
        cell = rise_cell_size(chip_size, config.grid)
        self.grids, self.shifts = rise_grids(config, chip_size)
        self.up = upsample_matrix(config.grid, (config.grid + 1) * cell)

    def masks(self, lo: int, hi: int) -> np.ndarray:
        s = self.size
        out = np.empty((hi - lo, s, s), np.float32)
        for i, k in enumerate(range(lo, hi)):
            dy, dx = int(self.shifts[k, 0]), int(self.shifts[k, 1])
            g = self.grids[k].astype(np.float64)
            out[i] = self.up[dy : dy + s] @ g @ self.up[dx : dx + s].T
        return out


def rise_masks(config: RISEConfig, chip_size: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Masks ``start`` .. ``stop - 1`` of the set: float32 (stop - start, S, S) with values in [0, 1].

    Mask k is the bilinear upsampling of grid k to (s + 1) * C pixels cropped at shift k:
    ``up[dy:dy+S, dx:dx+S]``. Identical whatever range is asked for.
    """
    stop = config.n_masks if stop is None else stop
    if not _is_int(start) or not _is_int(stop) or not 0 <= start <= stop <= config.n_masks:
        raise InputError(
            f"start/stop must satisfy 0 <= start <= stop <= n_masks ({config.n_masks}), "
            f"got start={start!r}, stop={stop!r}"
        )
    return _MaskSet(config, chip_size).masks(int(start), int(stop))


class RISE(PerturbationMethod[RISEConfig]):
    """RISE over a FaceModel; ``attribute`` explains one pair (both faces), 2N + 2 forward passes.

    Returns maps (S, S) float32; ``scores_a``/``scores_b`` (N,) hold s^A_k and s^B_k.
    """

    name = "rise"
    config_class = RISEConfig

    @classmethod
    def forward_passes_for(cls, config: RISEConfig, chip_size: int) -> int:
        config.check_for_chip(chip_size)
        return 2 + 2 * config.n_masks

    def params(self) -> dict[str, Any]:
        cfg = self.config
        size = self.model.spec.chip.size
        cell = rise_cell_size(size, cfg.grid)
        return {**asdict(cfg), "cell_size": cell, "upsampled_size": (cfg.grid + 1) * cell}

    def _explain(self, pair: CleanPair, evaluate: Evaluator) -> Maps:
        cfg = self.config
        size = self.model.spec.chip.size
        masks = _MaskSet(cfg, size)
        n = cfg.n_masks

        def render(chip: np.ndarray) -> Callable[[int, int], np.ndarray]:
            return lambda lo, hi: chip[None] * masks.masks(lo, hi)[..., None]

        groups = [_Group(n, render(pair.a), pair.emb_b), _Group(n, render(pair.b), pair.emb_a)]
        scores_a, scores_b = evaluate(groups)
        sal_a = np.zeros((size, size), np.float64)
        sal_b = np.zeros((size, size), np.float64)
        for lo in range(0, n, _MAP_BLOCK):
            hi = min(lo + _MAP_BLOCK, n)
            m = masks.masks(lo, hi).astype(np.float64)
            sal_a += np.tensordot(scores_a[lo:hi], m, axes=1)
            sal_b += np.tensordot(scores_b[lo:hi], m, axes=1)
        norm = n * float(cfg.p)
        return Maps((sal_a / norm).astype(np.float32), (sal_b / norm).astype(np.float32), scores_a, scores_b)
