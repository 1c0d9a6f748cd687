"""The pipeline end to end for files: image -> alignment -> model -> CorrRISE -> explanation.

Thin glue the CLI (and later the workers and the API) call; each step lives in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .alignment import AlignedFace, Aligner
from .errors import InputError
from .explanation import Explanation
from .methods.corrrise import CorrRISE, CorrRISEConfig, Progress
from .models.base import FaceModel, to_model_input
from .models.registry import DEFAULT_MODEL, get_spec

__all__ = ["ENGINES", "load_face_model", "PairExplanation", "explain_files", "embed_files"]

ENGINES = ("local",)


def load_face_model(name: str = DEFAULT_MODEL, *, engine: str = "local", batch_size: int = 32) -> FaceModel:
    """A ready FaceModel by name; converts the default model on first use if setup has not."""
    spec = get_spec(name)
    if engine != "local":
        raise InputError(f"unknown engine {engine!r} (available: {', '.join(ENGINES)})")
    from .models.convert import ensure_default_model
    from .models.onnx_local import OnnxFaceModel

    return OnnxFaceModel(ensure_default_model(), spec, batch_size=batch_size)


@dataclass(frozen=True)
class PairExplanation:
    """The aligned faces of a pair and their explanation."""

    face_a: AlignedFace
    face_b: AlignedFace
    explanation: Explanation


def explain_files(
    path_a: str | Path,
    path_b: str | Path,
    model: FaceModel,
    config: CorrRISEConfig | None = None,
    *,
    aligner: Aligner | None = None,
    progress: Progress | None = None,
) -> PairExplanation:
    """Align both images for ``model`` and explain the pair with CorrRISE."""
    aligner = aligner or Aligner()
    face_a = aligner.align_file(path_a, model.spec.chip)
    face_b = aligner.align_file(path_b, model.spec.chip)
    expl = CorrRISE(model, config).attribute(face_a.chip, face_b.chip, progress=progress)
    return PairExplanation(face_a, face_b, expl)


def embed_files(
    paths: list[str | Path], model: FaceModel, *, aligner: Aligner | None = None
) -> list[np.ndarray]:
    """Embeddings (D,) float32 of each image, aligned as ``explain_files`` aligns."""
    aligner = aligner or Aligner()
    chips = [aligner.align_file(p, model.spec.chip).chip for p in paths]
    if not chips:
        return []
    emb = model.embed(to_model_input(np.stack(chips)))
    return list(emb)
