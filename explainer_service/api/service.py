"""The API's use cases, without gRPC: what each call does with the store, the models and the queue.

:class:`ApiService` is what the servicer (:mod:`.servicer`) calls, one method per call, with
library values in and out (bytes, dicts, :class:`~explainer_service.results.PairResult`, the
store's :class:`~explainer_service.store.JobRecord`); errors are the library's, which the servicer
turns into status codes. Everything blocking (Redis, models) happens here, in the caller's thread.

- Verify: both images decoded and aligned (``pipeline.align_image``, limits from the settings),
  embedded by the model (opened once per process, lazily, :meth:`ApiService.model`), cosine score,
  the model's threshold and the decision.
- Explain: the method and its parameters checked on the model's chip (``registry.check_params``),
  both images decoded and their faces found, all before a job exists (the faces found are kept
  with the job, ``store.faces``, so that the worker does not align them again); the job id is the content
  hash of the store (``store.content_job_id``), so the same request is a cache hit (the stored job,
  ``reused``) unless ``force``; a failed or cancelled job of that id is recreated. A new job is
  queued by ``worker.enqueue_explain`` (the contract with the workers); if queueing fails the job is
  removed, so no job waits for a task that was never sent.
- Datasets: the pairs of a dataset on the server (names and ground truth) and one pair's image
  bytes, read only under the allowed roots (``settings.dataset_roots``, as SubmitAudit's specs);
  no roots at all is DatasetsNotAllowedError (FAILED_PRECONDITION).
- Jobs: records, results, partial maps of a sharded method (CorrRISE, corrrise-plus: the stored
  shards merged in mask order and finished: the exact maps over the masks done so far), cancel,
  delete, listing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FacexplainError, InputError, LimitExceededError, ModelNotReadyError, NotFoundError
from ..explanation import decide
from ..results import FaceRecord, PairResult, Verification
from ..settings import Settings, get_settings
from ..spec import ModelSpec
from .status import DatasetsNotAllowedError, JobNotFinishedError

if TYPE_CHECKING:
    from ..models.base import FaceModel
    from ..store import JobRecord, JobStore
    from ..uncertainty import UncertaintyOptions
    from ..worker.plan import Until

__all__ = [
    "ALIGN_DEFAULTS",
    "align_params",
    "aligner_of",
    "ApiService",
    "DatasetPairImages",
    "ModelEntry",
    "PartialMaps",
    "plain_params",
]

log = logging.getLogger(__name__)

#: How the API aligns the faces of a request (the CLI's defaults: the largest face; 112x112
#: images taken as ArcFace crops).
ALIGN_DEFAULTS: Mapping[str, str] = {"face": "largest", "aligned": "auto"}


def align_params(detector: str = "") -> dict[str, str]:
    """How the API aligns a request's faces: :data:`ALIGN_DEFAULTS` with the face ``detector``
    (``""``: the alignment package's default), kept in a job's parameters so that the job's
    content id covers it (two detectors never share a stored result). InputError naming the
    choices for an unknown detector."""
    from ..alignment import DEFAULT_DETECTOR, DETECTORS

    name = detector or DEFAULT_DETECTOR
    if name not in DETECTORS:
        raise InputError(f"detector: unknown {name!r} (known: {', '.join(DETECTORS)})")
    return {**ALIGN_DEFAULTS, "detector": name}


def aligner_of(align: Mapping[str, Any]) -> Any:
    """The :class:`~explainer_service.alignment.Aligner` of a job's ``align`` parameters (older
    jobs without a detector: the default detector)."""
    from ..alignment import DEFAULT_DETECTOR, Aligner

    return Aligner(multiple_faces=str(align.get("face", "largest")), pre_aligned=str(align.get("aligned", "auto")),
                   detector=str(align.get("detector", DEFAULT_DETECTOR)))
#: Enqueue a job's tasks by id: ``enqueue(job_id)`` (the default sends them through Celery).
Enqueue = Callable[[str], None]


@dataclass(frozen=True)
class ModelEntry:
    """One model as ListModels lists it: its spec (None for an empty slot, whose weights are not
    imported yet), family, the weights' SHA-256, and whether requests can use it now."""

    name: str
    family: str
    spec: ModelSpec | None
    sha256: str | None
    description: str
    ready: bool
    not_ready_reason: str
    is_default: bool


@dataclass(frozen=True)
class DatasetPairImages:
    """One pair of a dataset on the server with its two image files' bytes (GetDatasetPair):
    ``name_a``/``name_b`` are the files' paths relative to the allowed root that holds them."""

    index: int
    name: str
    same: bool
    image_a: bytes
    image_b: bytes
    name_a: str
    name_b: str


@dataclass(frozen=True)
class PartialMaps:
    """The exact CorrRISE maps over the ``masks`` finished so far ((H, W) float32 each)."""

    masks: int
    s_a: np.ndarray
    s_b: np.ndarray


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as plain JSON values (tuples as lists), the form the job record and the content
    hash keep, and that ``methods.registry.build`` takes back."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[str(key)] = list(value) if isinstance(value, tuple) else value
    return out


class ApiService:
    """The use cases of the API over one job store.

    Args:
        store: the job store (a :class:`~explainer_service.store.RedisJobStore`).
        settings: limits and defaults (default: :func:`get_settings`).
        engine, triton_url: where the models run (see ``pipeline.open_face_model``); a model is
            opened on first use and kept until :meth:`close`.
        enqueue: queues a new job's tasks by id; default: ``worker.enqueue_explain`` on a Celery
            app of ``redis_url`` (imported on first use, so the API starts without the workers'
            code loaded).
        redis_url: the broker of the default ``enqueue`` (default: the store's URL).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        settings: Settings | None = None,
        engine: str = "auto",
        triton_url: str | None = None,
        enqueue: Enqueue | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or get_settings()
        self.engine = engine
        self.triton_url = triton_url
        self._enqueue = enqueue
        self._enqueue_injected = enqueue is not None
        self._enqueue_audit: Enqueue | None = None
        self._redis_url = redis_url or getattr(store, "url", None) or self.settings.redis_url
        self._models: dict[str, FaceModel] = {}
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self._model_locks: dict[str, threading.Lock] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the models (stopping any server started for them)."""
        with self._lock:
            self._models.clear()
            stack, self._stack = self._stack, ExitStack()
        stack.close()

    def __enter__(self) -> ApiService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """BackendUnavailableError unless the store answers."""
        self.store.ping()

    def spec(self, name: str = "") -> ModelSpec:
        """The spec of model ``name`` ("" for the default); UnknownModelError / ModelNotReadyError."""
        from ..models.registry import get_spec

        return get_spec(name or self.settings.default_model)

    def model(self, name: str = "") -> FaceModel:
        """Model ``name`` ("" for the default) on the service's engine, opened once per process."""
        from ..pipeline import open_face_model

        spec = self.spec(name)
        with self._lock:
            lock = self._model_locks.setdefault(spec.name, threading.Lock())
        with lock:  # one opening per model; other models open meanwhile
            model = self._models.get(spec.name)
            if model is None:
                model = self._stack.enter_context(
                    open_face_model(spec.name, engine=self.engine, triton_url=self.triton_url)
                )
                self._models[spec.name] = model
                log.info("model %s opened (engine %s)", spec.name, self.engine)
            return model

    def _enqueue_job(self, job_id: str) -> None:
        if self._enqueue is None:
            worker: Any = importlib.import_module("explainer_service.worker")  # on first use only
            app = worker.make_app(self._redis_url)
            store = self.store

            def enqueue(jid: str) -> None:
                worker.enqueue_explain(app, store, jid)

            self._enqueue = enqueue
        self._enqueue(job_id)

    # -- Verify ---------------------------------------------------------------------------------

    def verify(self, image_a: bytes, image_b: bytes, model: str = "", *, names: Sequence[str] = ("", ""),
               detector: str = "") -> Verification:
        """Verify a pair now (see the module docstring). InputError for a bad image, no face or an
        unknown ``detector`` (``""``: the default), LimitExceededError over the image limits,
        UnknownModelError / ModelNotReadyError."""
        from ..models.base import cosine_to
        from ..pipeline import embed_chips

        spec = self.spec(model)
        t0 = time.perf_counter()
        face_a, face_b = self._align(image_a, image_b, spec, names, align_params(detector))
        t1 = time.perf_counter()
        emb = embed_chips([face_a.chip, face_b.chip], self.model(spec.name))
        score = float(cosine_to(emb[:1], emb[1])[0])
        t2 = time.perf_counter()
        return Verification(
            score=score,
            threshold=spec.threshold,
            decision=decide(score, spec.threshold),
            model=spec.name,
            face_a=FaceRecord.from_aligned(face_a),
            face_b=FaceRecord.from_aligned(face_b),
            align_s=t1 - t0,
            embed_s=t2 - t1,
        )

    def _align(
        self, image_a: bytes, image_b: bytes, spec: ModelSpec, names: Sequence[str], align: Mapping[str, str]
    ) -> tuple[Any, Any]:
        from ..pipeline import align_image

        aligner = aligner_of(align)
        label_a = names[0] if names and names[0] else "image a"
        label_b = names[1] if len(names) > 1 and names[1] else "image b"
        for data, label in ((image_a, label_a), (image_b, label_b)):
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(f"{label}: expected image bytes, got {type(data).__name__}")
        face_a = align_image(bytes(image_a), spec.chip, aligner=aligner, name=label_a)
        face_b = align_image(bytes(image_b), spec.chip, aligner=aligner, name=label_b)
        return face_a, face_b

    # -- Explain --------------------------------------------------------------------------------

    def job_request(
        self, image_a: bytes, image_b: bytes, model: str, method: str, params: Mapping[str, Any], *,
        until: Until | None = None, uncertainty: UncertaintyOptions | None = None, detector: str = "",
    ) -> tuple[str, ModelSpec, dict[str, Any], int]:
        """Check an explain request's method and parameters on the model's chip (limits included)
        and name its job: ``(job_id, spec, job params, total units)``. The images are checked by
        :meth:`explain` when the job is new (the same bytes were checked when it was created).
        ``until``: early stopping (CorrRISE; its ``max_masks`` are the masks, so ``n_masks`` and
        ``budget`` are refused); the job's total is then its first wave. ``uncertainty``: the
        intervals' level and the significance masks' false-discovery rate (kept in the job's
        parameters unless they are the defaults)."""
        from ..methods.registry import check_params, forward_passes
        from ..pipeline import model_info
        from ..worker.plan import SHARDED_METHODS, UNTIL_METHODS

        spec = self.spec(model)
        method = method or "corrrise"
        own = plain_params(params)
        if until is not None:
            if method not in UNTIL_METHODS:
                raise InputError(f"until_agreement: early stopping is for {', '.join(sorted(UNTIL_METHODS))}, "
                                 f"not {method}")
            if "n_masks" in own or "budget" in own:
                raise InputError("until_agreement: the masks are set by max_masks, not by n_masks or budget")
            limit = self.settings.limits.max_masks
            if until.max_masks > limit:
                raise LimitExceededError(f"max_masks {until.max_masks} is over the limit {limit} "
                                         "(set FACEXPLAIN_MAX_MASKS to change it)")
        check_params(method, spec.chip.size, **own, **({} if until is None else {"n_masks": until.max_masks}))
        for data, label in ((image_a, "image a"), (image_b, "image b")):
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(f"{label}: expected image bytes, got {type(data).__name__}")
        job_params: dict[str, Any] = {"method": own, "align": align_params(detector)}
        if until is not None:
            job_params["until"] = until.to_dict()
        if uncertainty is not None and not uncertainty.is_default:
            job_params["uncertainty"] = uncertainty.to_dict()
        # a sharded method's units are its masks (2 forward passes each beside the clean pair's 2)
        total = (forward_passes(method, spec.chip.size, **own) - 2) // 2 if method in SHARDED_METHODS else 1
        if until is not None:
            total = until.wave_end(0)
        from ..store import content_job_id

        job_id = content_job_id(
            "explain",
            [bytes(image_a), bytes(image_b)],
            model=spec.name,
            model_sha256=model_info(spec).sha256 or "",
            method=method,
            params=job_params,
        )
        return job_id, spec, job_params, total

    def explain(
        self,
        image_a: bytes,
        image_b: bytes,
        model: str = "",
        method: str = "",
        params: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
        until: Until | None = None,
        uncertainty: UncertaintyOptions | None = None,
        detector: str = "",
    ) -> tuple[JobRecord, bool]:
        """Submit an explanation: ``(record, reused)``; ``reused`` when the job of this content
        existed and nothing new was queued. Every check runs before the job is created.
        ``until``/``uncertainty``: see :meth:`job_request`."""

        method = method or "corrrise"
        job_id, spec, job_params, total = self.job_request(image_a, image_b, model, method, params or {},
                                                           until=until, uncertainty=uncertainty, detector=detector)
        existing = self._reusable(job_id, force)
        if existing is not None:
            return existing, True
        t0 = time.perf_counter()
        face_a, face_b = self._align(image_a, image_b, spec, ("image a", "image b"),  # bad images, no face: here
                                     job_params["align"])
        faces = _stored_faces(face_a, face_b, spec, job_params["align"], time.perf_counter() - t0)
        self._check_capacity()
        record, created = self.store.create_job(
            job_id, "explain", model=spec.name, method=method, params=job_params, total=total,
            inputs={"a": bytes(image_a), "b": bytes(image_b), **faces},
        )
        if not created:  # another request of the same content won the race
            return record, True
        try:
            self._enqueue_job(job_id)
        except BaseException:
            with contextlib.suppress(FacexplainError):
                self.store.delete_job(job_id)
            raise
        log.info("job %s queued (explain, %s, %s, %d units)", job_id, spec.name, method, total)
        return record, False

    # -- SubmitAudit ----------------------------------------------------------------------------

    def _dataset(self, spec: str) -> list[Any]:
        """The pairs (``datasets.Pair``) of dataset ``spec`` (``KIND:PATH``, PATH under an allowed
        root; the pair list read, no image opened). InputError for an escape, unknown kind or
        missing set."""
        from ..datasets import read_dataset
        from ..worker.audit import dataset_path

        kind, sep, raw = str(spec).partition(":")
        if not sep or not raw:
            raise InputError(f"dataset spec must be KIND:PATH, got {spec!r}")
        path = dataset_path(raw, list(self.settings.dataset_roots))
        return list(read_dataset(f"{kind}:{path}").pairs)

    def _check_dataset_roots(self) -> None:
        if not self.settings.dataset_roots:
            raise DatasetsNotAllowedError(
                "this server allows no dataset: start it with --dataset-root DIR (FACEXPLAIN_DATASET_ROOTS)")

    def dataset_pairs(self, spec: str) -> list[tuple[str, bool]]:
        """``(name, same)`` of every pair of dataset ``spec``, in its order (the names an audit of
        it gives its rows). DatasetsNotAllowedError when the server allows no dataset; InputError
        for an escape, unknown kind or missing set."""
        self._check_dataset_roots()
        return [(_pair_name(p), bool(p.same)) for p in self._dataset(spec)]

    def dataset_pair(self, spec: str, index: int) -> DatasetPairImages:
        """Pair ``index`` of dataset ``spec`` with its two image files' bytes (each path confined
        to the allowed roots, a regular file, under ``max_image_bytes``). Errors as
        :meth:`dataset_pairs`; InputError for an index outside the set or a dataset of arrays;
        LimitExceededError for an image over the byte limit."""
        from ..worker.audit import dataset_path

        self._check_dataset_roots()
        pairs = self._dataset(spec)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(pairs):
            raise InputError(f"dataset {spec!r}: pair index {index!r} is outside its {len(pairs)} pairs "
                             f"(0 to {len(pairs) - 1})")
        pair = pairs[index]
        roots = list(self.settings.dataset_roots)
        images = []
        for ref, label in ((pair.a, "image a"), (pair.b, "image b")):
            if not isinstance(ref, Path):
                raise InputError(f"dataset {spec!r}: pair {index} {label} is an array, not an image file "
                                 "(only datasets of image files can be shown)")
            path = dataset_path(str(ref), roots)
            images.append((_read_image_file(path, f"dataset {spec!r} pair {index} {label}",
                                            self.settings.limits.max_image_bytes), _relative_name(path, roots)))
        (data_a, name_a), (data_b, name_b) = images
        return DatasetPairImages(index, _pair_name(pair), bool(pair.same), data_a, data_b, name_a, name_b)

    def audit_pairs_from_dataset(self, spec: str, limit: int = 0) -> list[tuple[str, bool, str, str]]:
        """The pairs of dataset ``spec`` (``KIND:PATH``, PATH under an allowed root, its images
        too), ``limit`` of them spread evenly over the set as ``datasets.prepare`` spreads them:
        ``(name, same, path a, path b)``. DatasetsNotAllowedError when the server allows no
        dataset; InputError for an escape, unknown kind or missing set."""
        from ..worker.audit import dataset_path

        self._check_dataset_roots()
        roots = list(self.settings.dataset_roots)
        pairs = self._dataset(spec)
        if limit and limit < len(pairs):
            idx = np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))
            pairs = [pairs[i] for i in idx]
        out = []
        for p in pairs:
            if not isinstance(p.a, Path) or not isinstance(p.b, Path):
                raise InputError(f"dataset {spec!r}: only datasets of image files can be audited")
            a, b = dataset_path(str(p.a), roots), dataset_path(str(p.b), roots)
            out.append((_pair_name(p), bool(p.same), str(a), str(b)))
        return out

    def submit_audit(
        self,
        *,
        pairs: Sequence[tuple[bytes, bytes, bool, str]] | None = None,
        dataset: str = "",
        model: str = "",
        methods: Sequence[tuple[str, Mapping[str, Any]]] = (),
        metrics: Sequence[str] = (),
        steps: int = 0,
        substrate: str = "",
        limit: int = 0,
        keep_maps: bool = False,
        force: bool = False,
        detector: str = "",
        uncertainty: UncertaintyOptions | None = None,
    ) -> tuple[JobRecord, bool]:
        """Submit an audit of inline ``pairs`` (image a, image b, same, name) or of a ``dataset``
        spec: ``(record, reused)`` as :meth:`explain`. Methods and parameters are checked on the
        model's chip, metrics and limits before the job exists; images are checked per pair by
        the workers (a bad pair becomes a row with its error). ``uncertainty``: how the kept
        maps' uncertainty is stated (needs ``keep_maps``; kept in the job's parameters unless
        they are the defaults)."""
        from ..methods.registry import check_params
        from ..pipeline import model_info
        from ..store import content_job_id
        from ..worker.audit import AUDIT_METRICS, DEFAULT_STEPS, AuditPairSpec, AuditRequest

        if (pairs is None) == (not dataset):
            raise InputError("an audit needs either inline pairs or a dataset spec (not both)")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InputError(f"limit must be an integer >= 0, got {limit!r}")
        if uncertainty is not None and not keep_maps:
            raise InputError("fdr_q/ci_level state the uncertainty of kept maps: they need keep_maps")
        spec = self.spec(model)
        checked: list[tuple[str, dict[str, Any]]] = []
        for name, params in methods:
            own = plain_params(params)
            check_params(name, spec.chip.size, **own)
            checked.append((name, own))
        unknown = [m for m in metrics if m not in AUDIT_METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(AUDIT_METRICS)})")
        steps = steps or DEFAULT_STEPS
        if not 2 <= steps <= 101:
            raise InputError(f"steps must be between 2 and 101, got {steps}")
        substrate = substrate or "zeros"
        if substrate not in ("zeros", "mean", "blur"):
            raise InputError(f"unknown substrate {substrate!r} (zeros, mean, blur)")
        inputs: dict[str, bytes] = {}
        specs: list[AuditPairSpec] = []
        if pairs is not None:
            chosen = list(pairs)[: limit or None]
            for i, (a, b, same, name) in enumerate(chosen):
                for data, label in ((a, "a"), (b, "b")):
                    if not isinstance(data, (bytes, bytearray, memoryview)) or not data:
                        raise InputError(f"pair {i} image {label}: expected image bytes")
                    size, byte_limit = memoryview(data).nbytes, self.settings.limits.max_image_bytes
                    if size > byte_limit:  # as Verify and Explain refuse it, before anything is stored
                        raise LimitExceededError(
                            f"pair {i} image {label}: encoded image of {size} bytes is over the limit "
                            f"{byte_limit} bytes (set FACEXPLAIN_MAX_IMAGE_BYTES to change it)"
                        )
                inputs[f"a{i}"], inputs[f"b{i}"] = bytes(a), bytes(b)
                specs.append(AuditPairSpec(name or f"pair {i}", bool(same), ("input", f"a{i}"), ("input", f"b{i}")))
        else:
            for name, same, pa, pb in self.audit_pairs_from_dataset(dataset, limit):
                specs.append(AuditPairSpec(name, same, ("path", pa), ("path", pb)))
        if not specs:
            raise InputError("an audit needs at least one pair")
        self.settings.limits.check("max_pairs", len(specs))
        request = AuditRequest(tuple(specs), tuple(checked), tuple(metrics), steps, substrate, bool(keep_maps),
                               align_params(detector), uncertainty)
        params = request.to_params()
        job_id = content_job_id("audit", [inputs[k] for k in sorted(inputs)], model=spec.name,
                                model_sha256=model_info(spec).sha256 or "",
                                method=",".join(n for n, _ in checked), params=params)
        existing = self._reusable(job_id, force)
        if existing is not None:
            return existing, True
        self._check_capacity()
        record, created = self.store.create_job(job_id, "audit", model=spec.name,
                                                method=",".join(n for n, _ in checked), params=params,
                                                total=len(specs), inputs=inputs)
        if not created:
            return record, True
        try:
            self._enqueue_audit_job(job_id)
        except BaseException:
            with contextlib.suppress(FacexplainError):
                self.store.delete_job(job_id)
            raise
        log.info("job %s queued (audit, %s, %d pairs)", job_id, spec.name, len(specs))
        return record, False

    def _enqueue_audit_job(self, job_id: str) -> None:
        if self._enqueue_audit is None:
            if self._enqueue is not None and self._enqueue_injected:
                self._enqueue_audit = self._enqueue
            else:
                worker: Any = importlib.import_module("explainer_service.worker.tasks")
                app = importlib.import_module("explainer_service.worker").make_app(self._redis_url)
                store = self.store

                def enqueue(jid: str) -> None:
                    worker.enqueue_audit(app, store, jid)

                self._enqueue_audit = enqueue
        self._enqueue_audit(job_id)

    def audit_page(self, job_id: str, *, offset: int = 0, limit: int = 100) -> tuple[JobRecord, dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
        """An audit's record, its summary (None until done) and stored rows ``offset`` ..
        ``offset + limit - 1``; InputError for a job that is not an audit."""
        record = self.store.get_job(job_id)
        if record.kind.value != "audit":
            raise InputError(f"job {job_id} is not an audit")
        if offset < 0 or not 0 <= limit <= 1000:
            raise InputError(f"page offset must be >= 0 and size 0..1000, got {offset} and {limit}")
        return record, self.store.get_summary(job_id), self.store.get_pairs(job_id, offset=offset, limit=limit)

    def audit_kept(
        self, job_id: str, indexes: Sequence[int], *, max_bytes: int | None = None
    ) -> tuple[dict[int, dict[str, PairResult]], int]:
        """The kept results (``keep_maps``) of an audit's pairs ``indexes``: by index, each method's
        complete PairResult (``pair_archive``); pairs with none kept (failed, or maps not kept) are
        absent. With ``max_bytes``, pairs are read in order until their archives would pass it (the
        first pair always): also returns how many of ``indexes`` were covered, so that a page of
        maps fits a message. InputError naming the pair for an archive that cannot be read."""
        from ..pair_archive import unpack_pair_results

        out: dict[int, dict[str, PairResult]] = {}
        used = 0
        for n, index in enumerate(indexes):
            blob = self.store.get_pair_maps(job_id, index)
            if blob is None:
                continue
            if max_bytes is not None and n and used + len(blob) > max_bytes:
                return out, n
            used += len(blob)
            results = unpack_pair_results(blob, where=f"job {job_id} pair {index} kept maps")
            if results:
                out[index] = results
        return out, len(indexes)

    def _reusable(self, job_id: str, force: bool) -> JobRecord | None:
        """The stored job of this content id when it can answer the request (the cache hit);
        otherwise (none, ``force``, or a failed/cancelled one) None, after dropping any old job
        whole so that it is computed anew."""
        from ..store import JobState

        existing = self.store.find_job(job_id)
        if existing is None:
            return None
        if not force and existing.state not in (JobState.FAILED, JobState.CANCELLED):
            return existing
        if not existing.final:
            with contextlib.suppress(NotFoundError):
                self.store.request_cancel(job_id)
        with contextlib.suppress(NotFoundError):
            self.store.delete_job(job_id)
        return None

    def _check_capacity(self) -> None:
        limit = self.settings.limits.max_jobs
        counts = self.store.count_by_state()
        active = sum(n for state, n in counts.items() if not state.final)
        if active >= limit:
            raise LimitExceededError(
                f"{active} jobs are queued or running, the limit is {limit} (set FACEXPLAIN_MAX_JOBS "
                "to change it); try again when some have finished"
            )

    # -- jobs -----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord:
        return self.store.get_job(job_id)

    def get_result(self, job_id: str) -> tuple[JobRecord, PairResult]:
        """A succeeded explain job's record and result; JobNotFinishedError for a job in another
        state (the message gives its progress, or its error)."""
        from ..errors import BackendError
        from ..store import JobState

        record = self.store.get_job(job_id)
        if record.kind.value != "explain":
            raise JobNotFinishedError(f"job {job_id} is an audit: this server does not serve audit results yet")
        if record.state is not JobState.DONE:
            raise JobNotFinishedError(_not_finished(record))
        result = self.store.get_result(job_id)
        if result is None:
            raise BackendError(f"job {job_id} succeeded but its result is missing from the store")
        return record, result

    def partial_maps(self, record: JobRecord) -> PartialMaps | None:
        """The exact maps of a sharded job (CorrRISE, corrrise-plus: ``worker.plan.SHARDED_METHODS``)
        over the masks stored so far, made by the method's own ``finish``; None for another method,
        before the first shard, while corrrise-plus has fewer than the 3 masks it needs, or for a
        corrrise-plus config whose maps depend on the chips (superpixels, pool)."""
        from ..worker.explain import build_job_method
        from ..worker.plan import SHARDED_METHODS

        if record.kind.value != "explain" or record.method not in SHARDED_METHODS:
            return None
        merged = self.store.merged_shard(record.id)
        if merged is None or (record.method == "corrrise-plus" and merged.masks < 3):
            return None
        # an early-stopping job's shards are of its max_masks set (build_job_method says so)
        method: Any = build_job_method(record, self.model(record.model))
        if getattr(method.config, "needs_chips", False):
            return None  # maps that depend on the chips: the workers' finish has them, not the API
        explanation = method.finish(merged)
        return PartialMaps(
            masks=int(merged.masks),
            s_a=np.asarray(explanation.s_a, np.float32),
            s_b=np.asarray(explanation.s_b, np.float32),
        )

    def cancel(self, job_id: str) -> JobRecord:
        """Ask a job to stop (a finished job is returned unchanged)."""
        record = self.store.get_job(job_id)
        if record.final:
            return record
        return self.store.request_cancel(job_id)

    def delete(self, job_id: str) -> int:
        """Remove every key of a job now (a running job is asked to stop first): the number of
        store keys removed."""
        record = self.store.get_job(job_id)
        if not record.final:
            with contextlib.suppress(NotFoundError):
                self.store.request_cancel(job_id)
        return self.store.delete_job(job_id)

    def list_jobs(
        self, *, offset: int = 0, limit: int = 50, states: Sequence[str] | None = None, kind: str | None = None
    ) -> tuple[list[JobRecord], bool]:
        """Jobs newest first from ``offset``: ``(jobs, more)``, ``more`` when others follow."""
        if offset < 0 or limit < 0:
            raise InputError(f"page offset and size must be >= 0, got {offset} and {limit}")
        records = self.store.list_jobs(limit=offset + limit + 1, states=states, kind=kind)
        page = records[offset : offset + limit]
        return page, len(records) > offset + limit

    # -- models ---------------------------------------------------------------------------------

    def list_models(self) -> list[ModelEntry]:
        """Every model: the default, the imported ones and the empty slots (not ready)."""
        from ..models.registry import DEFAULT_MODEL, DLIB_RESNET_V1
        from ..models.store import SLOTS, list_records, onnx_path

        default = self.settings.default_model
        records = {r.name: r for r in list_records()}
        out: list[ModelEntry] = []
        if DEFAULT_MODEL not in records:
            out.append(ModelEntry(DEFAULT_MODEL, "dlib", DLIB_RESNET_V1, None, DLIB_RESNET_V1.description, False,
                                  "not built (run `facexplain setup`)", default == DEFAULT_MODEL))
        for r in records.values():
            sha = r.source.get("sha256")
            ready = onnx_path(r.name).is_file()
            out.append(ModelEntry(r.name, r.family, r.spec(), sha if isinstance(sha, str) else None, r.description,
                                  ready, "" if ready else "model.onnx missing (run `facexplain setup`)",
                                  r.name == default))
        for slot in SLOTS:
            if slot.name not in records:
                reason = f"no weights: import them with `facexplain models import FILE --name {slot.name} --family {slot.family}`"
                out.append(ModelEntry(slot.name, slot.family, None, None, slot.description, False, reason,
                                      slot.name == default))
        return out

    def check_model_ready(self, name: str = "") -> ModelSpec:
        """The spec of a model that can be used now (ModelNotReadyError naming why not)."""
        spec = self.spec(name)
        for entry in self.list_models():
            if entry.name == spec.name and not entry.ready:
                raise ModelNotReadyError(f"model {spec.name!r} is not ready: {entry.not_ready_reason}")
        return spec


def _pair_name(pair: Any) -> str:
    """A dataset pair's name: its two images' file names (``a.jpg|b.jpg``)."""
    return f"{PurePath(str(pair.a)).name}|{PurePath(str(pair.b)).name}"


def _relative_name(path: Path, roots: Sequence[Path]) -> str:
    """``path`` relative to the allowed root that holds it (the server's folders stay private)."""
    for root in roots:
        base = root.resolve()
        if base == path or base in path.parents:
            return str(path.relative_to(base)) or path.name
    return path.name


def _read_image_file(path: Path, where: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``: InputError naming ``where`` when it cannot be read,
    LimitExceededError over ``max_bytes`` (checked before reading)."""
    import os

    from ..fileio import open_regular

    try:
        fd = open_regular(str(path))
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise LimitExceededError(f"{where}: image file of {size} bytes is over the limit {max_bytes} bytes "
                                     "(set FACEXPLAIN_MAX_IMAGE_BYTES to change it)")
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise InputError(f"{where}: cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:  # grew since stat
        raise LimitExceededError(f"{where}: image file is over the limit {max_bytes} bytes "
                                 "(set FACEXPLAIN_MAX_IMAGE_BYTES to change it)")
    return data


def _stored_faces(face_a: Any, face_b: Any, spec: ModelSpec, align: Mapping[str, str], align_s: float) -> dict[str, bytes]:
    """The job inputs that keep the faces Explain aligned, named as the worker names the images
    it aligns (``image_a``, ``image_b``), so that the worker does not align the pair again."""
    from ..store.faces import faces_to_inputs

    record_a = dataclasses.replace(FaceRecord.from_aligned(face_a), source="image_a")
    record_b = dataclasses.replace(FaceRecord.from_aligned(face_b), source="image_b")
    return faces_to_inputs(record_a, record_b, spec.chip, align, align_s)


def _not_finished(record: JobRecord) -> str:
    state = record.state.value
    if record.error is not None:
        return f"job {record.id} {state}: {record.error.status}: {record.error.message}"
    if record.final:
        return f"job {record.id} was {state}: it has no result"
    return f"job {record.id} is {state} ({record.done}/{record.total} done): no result yet"
