"""Triton Python-backend model ``corrrise_scores``: CorrRISE's masked scoring done server-side.

A request carries one chip, the other face's clean embedding and the mask set's parameters (a few
KB) instead of N masked chips; the model regenerates masks [start, stop) exactly as the client's
``explainer_service.masks`` does (a copy of that module, ``facexplain_masks``, sits beside this file), multiplies, embeds
the masked chips through the face model with BLS calls, and returns the N cosine scores.

Inputs: ``image`` FP32 (3, S, S) RGB 0..255; ``reference`` FP32 (D,); ``request`` BYTES (1,): JSON
``{"model": triton name, "start", "stop", "chunk", "masks": {MaskConfig fields}, "timeout_s"}``
(``timeout_s`` optional: the client's deadline; past it the request is abandoned instead of
computing scores no one waits for).
Output: ``scores`` FP64 (stop - start,).

A bad request is answered with an INVALID_ARG error (not retried by the client), a failure of the
face model with its own error; the model stays up either way.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from facexplain_masks.masks import MaskConfig, generate_masks  # type: ignore[import-not-found]


def _error(message: str, code: Any = None) -> Any:
    err = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=err)


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(r) for r in requests]

    def _one(self, request: Any) -> Any:
        began = time.monotonic()
        try:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().astype(np.float32)
            ref = pb_utils.get_input_tensor_by_name(request, "reference").as_numpy().astype(np.float64)
            params = json.loads(pb_utils.get_input_tensor_by_name(request, "request").as_numpy()[0])
            config = MaskConfig(**params["masks"])
            start, stop, chunk = int(params["start"]), int(params["stop"]), int(params.get("chunk", 32))
            timeout = params.get("timeout_s")
            end = None if timeout is None else began + float(timeout)
            if chunk < 1 or not 0 <= start <= stop:
                raise ValueError(f"need 0 <= start <= stop and chunk >= 1, got {start}, {stop}, {chunk}")
            size = image.shape[-1]
        except Exception as e:  # a bad request: answer it with an error, keep the model up
            return _error(f"bad corrrise request: {e}", pb_utils.TritonError.INVALID_ARG)
        scores = []
        ref_norm = np.linalg.norm(ref)
        for lo in range(start, stop, chunk):
            if end is not None and time.monotonic() > end:
                return _error(
                    f"corrrise request abandoned after {lo - start} of {stop - start} masks: "
                    f"the client's deadline of {timeout} s passed",
                    pb_utils.TritonError.UNAVAILABLE,
                )
            hi = min(lo + chunk, stop)
            masks = generate_masks(config, size, lo, hi)
            batch = np.ascontiguousarray(image[None] * masks[:, None], dtype=np.float32)
            bls = pb_utils.InferenceRequest(
                model_name=params["model"],
                inputs=[pb_utils.Tensor("image", batch)],
                requested_output_names=["embedding"],
            )
            response = bls.exec()
            if response.has_error():
                err = response.error()
                code = err.code() if hasattr(err, "code") else None
                return _error(f"face model {params['model']}: {err.message()}", code)
            emb = pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy().astype(np.float64)
            norms = np.maximum(np.linalg.norm(emb, axis=1) * ref_norm, 1e-12)
            scores.append(emb @ ref / norms)
        out = np.concatenate(scores) if scores else np.zeros(0)
        return pb_utils.InferenceResponse([pb_utils.Tensor("scores", out.astype(np.float64))])
