"""In-process face model on onnxruntime (``--engine local``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError, InputError, ModelFormatError, ModelNotReadyError
from ..settings import DEFAULT_BATCH_LOCAL
from ..spec import ModelSpec

__all__ = ["OnnxFaceModel", "DEFAULT_BATCH_SIZE"]

#: Images per onnxruntime call unless told otherwise (Settings' in-process default).
DEFAULT_BATCH_SIZE = DEFAULT_BATCH_LOCAL


class OnnxFaceModel:
    """A FaceModel running an ONNX file with onnxruntime on the CPU.

    ``batch_size`` bounds how many chips go through one ``run`` call; ``threads`` sets
    onnxruntime's intra-op threads (None: its default, one per core).

    Errors: ModelNotReadyError when the file is missing (not built or imported yet),
    ModelFormatError when onnxruntime cannot load it (corrupted, truncated, not ONNX),
    InputError for input of the wrong shape, BackendError when onnxruntime fails on a batch
    (permanent: the same batch would fail again).
    """

    def __init__(
        self,
        path: str | Path,
        spec: ModelSpec,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        path = Path(path)
        if not path.is_file():
            raise ModelNotReadyError(f"{path}: model file missing (run `make setup`)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFormatError(f"{path}: not a model onnxruntime can load ({_first_line(e)})") from None
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        self.spec = spec
        self.batch_size = batch_size
        self.path = path

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 RGB in [0, 255] -> (N, D) float32."""
        x = np.asarray(images, dtype=np.float32)
        s = self.spec.chip.size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise InputError(f"{self.spec.name} expects (N, 3, {s}, {s}) input, got {x.shape}")
        out = []
        for i in range(0, len(x), self.batch_size):
            try:
                out.append(self._session.run([self._output], {self._input: x[i : i + self.batch_size]})[0])
            except Exception as e:
                raise BackendError(f"onnxruntime failed on {self.spec.name}: {_first_line(e)}") from None
        if not out:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
