"""CorrRISE (Lu, Xu, Ebrahimi, "Towards Visual Saliency Explanations of Face Verification",
WACV 2024 workshops; Algorithm 1): correlation-based RISE for face verification.

For masks M_1..M_N applied to both faces: s^A_k = cos(f(A * M_k), f(B)) and
s^B_k = cos(f(B * M_k), f(A)); S_A(p) = corr_k(M_k(p), s^A_k), and the same for B. Positive
values mark regions the model finds similar, negative values dissimilar regions.

Masks come in chunks of ``perturbations_per_eval``; both faces' masked chips of a chunk go through
the model in one call, and per-pixel streaming accumulators (``correlation.py``) keep memory at
O(H*W) whatever N. Disjoint mask ranges (shards) can run anywhere and merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..correlation import CorrelationAccumulator, spearman_map
from ..errors import InputError
from ..explanation import Explanation
from ..masks import MaskConfig, generate_masks
from ..models.base import FaceModel, cosine_to, to_model_input

__all__ = ["CorrRISE", "CorrRISEConfig", "ShardResult", "CORRELATIONS"]

CORRELATIONS = ("pearson", "spearman")
DEFAULT_MASKS_PER_CALL = 16
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CorrRISEConfig:
    """Everything that defines a CorrRISE explanation (the paper's defaults: N=500, 10 patches of
    30 px on 112 px scaled to the chip, values U[0,1], Pearson).

    ``perturbations_per_eval``: masks per model call (each call embeds 2x that many chips); it
    changes speed and memory only, never the maps. None: the model's ``masks_per_call`` hint
    (16 in-process and with client-side masks, 128 with Triton's server-side masks;
    docs/benchmarks.md), else 16.
    """

    masks: MaskConfig = field(default_factory=MaskConfig)
    correlation: str = "pearson"
    perturbations_per_eval: int | None = None

    def __post_init__(self) -> None:
        if self.correlation not in CORRELATIONS:
            raise InputError(f"correlation must be one of {', '.join(CORRELATIONS)}, got {self.correlation!r}")
        if self.perturbations_per_eval is not None and self.perturbations_per_eval < 1:
            raise InputError(f"perturbations_per_eval must be >= 1, got {self.perturbations_per_eval}")
        if self.masks.n_masks < 2:
            raise InputError(f"CorrRISE needs at least 2 masks, got {self.masks.n_masks}")


@dataclass
class ShardResult:
    """Accumulators and per-mask scores of the mask range [start, stop) for both faces."""

    start: int
    stop: int
    acc_a: CorrelationAccumulator
    acc_b: CorrelationAccumulator
    scores_a: np.ndarray
    scores_b: np.ndarray

    def merge(self, other: "ShardResult") -> "ShardResult":
        """Union of two adjacent shards (self first)."""
        if other.start != self.stop:
            raise InputError(f"shards [{self.start},{self.stop}) and [{other.start},{other.stop}) are not adjacent")
        return ShardResult(
            self.start,
            other.stop,
            self.acc_a.merge(other.acc_a),
            self.acc_b.merge(other.acc_b),
            np.concatenate([self.scores_a, other.scores_a]),
            np.concatenate([self.scores_b, other.scores_b]),
        )


class CorrRISE:
    """CorrRISE over a FaceModel; one ``attribute`` call explains one pair."""

    name = "corrrise"

    def __init__(self, model: FaceModel, config: CorrRISEConfig | None = None) -> None:
        self.model = model
        self.config = config or CorrRISEConfig()

    def _check_chip(self, chip: np.ndarray, which: str) -> np.ndarray:
        s = self.model.spec.chip.size
        c = np.asarray(chip)
        if c.shape != (s, s, 3):
            raise InputError(f"chip {which} must be ({s}, {s}, 3) for {self.model.spec.name}, got {c.shape}")
        return c.astype(np.float32)

    def clean_embeddings(self, chip_a: np.ndarray, chip_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the unmasked chips (2 forward passes)."""
        a = self._check_chip(chip_a, "A")
        b = self._check_chip(chip_b, "B")
        emb = self.model.embed(to_model_input(np.stack([a, b])))
        return emb[0], emb[1]

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
        """Masks [start, stop) of the configured set: accumulators for both faces (2*(stop-start) passes)."""
        cfg = self.config
        a = self._check_chip(chip_a, "A")
        b = self._check_chip(chip_b, "B")
        emb_a, emb_b = embeddings if embeddings is not None else self.clean_embeddings(a, b)
        size = self.model.spec.chip.size
        acc_a = CorrelationAccumulator((size, size))
        acc_b = CorrelationAccumulator((size, size))
        scores_a: list[np.ndarray] = []
        scores_b: list[np.ndarray] = []
        xa = to_model_input(a)[0]
        xb = to_model_input(b)[0]
        server_side = bool(getattr(self.model, "server_masks", False))
        step = cfg.perturbations_per_eval or int(getattr(self.model, "masks_per_call", DEFAULT_MASKS_PER_CALL))
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            m = generate_masks(cfg.masks, size, lo, hi)
            if server_side:
                # the server regenerates the same masks and returns only the scores
                sa, sb = self.model.score_masks(xa, emb_b, xb, emb_a, cfg.masks, lo, hi)  # type: ignore[attr-defined]
            else:
                mm = m[:, None]
                emb = self.model.embed(np.concatenate([xa[None] * mm, xb[None] * mm]))
                n = hi - lo
                sa = cosine_to(emb[:n], emb_b)
                sb = cosine_to(emb[n:], emb_a)
            acc_a.update(m, sa)
            acc_b.update(m, sb)
            scores_a.append(sa)
            scores_b.append(sb)
            if progress is not None:
                progress(hi - start, stop - start)
        return ShardResult(
            start,
            stop,
            acc_a,
            acc_b,
            np.concatenate(scores_a) if scores_a else np.zeros(0),
            np.concatenate(scores_b) if scores_b else np.zeros(0),
        )

    def finish(self, shard: ShardResult, score: float) -> Explanation:
        """Maps from the accumulated shard(s) covering the whole mask set."""
        cfg = self.config
        if cfg.correlation == "spearman":
            masks = generate_masks(cfg.masks, self.model.spec.chip.size, shard.start, shard.stop)
            s_a = spearman_map(masks, shard.scores_a)
            s_b = spearman_map(masks, shard.scores_b)
        else:
            s_a = shard.acc_a.pearson()
            s_b = shard.acc_b.pearson()
        spec = self.model.spec
        return Explanation(
            s_a=s_a,
            s_b=s_b,
            score=float(score),
            threshold=spec.threshold,
            model=spec.name,
            masks=shard.stop - shard.start,
            method="corrrise",
            params=self.params(),
            scores_a=shard.scores_a.astype(np.float32),
            scores_b=shard.scores_b.astype(np.float32),
        )

    def params(self) -> dict:
        m = self.config.masks
        return {
            "n_masks": m.n_masks,
            "patches": m.patches,
            "patch_size": m.patch_size_for(self.model.spec.chip.size),
            "values": m.values,
            "per_pixel": m.per_pixel,
            "clip_at_border": m.clip_at_border,
            "seed": m.seed,
            "correlation": self.config.correlation,
        }

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model. 2N + 2 forward passes."""
        emb_a, emb_b = self.clean_embeddings(chip_a, chip_b)
        score = float(cosine_to(emb_a[None], emb_b)[0])
        shard = self.run_shard(
            chip_a, chip_b, 0, self.config.masks.n_masks, embeddings=(emb_a, emb_b), progress=progress
        )
        return self.finish(shard, score)
