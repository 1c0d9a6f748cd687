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

An early-stopping CorrRISE job (``plan.Until``) runs in waves of the library's step shards: the
task that stores the last shard of a wave decides under the ``merge`` lease
(:func:`advance_until`): the stored shards merged in mask order are checked at every step end of
the wave with ``CorrRISE.attribute_until``'s own rule (``predicted_agreement``), and the job is
finished with the first prefix that reaches the agreement (``finish_until``: the library's result)
or, when none does and masks are left, the next wave is queued (the job's ``total`` moved first,
then its shards sent through ``WorkerContext.send``). The decision is idempotent: a redelivered
shard or a second decider finds the wave incomplete, the next wave queued, or the job done.

The uncertainty options of a job (``uncertainty``: ``fdr_q``/``ci_level``) restate the finished
explanation's intervals and significance masks (``explanation.restate``).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..alignment import DEFAULT_DETECTOR, Aligner
from ..errors import (
    CancelledError,
    FacexplainError,
    InputError,
    NotFoundError,
    is_retryable,
)
from ..explanation import restate
from ..methods.base import SaliencyMethod
from ..methods.corrrise import CorrRISE
from ..methods.corrrise_plus import CorrRISEPlus
from ..models.base import FaceModel
from ..pipeline import align_image, model_info, open_face_model
from ..results import FaceRecord, PairResult, Timing
from ..spec import ChipSpec
from ..store import ClaimResult, JobError, JobKind, JobRecord, JobState, JobStore
from ..store.faces import StoredFaces, faces_from_inputs
from ..uncertainty import UncertaintyOptions
from .plan import UNTIL_METHODS, Unit, Until, plan_shards, retry_delay

__all__ = [
    "Outcome",
    "ModelPool",
    "WorkerContext",
    "run_unit",
    "finish_explain",
    "advance_until",
    "job_options",
    "build_job_method",
    "settle_cancel",
    "claim_merge",
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
    #: sends the tasks of units of a job (``tasks.send_units`` on the worker's app): the next wave
    #: of an early-stopping job; None outside a Celery worker (the wave is left to the sweep)
    send: Callable[[JobRecord, Sequence[Unit]], None] | None = None

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
        aligner = Aligner(multiple_faces=str(align.get("face", "largest")), pre_aligned=str(align.get("aligned", "auto")),
                          detector=str(align.get("detector", DEFAULT_DETECTOR)))
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
    unknown = sorted(set(align) - {"face", "aligned", "detector"})
    if unknown:
        raise InputError(f"job {record.id}: unknown alignment option(s) {', '.join(unknown)} "
                         "(face, aligned, detector)")
    return method, align


def job_options(record: JobRecord) -> tuple[Until | None, UncertaintyOptions]:
    """An explain job's early stopping (None: a fixed mask count) and uncertainty options (its
    ``until`` and ``uncertainty`` parameters; absent: the defaults); InputError when malformed."""
    until = Until.from_params(record.params)
    if until is not None and record.method not in UNTIL_METHODS:
        raise InputError(f"job {record.id}: method {record.method} does not stop early")
    return until, UncertaintyOptions.from_dict(record.params.get("uncertainty", {}), f"job {record.id} uncertainty")


def build_job_method(record: JobRecord, model: FaceModel) -> SaliencyMethod:
    """The job's method over ``model`` (through the registry): an early-stopping job's CorrRISE
    draws from a set of ``max_masks`` masks (as ``attribute_until``'s)."""
    from ..methods import build

    method_params, _align = job_request(record)
    until, _options = job_options(record)
    extra = {} if until is None else {"n_masks": until.max_masks}
    return build(record.method, model, **method_params, **extra)


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


def claim_merge(ctx: WorkerContext, job_id: str) -> Outcome | None:
    """Take the job's ``merge`` lease (one finisher at a time): None when taken, else the outcome
    to return: STOPPED for a job that is final (a cancel asked for is settled), HELD while another
    worker holds it."""
    claim = ctx.store.claim(job_id, "merge", ctx.worker, lease_s=ctx.lease_s)
    if claim is ClaimResult.STOPPED:
        settle_cancel(ctx.store, job_id)
        return Outcome.STOPPED
    if claim is ClaimResult.HELD:
        return Outcome.HELD
    return None


def _build(ctx: WorkerContext, record: JobRecord) -> tuple[FaceModel, SaliencyMethod, dict[str, Any]]:
    _method_params, align = job_request(record)
    model = ctx.models.get(record.model)
    return model, build_job_method(record, model), align


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
        if job_options(record)[0] is not None:  # an early-stopping job: its wave's decision
            decided = advance_until(ctx, job_id)
            return Outcome.STOPPED if decided is Outcome.STOPPED else Outcome.SKIPPED
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
        until = job_options(record)[0]
        if until is None and record.total != n_masks:
            raise InputError(f"job {job_id}: its total {record.total} is not the method's {n_masks} masks")
        if until is not None and (unit.hi > record.total or (unit.lo, unit.hi) not in plan_shards(
                record.total, until.step)):
            raise InputError(f"job {job_id}: masks [{unit.lo}, {unit.hi}) are not a step of its queued waves")
        shard = method.run_shard(chip_a, chip_b, unit.lo, unit.hi, progress=guard)
        store.put_shard(job_id, shard)
        log.info("job %s: shard %s stored by %s", job_id, unit.lease, ctx.worker)
        if until is not None:
            advance_until(ctx, job_id)
            return Outcome.DONE
        record = store.get_job(job_id)
        if record.done >= record.total:
            finish_explain(ctx, job_id)
        return Outcome.DONE
    # the whole method in one task
    if store.get_result(job_id) is None:
        t0 = time.perf_counter()
        explanation = restate(method.attribute(chip_a, chip_b, progress=guard), job_options(record)[1])
        store.put_result(job_id, _result(ctx, model, explanation, faces, time.perf_counter() - t0))
    store.report_progress(job_id, max(1, record.total))
    store.set_state(job_id, JobState.DONE)
    ctx.forget(job_id)
    return Outcome.DONE


def _finish(method: Any, merged: Any, faces: Any) -> Any:
    """The method's maps of the merged shards; corrrise-plus configs whose maps depend on the
    chips (superpixels, pool) get the job's aligned chips."""
    if getattr(getattr(method, "config", None), "needs_chips", False):
        return method.finish(merged, chips=(faces.face_a.chip, faces.face_b.chip))
    return method.finish(merged)


def finish_explain(ctx: WorkerContext, job_id: str) -> Outcome:
    """Finish a sharded job (CorrRISE, corrrise-plus) whose shards are all stored: merge them, make
    the maps and write the result once, then mark the job done. Idempotent: a second finisher finds the ``merge`` lease
    held (HELD: try later), or the job done (STOPPED), or the result written (only marks done)."""
    store = ctx.store
    refused = claim_merge(ctx, job_id)
    if refused is not None:
        return refused
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
        explanation = restate(_finish(method, merged, faces), job_options(record)[1])
        result = _result(ctx, model, explanation, faces, record.updated_at - started)
        store.put_result(job_id, result)
        log.info("job %s: %d shards merged by %s", job_id, len(store.get_shards(job_id)), ctx.worker)
    store.set_state(job_id, JobState.DONE)
    ctx.forget(job_id)
    return Outcome.DONE


def _prefixes(shards: Sequence[Any], ends: Sequence[int]) -> tuple[int, dict[int, Any]]:
    """The masks [0, c) the stored ``shards`` (sorted by start) cover without a gap, and their
    merges in mask order ending at each of ``ends`` within [0, c)."""
    merged: Any = None
    out: dict[int, Any] = {}
    for shard in shards:
        if shard.start != (0 if merged is None else merged.stop):
            break
        merged = shard if merged is None else merged.merge(shard)
        if merged.stop in ends:
            out[merged.stop] = merged
    return (0 if merged is None else merged.stop), out


def advance_until(ctx: WorkerContext, job_id: str) -> Outcome:
    """An early-stopping job's decision once a wave's shards are stored (module docstring): finish
    it with the first step prefix of the wave whose maps reach the agreement (or with all
    ``max_masks``), else queue the next wave. Under the ``merge`` lease; idempotent: nothing
    happens while the wave's shards are missing or once the next wave is queued (DONE: nothing
    left to do here), HELD when another worker decides, STOPPED when the job is final."""
    store = ctx.store
    record = store.get_job(job_id)
    until, options = job_options(record)
    if until is None:
        raise InputError(f"job {job_id} does not stop early")
    if record.done < record.total:  # a shard of the queued waves is not stored yet (each counts once)
        return Outcome.DONE
    refused = claim_merge(ctx, job_id)
    if refused is not None:
        return refused
    record = store.get_job(job_id)  # the frontier may have moved before the claim
    frontier = record.total
    if store.get_result(job_id) is not None:
        store.set_state(job_id, JobState.DONE)
        ctx.forget(job_id)
        return Outcome.DONE
    ends = until.boundaries(until.wave_start(frontier), frontier)
    covered, prefixes = _prefixes(store.get_shards(job_id), ends)
    if covered < frontier:  # a shard of the wave is missing: its task decides when it stores it
        store.release(job_id, "merge", ctx.worker)
        return Outcome.DONE
    model, method, align = _build(ctx, record)
    if not isinstance(method, CorrRISE):
        raise InputError(f"job {job_id}: method {record.method} does not stop early")
    stop: tuple[int, float | None] | None = None
    reached: float | None = None
    for end in ends:
        reached = method.predicted_agreement(method.finish(prefixes[end]))
        if (reached is not None and reached >= until.agreement) or end == until.max_masks:
            stop = (end, reached)
            break
    if stop is None:
        nxt = until.wave_end(frontier)
        store.report_progress(job_id, record.done, total=nxt)  # the frontier first: a lost send is the sweep's
        units = [Unit(lo, hi) for lo, hi in plan_shards(nxt, until.step) if lo >= frontier]
        log.info("job %s: agreement %s < %g after %d masks; wave [%d, %d) queued by %s", job_id,
                 "unknown" if reached is None else f"{reached:.4f}", until.agreement, frontier, frontier, nxt,
                 ctx.worker)
        store.release(job_id, "merge", ctx.worker)
        if ctx.send is not None:
            ctx.send(store.get_job(job_id), units)
        return Outcome.DONE
    end, reached = stop
    explanation = method.finish_until(prefixes[end], agreement=until.agreement, max_masks=until.max_masks,
                                      step=until.step, reached=reached)
    faces = ctx.faces(record, model.spec.chip, align)
    started = record.started_at if record.started_at is not None else record.created_at
    store.put_result(job_id, _result(ctx, model, restate(explanation, options), faces, record.updated_at - started))
    log.info("job %s: stopped at %d of %d masks (%d computed) by %s", job_id, end, until.max_masks, covered,
             ctx.worker)
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
