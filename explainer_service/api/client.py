"""The typed Python client of the API: :class:`FacexplainClient`.

What the CLI client and the dashboard use: library values in and out (bytes of images, parameter
dicts, :class:`~explainer_service.results.PairResult`, :class:`JobInfo`), and the library's
errors out — a status the server answers becomes the error class of that code
(:func:`.status.error_from_status`): INVALID_ARGUMENT an InputError, RESOURCE_EXHAUSTED a
LimitExceededError, NOT_FOUND a NotFoundError, UNAVAILABLE a BackendUnavailableError
(retryable)... so ``errors.exit_code`` and ``is_retryable`` work on them unchanged.

Depends on the API package alone (messages and conversions), never on the server, the workers
or the store::

    with FacexplainClient("127.0.0.1:50051") as client:
        job = client.explain(open("a.jpg", "rb").read(), open("b.jpg", "rb").read(),
                             params={"n_masks": 500, "seed": 0}).job
        for update in client.watch(job.id):
            print(update.job.done, "/", update.job.total)
        result = client.get_result(job.id)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from ..errors import FacexplainError, InputError
from ..methods.registry import MethodInfo
from ..results import PairResult, Verification
from . import convert
from .pb import audit_pb2, service_pb2, service_pb2_grpc, types_pb2
from .service import DatasetPairImages
from .status import error_from_status

__all__ = [
    "AuditPage",
    "DatasetPair",
    "DatasetPairImages",
    "DatasetPairPage",
    "DEFAULT_TIMEOUT_S",
    "FINAL_STATES",
    "FacexplainClient",
    "JobErrorInfo",
    "JobInfo",
    "JobUpdate",
    "ModelEntry",
    "PartialMaps",
    "Submitted",
    "VerifyResult",
    "job_from_message",
]

#: Seconds one unary call may take (a stream's whole life is ``watch``'s own ``timeout``).
DEFAULT_TIMEOUT_S = 60.0
#: Job states after which nothing changes.
FINAL_STATES = frozenset({"done", "failed", "cancelled"})

_T = TypeVar("_T")
_STATES = {code: name for name, code in convert.JOB_STATES.items()}
_KINDS = {code: name for name, code in convert.JOB_KINDS.items()}


@dataclass(frozen=True)
class JobErrorInfo:
    """Why a job failed: a gRPC status name, a message, whether retrying may help."""

    code: str
    message: str
    retryable: bool

    def exception(self) -> FacexplainError:
        """The library's error of this status (to raise, or to map to an exit code)."""
        return error_from_status(self.code, self.message)


@dataclass(frozen=True)
class JobInfo:
    """A job's record as the server reports it. ``state``: ``"queued"``, ``"running"``,
    ``"done"``, ``"failed"`` or ``"cancelled"``; ``kind``: ``"explain"`` or ``"audit"``;
    times in seconds since the epoch (None when unset)."""

    id: str
    kind: str
    state: str
    done: int
    total: int
    unit: str
    model: str
    methods: tuple[str, ...]
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    error: JobErrorInfo | None
    cancel_requested: bool
    attempts: int

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (``facexplain client jobs --json``)."""
        d = dict(self.__dict__)
        d["methods"] = list(self.methods)
        d["error"] = None if self.error is None else dict(self.error.__dict__)
        return d


def _time(msg: Any, name: str) -> float | None:
    if not msg.HasField(name):
        return None
    return float(getattr(msg, name).ToNanoseconds()) / 1e9


def job_from_message(msg: types_pb2.Job) -> JobInfo:
    """A ``Job`` message as a :class:`JobInfo` (InputError for an unknown state or kind)."""
    if msg.state not in _STATES:
        raise InputError(f"job {msg.id}: unknown state {msg.state}")
    if msg.kind not in _KINDS:
        raise InputError(f"job {msg.id}: unknown kind {msg.kind}")
    error = None
    if msg.HasField("error"):
        error = JobErrorInfo(msg.error.code, msg.error.message, bool(msg.error.retryable))
    return JobInfo(
        id=msg.id,
        kind=_KINDS[msg.kind],
        state=_STATES[msg.state],
        done=int(msg.progress.done),
        total=int(msg.progress.total),
        unit=msg.progress.unit,
        model=msg.model,
        methods=tuple(msg.methods),
        created_at=_time(msg, "created_at"),
        started_at=_time(msg, "started_at"),
        finished_at=_time(msg, "finished_at"),
        expires_at=_time(msg, "expires_at"),
        error=error,
        cancel_requested=bool(msg.cancel_requested),
        attempts=int(msg.attempts),
    )


@dataclass(frozen=True)
class Submitted:
    """A submitted job; ``reused`` when the server already had it (nothing new queued)."""

    job: JobInfo
    reused: bool


@dataclass(frozen=True)
class AuditPage:
    """One page of an audit's result: the job, its summary (None until it finished; the shape of
    ``convert.audit_summary_from_message``), the stored rows of this page (by index; the shape of
    ``convert.audit_row_from_message``: with ``maps``, each kept PairResult under its method's
    ``"result"``), the next page's token ("" on the last) and the pairs."""

    job: JobInfo
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]
    next_page_token: str
    total_rows: int


@dataclass(frozen=True)
class DatasetPair:
    """A pair of a dataset on the server (ListDatasetPairs): its index in the dataset, its name
    (``a.jpg|b.jpg``) and whether both images show the same person."""

    index: int
    name: str
    same: bool


@dataclass(frozen=True)
class DatasetPairPage:
    """One page of a dataset's pairs, the next page's token ("" on the last) and the pairs in all."""

    pairs: list[DatasetPair]
    next_page_token: str
    total: int


@dataclass(frozen=True)
class PartialMaps:
    """The exact running CorrRISE maps over ``masks`` masks ((H, W) float32)."""

    masks: int
    s_a: np.ndarray
    s_b: np.ndarray


@dataclass(frozen=True)
class JobUpdate:
    """One message of ``watch``: the job now, and the running maps when asked and changed."""

    job: JobInfo
    partial: PartialMaps | None = None


#: A pair verified now (see the API's VerifyResponse): the library's own type.
VerifyResult = Verification


@dataclass(frozen=True)
class ModelEntry:
    """A model the server knows (ListModels)."""

    name: str
    family: str
    chip_kind: str
    chip_size: int
    embedding_dim: int
    threshold: float | None
    sha256: str
    description: str
    ready: bool
    not_ready_reason: str
    is_default: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class FacexplainClient:
    """A connection to the facexplain API at ``address`` (``HOST:PORT``).

    Args:
        address: the server.
        token: bearer token sent with every call (None: none).
        timeout: seconds each unary call may take.
        tls_ca: PEM of the certificate authority to trust; enables TLS (None: plain text).
        max_message_bytes: largest message sent or received (the server has its own limit).

    Every method raises the library's errors (see the module docstring). Use as a context manager
    or call :meth:`close`.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls_ca: bytes | None = None,
        max_message_bytes: int = 136 * 1024 * 1024,
    ) -> None:
        if not address or any(c.isspace() for c in address):
            raise InputError(f"server address {address!r} is not HOST:PORT")
        if not timeout > 0:
            raise InputError(f"timeout must be > 0 s, got {timeout!r}")
        self.address = address
        self.timeout = float(timeout)
        options = [
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.max_send_message_length", int(max_message_bytes)),
        ]
        if tls_ca is not None:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca), options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._stub = service_pb2_grpc.FacexplainStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> FacexplainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _error(self, exc: grpc.RpcError) -> FacexplainError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else None
        name = code.name if code is not None else "UNKNOWN"
        return error_from_status(name, str(details or ""), where=f"API server {self.address}")

    def _call(self, method: Callable[..., _T], request: Any, timeout: float | None = None) -> _T:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- calls ----------------------------------------------------------------------------------

    def verify(
        self, image_a: bytes, image_b: bytes, *, model: str = "", names: Sequence[str] = ("", ""),
        include_chips: bool = False, detector: str = "",
    ) -> VerifyResult:
        """Verify a pair now: score, threshold, decision and how each face was aligned (by the
        face ``detector``, one of the server's; ``""``: its default)."""
        msg = self._call(self._stub.Verify, service_pb2.VerifyRequest(
            pair=_pair(image_a, image_b, names), model=model, include_chips=include_chips, detector=detector))
        return VerifyResult(
            score=float(msg.score),
            threshold=float(msg.threshold) if msg.HasField("threshold") else None,
            decision=convert.decision_from_message(msg.decision),
            model=msg.model,
            face_a=convert.face_from_message(msg.face_a, where="face_a"),
            face_b=convert.face_from_message(msg.face_b, where="face_b"),
            align_s=float(msg.timing.align_s),
            embed_s=float(msg.timing.explain_s),
        )

    def explain(
        self,
        image_a: bytes,
        image_b: bytes,
        *,
        model: str = "",
        method: str = "corrrise",
        params: Mapping[str, Any] | None = None,
        force: bool = False,
        names: Sequence[str] = ("", ""),
        until_agreement: float = 0.0,
        max_masks: int = 0,
        fdr_q: float = 0.0,
        ci_level: float = 0.0,
        detector: str = "",
    ) -> Submitted:
        """Submit an explanation of a pair by ``method`` with ``params`` (values as the library
        takes them: ints, floats, bools, strings, tuples of ints, None). ``until_agreement`` and
        ``max_masks``: early stopping (CorrRISE; 0: off); ``fdr_q`` and ``ci_level``: the
        uncertainty's false-discovery rate and interval level (0: the server's defaults);
        ``detector``: the face detector (``""``: the server's default)."""
        request = service_pb2.ExplainRequest(
            pair=_pair(image_a, image_b, names),
            model=model,
            method=method,
            force=force,
            until_agreement=until_agreement,
            max_masks=max_masks,
            fdr_q=fdr_q,
            ci_level=ci_level,
            detector=detector,
        )
        for key, value in (params or {}).items():
            request.params[str(key)].CopyFrom(convert.param_to_message(value, where=f"params.{key}"))
        msg = self._call(self._stub.Explain, request)
        return Submitted(job_from_message(msg.job), bool(msg.reused))

    def get_job(self, job_id: str) -> JobInfo:
        return job_from_message(self._call(self._stub.GetJob, service_pb2.JobRef(id=job_id)))

    def watch(self, job_id: str, *, partial_maps: bool = False, timeout: float | None = None) -> Iterator[JobUpdate]:
        """The job's updates until its terminal state (``timeout``: seconds for the whole stream;
        None: no limit)."""
        request = service_pb2.WatchJobRequest(id=job_id, partial_maps=partial_maps)
        try:
            for msg in self._stub.WatchJob(request, timeout=timeout, metadata=self._metadata):
                partial = None
                if msg.HasField("partial"):
                    p = msg.partial
                    partial = PartialMaps(
                        int(p.masks),
                        convert.array_from_message(p.s_a, where="partial.s_a", dtype=np.float32, shape=(None, None)),
                        convert.array_from_message(p.s_b, where="partial.s_b", dtype=np.float32, shape=(None, None)),
                    )
                yield JobUpdate(job_from_message(msg.job), partial)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def wait(
        self, job_id: str, *, progress: Callable[[int, int], None] | None = None, timeout: float | None = None,
        reconnects: int = 3,
    ) -> JobInfo:
        """Follow a job to its terminal state (``progress(done, total)`` on each update); a
        dropped stream is re-opened up to ``reconnects`` times (the server restarts from the
        current record). Returns the final record (raise ``job.error.exception()`` yourself)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        tries = 0
        while True:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            last: JobInfo | None = None
            try:
                for update in self.watch(job_id, timeout=left):
                    last = update.job
                    if progress is not None:
                        progress(last.done, last.total)
            except FacexplainError as exc:
                if not exc.retryable or tries >= reconnects or (deadline is not None and time.monotonic() > deadline):
                    raise
                tries += 1
                time.sleep(min(2.0, 0.2 * 2**tries))
                continue
            if last is not None and last.final:
                return last
            return self.get_job(job_id)

    def get_result(self, job_id: str, *, summary_only: bool = False) -> PairResult:
        """A succeeded explain job's result (maps exact); JobNotFinishedError while it is not done."""
        msg = self._call(self._stub.GetResult, service_pb2.GetResultRequest(id=job_id, summary_only=summary_only))
        if msg.WhichOneof("result") != "pair":
            raise InputError(f"job {job_id} is not an explanation (its result is an audit)")
        return convert.pair_result_from_message(msg.pair)

    def submit_audit(
        self,
        *,
        pairs: Sequence[tuple[bytes, bytes, bool, str]] | None = None,
        dataset: str = "",
        model: str = "",
        methods: Sequence[tuple[str, Mapping[str, Any]]] | Sequence[str] = (),
        metrics: Sequence[str] = (),
        steps: int = 0,
        substrate: str = "",
        limit: int = 0,
        keep_maps: bool = False,
        force: bool = False,
        detector: str = "",
        fdr_q: float = 0.0,
        ci_level: float = 0.0,
    ) -> Submitted:
        """Submit an audit of inline ``pairs`` ((image a bytes, image b bytes, same, name) each)
        or of ``dataset`` (a spec under a root the server allows), with ``methods`` (names, or
        (name, params) with params as :meth:`explain` takes them) scored by ``metrics``
        (``"deletion"``, ``"insertion"``). ``detector``: the face detector (``""``: the server's
        default); ``fdr_q``/``ci_level``: the kept maps' uncertainty (needs ``keep_maps``; 0: the
        defaults)."""
        if (pairs is None) == (not dataset):
            raise InputError("an audit needs either pairs or a dataset spec (not both)")
        request = audit_pb2.SubmitAuditRequest(model=model, metrics=list(metrics), steps=steps, substrate=substrate,
                                               limit=limit, keep_maps=keep_maps, force=force, detector=detector,
                                               fdr_q=fdr_q, ci_level=ci_level)
        if pairs is not None:
            inline = audit_pb2.InlinePairs()
            for i, (a, b, same, name) in enumerate(pairs):
                inline.pairs.append(audit_pb2.LabeledPair(pair=_pair(a, b, (f"{name} A", f"{name} B")),
                                                          same=bool(same), name=name or f"pair {i}"))
            request.pairs.CopyFrom(inline)
        else:
            request.dataset = dataset
        for entry in methods:
            name, params = (entry, {}) if isinstance(entry, str) else entry
            m = request.methods.add(name=name)
            for key, value in params.items():
                m.params[str(key)].CopyFrom(convert.param_to_message(value, where=f"{name}.params.{key}"))
        msg = self._call(self._stub.SubmitAudit, request)
        return Submitted(job_from_message(msg.job), bool(msg.reused))

    def audit_result(self, job_id: str, *, page_token: str = "", page_size: int = 0, maps: bool = False) -> AuditPage:
        """One page of an audit's rows (``page_size`` 0: the server's 100) and, once it finished,
        its summary; ``maps``: with each method's kept PairResult (maps exact, chips) when the audit
        kept maps (ask small pages: about 0.3 MB per pair and method)."""
        msg = self._call(self._stub.GetResult, service_pb2.GetResultRequest(
            id=job_id, page_token=page_token, page_size=page_size, summary_only=not maps))
        if msg.WhichOneof("result") != "audit":
            raise InputError(f"job {job_id} is not an audit (its result is an explanation)")
        audit = msg.audit
        return AuditPage(
            job=job_from_message(msg.job),
            summary=convert.audit_summary_from_message(audit.summary) if audit.HasField("summary") else None,
            rows=[convert.audit_row_from_message(r) for r in audit.rows],
            next_page_token=audit.next_page_token,
            total_rows=int(audit.total_rows),
        )

    def audit_rows(self, job_id: str, *, page_size: int = 0, maps: bool = False) -> Iterator[dict[str, Any]]:
        """Every stored row of an audit, by index, page after page (``maps`` as :meth:`audit_result`)."""
        token = ""
        while True:
            page = self.audit_result(job_id, page_token=token, page_size=page_size, maps=maps)
            yield from page.rows
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str) -> JobInfo:
        return job_from_message(self._call(self._stub.CancelJob, service_pb2.JobRef(id=job_id)))

    def delete(self, job_id: str) -> int:
        """Remove a job and all its data now: the number of store keys the server removed."""
        return int(self._call(self._stub.DeleteJob, service_pb2.JobRef(id=job_id)).keys_removed)

    def list_jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 1000) -> list[JobInfo]:
        """Jobs newest first (every page up to ``limit``), optionally of one state or kind."""
        if state is not None and state not in convert.JOB_STATES:
            raise InputError(f"state must be one of {', '.join(convert.JOB_STATES)}, got {state!r}")
        if kind is not None and kind not in convert.JOB_KINDS:
            raise InputError(f"kind must be one of {', '.join(convert.JOB_KINDS)}, got {kind!r}")
        out: list[JobInfo] = []
        token = ""
        while len(out) < limit:
            request = service_pb2.ListJobsRequest(
                page_size=min(1000, limit - len(out)), page_token=token,
                state=convert.JOB_STATES[state] if state else types_pb2.JOB_STATE_UNSPECIFIED,
                kind=convert.JOB_KINDS[kind] if kind else types_pb2.JOB_KIND_UNSPECIFIED,
            )
            msg = self._call(self._stub.ListJobs, request)
            out.extend(job_from_message(j) for j in msg.jobs)
            token = msg.next_page_token
            if not token:
                break
        return out

    def list_models(self) -> list[ModelEntry]:
        msg = self._call(self._stub.ListModels, service_pb2.ListModelsRequest())
        return [
            ModelEntry(
                name=m.name, family=m.family, chip_kind=m.chip.kind, chip_size=int(m.chip.size),
                embedding_dim=int(m.embedding_dim), threshold=float(m.threshold) if m.HasField("threshold") else None,
                sha256=m.sha256, description=m.description, ready=bool(m.ready),
                not_ready_reason=m.not_ready_reason, is_default=bool(m.is_default),
            )
            for m in msg.models
        ]

    def list_dataset_pairs(self, dataset: str, *, page_token: str = "", page_size: int = 0) -> DatasetPairPage:
        """One page of the pairs of ``dataset`` (a spec on the server, e.g. ``lfw-aligned:lfw``;
        ``page_size`` 0: the server's 100, at most 1000)."""
        msg = self._call(self._stub.ListDatasetPairs, service_pb2.ListDatasetPairsRequest(
            dataset=dataset, page_token=page_token, page_size=page_size))
        return DatasetPairPage(
            pairs=[DatasetPair(int(p.index), p.name, bool(p.same)) for p in msg.pairs],
            next_page_token=msg.next_page_token, total=int(msg.total),
        )

    def dataset_pairs(self, dataset: str, *, page_size: int = 1000) -> Iterator[DatasetPair]:
        """Every pair of ``dataset``, page after page (:meth:`list_dataset_pairs`)."""
        token = ""
        while True:
            page = self.list_dataset_pairs(dataset, page_token=token, page_size=page_size)
            yield from page.pairs
            token = page.next_page_token
            if not token:
                return

    def dataset_pair(self, dataset: str, index: int) -> DatasetPairImages:
        """Pair ``index`` of ``dataset`` with its two image files' bytes, as the server stores them
        (send them to :meth:`verify` or :meth:`explain`)."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InputError(f"pair index must be an integer >= 0, got {index!r}")
        msg = self._call(self._stub.GetDatasetPair, service_pb2.GetDatasetPairRequest(dataset=dataset, index=index))
        return DatasetPairImages(
            index=int(msg.pair.index), name=msg.pair.name, same=bool(msg.pair.same),
            image_a=bytes(msg.images.a.data), image_b=bytes(msg.images.b.data),
            name_a=msg.images.a.name, name_b=msg.images.b.name,
        )

    def list_methods(self, *, model: str = "", chip_size: int = 0) -> list[MethodInfo]:
        msg = self._call(self._stub.ListMethods, service_pb2.ListMethodsRequest(model=model, chip_size=chip_size))
        return [convert.method_info_from_message(m) for m in msg.methods]


def _pair(image_a: bytes, image_b: bytes, names: Sequence[str]) -> types_pb2.ImagePair:
    for data, label in ((image_a, "image a"), (image_b, "image b")):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"{label}: expected the bytes of an image file, got {type(data).__name__}")
    name_a = names[0] if names else ""
    name_b = names[1] if len(names) > 1 else ""
    return types_pb2.ImagePair(
        a=types_pb2.Image(data=bytes(image_a), name=name_a), b=types_pb2.Image(data=bytes(image_b), name=name_b)
    )
