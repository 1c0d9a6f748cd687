"""Triton Python-backend shim for the embedded (CPU) server: one face model's ONNX graph on
onnxruntime. Copied as ``<model>/1/model.py`` into the embedded repository.

Config parameters: ``onnx_file`` (path), ``intra_op_threads`` (0 = onnxruntime's default),
``allow_spinning`` ("0": idle worker threads sleep instead of spinning, so a server sharing a few
cores with its clients does not steal their CPU).
Requests that dynamic batching groups into one call run as one onnxruntime batch.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(
            params["onnx_file"], sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        try:
            out = self.session.run([self.output], {self.input: np.concatenate(arrays)})[0]
        except Exception as e:  # a failure of this batch: report it on every response
            err = pb_utils.TritonError(f"onnxruntime: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            part = np.ascontiguousarray(out[start : start + len(a)])
            start += len(a)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, part)]))
        return responses
