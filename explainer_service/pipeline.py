"""The pipeline end to end for files: image -> alignment -> model -> CorrRISE -> explanation.

Thin glue the CLI (and later the workers and the API) call; each step lives in its own module.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .alignment import AlignedFace, Aligner
from .errors import InputError
from .explanation import Explanation
from .methods.corrrise import CorrRISE, CorrRISEConfig, Progress
from .models.base import FaceModel, to_model_input
from .models.registry import DEFAULT_MODEL, get_spec

__all__ = ["ENGINES", "load_face_model", "open_face_model", "PairExplanation", "explain_files", "embed_files"]

#: auto: a Triton server at --triton / FACEXPLAIN_TRITON_URL, else an embedded one for the call;
#: triton: the server at the given URL; local: in-process onnxruntime.
ENGINES = ("auto", "triton", "local")


def load_face_model(name: str = DEFAULT_MODEL, *, batch_size: int = 32) -> FaceModel:
    """The in-process (onnxruntime) FaceModel by name; converts the default model on first use."""
    from .models.convert import ensure_default_model
    from .models.onnx_local import OnnxFaceModel
    from .serving.repository import onnx_path

    if name == DEFAULT_MODEL:
        ensure_default_model()
    spec = get_spec(name)
    return OnnxFaceModel(onnx_path(name), spec, batch_size=batch_size)


@contextmanager
def open_face_model(
    name: str = DEFAULT_MODEL,
    *,
    engine: str = "auto",
    triton_url: str | None = None,
    batch_size: int | None = None,
    shared_memory: bool = False,
    server_masks: bool | None = None,
) -> Iterator[FaceModel]:
    """A FaceModel for the duration of a ``with`` block, on the chosen engine (see ENGINES).

    With ``auto`` and no server URL (argument or FACEXPLAIN_TRITON_URL), an embedded tritonserver
    is started for the block and stopped after it (tensors then travel through shared memory).
    ``server_masks``: CorrRISE masks generated inside Triton (None: for a server reached without
    shared memory, when it has the model; see TritonFaceModel).
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (available: {', '.join(ENGINES)})")
    if engine == "local":
        yield load_face_model(name, batch_size=batch_size or 32)
        return
    from .serving.client import TritonFaceModel

    url = triton_url or os.environ.get("FACEXPLAIN_TRITON_URL")
    if engine == "triton" and not url:
        raise InputError("engine 'triton' needs a server address (--triton HOST:PORT or FACEXPLAIN_TRITON_URL)")
    if url:
        spec = get_spec(name)
        with TritonFaceModel(
            url, spec, batch_size=batch_size, shared_memory=shared_memory, server_masks=server_masks
        ) as model:
            yield model
        return
    from .models.convert import ensure_default_model
    from .serving.embedded import EmbeddedTriton
    from .serving.repository import triton_name

    if name == DEFAULT_MODEL:
        ensure_default_model()
    spec = get_spec(name)
    with EmbeddedTriton(models=[triton_name(name)]) as server:
        with TritonFaceModel(
            server.url, spec, batch_size=batch_size, shared_memory=True, server_masks=server_masks
        ) as model:
            yield model


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
