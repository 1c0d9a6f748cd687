"""Triton Python-backend model ``corrrise_scores``: CorrRISE's masked scoring done server-side.

A request carries one chip, the other face's clean embedding and the mask set's parameters (a few
KB) instead of N masked chips; the model regenerates masks [start, stop) exactly as the client's
``explainer_service.masks`` does (a copy of that module and of ``masks_torch``, the package
``facexplain_masks``, sits beside this file), multiplies, embeds the masked chips through the face
model with BLS calls, and returns the N cosine scores.

Two engines, the same scores (issue 11 §3):

- ``torch``: masks pasted on the instance's device from the generator's host draws
  (``masks_torch``, bit-identical to ``generate_masks``), the masked batch formed there and handed
  to the face model by DLPack (``pb_utils.Tensor.from_dlpack``; on a GPU the embeddings are asked
  for in GPU memory and stay there), float64 cosines there; only the N scores leave the device.
- ``numpy``: the same on the host (the path of a CPU-only server, or when torch is absent).

Which one runs is chosen once, in ``initialize`` (:func:`choose_engine`), from the instance kind and
the config parameters ``mask_engine`` (``auto``: torch on ``cuda:<device id>`` for a KIND_GPU
instance when torch sees CUDA, else numpy; ``torch``: torch on ``mask_device`` or that default,
``cpu`` for a KIND_CPU instance; ``numpy``) and ``mask_device``; the choice and its reason are
logged and every response says it in its ``engine`` output.

Inputs: ``image`` FP32 (3, S, S) RGB 0..255; ``reference`` FP32 (D,); ``request`` BYTES (1,): JSON
``{"model": triton name, "start", "stop", "chunk", "masks": {MaskConfig fields}, "timeout_s"}``
(``timeout_s`` optional: the client's deadline; past it the request is abandoned instead of
computing scores no one waits for).
Outputs: ``scores`` FP64 (stop - start,); ``engine`` BYTES (1,): ``"torch <device>"`` or ``"numpy"``.

A bad request is answered with an INVALID_ARG error (not retried by the client), a failure of the
face model with its own error; the model stays up either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from facexplain_masks.masks import MaskConfig, generate_masks  # type: ignore[import-not-found]

#: Values of the ``mask_engine`` config parameter.
MASK_ENGINES = ("auto", "torch", "numpy")


class Abandoned(Exception):
    """The client's deadline passed before the scores were done."""


class FaceModelError(Exception):
    """The face model answered a BLS call with an error (``code``: its Triton error code, or None)."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code


def choose_engine(
    requested: str, instance_kind: str, device_id: int = 0, mask_device: str | None = None
) -> tuple[str, str | None, str]:
    """(engine, torch device or None, reason) for the ``mask_engine`` parameter ``requested``
    (one of :data:`MASK_ENGINES`), the instance kind (``"GPU"``/``"CPU"``) and device id, and the
    optional ``mask_device`` parameter; falls back to ``numpy`` when torch or the device is absent.
    ValueError for an unknown ``requested``."""
    if requested not in MASK_ENGINES:
        raise ValueError(f"mask_engine must be one of {', '.join(MASK_ENGINES)}, got {requested!r}")
    if requested == "numpy":
        return "numpy", None, "mask_engine is numpy"
    try:
        import torch
    except ImportError as e:
        return "numpy", None, f"torch is not importable ({e})"
    cuda = bool(torch.cuda.is_available())
    gpu = instance_kind.upper() in ("GPU", "KIND_GPU")
    if requested == "auto" and mask_device is None:
        if gpu and cuda:
            return "torch", f"cuda:{device_id}", "a KIND_GPU instance and torch sees CUDA"
        why = "torch sees no CUDA device" if gpu else f"the instance is KIND_{instance_kind.upper()}"
        return "numpy", None, why
    device = mask_device if mask_device else (f"cuda:{device_id}" if gpu and cuda else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"mask_device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from e
    if dev.type == "cuda" and not cuda:
        return "numpy", None, f"{device} was asked for but torch sees no CUDA device"
    return "torch", device, f"mask_engine is {requested}, mask_device {device}"


def _cosines_np(emb: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Float64 cosines of each row of ``emb`` (k, D) with ``ref`` (D,)."""
    e = emb.astype(np.float64)
    norms = np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(ref), 1e-12)
    out: np.ndarray = e @ ref / norms
    return out


def _check_deadline(end: float | None, done: int, total: int, timeout: Any) -> None:
    if end is not None and time.monotonic() > end:
        raise Abandoned(f"corrrise request abandoned after {done} of {total} masks: "
                        f"the client's deadline of {timeout} s passed")


def score_numpy(
    image: np.ndarray,
    reference: np.ndarray,
    config: MaskConfig,
    start: int,
    stop: int,
    chunk: int,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    end: float | None = None,
    timeout: Any = None,
) -> np.ndarray:
    """Scores (stop - start,) float64 of masks [start, stop) on the host: cos(embed(image * M_k),
    reference) for chip ``image`` (3, S, S) float32 and ``reference`` (D,); ``embed`` maps a batch
    (k, 3, S, S) float32 to (k, D) embeddings, called on ``chunk`` masks at a time. Abandoned
    past the monotonic time ``end``."""
    size = image.shape[-1]
    ref = np.asarray(reference, np.float64)
    scores = []
    for lo in range(start, stop, chunk):
        _check_deadline(end, lo - start, stop - start, timeout)
        hi = min(lo + chunk, stop)
        masks = generate_masks(config, size, lo, hi)
        batch = np.ascontiguousarray(image[None] * masks[:, None], dtype=np.float32)
        scores.append(_cosines_np(np.asarray(embed(batch)), ref))
    return np.concatenate(scores) if scores else np.zeros(0)


def score_torch(
    image: np.ndarray,
    reference: np.ndarray,
    config: MaskConfig,
    start: int,
    stop: int,
    chunk: int,
    embed: Callable[[Any], Any],
    device: str,
    *,
    end: float | None = None,
    timeout: Any = None,
) -> np.ndarray:
    """:func:`score_numpy` on a torch ``device``: the masks pasted there (bit-identical to the
    host's), the masked batch (k, 3, S, S) float32 formed there and given to ``embed`` as a tensor
    on the device (which returns (k, D) embeddings, on any device), float64 cosines there; one
    copy of the scores to the host at the end."""
    import torch
    from facexplain_masks.masks_torch import mask_draws, paste_masks  # type: ignore[import-not-found]

    size = int(image.shape[-1])
    side = config.patch_size_for(size)
    dev = torch.device(device)
    if stop <= start:
        return np.zeros(0)
    corners_np, fills_np = mask_draws(config, size, int(start), int(stop))
    with torch.inference_mode():
        corners = torch.from_numpy(corners_np.copy()).to(dev)
        fills = torch.from_numpy(fills_np.copy()).to(dev)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(dev)
        ref = torch.from_numpy(np.asarray(reference, np.float64)).to(dev)
        ref_norm = torch.linalg.vector_norm(ref)
        scores = []
        for lo in range(start, stop, chunk):
            _check_deadline(end, lo - start, stop - start, timeout)
            hi = min(lo + chunk, stop)
            masks = paste_masks(corners[lo - start : hi - start], fills[lo - start : hi - start], side, size)
            batch = (x[None] * masks[:, None]).contiguous()
            emb = embed(batch).to(dev).double()
            norms = (torch.linalg.vector_norm(emb, dim=1) * ref_norm).clamp(min=1e-12)
            scores.append((emb @ ref) / norms)
        out: np.ndarray = torch.cat(scores).cpu().numpy()
    return out


def _error(message: str, code: Any = None) -> Any:
    err = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=err)


def _parameter(config: dict[str, Any], key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return None if value in (None, "") else str(value)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        kind = str(args.get("model_instance_kind", "CPU"))
        self.device_id = int(args.get("model_instance_device_id", 0) or 0)
        requested = _parameter(config, "mask_engine") or "auto"
        self.engine, self.device, why = choose_engine(requested, kind, self.device_id, _parameter(config, "mask_device"))
        self.label = "numpy" if self.device is None else f"torch {self.device}"
        pb_utils.Logger.log_info(f"corrrise_scores instance {args.get('model_instance_name', '')}: "
                                 f"masks on {self.label} ({why})")

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(r) for r in requests]

    def _embed_host(self, model: str) -> Callable[[np.ndarray], np.ndarray]:
        extra: dict[str, Any] = {}
        if hasattr(pb_utils, "PreferredMemory"):  # host arrays in, host arrays out
            extra["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

        def embed(batch: np.ndarray) -> np.ndarray:
            bls = pb_utils.InferenceRequest(
                model_name=model, inputs=[pb_utils.Tensor("image", batch)], requested_output_names=["embedding"],
                **extra,
            )
            out: np.ndarray = self._output(model, bls.exec()).as_numpy()
            return out

        return embed

    def _embed_device(self, model: str) -> Callable[[Any], Any]:
        import torch

        extra: dict[str, Any] = {}
        on_gpu = self.device is not None and torch.device(self.device).type == "cuda"
        if on_gpu and hasattr(pb_utils, "PreferredMemory"):  # keep the embeddings on the GPU
            extra["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, self.device_id)

        def embed(batch: Any) -> Any:
            bls = pb_utils.InferenceRequest(
                model_name=model,
                inputs=[pb_utils.Tensor.from_dlpack("image", batch)],
                requested_output_names=["embedding"],
                **extra,
            )
            return torch.utils.dlpack.from_dlpack(self._output(model, bls.exec()).to_dlpack())

        return embed

    @staticmethod
    def _output(model: str, response: Any) -> Any:
        if response.has_error():
            err = response.error()
            code = err.code() if hasattr(err, "code") else None
            raise FaceModelError(f"face model {model}: {err.message()}", code)
        return pb_utils.get_output_tensor_by_name(response, "embedding")

    def _one(self, request: Any) -> Any:
        began = time.monotonic()
        try:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().astype(np.float32)
            ref = pb_utils.get_input_tensor_by_name(request, "reference").as_numpy().astype(np.float64)
            params = json.loads(pb_utils.get_input_tensor_by_name(request, "request").as_numpy()[0])
            config = MaskConfig(**params["masks"])
            start, stop, chunk = int(params["start"]), int(params["stop"]), int(params.get("chunk", 32))
            model = str(params["model"])
            timeout = params.get("timeout_s")
            end = None if timeout is None else began + float(timeout)
            if chunk < 1 or not 0 <= start <= stop:
                raise ValueError(f"need 0 <= start <= stop and chunk >= 1, got {start}, {stop}, {chunk}")
            if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
                raise ValueError(f"image must be (3, S, S), got {image.shape}")
            config.patch_size_for(image.shape[-1])
        except Exception as e:  # a bad request: answer it with an error, keep the model up
            return _error(f"bad corrrise request: {e}", pb_utils.TritonError.INVALID_ARG)
        try:
            if self.device is None:
                out = score_numpy(image, ref, config, start, stop, chunk, self._embed_host(model),
                                  end=end, timeout=timeout)
            else:
                out = score_torch(image, ref, config, start, stop, chunk, self._embed_device(model), self.device,
                                  end=end, timeout=timeout)
        except Abandoned as e:
            return _error(str(e), pb_utils.TritonError.UNAVAILABLE)
        except FaceModelError as e:
            return _error(str(e), e.code)
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("scores", out.astype(np.float64)),
            pb_utils.Tensor("engine", np.array([self.label.encode()], dtype=np.object_)),
        ])
