"""Machinery shared by the perturbation baselines (RISE, LIME, xFace, MinPlus): option checks,
chip checks, the clean pair, and the batched evaluation of perturbed chips."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from ..models.base import FaceModel, to_model_input

Progress = Callable[[int, int], None]

#: Perturbed images per model call when a config does not say otherwise.
DEFAULT_PERTURBATIONS_PER_EVAL = 32


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _require_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_positive(name: str, value: object) -> None:
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")


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
    return dots / np.maximum(norms, 1e-12)


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
        for gi, g in enumerate(groups):
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


def _progress_counter(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    return tick
