"""xFace occlusion maps (Knoche, Teepe, Hörmann, Rigoll, "Explainable Model-Agnostic Similarity and
Confidence in Face Verification", WACV 2023 workshops; code: github.com/martlgap/x-face-verification,
``MapGenerator`` with its method "2").

Systematic occlusion: a square patch of side p (7, 14 and 28 px on a 112 px chip, stride 5 px)
slides over face A; each occluded A is compared with the clean B (and symmetrically for B). With
the cosine distance d = 1 - cos, position k's deviation is

    dev_k = (d(f(A_k), f(B)) - d(f(A), f(B))) / p^2 = (cos_0 - cos_k) / p^2

and the map of patch size p is the mean over all positions of the deviation painted on the pixels
each patch covers (so a pixel gets the sum of the deviations of the patches covering it, divided by
the number of positions), smoothed with a Gaussian (kernel ``stride`` px, sigma ``stride`` px); the
final map is the mean of the per-size maps. Higher = occluding the pixel lowers the similarity
more (a region that supports "same"); negative = occluding it raises the similarity.

Positions follow the authors' code: top-left corners 0, stride, 2 * stride, ... < S - p on each axis,
``xface_occlusion_count`` = ceil((S - p) / stride)^2 per size (the last corner S - p is never used,
so a strip of up to ``stride`` px on the right and bottom edges is never occluded).

Deviations from the authors' code: the patch covers exactly p x p pixels (their ``cv2.rectangle``
corners are inclusive, so it covers (p + 1) x (p + 1)); the patch sizes and the stride scale with
the chip (round(7 * S / 112) etc.; S = 112 gives the paper's values); when the scaled stride is even
the blur kernel takes the next odd size (cv2 refuses even sizes); the maps are returned as numbers,
not blended into colour images. Everything is deterministic (no seed).

Cost per pair: 2 + 2 * sum_p ceil((S - p) / stride)^2 forward passes: 2 + 2 * (441 + 400 + 289) =
2,262 on a 112 px chip (patches 7/14/28, stride 5); 2 + 2 * (441 + 361 + 256) = 2,118 on dlib's
150 px chip (patches 9/19/38, stride 7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
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
    _require_int,
)

__all__ = [
    "XFace",
    "XFaceConfig",
    "PAPER_PATCH_SIZES",
    "PAPER_STRIDE",
    "PAPER_CHIP",
    "xface_occlusion_count",
    "xface_positions",
    "xface_patch_sizes",
    "xface_stride",
    "xface_patch_map",
    "gaussian_blur",
]

#: Patch sides of the paper (px on a 112 px chip).
PAPER_PATCH_SIZES = (7, 14, 28)
#: Stride of the paper (px on a 112 px chip).
PAPER_STRIDE = 5
#: Chip side of the paper (px).
PAPER_CHIP = 112


def _scaled(value: int, chip_size: int) -> int:
    return max(1, int(round(value * chip_size / PAPER_CHIP)))


@dataclass(frozen=True)
class XFaceConfig:
    """xFace's options; the defaults are the paper's.

    Attributes:
        patch_sizes: patch sides in chip pixels, each smaller than the chip; ``None``: 7, 14, 28 px
            on 112 px scaled to the chip.
        stride: step between patch positions in chip pixels (at most the chip side); ``None``:
            5 px on 112 px scaled.
        fill_value: value of the occluded pixels (0 = black, the authors' default), in [0, 255].
        smooth: Gaussian smoothing of each per-size map (kernel ``stride``, sigma ``stride``), as in
            the authors' code.
        perturbations_per_eval: perturbed images per model call (>= 1); speed and memory only.
    """

    patch_sizes: tuple[int, ...] | None = None
    stride: int | None = None
    fill_value: float = 0.0
    smooth: bool = True
    perturbations_per_eval: int = DEFAULT_PERTURBATIONS_PER_EVAL

    def __post_init__(self) -> None:
        if self.patch_sizes is not None:
            if (
                not isinstance(self.patch_sizes, (tuple, list))
                or len(self.patch_sizes) == 0
                or not all(_is_int(p) and p >= 1 for p in self.patch_sizes)
            ):
                raise InputError(
                    f"patch_sizes must be None or a non-empty tuple of integers >= 1, got {self.patch_sizes!r}"
                )
            object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        if self.stride is not None:
            _require_int("stride", self.stride, 1)
        if not _is_number(self.fill_value) or not 0.0 <= float(self.fill_value) <= 255.0:
            raise InputError(f"fill_value must be a number in [0, 255], got {self.fill_value!r}")
        if not isinstance(self.smooth, (bool, np.bool_)):
            raise InputError(f"smooth must be a bool, got {self.smooth!r}")
        _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the patches and stride fit a ``chip_size`` chip: every patch side
        smaller than the chip, the stride at most the chip side."""
        xface_patch_sizes(self, chip_size)
        if self.stride is not None:
            _require_at_most("stride", self.stride, int(chip_size), f"the chip side ({chip_size} px)")


def xface_patch_sizes(config: XFaceConfig, chip_size: int) -> tuple[int, ...]:
    """Patch sides (px) on a ``chip_size`` chip: the configured ones or the paper's scaled.
    InputError unless every side is smaller than the chip."""
    _require_int("chip_size", chip_size, 2)
    sizes = config.patch_sizes or tuple(_scaled(p, chip_size) for p in PAPER_PATCH_SIZES)
    for p in sizes:
        if p >= chip_size:
            what = "patch_sizes: patch size" if config.patch_sizes else "default patch size"
            raise InputError(f"{what} {p} must be smaller than the chip ({chip_size} px)")
    return sizes


def xface_stride(config: XFaceConfig, chip_size: int) -> int:
    """Stride (px) on a ``chip_size`` chip: the configured one or the paper's 5 px on 112 px scaled."""
    return int(config.stride) if config.stride is not None else _scaled(PAPER_STRIDE, chip_size)


def xface_occlusion_count(chip_size: int, patch: int, stride: int) -> int:
    """Number of occluded images per face for one patch size: ceil((S - p) / stride)^2 (0 if p >= S).

    The authors' positions are ``np.arange(0, S - p, stride)`` on each axis.
    """
    _require_int("chip_size", chip_size, 1)
    _require_int("patch", patch, 1)
    _require_int("stride", stride, 1)
    per_axis = max(0, -(-(int(chip_size) - int(patch)) // int(stride)))
    return per_axis * per_axis


def xface_positions(chip_size: int, patch: int, stride: int) -> np.ndarray:
    """Top-left corners (row, col) of the occluding patches, int (n, 2), rows outer, cols inner."""
    _require_int("chip_size", chip_size, 1)
    _require_int("patch", patch, 1)
    _require_int("stride", stride, 1)
    axis = np.arange(0, int(chip_size) - int(patch), int(stride))
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2).astype(np.int64)


def gaussian_blur(image: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur(image, (k, k), sigma) of a 2-D float image (separable kernel of k taps,
    exp(-(i - (k-1)/2)^2 / (2 sigma^2)) normalised; borders reflected without repeating the edge,
    cv2's BORDER_REFLECT_101). ``ksize`` must be odd and smaller than twice the image side."""
    if not _is_int(ksize) or ksize < 1 or ksize % 2 == 0:
        raise InputError(f"ksize must be an odd integer >= 1, got {ksize!r}")
    img = np.asarray(image, np.float64)
    if ksize == 1:
        return img.copy()
    r = ksize // 2
    taps = np.exp(-((np.arange(ksize) - r) ** 2) / (2.0 * float(sigma) ** 2))
    taps /= taps.sum()
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, t in enumerate(taps):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(i, i + n)
            acc += t * padded[tuple(sl)]
        out = acc
    return out


def xface_patch_map(
    deviations: np.ndarray, positions: np.ndarray, patch: int, chip_size: int
) -> np.ndarray:
    """Unsmoothed map of one patch size, float64 (S, S): sum of the deviations of the patches
    covering each pixel divided by the number of positions (the authors' mean over masks)."""
    out = np.zeros((chip_size, chip_size), np.float64)
    for (y, x), dev in zip(positions, deviations, strict=True):
        out[y : y + patch, x : x + patch] += dev
    return out / max(len(positions), 1)


class XFace(PerturbationMethod[XFaceConfig]):
    """xFace over a FaceModel; ``attribute`` explains one pair (both faces) with
    2 + 2 * sum_p ceil((S - p) / stride)^2 forward passes.

    Returns maps (S, S) float32; ``scores_a``/``scores_b`` hold the occluded images' cosines,
    patch size after patch size, positions row-major.
    """

    name = "xface"
    config_class = XFaceConfig

    @classmethod
    def forward_passes_for(cls, config: XFaceConfig, chip_size: int) -> int:
        config.check_for_chip(chip_size)
        stride = xface_stride(config, chip_size)
        sizes = xface_patch_sizes(config, chip_size)
        return 2 + 2 * sum(xface_occlusion_count(chip_size, p, stride) for p in sizes)

    def params(self) -> dict[str, Any]:
        cfg = self.config
        size = self.model.spec.chip.size
        sizes = xface_patch_sizes(cfg, size)
        stride = xface_stride(cfg, size)
        return {
            "patch_sizes": list(sizes),
            "stride": stride,
            "fill_value": float(cfg.fill_value),
            "smooth": bool(cfg.smooth),
            "perturbations_per_eval": cfg.perturbations_per_eval,
            "occlusions": [xface_occlusion_count(size, p, stride) for p in sizes],
        }

    def _explain(self, pair: CleanPair, evaluate: Evaluator) -> Maps:
        cfg = self.config
        size = self.model.spec.chip.size
        sizes = xface_patch_sizes(cfg, size)
        stride = xface_stride(cfg, size)
        fill = np.float32(cfg.fill_value)
        score = pair.score

        plans = [(p, xface_positions(size, p, stride)) for p in sizes]
        if any(len(pos) == 0 for _, pos in plans):
            raise InputError(f"no occlusion position for patch sizes {sizes} with stride {stride} on {size} px")

        def render(chip: np.ndarray, patch: int, pos: np.ndarray) -> Callable[[int, int], np.ndarray]:
            def make(lo: int, hi: int) -> np.ndarray:
                out = np.repeat(chip[None], hi - lo, axis=0)
                for i, (y, x) in enumerate(pos[lo:hi]):
                    out[i, y : y + patch, x : x + patch] = fill
                return out

            return make

        groups = []
        for chip, ref in ((pair.a, pair.emb_b), (pair.b, pair.emb_a)):
            groups += [_Group(len(pos), render(chip, p, pos), ref) for p, pos in plans]
        scores = evaluate(groups)
        k = len(plans)
        ksize = stride if stride % 2 == 1 else stride + 1
        maps = []
        for face_scores in (scores[:k], scores[k:]):
            per_size = []
            for (p, pos), cos in zip(plans, face_scores, strict=True):
                m = xface_patch_map((score - cos) / float(p * p), pos, p, size)
                per_size.append(gaussian_blur(m, ksize, float(stride)) if cfg.smooth else m)
            maps.append(np.mean(per_size, axis=0).astype(np.float32))
        return Maps(maps[0], maps[1], np.concatenate(scores[:k]), np.concatenate(scores[k:]))
