"""A FaceModel served by Triton, over gRPC (``tritonclient.grpc``).

Batches are cut to the model's ``max_batch_size`` (or a smaller ``batch_size``) and up to
``max_in_flight`` requests run at once. With ``shared_memory=True`` (a server on this machine)
inputs and outputs travel through POSIX shared memory instead of the gRPC message.

Every call to the server is bounded by ``timeout_s`` (default ``Settings.request_timeout_s``),
retries and a liveness check included, so a server that stops answering gives an error within
that time, never a hang:

- no connection (UNAVAILABLE): retried with exponential backoff and jitter while time is left,
  then :class:`BackendUnavailableError`;
- no answer in time: a short liveness check tells :class:`BackendUnavailableError` (the server
  does not answer at all; later calls then fail at once for a while instead of waiting again)
  from :class:`DeadlineExceededError` (it is live but too slow);
- anything else (a bad request or reply, a model missing on the server): a permanent
  :class:`BackendError` or :class:`ModelNotReadyError`, not retried.

Every message names the server, the model and what to do.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import (
    BackendError,
    BackendUnavailableError,
    DeadlineExceededError,
    FacexplainError,
    InputError,
    ModelNotReadyError,
)
from ..models.store import triton_name
from ..settings import get_settings
from ..spec import ModelSpec
from .address import format_grpc_address, parse_grpc_address
from .leftovers import SHM_PREFIX, clean_stale, new_tag, unwind_on_sigterm
from .repository import CORRRISE_MODEL

if TYPE_CHECKING:
    from ..masks import MaskConfig

__all__ = ["TritonFaceModel", "RETRY_STATUSES", "LIVENESS_TIMEOUT_S"]

#: gRPC status codes retried with backoff: the server is (re)starting or cannot be reached.
RETRY_STATUSES = ("StatusCode.UNAVAILABLE",)
_DEADLINE = "StatusCode.DEADLINE_EXCEEDED"
#: longest wait for the liveness check that follows a missed deadline (it is part of timeout_s)
LIVENESS_TIMEOUT_S = 5.0

T = TypeVar("T")


class TritonFaceModel:
    """FaceModel backed by a Triton server.

    Args:
        url: gRPC address ``HOST[:PORT]`` (port 8001 when absent; see :mod:`.address`).
        spec: the model's spec (chip, embedding size, threshold).
        batch_size: images per request (default: the model's ``max_batch_size``).
        max_in_flight: concurrent requests.
        timeout_s: the most one call to the server may take, retries and liveness check
            included (default: ``Settings.request_timeout_s``, FACEXPLAIN_REQUEST_TIMEOUT).
        retries: further attempts after a connection failure, within ``timeout_s``.
        backoff_s: first retry delay (doubles each time, with jitter).
        shared_memory: pass tensors through system shared memory (server on this machine).
        server_masks: let CorrRISE generate the masks inside Triton (model ``corrrise_scores``):
            a request carries the chip and the mask parameters instead of the masked chips.
            None (default): when the server has that model and tensors do not travel through
            shared memory (on this machine client-side masks through shared memory measured
            faster; across a network the 0.3 MB request beats 270 MB of masked chips).
        wait_ready_s: how long to wait for the server and the model to become ready.
    """

    def __init__(
        self,
        url: str,
        spec: ModelSpec,
        *,
        batch_size: int | None = None,
        max_in_flight: int = 4,
        timeout_s: float | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        shared_memory: bool = False,
        server_masks: bool | None = None,
        wait_ready_s: float = 0.0,
    ) -> None:
        import tritonclient.grpc as grpcclient

        if timeout_s is None:
            timeout_s = get_settings().request_timeout_s
        if max_in_flight < 1 or retries < 0 or not timeout_s > 0 or backoff_s < 0:
            raise InputError("max_in_flight >= 1, retries >= 0, timeout_s > 0 and backoff_s >= 0 are required")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.url = format_grpc_address(*parse_grpc_address(url))
        self.spec = spec
        self.model_name = triton_name(spec.name)
        self.max_in_flight = max_in_flight
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self._grpc = grpcclient
        self._down_until = 0.0
        self._down_error: BackendUnavailableError | None = None
        self._shm: _ShmPool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        try:
            self._client = grpcclient.InferenceServerClient(url=self.url)
        except Exception as e:
            raise BackendError(f"cannot create a Triton client for {self.url}: {_short(e)}") from None
        try:
            self._check_ready(wait_ready_s)
            config = self._call(
                lambda t: self._client.get_model_config(self.model_name, as_json=True, client_timeout=t),
                "reading the model's configuration",
            )
            server_max = int(config["config"].get("max_batch_size", 0)) or 1
            self.batch_size = min(batch_size or server_max, server_max)
            self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="triton")
            wanted = (not shared_memory) if server_masks is None else server_masks
            has_scorer = wanted and self._has_model(CORRRISE_MODEL)
            if server_masks and not has_scorer:
                raise ModelNotReadyError(f"Triton at {self.url} does not serve {CORRRISE_MODEL!r} (server-side masks)")
            self.server_masks = has_scorer
            #: CorrRISE masks per call (docs/benchmarks.md): larger with server-side masks, whose
            #: requests are small and whose round trips cost more across a network
            self.masks_per_call = 128 if has_scorer else 16
            if shared_memory:
                self._shm = _ShmPool(self, self.max_in_flight)
        except BaseException:
            self.close()
            raise

    # -- connection -------------------------------------------------------------------------------

    def _probe_s(self) -> float:
        return min(LIVENESS_TIMEOUT_S, self.timeout_s / 4)

    def _check_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        probe = max(self._probe_s(), 0.05)
        while True:
            try:
                live = self._client.is_server_live(client_timeout=probe)
                ready = live and self._client.is_model_ready(self.model_name, client_timeout=probe)
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
                index = self._client.get_model_repository_index(as_json=True, client_timeout=probe)
                names = [m["name"] for m in index.get("models", [])]
            except Exception:
                names = []
            if self.model_name not in names:
                raise ModelNotReadyError(
                    f"Triton at {self.url} has no model {self.model_name!r} (it has: {', '.join(names) or 'none'})"
                )
            raise ModelNotReadyError(f"model {self.model_name!r} on Triton at {self.url} {problem}")
        raise BackendUnavailableError(
            f"Triton at {self.url} {problem}; check that the server runs there (or try again later)"
        )

    def _has_model(self, name: str) -> bool:
        try:
            return bool(self._client.is_model_ready(name, client_timeout=self._probe_s()))
        except Exception:
            return False

    def _call(self, fn: Callable[[float], T], what: str, model: str | None = None) -> T:
        """``fn(client_timeout)``: one server call within ``timeout_s`` (see the module docstring)."""
        model = model or self.model_name
        where = f"Triton at {self.url}, model {model!r}"
        if self._down_error is not None and time.monotonic() < self._down_until:
            raise self._down_error
        deadline = time.monotonic() + self.timeout_s
        budget = deadline - self._probe_s()  # leave time for the liveness check
        delay = self.backoff_s
        attempt = 0
        while True:
            left = budget - time.monotonic()
            if left <= 0:
                raise self._after_deadline(where, what, None, deadline)
            try:
                return fn(left)
            except FacexplainError:
                raise
            except Exception as e:  # tritonclient raises InferenceServerException
                status = _status(e)
                if status == _DEADLINE:
                    raise self._after_deadline(where, what, e, deadline) from None
                if status in RETRY_STATUSES:
                    attempt += 1
                    pause = delay * (0.5 + random.random())
                    if attempt <= self.retries and time.monotonic() + pause < budget:
                        time.sleep(pause)
                        delay *= 2
                        continue
                    raise BackendUnavailableError(
                        f"{where}: {_short(e)} (after {attempt} attempt(s); "
                        "is the server running? the same request may succeed later)"
                    ) from None
                raise BackendError(f"{where}: {_short(e)}") from None

    def _after_deadline(
        self, where: str, what: str, cause: Exception | None, deadline: float
    ) -> BackendUnavailableError | DeadlineExceededError:
        """Tell a server that stopped answering from one that is only slow."""
        probe = max(min(self._probe_s(), deadline - time.monotonic()), 0.05)
        try:
            live = bool(self._client.is_server_live(client_timeout=probe))
        except Exception:
            live = False
        if not live:
            err = BackendUnavailableError(
                f"{where}: no answer to {what} within {self.timeout_s:g} s, nor to a liveness check; "
                "the server is stopped, frozen or unreachable (restart it, or try again later)"
            )
            self._down_error = err
            self._down_until = time.monotonic() + self.timeout_s
            return err
        return DeadlineExceededError(
            f"{where}: no answer to {what} within {self.timeout_s:g} s although the server is live "
            "(overloaded? try again later, use a smaller --batch-size, or raise FACEXPLAIN_REQUEST_TIMEOUT)"
        )

    # -- inference --------------------------------------------------------------------------------

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._shm is not None:
            return self._shm.infer(x)
        inp = self._grpc.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = [self._grpc.InferRequestedOutput("embedding")]
        result = self._call(
            lambda t: self._client.infer(self.model_name, [inp], outputs=out, client_timeout=t),
            f"an inference of {len(x)} image(s)",
        )
        return np.asarray(result.as_numpy("embedding"))

    def _map(self, fn: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray]) -> list[np.ndarray]:
        """``fn`` over ``chunks`` on the pool, in order; on the first failure the chunks not yet
        started are cancelled (no queued request waits on a server that has failed)."""
        if self._pool is None:
            raise BackendError(f"the Triton client for {self.url} is closed")
        futures: list[Future[np.ndarray]] = [self._pool.submit(fn, c) for c in chunks]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

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
        return np.concatenate(self._map(self._infer, chunks))

    def _score_one(self, chip: np.ndarray, reference: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        g = self._grpc
        image = g.InferInput("image", list(chip.shape), "FP32")
        image.set_data_from_numpy(np.ascontiguousarray(chip, dtype=np.float32))
        ref = g.InferInput("reference", [len(reference)], "FP32")
        ref.set_data_from_numpy(np.asarray(reference, dtype=np.float32))
        req = g.InferInput("request", [1], "BYTES")
        req.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object))
        result = self._call(
            lambda t: self._client.infer(CORRRISE_MODEL, [image, ref, req], client_timeout=t),
            f"scoring masks {params['start']}..{params['stop']}",
            CORRRISE_MODEL,
        )
        return np.asarray(result.as_numpy("scores"))

    def score_masks(
        self,
        chip_a: np.ndarray,
        reference_b: np.ndarray,
        chip_b: np.ndarray,
        reference_a: np.ndarray,
        masks: MaskConfig,
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
            "timeout_s": self.timeout_s,
        }
        if self._pool is None:
            raise BackendError(f"the Triton client for {self.url} is closed")
        fa = self._pool.submit(self._score_one, chip_a, reference_b, params)
        fb = self._pool.submit(self._score_one, chip_b, reference_a, params)
        try:
            return fa.result(), fb.result()
        finally:
            fb.cancel()

    def close(self) -> None:
        """Release the requests' threads, the shared memory and the connection (bounded in time
        even when the server no longer answers). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            try:
                if self._shm is not None:
                    self._shm.close()
            finally:
                client = getattr(self, "_client", None)
                if client is not None:
                    client.close()

    def __enter__(self) -> TritonFaceModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ShmPool:
    """One input and one output system shared-memory region per in-flight request, named
    ``facexplain_<pid>_<tag>_...`` (:mod:`.leftovers`) and released by :meth:`close`."""

    def __init__(self, owner: TritonFaceModel, slots: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        self._owner = owner
        s = owner.spec.chip.size
        self._in_bytes = owner.batch_size * 3 * s * s * 4
        self._out_bytes = owner.batch_size * owner.spec.embedding_dim * 4
        self._free: list[tuple[str, Any, str, Any]] = []
        self._all: list[tuple[str, Any, str, Any]] = []
        self._handles: list[Any] = []
        self._registered: list[str] = []
        self._cond = threading.Condition(threading.Lock())
        clean_stale(None)
        tag = new_tag()
        client = owner._client
        self._release_sigterm = unwind_on_sigterm()
        try:
            for i in range(slots):
                names = (f"{SHM_PREFIX}{tag}_in{i}", f"{SHM_PREFIX}{tag}_out{i}")
                h_in = shm.create_shared_memory_region(names[0], "/" + names[0], self._in_bytes)
                self._handles.append(h_in)
                h_out = shm.create_shared_memory_region(names[1], "/" + names[1], self._out_bytes)
                self._handles.append(h_out)
                for name, size in ((names[0], self._in_bytes), (names[1], self._out_bytes)):
                    owner._call(partial(_register, client, name, size), "registering shared memory")
                    self._registered.append(name)
                self._free.append((names[0], h_in, names[1], h_out))
        except FacexplainError:
            self.close()
            raise
        except BaseException as e:
            self.close()
            if not isinstance(e, Exception):
                raise
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
            result = o._call(
                lambda t: o._client.infer(o.model_name, [inp], outputs=[out], client_timeout=t),
                f"an inference of {len(x)} image(s)",
            )
            meta = result.get_output("embedding")
            shape = list(meta.shape)
            return np.array(self._shm.get_contents_as_numpy(h_out, np.float32, shape), copy=True)
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()

    def close(self) -> None:
        """Unregister the regions from the server (skipped once it stops answering) and unlink
        them here (always)."""
        o = self._owner
        reachable = o._down_error is None or time.monotonic() >= o._down_until
        probe = o._probe_s()
        for name in self._registered:
            if not reachable:
                break
            try:
                o._client.unregister_system_shared_memory(name, client_timeout=probe)
            except Exception as e:
                if _status(e) in (_DEADLINE, *RETRY_STATUSES):
                    reachable = False  # do not wait once per region on a server that is gone
        for h in self._handles:
            try:
                self._shm.destroy_shared_memory_region(h)
            except Exception:
                pass
        self._registered = []
        self._handles = []
        self._free = []
        self._all = []
        self._release_sigterm()


def _register(client: Any, name: str, size: int, timeout: float) -> None:
    client.register_system_shared_memory(name, "/" + name, size, client_timeout=timeout)


def _status(e: BaseException) -> str:
    """tritonclient's gRPC status text (``"StatusCode.UNAVAILABLE"``), or ``""``."""
    status = getattr(e, "status", None)
    try:
        return str(status() or "") if callable(status) else ""
    except Exception:
        return ""


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
