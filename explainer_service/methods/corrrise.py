"""CorrRISE (Lu, Xu, Ebrahimi, "Towards Visual Saliency Explanations of Face Verification",
WACV 2024 workshops; Algorithm 1): correlation-based RISE for face verification.

For masks M_1..M_N applied to both faces: s^A_k = cos(f(A * M_k), f(B)) and
s^B_k = cos(f(B * M_k), f(A)); S_A(p) = corr_k(M_k(p), s^A_k), and the same for B. Positive
values mark regions the model finds similar, negative values dissimilar regions.

``perturbations_per_eval`` counts images per model call, as in every method: a call embeds the
masked A and masked B chips of ``perturbations_per_eval // 2`` masks (one image each when it is 1).
Per-pixel streaming accumulators (``correlation.py``) keep memory at O(H*W) whatever N; they are
fed in fixed blocks of :data:`ACCUMULATION_BLOCK` masks, so the batching never changes a map, bit
for bit.

Shards: disjoint mask ranges can run anywhere (:meth:`CorrRISE.run_shard`), travel as plain arrays
(:meth:`ShardResult.state`, storable with ``np.savez`` without pickle) and merge in any order or
grouping (:meth:`ShardResult.merge`); a shard carries the clean pair's embeddings and score, so
:meth:`CorrRISE.finish` needs nothing else. ``ShardResult`` and :data:`ACCUMULATION_BLOCK` live in
:mod:`.shards` (re-exported here); the device engine, :mod:`.corrrise_device`, imports them from
there, so it never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..correlation import CorrelationAccumulator, spearman_map
from ..errors import InputError
from ..explanation import Explanation
from ..masks import MaskConfig, generate_masks
from ..models.base import FaceModel, cosine_to, to_model_input
from ..progress import Progress
from ..uncertainty import DEFAULT_LEVEL, DEFAULT_Q, Uncertainty
from .perturbation import _check_chip, _require_int
from .shards import ACCUMULATION_BLOCK, SHARD_STATE_VERSION, ShardResult, _coalesce

__all__ = [
    "CorrRISE", "CorrRISEConfig", "ShardResult", "CORRELATIONS", "ACCUMULATION_BLOCK", "DEFAULT_UNTIL_STEP",
    "check_until", "SHARD_STATE_VERSION",
]

CORRELATIONS = ("pearson", "spearman")
#: Masks per model call when neither the config nor the model says (the model's ``masks_per_call``
#: hint: 16 in-process and with client-side masks, 128 with Triton's server-side masks).
DEFAULT_MASKS_PER_CALL = 16
#: Masks drawn per shard by :meth:`CorrRISE.attribute_until` (a multiple of ACCUMULATION_BLOCK).
DEFAULT_UNTIL_STEP = 64


def check_until(agreement: float, max_masks: int, step: int = DEFAULT_UNTIL_STEP) -> None:
    """InputError unless ``agreement`` is in (0, 1), ``step`` a positive multiple of
    :data:`ACCUMULATION_BLOCK` and ``max_masks`` an integer >= ``step`` (the limits of
    ``Settings`` are the caller's: the registry's ``check_params`` with ``n_masks=max_masks``)."""
    if isinstance(agreement, bool) or not isinstance(agreement, (int, float, np.floating)) or not (
        0.0 < float(agreement) < 1.0
    ):
        raise InputError(f"agreement must be a number in (0, 1), got {agreement!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1 or step % ACCUMULATION_BLOCK:
        raise InputError(f"step must be a positive multiple of {ACCUMULATION_BLOCK} masks, got {step!r}")
    if isinstance(max_masks, bool) or not isinstance(max_masks, (int, np.integer)) or max_masks < step:
        raise InputError(f"max_masks must be an integer >= step ({step}), got {max_masks!r}")


@dataclass(frozen=True)
class CorrRISEConfig:
    """Everything that defines a CorrRISE explanation (the paper's defaults: N=500, 10 patches of
    30 px on 112 px scaled to the chip, values U[0,1], Pearson).

    ``perturbations_per_eval``: images per model call (each mask makes two, masked A and masked
    B); it changes speed and memory only, never the maps. None: twice the model's
    ``masks_per_call`` hint (16 masks in-process and with client-side masks, 128 with Triton's
    server-side masks; docs/benchmarks.md), else 32.
    """

    masks: MaskConfig = field(default_factory=MaskConfig)
    correlation: str = "pearson"
    perturbations_per_eval: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.masks, MaskConfig):
            raise InputError(f"masks must be a MaskConfig, got {type(self.masks).__name__}")
        if self.correlation not in CORRELATIONS:
            raise InputError(f"correlation must be one of {', '.join(CORRELATIONS)}, got {self.correlation!r}")
        if self.perturbations_per_eval is not None:
            _require_int("perturbations_per_eval", self.perturbations_per_eval, 1)
        if self.masks.n_masks < 2:
            raise InputError(f"CorrRISE needs at least 2 masks, got {self.masks.n_masks}")

    def check_for_chip(self, chip_size: int) -> None:
        """InputError unless the masks fit a ``chip_size`` chip (``patch_size`` at most its side)."""
        self.masks.patch_size_for(chip_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: ``{"masks": {...}, "correlation": ..., "perturbations_per_eval": ...}``."""
        return {
            "masks": self.masks.to_dict(),
            "correlation": self.correlation,
            "perturbations_per_eval": self.perturbations_per_eval,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorrRISEConfig:
        """A config from :meth:`to_dict`'s mapping (missing keys take the defaults); InputError for
        unknown keys or bad values."""
        if not isinstance(data, Mapping):
            raise InputError(f"a CorrRISE config must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(f"unknown CorrRISE option(s) {', '.join(unknown)} (known: {', '.join(known)})")
        values = dict(data)
        if "masks" in values and not isinstance(values["masks"], MaskConfig):
            values["masks"] = MaskConfig.from_dict(values["masks"])
        return cls(**values)


def _block_cosines(embeddings: np.ndarray, reference: np.ndarray, start: int) -> np.ndarray:
    """Cosines of the embeddings of masks ``start``, ``start + 1``, ... with ``reference``, float64.

    Mask k's cosine is computed in a zero-padded block of :data:`ACCUMULATION_BLOCK` rows at row
    ``k % ACCUMULATION_BLOCK``, so its bits never depend on how the masks were batched or sharded
    (a matrix-vector product may round a row differently with another number of rows).
    """
    emb = np.asarray(embeddings)
    n = len(emb)
    out = np.empty(n, np.float64)
    i = 0
    while i < n:
        pos = (start + i) % ACCUMULATION_BLOCK
        take = min(ACCUMULATION_BLOCK - pos, n - i)
        if take == ACCUMULATION_BLOCK:
            block = emb[i : i + take]
        else:
            block = np.zeros((ACCUMULATION_BLOCK,) + emb.shape[1:], emb.dtype)
            block[pos : pos + take] = emb[i : i + take]
        out[i : i + take] = cosine_to(block, reference)[pos : pos + take]
        i += take
    return out


def _identity(config: CorrRISEConfig, model: str, chip_size: int) -> str:
    """What two shards must share to merge: the mask set, the correlation, the model and chip
    (not the batching, which never changes a score)."""
    return json.dumps(
        {"masks": config.masks.to_dict(), "correlation": config.correlation, "model": model, "chip": int(chip_size)},
        sort_keys=True,
    )


class CorrRISE:
    """CorrRISE over a FaceModel; one ``attribute`` call explains one pair (2N + 2 forward passes)."""

    name = "corrrise"

    def __init__(self, model: FaceModel, config: CorrRISEConfig | None = None) -> None:
        if config is not None and not isinstance(config, CorrRISEConfig):
            raise InputError(f"CorrRISE needs a CorrRISEConfig, got {type(config).__name__}")
        self.model = model
        self.config = config or CorrRISEConfig()
        self.config.check_for_chip(model.spec.chip.size)  # refused here, before any model call

    @classmethod
    def forward_passes_for(cls, config: CorrRISEConfig, chip_size: int) -> int:
        """Model evaluations of one pair: 2N masked chips and the clean pair (InputError for a
        patch larger than the chip, so a request is refused before any work)."""
        config.check_for_chip(chip_size)
        return 2 + 2 * config.masks.n_masks

    def forward_passes(self) -> int:
        """Model evaluations of one pair on this model's chip."""
        return self.forward_passes_for(self.config, self.model.spec.chip.size)

    def perturbations_per_eval(self) -> int:
        """Images per model call: the config's, else twice the model's ``masks_per_call`` hint."""
        if self.config.perturbations_per_eval is not None:
            return int(self.config.perturbations_per_eval)
        return 2 * int(getattr(self.model, "masks_per_call", DEFAULT_MASKS_PER_CALL))

    def _identity(self) -> str:
        return _identity(self.config, self.model.spec.name, self.model.spec.chip.size)

    def clean_embeddings(self, chip_a: np.ndarray, chip_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the unmasked chips (2 forward passes)."""
        a = _check_chip(self.model, chip_a, "A")
        b = _check_chip(self.model, chip_b, "B")
        emb = self.model.embed(to_model_input(np.stack([a, b])))
        return emb[0], emb[1]

    def _scores(
        self, xa: np.ndarray, xb: np.ndarray, emb_a: np.ndarray, emb_b: np.ndarray, masks: np.ndarray,
        lo: int, hi: int, per_eval: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """s^A and s^B of masks [lo, hi) (``masks`` (hi-lo, S, S)): one call of 2(hi-lo) images,
        or, with one image per call, A's and B's one by one."""
        model = self.model
        if getattr(model, "server_masks", False):
            # the server regenerates the same masks and returns only the scores
            sa, sb = model.score_masks(xa, emb_b, xb, emb_a, self.config.masks, lo, hi)  # type: ignore[attr-defined]
            return np.asarray(sa, np.float64), np.asarray(sb, np.float64)
        mm = masks[:, None]
        n = hi - lo
        if per_eval >= 2 * n:
            emb = model.embed(np.concatenate([xa[None] * mm, xb[None] * mm]))
            ea, eb = emb[:n], emb[n:]
        else:
            ea = np.concatenate([model.embed(xa[None] * mm[i : i + 1]) for i in range(n)])
            eb = np.concatenate([model.embed(xb[None] * mm[i : i + 1]) for i in range(n)])
        return _block_cosines(ea, emb_b, lo), _block_cosines(eb, emb_a, lo)

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
        """Masks [start, stop) of the configured set: accumulators for both faces
        (2 * (stop - start) forward passes, plus 2 for the clean pair unless ``embeddings`` are
        given). ``progress(done, total)`` counts masks.

        A PyTorch model on an accelerator runs the shard on its device (``corrrise_device``: same
        shard, maps equal within 1e-4); subclasses keep this NumPy engine unless they ask."""
        from .corrrise_device import device_of, run_shard_on_device

        if type(self) is CorrRISE and device_of(self.model) is not None:
            return run_shard_on_device(self, chip_a, chip_b, start, stop, embeddings=embeddings, progress=progress)
        return self._numpy_shard(chip_a, chip_b, start, stop, embeddings, progress, None)

    def resume_shard(
        self, chip_a: np.ndarray, chip_b: np.ndarray, shard: ShardResult, stop: int, *,
        progress: Progress | None = None,
    ) -> ShardResult:
        """``shard`` (of this pair, its masks ending at ``shard.stop``) extended by the masks
        [shard.stop, stop): 2 * (stop - shard.stop) forward passes; ``shard`` is not changed.

        The NumPy engine accumulates the new masks into copies of ``shard``'s accumulators: with
        ``shard.stop`` a multiple of :data:`ACCUMULATION_BLOCK` they see the same blocks as one
        shard of all the masks, so the maps equal it bit for bit. The device engine (and a subclass
        with its own :meth:`run_shard`) runs the new masks as a shard and merges (equal to float64
        rounding)."""
        from .corrrise_device import device_of

        if not isinstance(shard, ShardResult):
            raise InputError(f"resume_shard needs a ShardResult, got {type(shard).__name__}")
        if shard.identity != self._identity() or shard.even_a is None or shard.even_b is None:
            raise InputError("the shard to resume was computed with another mask set, correlation, model or chip")
        embeddings = (shard.emb_a, shard.emb_b)
        if type(self).run_shard is not CorrRISE.run_shard or device_of(self.model) is not None:
            return shard.merge(self.run_shard(chip_a, chip_b, shard.stop, stop, embeddings=embeddings,
                                              progress=progress))
        return self._numpy_shard(chip_a, chip_b, shard.stop, stop, embeddings, progress, shard)

    def _numpy_shard(
        self,
        chip_a: np.ndarray,
        chip_b: np.ndarray,
        start: int,
        stop: int,
        embeddings: tuple[np.ndarray, np.ndarray] | None,
        progress: Progress | None,
        resume: ShardResult | None,
    ) -> ShardResult:
        """:meth:`run_shard` in NumPy; with ``resume`` (ending at ``start``), continued from it."""
        cfg = self.config
        n_masks = cfg.masks.n_masks
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))) or not (
            0 <= start < stop <= n_masks
        ):
            raise InputError(f"a shard must be masks [start, stop) with 0 <= start < stop <= {n_masks}, "
                             f"got [{start}, {stop})")
        start, stop = int(start), int(stop)
        a = _check_chip(self.model, chip_a, "A")
        b = _check_chip(self.model, chip_b, "B")
        clean_passes = 0
        if embeddings is None:
            embeddings = self.clean_embeddings(a, b)
            clean_passes = 2
        emb_a, emb_b = (np.asarray(e) for e in embeddings)
        size = self.model.spec.chip.size
        acc_a = CorrelationAccumulator((size, size))
        acc_b = CorrelationAccumulator((size, size))
        even_a = CorrelationAccumulator((size, size))
        even_b = CorrelationAccumulator((size, size))
        scores_a: list[np.ndarray] = []
        scores_b: list[np.ndarray] = []
        if resume is not None and resume.even_a is not None and resume.even_b is not None:
            acc_a, acc_b, even_a, even_b = (
                CorrelationAccumulator.from_state(x.state())
                for x in (resume.acc_a, resume.acc_b, resume.even_a, resume.even_b)
            )
            scores_a.append(np.asarray(resume.scores_a, np.float64))
            scores_b.append(np.asarray(resume.scores_b, np.float64))
            clean_passes = resume.clean_passes
        xa = to_model_input(a)[0]
        xb = to_model_input(b)[0]
        per_eval = self.perturbations_per_eval()
        step = max(1, per_eval // 2)
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # masks, s^A, s^B not yet accumulated
        waiting = 0
        accumulated = start  # index of the first mask in pending

        def flush(block: int) -> None:
            nonlocal pending, waiting, accumulated
            m = np.concatenate([p[0] for p in pending])
            sa = np.concatenate([p[1] for p in pending])
            sb = np.concatenate([p[2] for p in pending])
            acc_a.update(m[:block], sa[:block])
            acc_b.update(m[:block], sb[:block])
            first_even = accumulated % 2  # offset of the first even-indexed mask in the block
            even_a.update(m[first_even:block:2], sa[first_even:block:2])
            even_b.update(m[first_even:block:2], sb[first_even:block:2])
            accumulated += block
            pending = [(m[block:], sa[block:], sb[block:])] if block < len(m) else []
            waiting = len(m) - block

        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            m = generate_masks(cfg.masks, size, lo, hi)
            sa, sb = self._scores(xa, xb, emb_a, emb_b, m, lo, hi, per_eval)
            scores_a.append(sa)
            scores_b.append(sb)
            pending.append((m, sa, sb))
            waiting += hi - lo
            while waiting >= ACCUMULATION_BLOCK:
                flush(ACCUMULATION_BLOCK)
            if progress is not None:
                progress(hi - start, stop - start)
        if waiting:
            flush(waiting)
        score = float(cosine_to(emb_a[None], emb_b)[0])
        return ShardResult(
            ((start, stop),) if resume is None else _coalesce([*resume.ranges, (start, stop)]),
            acc_a,
            acc_b,
            np.concatenate(scores_a),
            np.concatenate(scores_b),
            emb_a,
            emb_b,
            score,
            self._identity(),
            clean_passes,
            even_a,
            even_b,
        )

    def finish(
        self, shard: ShardResult, score: float | None = None, *, q: float = DEFAULT_Q, level: float = DEFAULT_LEVEL
    ) -> Explanation:
        """Maps from the accumulated shard(s): the whole mask set, or the masks covered so far.

        ``score``: the clean cosine; None takes the one the shard carries. The explanation's
        :class:`~explainer_service.uncertainty.Uncertainty` has intervals at ``level``, significance
        masks at false-discovery rate ``q`` and, when the shard has its even-mask accumulators,
        split-half figures; it is None below 4 masks.
        """
        if not isinstance(shard, ShardResult):
            raise InputError(f"finish needs a ShardResult, got {type(shard).__name__}")
        if shard.identity and shard.identity != self._identity():
            raise InputError("the shard was computed with another mask set, correlation, model or chip")
        cfg = self.config
        halves_a: tuple[np.ndarray, np.ndarray] | None = None
        halves_b: tuple[np.ndarray, np.ndarray] | None = None
        if cfg.correlation == "spearman":
            size = self.model.spec.chip.size
            masks = np.concatenate([generate_masks(cfg.masks, size, lo, hi) for lo, hi in shard.ranges])
            s_a = spearman_map(masks, shard.scores_a)
            s_b = spearman_map(masks, shard.scores_b)
            even = np.concatenate([np.arange(lo, hi) for lo, hi in shard.ranges]) % 2 == 0
            halves_a = (spearman_map(masks[even], shard.scores_a[even]),
                        spearman_map(masks[~even], shard.scores_a[~even]))
            halves_b = (spearman_map(masks[even], shard.scores_b[even]),
                        spearman_map(masks[~even], shard.scores_b[~even]))
        else:
            s_a = shard.acc_a.pearson()
            s_b = shard.acc_b.pearson()
            if shard.even_a is not None and shard.even_b is not None:
                halves_a = (shard.even_a.pearson(), shard.acc_a.subtract(shard.even_a).pearson())
                halves_b = (shard.even_b.pearson(), shard.acc_b.subtract(shard.even_b).pearson())
        uncertainty = None
        if shard.masks >= 4:
            uncertainty = Uncertainty.of_maps(
                s_a, s_b, shard.masks, halves_a=halves_a, halves_b=halves_b, q=q, level=level,
                rank=cfg.correlation == "spearman",
            )
        spec = self.model.spec
        return Explanation(
            s_a=s_a,
            s_b=s_b,
            score=float(shard.score if score is None else score),
            threshold=spec.threshold,
            model=spec.name,
            masks=shard.masks,
            method="corrrise",
            params=self.params(),
            scores_a=shard.scores_a.astype(np.float32),
            scores_b=shard.scores_b.astype(np.float32),
            forward_passes=2 * shard.masks + shard.clean_passes,
            uncertainty=uncertainty,
        )

    def params(self) -> dict[str, Any]:
        """The mask set and correlation as plain values (patch size resolved for the chip)."""
        return {**self.config.masks.params_for(self.model.spec.chip.size), "correlation": self.config.correlation}

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model. 2N + 2 forward passes;
        ``progress(done, total)`` counts masks."""
        shard = self.run_shard(chip_a, chip_b, 0, self.config.masks.n_masks, progress=progress)
        return self.finish(shard)

    def attribute_until(
        self,
        chip_a: np.ndarray,
        chip_b: np.ndarray,
        *,
        agreement: float,
        max_masks: int | None = None,
        step: int = DEFAULT_UNTIL_STEP,
        progress: Progress | None = None,
    ) -> Explanation:
        """Explain the pair with as few masks as the maps' own agreement allows (issue 11 §2).

        Draws shards of ``step`` masks of the configured (seeded) set, masks [0, step), then
        [step, 2 step), ..., each accumulated into the previous one (:meth:`resume_shard`), until the split-half agreement predicted for the full set (Spearman-Brown,
        ``Uncertainty``'s ``predicted_r``) reaches ``agreement`` for both faces, or ``max_masks``
        (None: the config's ``n_masks``) are spent; the last shard may be shorter.

        Returns the explanation a plain :meth:`attribute` with ``n_masks`` = the masks used gives,
        bit for bit (maps, scores, uncertainty, ``masks``, ``forward_passes`` = 2 * used + 2), its
        params extended with ``until_agreement``, ``max_masks``, ``step``, ``stopped_early`` (True
        when it stopped before ``max_masks``) and ``agreement_reached`` (the smaller of the two
        faces' predicted agreement; None below 4 masks). ``progress(done, total)`` counts masks
        against ``max_masks``. InputError (before any model call) for bad values, see
        :func:`check_until`.
        """
        from dataclasses import replace

        if max_masks is None:
            max_masks = self.config.masks.n_masks
        check_until(agreement, max_masks, step)
        max_masks = int(max_masks)
        runner = type(self)(self.model, replace(self.config, masks=replace(self.config.masks, n_masks=max_masks)))
        shard: ShardResult | None = None
        reached: float | None = None
        done = 0
        while done < max_masks:
            stop = min(done + step, max_masks)
            shard = (runner.run_shard(chip_a, chip_b, 0, stop) if shard is None
                     else runner.resume_shard(chip_a, chip_b, shard, stop))
            done = stop
            if progress is not None:
                progress(done, max_masks)
            reached = self.predicted_agreement(runner.finish(shard))
            if reached is not None and reached >= agreement:
                break
        assert shard is not None  # max_masks >= step >= 1: at least one shard ran
        return self.finish_until(shard, agreement=agreement, max_masks=max_masks, step=step, reached=reached)

    def finish_until(
        self, shard: ShardResult, *, agreement: float, max_masks: int, step: int, reached: float | None
    ) -> Explanation:
        """What :meth:`attribute_until` returns once it stops with ``shard`` (masks [0, used) of
        the seeded set, computed with ``n_masks = max_masks`` or any other count): the maps of a
        plain run of ``used`` masks, params extended with the early-stopping figures
        (``reached``: the last :meth:`predicted_agreement`). The service's workers finish their
        early-stopping jobs with it too."""
        from dataclasses import replace

        if not isinstance(shard, ShardResult) or shard.ranges != ((0, shard.stop),) or shard.stop < 1:
            raise InputError("finish_until needs a shard of masks [0, used)")
        done = shard.stop
        used = type(self)(self.model, replace(self.config, masks=replace(self.config.masks, n_masks=done)))
        explanation = used.finish(replace(shard, identity=used._identity()))
        params = {
            **explanation.params,
            "until_agreement": float(agreement),
            "max_masks": int(max_masks),
            "step": int(step),
            "stopped_early": done < max_masks,
            "agreement_reached": None if reached is None else round(reached, 6),
        }
        return replace(explanation, params=params)

    @staticmethod
    def predicted_agreement(explanation: Explanation) -> float | None:
        """The early-stopping rule's figure: the smaller predicted full-set agreement
        (Spearman-Brown of the split halves) of the two maps (None when unknown)."""
        unc = explanation.uncertainty
        if unc is None or unc.a.predicted_r is None or unc.b.predicted_r is None:
            return None
        return float(min(unc.a.predicted_r, unc.b.predicted_r))
