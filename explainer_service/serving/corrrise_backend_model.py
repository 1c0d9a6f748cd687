"""Triton Python-backend model ``corrrise_scores``: CorrRISE's masked scoring done server-side.

A request carries one chip, the other face's clean embedding and the mask set's parameters (a few
KB) instead of N masked chips; the model regenerates masks [start, stop) exactly as the client's
``explainer_service.masks`` does (a copy of that module, ``facexplain_masks``, sits beside this file), multiplies, embeds
the masked chips through the face model with BLS calls, and returns the N cosine scores.

Inputs: ``image`` FP32 (3, S, S) RGB 0..255; ``reference`` FP32 (D,); ``request`` BYTES (1,): JSON
``{"model": triton name, "start", "stop", "chunk", "masks": {MaskConfig fields}}``.
Output: ``scores`` FP64 (stop - start,).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from facexplain_masks.masks import MaskConfig, generate_masks


class TritonPythonModel:
    def execute(self, requests):
        return [self._one(r) for r in requests]

    def _one(self, request):
        try:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().astype(np.float32)
            ref = pb_utils.get_input_tensor_by_name(request, "reference").as_numpy().astype(np.float64)
            params = json.loads(pb_utils.get_input_tensor_by_name(request, "request").as_numpy()[0])
            config = MaskConfig(**params["masks"])
            start, stop, chunk = int(params["start"]), int(params["stop"]), int(params.get("chunk", 32))
            size = image.shape[-1]
        except Exception as e:  # a bad request: answer it with an error, keep the model up
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"bad corrrise request: {e}"))
        scores = []
        ref_norm = np.linalg.norm(ref)
        for lo in range(start, stop, chunk):
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
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"face model {params['model']}: {response.error().message()}")
                )
            emb = pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy().astype(np.float64)
            norms = np.maximum(np.linalg.norm(emb, axis=1) * ref_norm, 1e-12)
            scores.append(emb @ ref / norms)
        out = np.concatenate(scores) if scores else np.zeros(0)
        return pb_utils.InferenceResponse([pb_utils.Tensor("scores", out.astype(np.float64))])
