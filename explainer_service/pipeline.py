"""The pipeline end to end: image -> alignment -> model -> explanation method -> result.

The use cases the CLI (and later the workers and the API) call, each step living in its own
module: :func:`open_face_model` (a model on an engine), :func:`align_image` (a file, encoded bytes
or an array to a chip), :func:`explain_pair` (one pair, any method of the registry, a
:class:`~explainer_service.results.PairResult`) and :func:`embed_chips` / :func:`embed_files`.
Nothing here writes files: results are written by their own ``write``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .alignment import AlignedFace, Aligner
from .errors import FacexplainError, InputError
from .explanation import Explanation
from .images import decode_image
from .methods.corrrise import CorrRISE, CorrRISEConfig
from .models.base import FaceModel, to_model_input
from .models.registry import DEFAULT_MODEL, get_spec
from .progress import Progress
from .results import FaceRecord, ModelInfo, PairResult, Timing
from .settings import DEFAULT_BATCH_LOCAL, get_settings
from .spec import ChipSpec, ModelSpec

__all__ = [
    "ENGINES",
    "ImageInput",
    "load_face_model",
    "open_face_model",
    "align_image",
    "model_info",
    "explain_pair",
    "PairExplanation",
    "explain_files",
    "embed_chips",
    "embed_files",
]

#: An image as the pipeline takes it: a file path, the bytes of an encoded image (JPEG, PNG...),
#: an ``(H, W, 3)`` array (anything ``images.image_from_array`` accepts), or a face already
#: aligned for the model.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, AlignedFace]

#: auto: a Triton server at --triton / FACEXPLAIN_TRITON_URL, else an embedded one for the call;
#: triton: the server at the given URL; local: in-process onnxruntime.
ENGINES = ("auto", "triton", "local")


def load_face_model(
    name: str = DEFAULT_MODEL, *, batch_size: int = DEFAULT_BATCH_LOCAL, threads: int | None = None
) -> FaceModel:
    """The in-process (onnxruntime) FaceModel by name; converts the default model on first use.
    ``threads``: onnxruntime's intra-op threads (None: its default, one per core)."""
    from .models.convert import ensure_default_model
    from .models.onnx_local import OnnxFaceModel
    from .models.store import onnx_path

    if name == DEFAULT_MODEL:
        ensure_default_model()
    spec = get_spec(name)
    return OnnxFaceModel(onnx_path(name), spec, batch_size=batch_size, threads=threads)


@contextmanager
def open_face_model(
    name: str = DEFAULT_MODEL,
    *,
    engine: str = "auto",
    triton_url: str | None = None,
    batch_size: int | None = None,
    shared_memory: bool = False,
    server_masks: bool | None = None,
    threads: int | None = None,
) -> Iterator[FaceModel]:
    """A FaceModel for the duration of a ``with`` block, on the chosen engine (see ENGINES).

    With ``auto`` and no server URL (argument or FACEXPLAIN_TRITON_URL), an embedded tritonserver
    is started for the block and stopped after it (tensors then travel through shared memory).
    ``server_masks``: CorrRISE masks generated inside Triton (None: for a server reached without
    shared memory, when it has the model; see TritonFaceModel). ``threads``: onnxruntime's
    intra-op threads of a ``local`` model (None: its default, one per core; Triton ignores it).
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (available: {', '.join(ENGINES)})")
    if engine == "local":
        yield load_face_model(name, batch_size=batch_size or DEFAULT_BATCH_LOCAL, threads=threads)
        return
    from .serving.client import TritonFaceModel

    url = triton_url or get_settings().triton_url
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
    from .models.store import triton_name
    from .serving.embedded import EmbeddedTriton

    if name == DEFAULT_MODEL:
        ensure_default_model()
    spec = get_spec(name)
    with EmbeddedTriton(models=[triton_name(name)]) as server:
        with TritonFaceModel(
            server.url, spec, batch_size=batch_size, shared_memory=True, server_masks=server_masks
        ) as model:
            yield model


def align_image(
    image: ImageInput, chip: ChipSpec, *, aligner: Aligner | None = None, name: str | None = None
) -> AlignedFace:
    """The face of ``image`` aligned to ``chip`` (see :data:`ImageInput`).

    A path is read by ``images.load_image`` (regular files only), bytes are decoded by
    ``images.decode_image`` (limits from the settings), an array is validated by
    ``images.image_from_array``; an :class:`AlignedFace` is returned as is when it was aligned for
    ``chip``. ``name`` names an in-memory image in messages (default ``"<bytes>"``/``"<array>"``).

    Raises:
        InputError: a bad image or input type, or an AlignedFace cut for another chip.
        FaceNotFoundError: no face (or several, with an aligner that refuses to choose).
    """
    if isinstance(image, AlignedFace):
        if image.spec != chip:
            raise InputError(
                f"{name or image.source}: aligned to a {image.spec.kind} chip of {image.spec.size} px, "
                f"the model needs a {chip.kind} chip of {chip.size} px"
            )
        return image
    aligner = aligner or Aligner()
    if isinstance(image, (str, os.PathLike)):
        return aligner.align_file(os.fspath(image), chip)
    if isinstance(image, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        return aligner.align(decode_image(image, label), chip, name=label)
    if isinstance(image, np.ndarray):
        return aligner.align(image, chip, name=name or "<array>")
    raise InputError(
        f"{name or 'image'}: expected a file path, encoded image bytes, an array or an AlignedFace, "
        f"got {type(image).__name__}"
    )


def _source_sha256(name: str) -> str | None:
    """The SHA-256 of the weights a model was built from, when its record has one."""
    from .models.store import read_record

    try:
        record = read_record(name)
    except (FacexplainError, OSError):
        return None
    sha = None if record is None else record.source.get("sha256")
    return sha if isinstance(sha, str) else None


def model_info(spec: ModelSpec) -> ModelInfo:
    """What a result records of its model: the spec and, from the model repository's record,
    the SHA-256 of the source weights (None when unknown)."""
    return ModelInfo.from_spec(spec, _source_sha256(spec.name))


def explain_pair(
    image_a: ImageInput,
    image_b: ImageInput,
    model: FaceModel,
    method: str = "corrrise",
    params: Mapping[str, Any] | None = None,
    *,
    aligner: Aligner | None = None,
    progress: Progress | None = None,
    engine: str | None = None,
) -> PairResult:
    """Explain why ``model`` finds images A and B alike or not, with any method of the registry.

    Args:
        image_a, image_b: the two images (see :data:`ImageInput`): file paths, encoded bytes,
            arrays, or faces already aligned for the model.
        model: the face model (any engine).
        method: a name of ``methods.METHOD_NAMES`` (default ``"corrrise"``).
        params: the method's parameters (``methods.list_methods()`` lists them; the generic
            ``seed``, ``budget``, ``perturbations_per_eval`` are accepted by every method).
        aligner: how faces are found and cut (default ``Aligner()``).
        progress: called as ``progress(done, total)`` while the method runs.
        engine: how the result names the engine (``"local"``, ``"triton HOST:PORT"``...).

    Returns:
        The :class:`~explainer_service.results.PairResult`: maps, score, decision, alignment of
        both faces, model, engine, timing (alignment of the images given unaligned, and the
        explanation) and parameters.

    Raises:
        InputError: a bad image, method or parameter (checked before any model call).
        LimitExceededError: a request over ``Settings.limits``.
        FaceNotFoundError: no face in an image.
        BackendError: the model failed (TransientError and subclasses: worth retrying).
    """
    from .methods import build, check_params

    params = dict(params or {})
    chip = model.spec.chip
    check_params(method, chip.size, **params)  # before any image is decoded
    t0 = time.perf_counter()
    face_a = align_image(image_a, chip, aligner=aligner, name="image_a")
    face_b = align_image(image_b, chip, aligner=aligner, name="image_b")
    t1 = time.perf_counter()
    explainer = build(method, model, **params)
    explanation = explainer.attribute(face_a.chip, face_b.chip, progress=progress)
    t2 = time.perf_counter()
    return PairResult.from_explanation(
        explanation,
        FaceRecord.from_aligned(face_a),
        FaceRecord.from_aligned(face_b),
        model_info(model.spec),
        engine=engine,
        server_masks=bool(getattr(model, "server_masks", False)),
        timing=Timing(align_s=t1 - t0, explain_s=t2 - t1),
    )


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
    """Align both images for ``model`` and explain the pair with CorrRISE (``config``); the
    faces and the explanation (:func:`explain_pair` gives the whole result, for any method)."""
    chip = model.spec.chip
    face_a = align_image(path_a, chip, aligner=aligner)
    face_b = align_image(path_b, chip, aligner=aligner)
    expl = CorrRISE(model, config).attribute(face_a.chip, face_b.chip, progress=progress)
    return PairExplanation(face_a, face_b, expl)


def embed_chips(chips: Sequence[np.ndarray], model: FaceModel) -> np.ndarray:
    """Embeddings ``(n, D)`` float32 of aligned chips (each ``(S, S, 3)`` uint8 for the model)."""
    if not chips:
        return np.zeros((0, model.spec.embedding_dim), np.float32)
    return np.asarray(model.embed(to_model_input(np.stack(chips))), np.float32)


def embed_files(
    paths: Sequence[str | Path], model: FaceModel, *, aligner: Aligner | None = None
) -> list[np.ndarray]:
    """Embeddings (D,) float32 of each image, aligned as :func:`explain_pair` aligns."""
    chips = [align_image(p, model.spec.chip, aligner=aligner).chip for p in paths]
    return list(embed_chips(chips, model))
