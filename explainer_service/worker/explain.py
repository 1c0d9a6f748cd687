"""What a worker does for one task of an explain job: the library the Celery shims call.

A task names a job and a unit (a mask shard [lo, hi) of a sharded method, ``plan.SHARDED_METHODS``:
CorrRISE or corrrise-plus, which runs CorrRISE's shards; or the whole pair for any other
method). :func:`run_unit` claims the unit in the store (a redelivered or duplicate task finds it
done, held or stopped and does nothing twice), aligns both uploaded images for the job's model,
builds the method through the registry and computes the unit: its ``run_shard`` for a shard
(stored with ``put_shard``: progress counts its masks once), ``attribute`` for a whole method. The
task that stores the last shard finishes the job (:func:`finish_explain`): under the ``merge``
lease it merges the stored shards in mask order, the method's ``finish`` (CorrRISE's or
CorrRISE+'s, both exact for any merge of the shards) makes the maps, and the
:class:`~explainer_service.results.PairResult` is written once (a finisher that finds a result
only marks the job done), so the result is the same however many workers ran and however often
a part ran.

Cancel is cooperative: the progress callback of the method (:class:`_Guard`, between model
calls) asks the store whether to stop and renews the worker's lease. :func:`handle_failure`
decides what an exception does to the job: a retryable error is tried again after a backoff
until the retry budget is spent, anything else fails the job with a
:class:`~explainer_service.store.JobError` (the error tree's gRPC status and message).

Models are opened per process, lazily (:class:`ModelPool`, after the worker's fork). The faces
of a job come from the store when the API kept the ones it aligned at Explain time
(``store.faces``: used when they were cut for the job's chip and alignment options); otherwise the
worker aligns the uploaded images itself. Either way they are kept for the few latest jobs of
the process (the shards of one job read or align them once). Nothing here logs image bytes, maps
or embeddings.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..alignment import Aligner
from ..errors import (
    CancelledError,
    FacexplainError,
    InputError,
    NotFoundError,
    is_retryable,
)
from ..methods.base import SaliencyMethod
from ..methods.corrrise import CorrRISE
from ..methods.corrrise_plus import CorrRISEPlus
from ..models.base import FaceModel
from ..pipeline import align_image, model_info, open_face_model
from ..results import FaceRecord, PairResult, Timing
from ..spec import ChipSpec
from ..store import ClaimResult, JobError, JobKind, JobRecord, JobState, JobStore
from ..store.faces import StoredFaces, faces_from_inputs
from .plan import Unit, retry_delay

__all__ = [
    "Outcome",
    "ModelPool",
    "WorkerContext",
    "run_unit",
    "finish_explain",
    "settle_cancel",
    "handle_failure",
    "fail_job",
    "job_request",
    "WORKER_ENGINES",
]

log = logging.getLogger(__name__)

#: local: in-process onnxruntime; triton: a Triton server at a HOST:PORT.
WORKER_ENGINES = ("local", "triton")
#: Aligned pairs kept per process (the shards of a job in flight align once).
_FACES_KEPT = 8
#: The method classes that run in mask shards (``plan.SHARDED_METHODS``): CorrRISE's
#: ``run_shard`` / ``ShardResult`` / ``finish``.
_SHARDED = (CorrRISE, CorrRISEPlus)


class Outcome(enum.StrEnum):
    """What a task did."""

    #: computed and stored the unit (and finished the job when it was the last)
    DONE = "done"
    #: the unit was stored already (a redelivered task): nothing computed
    SKIPPED = "skipped"
    #: the job is finished, failed, cancelled, deleted or asked to cancel: nothing to do
    STOPPED = "stopped"
    #: another worker's lease on the unit is live: try again later
    HELD = "held"


class ModelPool:
    """Face models of one worker process, opened on first use and kept, one per model name.

    Args:
        engine: ``"local"`` (in-process onnxruntime) or ``"triton"`` (the server at ``triton_url``).
        triton_url: Triton's gRPC HOST:PORT (engine triton).
        batch_size: images per model call (None: the engine's default).
        threads: onnxruntime's intra-op threads of a local model (None: its default, one per
            core; the worker sets cores / processes so that its processes do not oversubscribe).

    A pool used in a process other than the one that opened its models (after a fork) forgets
    them without closing them (they belong to the parent) and opens its own.
    """

    def __init__(
        self, *, engine: str = "local", triton_url: str | None = None, batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        if engine not in WORKER_ENGINES:
            raise InputError(f"unknown worker engine {engine!r} (available: {', '.join(WORKER_ENGINES)})")
        if engine == "triton" and not triton_url:
            raise InputError("worker engine 'triton' needs a server address (--triton HOST:PORT)")
        self.engine = engine
        self.triton_url = triton_url if engine == "triton" else None
        self.batch_size = batch_size
        self.threads = threads
        self._pid = os.getpid()
        self._models: dict[str, FaceModel] = {}
        self._stack = contextlib.ExitStack()

    @property
    def label(self) -> str:
        """How a result names the engine: ``local`` or ``triton HOST:PORT``."""
        return "local" if self.triton_url is None else f"triton {self.triton_url}"

    def get(self, name: str) -> FaceModel:
        """The model ``name`` of this process (UnknownModelError / ModelNotReadyError when it
        cannot be opened; BackendUnavailableError when Triton does not answer)."""
        if os.getpid() != self._pid:  # forked: the parent's clients are not ours to use or close
            self._models = {}
            self._stack = contextlib.ExitStack()
            self._pid = os.getpid()
        model = self._models.get(name)
        if model is None:
            engine = "triton" if self.triton_url else "local"
            model = self._stack.enter_context(
                open_face_model(name, engine=engine, triton_url=self.triton_url, batch_size=self.batch_size,
                                threads=self.threads)
            )
            self._models[name] = model
            log.info("model %s opened (%s) in process %d", name, self.label, os.getpid())
        return model

    def close(self) -> None:
        """Close the models this process opened."""
        if os.getpid() == self._pid:
            self._stack.close()
        self._models = {}
        self._stack = contextlib.ExitStack()


@dataclass
class _Faces:
    face_a: FaceRecord
    face_b: FaceRecord
    align_s: float
    #: "api" (the faces the API stored with the job) or "worker" (aligned here)
    origin: str = "worker"


@dataclass
class WorkerContext:
    """What the tasks of one worker process share: the store, the models, the worker's id (in
    leases) and how long a lease lasts. ``alignments`` counts the pairs this process aligned
    itself (not those whose faces came from the store)."""

    store: JobStore
    models: ModelPool
    worker: str
    lease_s: float
    _faces: OrderedDict[tuple[str, str, int], _Faces] = field(default_factory=OrderedDict)
    alignments: int = 0

    def faces(self, record: JobRecord, chip: ChipSpec, align: Mapping[str, Any]) -> _Faces:
        """Both faces of the job cut for ``chip``: the API's stored ones when they match the
        job's chip and alignment options, else the uploaded images aligned here (kept for the
        job's next shards either way)."""
        key = (record.id, chip.kind, chip.size)
        found = self._faces.get(key)
        if found is not None:
            self._faces.move_to_end(key)
            return found
        faces = self._stored_faces(record.id, chip, align) or self._align(record.id, chip, align)
        self._faces[key] = faces
        while len(self._faces) > _FACES_KEPT:
            self._faces.popitem(last=False)
        return faces

    def _stored_faces(self, job_id: str, chip: ChipSpec, align: Mapping[str, Any]) -> _Faces | None:
        """The faces the API stored with the job, or None (absent, damaged, or cut for another
        chip or other alignment options: the worker aligns instead)."""
        store = self.store
        try:
            stored: StoredFaces = faces_from_inputs(lambda name: store.get_input(job_id, name))
        except NotFoundError:
            store.get_job(job_id)  # a deleted job stops here; a job without stored faces aligns
            return None
        except InputError as e:
            log.warning("job %s: stored faces not used (%s); aligning the images", job_id, e)
            return None
        if not stored.matches(chip, align):
            log.info("job %s: stored faces were cut for %s %d px %s, the job needs %s %d px %s; aligning",
                     job_id, stored.chip.kind, stored.chip.size, dict(stored.align), chip.kind, chip.size, dict(align))
            return None
        log.debug("job %s: faces aligned by the API used", job_id)
        return _Faces(stored.face_a, stored.face_b, stored.align_s, origin="api")

    def _align(self, job_id: str, chip: ChipSpec, align: Mapping[str, Any]) -> _Faces:
        aligner = Aligner(multiple_faces=str(align.get("face", "largest")), pre_aligned=str(align.get("aligned", "auto")))
        t0 = time.perf_counter()
        face_a = align_image(self.store.get_input(job_id, "a"), chip, aligner=aligner, name="image_a")
        face_b = align_image(self.store.get_input(job_id, "b"), chip, aligner=aligner, name="image_b")
        self.alignments += 1
        return _Faces(FaceRecord.from_aligned(face_a), FaceRecord.from_aligned(face_b), time.perf_counter() - t0)

    def forget(self, job_id: str) -> None:
        """Drop the job's aligned faces (it is finished)."""
        for key in [k for k in self._faces if k[0] == job_id]:
            del self._faces[key]


def job_request(record: JobRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method parameters and alignment options of an explain job's record (``params``:
    ``{"method": {...}, "align": {"face": ..., "aligned": ...}}``); InputError otherwise."""
    if record.kind is not JobKind.EXPLAIN:
        raise InputError(f"job {record.id} is an {record.kind.value} job, not an explanation")
    method = record.params.get("method", {})
    align = record.params.get("align", {})
    if not isinstance(method, dict) or not isinstance(align, dict):
        raise InputError(f"job {record.id}: parameters must be {{'method': {{...}}, 'align': {{...}}}}")
    unknown = sorted(set(align) - {"face", "aligned"})
    if unknown:
        raise InputError(f"job {record.id}: unknown alignment option(s) {', '.join(unknown)} (face, aligned)")
    return method, align


class _Guard:
    """The method's progress callback: stops the work when the job is to stop (CancelledError)
    and renews the worker's lease on the unit every third of its length."""

    def __init__(self, ctx: WorkerContext, job_id: str, unit: str) -> None:
        self.ctx, self.job_id, self.unit = ctx, job_id, unit
        self._renewed = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.ctx.store.cancel_requested(self.job_id):
            raise CancelledError(f"job {self.job_id} was cancelled")
        if time.monotonic() - self._renewed >= self.ctx.lease_s / 3:
            claim = self.ctx.store.claim(self.job_id, self.unit, self.ctx.worker, lease_s=self.ctx.lease_s)
            self._renewed = time.monotonic()
            if claim is ClaimResult.STOPPED:
                raise CancelledError(f"job {self.job_id} was cancelled")


def settle_cancel(store: JobStore, job_id: str) -> None:
    """Mark a job whose cancel was asked for as cancelled (nothing when it is final or gone)."""
    record = store.find_job(job_id)
    if record is not None and record.cancel_requested and not record.final:
        with contextlib.suppress(NotFoundError):
            store.set_state(job_id, JobState.CANCELLED)


def _build(ctx: WorkerContext, record: JobRecord) -> tuple[FaceModel, SaliencyMethod, dict[str, Any]]:
    from ..methods import build

    method_params, align = job_request(record)
    model = ctx.models.get(record.model)
    return model, build(record.method, model, **method_params), align


def _result(
    ctx: WorkerContext, model: FaceModel, explanation: Any, faces: _Faces, explain_s: float
) -> PairResult:
    return PairResult.from_explanation(
        explanation,
        faces.face_a,
        faces.face_b,
        model_info(model.spec),
        engine=ctx.models.label,
        server_masks=bool(getattr(model, "server_masks", False)),
        timing=Timing(align_s=faces.align_s, explain_s=max(0.0, explain_s)),
    )


def run_unit(ctx: WorkerContext, job_id: str, unit: Unit) -> Outcome:
    """Do one unit of an explain job (see the module docstring).

    Raises:
        NotFoundError: the job does not exist (deleted or expired).
        CancelledError: a cancel was asked for while the unit ran.
        InputError, FaceNotFoundError, LimitExceededError, UnknownModelError...: the request
            cannot succeed (the job is to fail).
        TransientError: the model server or the store did not answer (worth retrying).
    """
    store = ctx.store
    record = store.get_job(job_id)
    claim = store.claim(job_id, unit.lease, ctx.worker, lease_s=ctx.lease_s)
    if claim is ClaimResult.STOPPED:
        settle_cancel(store, job_id)
        return Outcome.STOPPED
    if claim is ClaimResult.HELD:
        return Outcome.HELD
    if claim is ClaimResult.DONE:  # a redelivered shard: the job may still want its finisher
        record = store.get_job(job_id)
        if record.total > 0 and record.done >= record.total:
            finished = finish_explain(ctx, job_id)
            return Outcome.SKIPPED if finished is Outcome.DONE else finished
        return Outcome.SKIPPED
    model, method, align = _build(ctx, record)
    faces = ctx.faces(record, model.spec.chip, align)
    chip_a, chip_b = faces.face_a.chip, faces.face_b.chip
    if chip_a is None or chip_b is None:  # from_aligned always keeps the chips
        raise InputError(f"job {job_id}: aligned faces without chips")
    guard = _Guard(ctx, job_id, unit.lease)
    if unit.lo is not None and unit.hi is not None:
        if not isinstance(method, _SHARDED):
            raise InputError(f"job {job_id}: method {record.method} does not run in mask shards")
        n_masks = method.config.masks.n_masks
        if record.total != n_masks:
            raise InputError(f"job {job_id}: its total {record.total} is not the method's {n_masks} masks")
        shard = method.run_shard(chip_a, chip_b, unit.lo, unit.hi, progress=guard)
        store.put_shard(job_id, shard)
        log.info("job %s: shard %s stored by %s", job_id, unit.lease, ctx.worker)
        record = store.get_job(job_id)
        if record.done >= record.total:
            finish_explain(ctx, job_id)
        return Outcome.DONE
    # the whole method in one task
    if store.get_result(job_id) is None:
        t0 = time.perf_counter()
        explanation = method.attribute(chip_a, chip_b, progress=guard)
        store.put_result(job_id, _result(ctx, model, explanation, faces, time.perf_counter() - t0))
    store.report_progress(job_id, max(1, record.total))
    store.set_state(job_id, JobState.DONE)
    ctx.forget(job_id)
    return Outcome.DONE


def finish_explain(ctx: WorkerContext, job_id: str) -> Outcome:
    """Finish a sharded job (CorrRISE, corrrise-plus) whose shards are all stored: merge them, make
    the maps and write the result once, then mark the job done. Idempotent: a second finisher finds the ``merge`` lease
    held (HELD: try later), or the job done (STOPPED), or the result written (only marks done)."""
    store = ctx.store
    claim = store.claim(job_id, "merge", ctx.worker, lease_s=ctx.lease_s)
    if claim is ClaimResult.STOPPED:
        settle_cancel(store, job_id)
        return Outcome.STOPPED
    if claim is ClaimResult.HELD:
        return Outcome.HELD
    record = store.get_job(job_id)
    if store.get_result(job_id) is None:
        merged = store.merged_shard(job_id)
        if merged is None or not merged.covers(record.total):
            covered = "none" if merged is None else f"{merged.ranges}"
            raise InputError(f"job {job_id}: the stored shards cover {covered}, not masks [0, {record.total})")
        model, method, align = _build(ctx, record)
        if not isinstance(method, _SHARDED):
            raise InputError(f"job {job_id}: method {record.method} has no shards to merge")
        faces = ctx.faces(record, model.spec.chip, align)
        started = record.started_at if record.started_at is not None else record.created_at
        result = _result(ctx, model, method.finish(merged), faces, record.updated_at - started)
        store.put_result(job_id, result)
        log.info("job %s: %d shards merged by %s", job_id, len(store.get_shards(job_id)), ctx.worker)
    store.set_state(job_id, JobState.DONE)
    ctx.forget(job_id)
    return Outcome.DONE


def handle_failure(store: JobStore, job_id: str, exc: BaseException, *, failures: int, budget: int) -> float | None:
    """What an exception of a task does to its job. Returns the seconds to wait before trying
    the task again (a retryable error with ``failures`` < ``budget``), or None when the task is
    over: the job is gone (deleted/expired: nothing to record), cancelled (marked so), or failed
    with the exception's :class:`JobError` (permanent, or retries spent)."""
    if isinstance(exc, NotFoundError) and store.find_job(job_id) is None:
        log.info("job %s is gone (deleted or expired): task dropped", job_id)
        return None
    if isinstance(exc, CancelledError):
        settle_cancel(store, job_id)
        return None
    if is_retryable(exc) and failures < budget:
        import random

        delay = retry_delay(failures, jitter=random.random() * 0.5)
        log.warning("job %s: %s; retry %d of %d in %.1f s", job_id, _describe(exc), failures + 1, budget, delay)
        return delay
    error = JobError.from_exception(exc)
    if is_retryable(exc):
        error = JobError(error.status, f"{error.message} (gave up after {budget} retries)")
    fail_job(store, job_id, error)
    return None


def fail_job(store: JobStore, job_id: str, error: JobError) -> None:
    """Mark the job failed with ``error`` (nothing when it is gone or already final)."""
    log.warning("job %s failed: %s %s", job_id, error.status, error.message)
    with contextlib.suppress(NotFoundError):
        store.set_state(job_id, JobState.FAILED, error=error)


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FacexplainError) else type(exc).__name__
