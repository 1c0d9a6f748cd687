"""A FaceModel served by Triton, over gRPC (``tritonclient.grpc``).

Batches are cut to the model's ``max_batch_size`` (or a smaller ``batch_size``) and up to
``max_in_flight`` requests run at once; each request has a deadline, is retried with exponential
backoff and jitter when the server answers UNAVAILABLE (or the deadline passes), and fails with a
:class:`BackendError` that names the server and the model otherwise. With ``shared_memory=True``
(a server on this machine) inputs and outputs travel through POSIX shared memory instead of the
gRPC message.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError, InputError, ModelNotReadyError
from ..spec import ModelSpec
from .repository import CORRRISE_MODEL, triton_name

if TYPE_CHECKING:
    from ..masks import MaskConfig

__all__ = ["TritonFaceModel", "RETRY_STATUSES"]

#: gRPC status codes worth retrying: the server is (re)starting or overloaded, or a deadline passed.
RETRY_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED")


class TritonFaceModel:
    """FaceModel backed by a Triton server.

    Args:
        url: gRPC address ``host:port``.
        spec: the model's spec (chip, embedding size, threshold).
        batch_size: images per request (default: the model's ``max_batch_size``).
        max_in_flight: concurrent requests.
        timeout_s: deadline of each request.
        retries: further attempts after a retryable failure.
        backoff_s: first retry delay (doubles each time, with jitter).
        shared_memory: pass tensors through system shared memory (server on this machine).
        server_masks: let CorrRISE generate the masks inside Triton (model ``corrrise_scores``):
            a request carries the chip and the mask parameters instead of the masked chips.
            None (default): when the server has that model and tensors do not travel through
            shared memory (on this machine client-side masks through shared memory measured
            faster; across a network the 0.3 MB request beats 270 MB of masked chips).
    """

    def __init__(
        self,
        url: str,
        spec: ModelSpec,
        *,
        batch_size: int | None = None,
        max_in_flight: int = 4,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        shared_memory: bool = False,
        server_masks: bool | None = None,
        wait_ready_s: float = 0.0,
    ) -> None:
        import tritonclient.grpc as grpcclient

        if max_in_flight < 1 or retries < 0 or timeout_s <= 0:
            raise InputError("max_in_flight >= 1, retries >= 0 and timeout_s > 0 are required")
        self.url = url
        self.spec = spec
        self.model_name = triton_name(spec.name)
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._grpc = grpcclient
        try:
            self._client = grpcclient.InferenceServerClient(url=url)
        except Exception as e:
            raise BackendError(f"cannot create a Triton client for {url}: {e}") from None
        self._check_ready(wait_ready_s)
        config = self._call(lambda: self._client.get_model_config(self.model_name, as_json=True))
        server_max = int(config["config"].get("max_batch_size", 0)) or 1
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = min(batch_size or server_max, server_max)
        self._shm = _ShmPool(self, self.max_in_flight) if shared_memory else None
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="triton")
        wanted = (not shared_memory) if server_masks is None else server_masks
        has_scorer = wanted and self._has_model(CORRRISE_MODEL)
        if server_masks and not has_scorer:
            raise ModelNotReadyError(f"Triton at {url} does not serve {CORRRISE_MODEL!r} (server-side masks)")
        self.server_masks = has_scorer
        #: CorrRISE masks per call (docs/benchmarks.md): larger with server-side masks, whose
        #: requests are small and whose round trips cost more across a network
        self.masks_per_call = 128 if has_scorer else 16

    # -- connection -------------------------------------------------------------------------------

    def _check_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                live = self._client.is_server_live(client_timeout=5)
                ready = live and self._client.is_model_ready(self.model_name, client_timeout=5)
                if ready:
                    return
                problem = "is not ready" if live else "is not live"
            except Exception as e:
                live, problem = False, f"cannot be reached ({_short(e)})"
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if live:
            try:
                names = [m["name"] for m in self._client.get_model_repository_index(as_json=True).get("models", [])]
            except Exception:
                names = []
            if self.model_name not in names:
                raise ModelNotReadyError(
                    f"Triton at {self.url} has no model {self.model_name!r} (it has: {', '.join(names) or 'none'})"
                )
            raise ModelNotReadyError(f"model {self.model_name!r} on Triton at {self.url} {problem}")
        raise BackendError(f"Triton at {self.url} {problem}")

    def _has_model(self, name: str) -> bool:
        try:
            return bool(self._client.is_model_ready(name, client_timeout=5))
        except Exception:
            return False

    def _call(self, fn: Any) -> Any:
        """Run one client call with retries on transient gRPC failures."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:  # tritonclient raises InferenceServerException
                status = str(getattr(e, "status", lambda: "")() or "")
                if status in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(delay * (0.5 + random.random()))
                    delay *= 2
                    continue
                raise BackendError(f"Triton at {self.url}, model {self.model_name!r}: {_short(e)}") from None
        raise AssertionError("unreachable")

    # -- inference --------------------------------------------------------------------------------

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._shm is not None:
            return self._shm.infer(x)
        inp = self._grpc.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = [self._grpc.InferRequestedOutput("embedding")]
        result = self._call(
            lambda: self._client.infer(self.model_name, [inp], outputs=out, client_timeout=self.timeout_s)
        )
        return result.as_numpy("embedding")

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 RGB in [0, 255] -> (N, D) float32, in order."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        s = self.spec.chip.size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise InputError(f"{self.spec.name} expects (N, 3, {s}, {s}) input, got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        chunks = [x[i : i + self.batch_size] for i in range(0, len(x), self.batch_size)]
        if len(chunks) == 1:
            return self._infer(chunks[0])
        return np.concatenate(list(self._pool.map(self._infer, chunks)))

    def _score_one(self, chip: np.ndarray, reference: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        g = self._grpc
        image = g.InferInput("image", list(chip.shape), "FP32")
        image.set_data_from_numpy(np.ascontiguousarray(chip, dtype=np.float32))
        ref = g.InferInput("reference", [len(reference)], "FP32")
        ref.set_data_from_numpy(np.asarray(reference, dtype=np.float32))
        req = g.InferInput("request", [1], "BYTES")
        req.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object))
        result = self._call(
            lambda: self._client.infer(CORRRISE_MODEL, [image, ref, req], client_timeout=self.timeout_s)
        )
        return result.as_numpy("scores")

    def score_masks(
        self,
        chip_a: np.ndarray,
        reference_b: np.ndarray,
        chip_b: np.ndarray,
        reference_a: np.ndarray,
        masks: "MaskConfig",
        start: int,
        stop: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Server-side CorrRISE scores of masks [start, stop): cos(f(A*M), f(B)) and cos(f(B*M), f(A)).

        Chips are (3, S, S) float32 RGB in [0, 255]; both faces' requests run concurrently.
        """
        params = {
            "model": self.model_name,
            "start": int(start),
            "stop": int(stop),
            "chunk": self.batch_size,
            "masks": asdict(masks),
        }
        fa = self._pool.submit(self._score_one, chip_a, reference_b, params)
        fb = self._pool.submit(self._score_one, chip_b, reference_a, params)
        return fa.result(), fb.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._shm is not None:
            self._shm.close()
        self._client.close()

    def __enter__(self) -> "TritonFaceModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ShmPool:
    """One input and one output system shared-memory region per in-flight request."""

    def __init__(self, owner: TritonFaceModel, slots: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        self._owner = owner
        s = owner.spec.chip.size
        self._in_bytes = owner.batch_size * 3 * s * s * 4
        self._out_bytes = owner.batch_size * owner.spec.embedding_dim * 4
        self._free: list[tuple[str, Any, str, Any]] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        tag = uuid.uuid4().hex[:12]
        client = owner._client
        try:
            for i in range(slots):
                names = (f"fx_in_{tag}_{i}", f"fx_out_{tag}_{i}")
                h_in = shm.create_shared_memory_region(names[0], "/" + names[0], self._in_bytes)
                h_out = shm.create_shared_memory_region(names[1], "/" + names[1], self._out_bytes)
                client.register_system_shared_memory(names[0], "/" + names[0], self._in_bytes)
                client.register_system_shared_memory(names[1], "/" + names[1], self._out_bytes)
                self._free.append((names[0], h_in, names[1], h_out))
        except Exception as e:
            self.close()
            raise BackendError(f"shared memory with Triton at {owner.url} failed: {_short(e)}") from None
        self._all = list(self._free)

    def infer(self, x: np.ndarray) -> np.ndarray:
        o = self._owner
        g = o._grpc
        with self._cond:
            while not self._free:
                self._cond.wait()
            slot = self._free.pop()
        try:
            in_name, h_in, out_name, h_out = slot
            self._shm.set_shared_memory_region(h_in, [x])
            inp = g.InferInput("image", list(x.shape), "FP32")
            inp.set_shared_memory(in_name, x.nbytes)
            out = g.InferRequestedOutput("embedding")
            nbytes = len(x) * o.spec.embedding_dim * 4
            out.set_shared_memory(out_name, nbytes)
            result = o._call(lambda: o._client.infer(o.model_name, [inp], outputs=[out], client_timeout=o.timeout_s))
            meta = result.get_output("embedding")
            shape = list(meta.shape)
            return np.array(self._shm.get_contents_as_numpy(h_out, np.float32, shape), copy=True)
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()

    def close(self) -> None:
        for in_name, h_in, out_name, h_out in getattr(self, "_all", self._free):
            for name, h in ((in_name, h_in), (out_name, h_out)):
                try:
                    self._owner._client.unregister_system_shared_memory(name)
                except Exception:
                    pass
                try:
                    self._shm.destroy_shared_memory_region(h)
                except Exception:
                    pass
        self._free = []
        self._all = []


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
