"""Triton Python-backend shim for the embedded (CPU) server: one face model's ONNX graph on
onnxruntime. Copied as ``<model>/1/model.py`` into the embedded repository.

Config parameters: ``onnx_file`` (path), ``intra_op_threads`` (0 = onnxruntime's default),
``allow_spinning`` ("0": idle worker threads sleep instead of spinning, so a server sharing a few
cores with its clients does not steal their CPU).
Requests that dynamic batching groups into one call run as one onnxruntime batch. Exactly one
response per request, in order: a request without its input tensor, or a batch onnxruntime
refuses, is answered with a ``TritonError`` (INVALID_ARG for bad input, which a client does not
retry; INTERNAL otherwise); the model itself stays up.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _code(e: Exception) -> Any:
    """INVALID_ARG for onnxruntime's input errors (wrong shape or type), INTERNAL otherwise."""
    name = type(e).__name__
    if name in ("InvalidArgument", "InvalidGraph") or isinstance(e, ValueError):
        return pb_utils.TritonError.INVALID_ARG
    return pb_utils.TritonError.INTERNAL


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(params["onnx_file"], sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = [None] * len(requests)
        arrays, index = [], []
        for i, r in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(r, self.input)
            if tensor is None:
                err = pb_utils.TritonError(f"missing input {self.input!r}", pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=err)
                continue
            arrays.append(tensor.as_numpy())
            index.append(i)
        if arrays:
            try:
                out = self.session.run([self.output], {self.input: np.concatenate(arrays)})[0]
            except Exception as e:  # a failure of this batch: report it on each of its responses
                err = pb_utils.TritonError(f"onnxruntime: {e}", _code(e))
                for i in index:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=err)
                return responses
            start = 0
            for i, a in zip(index, arrays, strict=True):
                part = np.ascontiguousarray(out[start : start + len(a)])
                start += len(a)
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(self.output, part)])
        return responses
