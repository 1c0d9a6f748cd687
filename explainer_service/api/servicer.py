"""The ``facexplain.v1.Facexplain`` servicer: a thin shim over :class:`~.service.ApiService`.

Each call parses its request (:mod:`.convert`, ids checked), calls one use case of the service in a
worker thread (the use cases block on Redis and the models; the event loop never does), and formats
the answer. An exception becomes the status of ``errors.grpc_status`` with the error's own message
(:func:`.status.status_of`): bad input is INVALID_ARGUMENT / RESOURCE_EXHAUSTED / NOT_FOUND, never
INTERNAL; anything that is not facexplain's is a bug, logged with its traceback (request data is
never logged) and answered INTERNAL naming its type only.

WatchJob reads the job whenever the store announces a change (``store.events``: one pub/sub
listener per server, no thread per watcher) and at the latest every ``watch_fallback_s`` (a lost
notification costs at most that), or every ``watch_poll_s`` while no notifications arrive (the
listener is down, or the store publishes none); it sends the job whenever its state, progress or
cancel flag changes, plus, when asked, the exact running CorrRISE maps whenever more masks are
done, and ends after the terminal state. SubmitAudit passes inline pairs or a dataset spec (resolved
under the server's dataset roots) to ``ApiService.submit_audit``; GetResult on an audit answers a
page of its rows (``page_token`` is the decimal offset of the page; each row with its methods' kept
PairResults unless ``summary_only``) and, once it finished, its summary. DeleteJob answers the
number of store keys it removed. ListDatasetPairs pages a dataset's pair list (``page_token`` the
decimal offset) and GetDatasetPair sends one pair's image files, both read only under the
server's dataset roots (``ApiService.dataset_pairs`` / ``dataset_pair``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from ..errors import InputError
from ..results import Timing
from ..store.events import JobEvents, JobWaiter
from . import convert
from .pb import audit_pb2, service_pb2, service_pb2_grpc, types_pb2
from .service import ApiService, ModelEntry
from .status import status_of

__all__ = ["FacexplainServicer", "DEFAULT_WATCH_POLL_S", "DEFAULT_WATCH_FALLBACK_S", "MAX_PAGE_SIZE"]

log = logging.getLogger(__name__)

#: Seconds between two reads of a watched job while no change notifications arrive.
DEFAULT_WATCH_POLL_S = 0.2
#: Longest wait between two reads of a watched job while notifications arrive (a lost one costs
#: at most this).
DEFAULT_WATCH_FALLBACK_S = 1.0
#: Largest page of ListJobs / GetResult rows.
MAX_PAGE_SIZE = 1000
_DEFAULT_JOBS_PAGE = 50
_DEFAULT_PAIRS_PAGE = 100

_T = TypeVar("_T")

_STATE_NAMES = {code: name for name, code in convert.JOB_STATES.items()}
_KIND_NAMES = {code: name for name, code in convert.JOB_KINDS.items()}


def _job_id(value: str, field: str = "id") -> str:
    from ..store.keys import check_job_id

    try:
        return check_job_id(value)
    except InputError as e:
        raise InputError(f"{field}: {e}") from None


def _page(token: str, size: int, default: int) -> tuple[int, int]:
    if size < 0:
        raise InputError(f"page_size must be >= 0, got {size}")
    if size > MAX_PAGE_SIZE:
        raise InputError(f"page_size {size} is over {MAX_PAGE_SIZE}")
    if token and not (token.isascii() and token.isdigit() and len(token) <= 12):
        raise InputError("page_token: not a token this server gave")
    return int(token or 0), size or default


@contextlib.asynccontextmanager
async def _no_events() -> AsyncIterator[JobWaiter]:
    """A waiter nothing wakes (a store without notifications: the watcher polls)."""
    yield JobWaiter()


def _model_message(entry: ModelEntry) -> types_pb2.ModelInfo:
    if entry.spec is not None:
        from ..results import ModelInfo

        msg = convert.model_info_to_message(
            ModelInfo.from_spec(entry.spec, entry.sha256), family=entry.family, ready=entry.ready,
            not_ready_reason=entry.not_ready_reason, is_default=entry.is_default,
        )
    else:
        msg = types_pb2.ModelInfo(name=entry.name, family=entry.family, ready=False,
                                  not_ready_reason=entry.not_ready_reason, is_default=entry.is_default)
    msg.description = entry.description
    return msg


class FacexplainServicer(service_pb2_grpc.FacexplainServicer):
    """The API's calls over ``service`` (see the module docstring)."""

    def __init__(
        self, service: ApiService, *, watch_poll_s: float = DEFAULT_WATCH_POLL_S,
        watch_fallback_s: float = DEFAULT_WATCH_FALLBACK_S,
    ) -> None:
        if not watch_poll_s > 0 or not watch_fallback_s > 0:
            raise InputError(f"watch periods must be > 0 s, got {watch_poll_s!r} and {watch_fallback_s!r}")
        self.service = service
        self.watch_poll_s = float(watch_poll_s)
        self.watch_fallback_s = float(watch_fallback_s)
        self._events: JobEvents | None = None
        self._events_made = False

    async def aclose(self) -> None:
        """Stop the job-events listener (after the server stopped; a later WatchJob starts it again)."""
        if self._events is not None:
            await self._events.aclose()

    def _job_events(self) -> JobEvents | None:
        """The store's change notifications (made on the first WatchJob, in the server's loop)."""
        if not self._events_made:
            self._events = JobEvents.for_store(self.service.store)
            self._events_made = True
        return self._events

    # -- plumbing -------------------------------------------------------------------------------

    async def _abort(self, context: Any, exc: BaseException) -> NoReturn:
        status, message = status_of(exc)
        if status == "INTERNAL":
            log.error("an API call failed: %s", message, exc_info=(type(exc), exc, exc.__traceback__))
        await context.abort(grpc.StatusCode[status], message)
        raise AssertionError("abort returned")  # pragma: no cover - abort always raises

    async def _run(self, context: Any, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args)`` in a worker thread; its exception as the call's status."""
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except Exception as exc:
            await self._abort(context, exc)

    # -- calls ----------------------------------------------------------------------------------

    async def Verify(self, request: service_pb2.VerifyRequest, context: Any) -> service_pb2.VerifyResponse:
        return await self._run(context, self._verify, request)

    def _verify(self, request: service_pb2.VerifyRequest) -> service_pb2.VerifyResponse:
        pair = request.pair
        v = self.service.verify(pair.a.data, pair.b.data, request.model, names=(pair.a.name, pair.b.name),
                                detector=request.detector)
        msg = service_pb2.VerifyResponse(
            score=v.score,
            decision=convert.decision_to_message(v.decision),
            model=v.model,
            face_a=convert.face_to_message(v.face_a, include_chip=request.include_chips),
            face_b=convert.face_to_message(v.face_b, include_chip=request.include_chips),
            timing=types_pb2.Timing(**Timing(align_s=v.align_s, explain_s=v.embed_s).to_dict()),
        )
        if v.threshold is not None:
            msg.threshold = float(v.threshold)
        return msg

    async def Explain(self, request: service_pb2.ExplainRequest, context: Any) -> service_pb2.SubmitResponse:
        return await self._run(context, self._explain, request)

    def _explain(self, request: service_pb2.ExplainRequest) -> service_pb2.SubmitResponse:
        method = request.method or "corrrise"
        params = convert.request_params(method, dict(request.params))
        until, uncertainty = convert.explain_options(request)
        record, reused = self.service.explain(
            request.pair.a.data, request.pair.b.data, request.model, method, params, force=request.force,
            until=until, uncertainty=uncertainty, detector=request.detector,
        )
        return service_pb2.SubmitResponse(job=convert.job_to_message(record), reused=reused)

    async def GetJob(self, request: service_pb2.JobRef, context: Any) -> types_pb2.Job:
        return await self._run(context, self._get_job, request.id)

    def _get_job(self, job_id: str) -> types_pb2.Job:
        return convert.job_to_message(self.service.get_job(_job_id(job_id)))

    async def WatchJob(self, request: service_pb2.WatchJobRequest, context: Any) -> AsyncIterator[service_pb2.JobUpdate]:
        events = self._job_events()
        async with events.subscribe(request.id) if events is not None else _no_events() as waiter:
            async for update in self._watch(request, context, events, waiter):
                yield update

    async def _watch(
        self, request: service_pb2.WatchJobRequest, context: Any, events: JobEvents | None, waiter: JobWaiter
    ) -> AsyncIterator[service_pb2.JobUpdate]:
        last: tuple[Any, ...] | None = None
        masks_sent = -1
        while True:
            waiter.clear()  # before the read: a change after it wakes the wait below
            record = await self._run(context, self._watched, request.id)
            key = (record.state, record.done, record.total, record.cancel_requested, record.error)
            if key != last:
                update = service_pb2.JobUpdate(job=convert.job_to_message(record))
                if request.partial_maps and record.done != masks_sent:
                    partial = await self._run(context, self.service.partial_maps, record)
                    if partial is not None and partial.masks != masks_sent:
                        update.partial.CopyFrom(service_pb2.PartialMaps(
                            masks=partial.masks,
                            s_a=convert.array_to_message(partial.s_a, where="s_a"),
                            s_b=convert.array_to_message(partial.s_b, where="s_b"),
                        ))
                        masks_sent = partial.masks
                yield update
                last = key
            if record.final:
                return
            await waiter.wait(self.watch_fallback_s if events is not None and events.live else self.watch_poll_s)

    def _watched(self, job_id: str) -> Any:
        return self.service.get_job(_job_id(job_id))

    async def GetResult(self, request: service_pb2.GetResultRequest, context: Any) -> service_pb2.GetResultResponse:
        return await self._run(context, self._get_result, request)

    def _get_result(self, request: service_pb2.GetResultRequest) -> service_pb2.GetResultResponse:
        offset, size = _page(request.page_token, request.page_size, 100)
        job_id = _job_id(request.id)
        if self.service.get_job(job_id).kind.value == "audit":
            return self._audit_result(job_id, offset, size, with_results=not request.summary_only)
        record, result = self.service.get_result(job_id)
        return service_pb2.GetResultResponse(
            job=convert.job_to_message(record),
            pair=convert.pair_result_to_message(result, include_arrays=not request.summary_only),
        )

    def _audit_result(self, job_id: str, offset: int, size: int, *, with_results: bool) -> service_pb2.GetResultResponse:
        record, summary, rows = self.service.audit_page(job_id, offset=offset, limit=size)
        # pages cover pair indexes offset .. offset + size - 1: rows not stored yet are absent
        total = int(record.total)
        end = offset + size
        kept: dict[int, Any] = {}
        if with_results:  # a page of maps ends early rather than pass half the message limit
            budget = self.service.settings.limits.max_message_bytes // 2
            kept, covered = self.service.audit_kept(job_id, [i for i, _ in rows], max_bytes=budget)
            if covered < len(rows):
                end, rows = rows[covered][0], rows[:covered]
        audit = audit_pb2.AuditResult(
            rows=[convert.audit_row_to_message(row, results=kept.get(i)) for i, row in rows], total_rows=total)
        if summary is not None:
            audit.summary.CopyFrom(convert.audit_summary_to_message(summary))
        if end < total:
            audit.next_page_token = str(end)
        return service_pb2.GetResultResponse(job=convert.job_to_message(record), audit=audit)

    async def SubmitAudit(self, request: audit_pb2.SubmitAuditRequest, context: Any) -> service_pb2.SubmitResponse:
        return await self._run(context, self._submit_audit, request)

    def _submit_audit(self, request: audit_pb2.SubmitAuditRequest) -> service_pb2.SubmitResponse:
        source = request.WhichOneof("source")
        if source is None:
            raise InputError("an audit needs inline pairs or a dataset spec")
        if request.limit < 0:
            raise InputError(f"limit must be >= 0, got {request.limit}")
        if request.steps < 0:
            raise InputError(f"steps must be >= 0, got {request.steps}")
        methods: list[tuple[str, dict[str, Any]]] = []
        for i, m in enumerate(request.methods):
            if not m.name:
                raise InputError(f"methods[{i}]: a method needs a name")
            methods.append((m.name, convert.request_params(m.name, dict(m.params))))
        pairs = None
        if source == "pairs":
            pairs = [(p.pair.a.data, p.pair.b.data, bool(p.same), p.name) for p in request.pairs.pairs]
            if not pairs:
                raise InputError("pairs: an audit needs at least one pair")
        record, reused = self.service.submit_audit(
            pairs=pairs, dataset=request.dataset if source == "dataset" else "", model=request.model,
            methods=methods, metrics=list(request.metrics), steps=int(request.steps), substrate=request.substrate,
            limit=int(request.limit), keep_maps=request.keep_maps, force=request.force,
            detector=request.detector, uncertainty=convert.uncertainty_options(request),
        )
        return service_pb2.SubmitResponse(job=convert.job_to_message(record), reused=reused)

    async def CancelJob(self, request: service_pb2.JobRef, context: Any) -> types_pb2.Job:
        return await self._run(context, self._cancel, request.id)

    def _cancel(self, job_id: str) -> types_pb2.Job:
        return convert.job_to_message(self.service.cancel(_job_id(job_id)))

    async def DeleteJob(self, request: service_pb2.JobRef, context: Any) -> service_pb2.DeleteJobResponse:
        return await self._run(context, self._delete, request.id)

    def _delete(self, job_id: str) -> service_pb2.DeleteJobResponse:
        job_id = _job_id(job_id)
        return service_pb2.DeleteJobResponse(id=job_id, keys_removed=self.service.delete(job_id))

    async def ListJobs(self, request: service_pb2.ListJobsRequest, context: Any) -> service_pb2.ListJobsResponse:
        return await self._run(context, self._list_jobs, request)

    def _list_jobs(self, request: service_pb2.ListJobsRequest) -> service_pb2.ListJobsResponse:
        offset, size = _page(request.page_token, request.page_size, _DEFAULT_JOBS_PAGE)
        if request.state and request.state not in _STATE_NAMES:
            raise InputError(f"state: {request.state} is not a job state")
        if request.kind and request.kind not in _KIND_NAMES:
            raise InputError(f"kind: {request.kind} is not a job kind")
        states = [_STATE_NAMES[request.state]] if request.state else None
        kind = _KIND_NAMES[request.kind] if request.kind else None
        jobs, more = self.service.list_jobs(offset=offset, limit=size, states=states, kind=kind)
        return service_pb2.ListJobsResponse(
            jobs=[convert.job_to_message(r) for r in jobs], next_page_token=str(offset + size) if more else ""
        )

    async def ListModels(self, request: service_pb2.ListModelsRequest, context: Any) -> service_pb2.ListModelsResponse:
        return await self._run(context, self._list_models)

    def _list_models(self) -> service_pb2.ListModelsResponse:
        return service_pb2.ListModelsResponse(
            models=[_model_message(e) for e in self.service.list_models()],
            default_model=self.service.settings.default_model,
        )

    async def ListMethods(self, request: service_pb2.ListMethodsRequest, context: Any) -> service_pb2.ListMethodsResponse:
        return await self._run(context, self._list_methods, request)

    async def ListDatasetPairs(
        self, request: service_pb2.ListDatasetPairsRequest, context: Any
    ) -> service_pb2.ListDatasetPairsResponse:
        return await self._run(context, self._list_dataset_pairs, request)

    def _list_dataset_pairs(self, request: service_pb2.ListDatasetPairsRequest) -> service_pb2.ListDatasetPairsResponse:
        offset, size = _page(request.page_token, request.page_size, _DEFAULT_PAIRS_PAGE)
        pairs = self.service.dataset_pairs(request.dataset)
        page = pairs[offset : offset + size]
        return service_pb2.ListDatasetPairsResponse(
            pairs=[service_pb2.DatasetPair(index=offset + i, name=name, same=same) for i, (name, same) in enumerate(page)],
            next_page_token=str(offset + size) if offset + size < len(pairs) else "",
            total=len(pairs),
        )

    async def GetDatasetPair(
        self, request: service_pb2.GetDatasetPairRequest, context: Any
    ) -> service_pb2.GetDatasetPairResponse:
        return await self._run(context, self._get_dataset_pair, request)

    def _get_dataset_pair(self, request: service_pb2.GetDatasetPairRequest) -> service_pb2.GetDatasetPairResponse:
        p = self.service.dataset_pair(request.dataset, int(request.index))
        return service_pb2.GetDatasetPairResponse(
            pair=service_pb2.DatasetPair(index=p.index, name=p.name, same=p.same),
            images=types_pb2.ImagePair(a=types_pb2.Image(data=p.image_a, name=p.name_a),
                                       b=types_pb2.Image(data=p.image_b, name=p.name_b)),
        )

    def _list_methods(self, request: service_pb2.ListMethodsRequest) -> service_pb2.ListMethodsResponse:
        if request.chip_size < 0 or request.chip_size > self.service.settings.limits.max_patch_size:
            raise InputError(f"chip_size {request.chip_size} is not a chip side in pixels")
        if request.chip_size:
            return convert.list_methods_response(request.chip_size)
        return convert.list_methods_response(self.service.spec(request.model).chip.size)

