"""The base of the perturbation baselines (RISE, LIME, xFace, MinPlus) and the machinery they
share: option checks, chip checks, the clean pair, and the batched evaluation of perturbed chips.

A :class:`PerturbationMethod` is built from a FaceModel and a frozen config; its ``attribute``
checks both chips, embeds the clean pair (2 forward passes), lets the method's one hook
(``_explain``) score its perturbed images through an :class:`Evaluator`, and assembles the
:class:`~explainer_service.explanation.Explanation`. A method only says what it perturbs and how
scores become maps; batching, progress and the forward-pass count are the base's.

``perturbations_per_eval`` means the same in every method: perturbed images (forward passes) per
model call. It changes speed and memory only, never a map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from ..errors import InputError
from ..explanation import Explanation
from ..models.base import FaceModel, to_model_input
from ..progress import Progress

__all__ = [
    "DEFAULT_PERTURBATIONS_PER_EVAL",
    "PerturbationMethod",
    "CleanPair",
    "Maps",
    "Evaluator",
]

#: Perturbed images per model call when a config does not say otherwise.
DEFAULT_PERTURBATIONS_PER_EVAL = 32

ConfigT = TypeVar("ConfigT")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _require_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_positive(name: str, value: object) -> None:
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")


def _require_chip_size(chip_size: object) -> int:
    """``chip_size`` as an int; InputError unless it is an integer >= 1."""
    if not isinstance(chip_size, (int, np.integer)) or isinstance(chip_size, (bool, np.bool_)) or chip_size < 1:
        raise InputError(f"chip_size must be an integer >= 1, got {chip_size!r}")
    return int(chip_size)


def _require_at_most(name: str, value: int | float, bound: int | float, what: str) -> None:
    """InputError naming ``name`` unless ``value <= bound``; ``what`` names the bound in the
    message (``"the chip side (150 px)"``)."""
    if value > bound:
        raise InputError(f"{name} {value} must be at most {what}")


def _require_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_chip(model: FaceModel, chip: np.ndarray, which: str) -> np.ndarray:
    """The chip as float32 (S, S, 3) after checking shape, type and values; InputError otherwise."""
    s = model.spec.chip.size
    c = np.asarray(chip)
    if c.shape != (s, s, 3):
        raise InputError(f"chip {which} must be ({s}, {s}, 3) for {model.spec.name}, got {c.shape}")
    if not (np.issubdtype(c.dtype, np.integer) or np.issubdtype(c.dtype, np.floating)):
        raise InputError(f"chip {which} must hold numbers (uint8 RGB), got dtype {c.dtype}")
    c = c.astype(np.float32)
    if not np.all(np.isfinite(c)):
        raise InputError(f"chip {which} has non-finite pixel values")
    return c


def _cosines(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine of each row of (N, D) ``embeddings`` with (D,) ``reference``, float64.

    Row by row (no matrix product), so a row's value does not depend on how many rows come with it.
    """
    e = np.asarray(embeddings, np.float64)
    r = np.asarray(reference, np.float64)
    dots = (e * r).sum(axis=1)
    norms = np.sqrt((e * e).sum(axis=1)) * math.sqrt(float((r * r).sum()))
    return np.asarray(dots / np.maximum(norms, 1e-12), np.float64)


def _clean(model: FaceModel, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Embeddings of the clean chips (one call, 2 passes) and their cosine."""
    emb = np.asarray(model.embed(to_model_input(np.stack([a, b]))))
    emb_a, emb_b = emb[0], emb[1]
    return emb_a, emb_b, float(_cosines(emb_a[None], emb_b)[0])


@dataclass
class _Group:
    """``count`` perturbed images made by ``render(lo, hi)`` ((hi-lo, S, S, 3) float32), each scored
    by its cosine with ``reference`` (the clean embedding of the other face)."""

    count: int
    render: Callable[[int, int], np.ndarray]
    reference: np.ndarray


def _evaluate(
    model: FaceModel, groups: Sequence[_Group], per_eval: int, on_call: Callable[[int], None] | None = None
) -> list[np.ndarray]:
    """Scores of every image of every group, ``per_eval`` images per model call at most.

    The groups are laid end to end and cut into consecutive chunks, so a call may mix groups
    (e.g. A's and B's perturbations). ``on_call(n)`` is told after each call how many images it
    embedded. Returns one float64 (count,) array per group.
    """
    total = sum(g.count for g in groups)
    starts = np.cumsum([0] + [g.count for g in groups])
    out = [np.empty(g.count, np.float64) for g in groups]
    for lo in range(0, total, per_eval):
        hi = min(lo + per_eval, total)
        parts: list[tuple[int, int, int]] = []  # (group, local lo, local hi)
        for gi, _g in enumerate(groups):
            glo, ghi = max(lo, starts[gi]), min(hi, starts[gi + 1])
            if glo < ghi:
                parts.append((gi, int(glo - starts[gi]), int(ghi - starts[gi])))
        images = np.concatenate([groups[gi].render(a, b) for gi, a, b in parts])
        emb = np.asarray(model.embed(to_model_input(images)))
        at = 0
        for gi, a, b in parts:
            n = b - a
            out[gi][a:b] = _cosines(emb[at : at + n], groups[gi].reference)
            at += n
        if on_call is not None:
            on_call(hi - lo)
    return out


@dataclass(frozen=True)
class CleanPair:
    """A checked pair: float32 (S, S, 3) chips, their clean embeddings (D,) and cosine."""

    a: np.ndarray
    b: np.ndarray
    emb_a: np.ndarray
    emb_b: np.ndarray
    score: float


@dataclass(frozen=True)
class Maps:
    """What a method's hook returns: (S, S) maps of A and B, the per-perturbation scores behind them
    (may be empty) and facts of this run to add to the method's ``params``."""

    s_a: np.ndarray
    s_b: np.ndarray
    scores_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scores_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    extra_params: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    """Scores groups of perturbed images, ``per_eval`` images per model call; counts the images it
    embedded (:attr:`images`) and reports them to ``progress`` against ``total``."""

    def __init__(self, model: FaceModel, per_eval: int, progress: Progress | None = None, total: int = 0) -> None:
        _require_int("perturbations_per_eval", per_eval, 1)
        self.model = model
        self.per_eval = int(per_eval)
        self.progress = progress
        self.total = int(total)
        self.images = 0

    def _tick(self, n: int) -> None:
        self.images += n
        if self.progress is not None:
            self.progress(self.images, self.total)

    def __call__(self, groups: Sequence[_Group]) -> list[np.ndarray]:
        """One float64 (count,) array of cosines per group (see ``_evaluate``)."""
        return _evaluate(self.model, groups, self.per_eval, self._tick)


class PerturbationMethod(Generic[ConfigT]):
    """A black-box method that explains a pair by scoring perturbed copies of each face.

    Subclasses set ``name`` and ``config_class`` and implement two hooks:
    :meth:`forward_passes_for` (the cost of one pair) and :meth:`_explain` (perturbations to maps).
    The config must have a ``perturbations_per_eval`` field (images per model call) and a
    ``check_for_chip(chip_size)`` method (InputError naming a parameter that does not fit the
    chip), which the constructor calls with the model's chip.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[Any]]

    def __init__(self, model: FaceModel, config: ConfigT | None = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise InputError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.model = model
        self.config: ConfigT = config
        checked: Any = config
        checked.check_for_chip(model.spec.chip.size)  # refused here, before any model call

    # ------------------------------------------------------------------ hooks

    @classmethod
    def forward_passes_for(cls, config: ConfigT, chip_size: int) -> int:
        """Model evaluations of one pair (both faces, the clean pair included) on a ``chip_size`` chip."""
        raise NotImplementedError

    def _explain(self, pair: CleanPair, evaluate: Evaluator) -> Maps:
        """The maps of a checked pair, scoring perturbed images through ``evaluate``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def params(self) -> dict[str, Any]:
        """The config as plain values (methods add what they derive from the chip size)."""
        config: Any = self.config
        return asdict(config)

    def forward_passes(self) -> int:
        """Model evaluations of one pair on this model's chip."""
        return self.forward_passes_for(self.config, self.model.spec.chip.size)

    def prepare(self, chip_a: np.ndarray, chip_b: np.ndarray) -> CleanPair:
        """Check both chips ((S, S, 3) numbers, finite) and embed the clean pair (2 forward passes)."""
        a = _check_chip(self.model, chip_a, "A")
        b = _check_chip(self.model, chip_b, "B")
        emb_a, emb_b, score = _clean(self.model, a, b)
        return CleanPair(a, b, emb_a, emb_b, score)

    def evaluator(self, progress: Progress | None = None) -> Evaluator:
        """An evaluator for one pair: progress counts perturbed images (forward passes minus 2)."""
        per_eval = int(getattr(self.config, "perturbations_per_eval", DEFAULT_PERTURBATIONS_PER_EVAL))
        return Evaluator(self.model, per_eval, progress, self.forward_passes() - 2)

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model.

        Returns maps (S, S) float32; ``forward_passes`` counts every image embedded (clean pair
        included) and ``masks`` the perturbed images per face, ``(forward_passes - 2) // 2``.
        """
        pair = self.prepare(chip_a, chip_b)
        evaluate = self.evaluator(progress)
        maps = self._explain(pair, evaluate)
        passes = 2 + evaluate.images
        spec = self.model.spec
        params = {**self.params(), **maps.extra_params}
        return Explanation(
            s_a=np.asarray(maps.s_a, np.float32),
            s_b=np.asarray(maps.s_b, np.float32),
            score=pair.score,
            threshold=spec.threshold,
            model=spec.name,
            masks=(passes - 2) // 2,
            method=self.name,
            params=params,
            scores_a=np.asarray(maps.scores_a, np.float32),
            scores_b=np.asarray(maps.scores_b, np.float32),
            forward_passes=passes,
        )
