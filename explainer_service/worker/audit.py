"""What a worker does for one pair of an audit job, and the audit's summary: the library the
Celery shim ``facexplain.audit_pair(job_id, index)`` calls.

An audit job's record keeps its request in ``params`` (:func:`audit_request`): the pairs (inline
ones name their images in the job's inputs, ``a<i>``/``b<i>``; dataset ones keep the image
paths the API resolved under an allowed root), the methods with their parameters, the metrics
(``deletion``, ``insertion``), the curve's steps and substrate, ``keep_maps``, the alignment
(``align``: the face detector) and, for kept maps, the uncertainty options (``uncertainty``:
``fdr_q``/``ci_level``, absent at the defaults).

:func:`run_pair` claims ``pair:<i>`` (a redelivered task finds it stored and does nothing
twice), aligns both images (a pair that cannot be loaded or has no face becomes a row with its
error and its drop reason, :func:`~explainer_service.datasets.drops.drop_reason`: counted as
failed, never skipped silently), embeds them, scores and decides, explains the
pair with every method (the registry's ``build``) and, when asked, scores the maps with the
Deletion/Insertion curves of that one pair (``evaluation.score_maps``). The row (plain JSON:
per-pair curves kept as 0/1 lists so that the summary recomputes exactly what
``evaluate_methods`` reports) is stored with ``put_pair``; with ``keep_maps`` each method's complete
``PairResult`` too (maps, scores, chips, alignment: one ``pair_archive`` per pair), its
uncertainty stated at the request's options (``explanation.restate``).

The task that stores the last row writes the summary once (:func:`finish_audit`, under the
``merge`` lease): :func:`summarize` gives accuracy, the confusion counts, each method's
Deletion/Insertion mean over the *matched* pairs with its 95 % interval (the library's
``CausalCurve.auc`` and ``confidence_interval`` over the stored per-pair curves: the numbers
``facexplain evaluate`` gives for the same chips and seed), each with its mean curve
(:func:`mean_curve`: accuracy and mean score per step, the curve whose AUC the mean is) and the
failure gallery (false matches
and false non-matches first, farthest from the threshold first, then the correct pairs nearest
the threshold), the dropped pairs with their reasons and the count per reason
(``dropped_reasons``, every reason present), the detector used and, with kept maps, the
uncertainty options of the kept results. Nothing here logs image bytes, maps or embeddings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..alignment import DEFAULT_DETECTOR, Aligner
from ..datasets.drops import count_drops, drop_reason
from ..errors import FaceNotFoundError, FacexplainError, InputError, is_retryable
from ..explanation import restate
from ..store import ClaimResult, JobError, JobKind, JobRecord, JobState, JobStore
from ..store.keys import lease_unit
from ..uncertainty import UncertaintyOptions
from .explain import Outcome, WorkerContext, claim_merge, settle_cancel

__all__ = [
    "AUDIT_METRICS",
    "AuditRequest",
    "AuditPairSpec",
    "audit_request",
    "run_pair",
    "finish_audit",
    "summarize",
    "GALLERY_SIZE",
    "dataset_path",
    "mean_curve",
]

log = logging.getLogger(__name__)

#: The metrics an audit can ask for, per pair and method.
AUDIT_METRICS = ("deletion", "insertion")
#: Rows in the failure gallery of a summary.
GALLERY_SIZE = 20
#: Points of each Deletion/Insertion curve when the request says 0.
DEFAULT_STEPS = 11


@dataclass(frozen=True)
class AuditPairSpec:
    """One pair of an audit: its name, ground truth, and where its images are: ``("input",
    "a3")`` (uploaded) or ``("path", "/data/lfw/...")`` (a dataset file)."""

    name: str
    same: bool
    a: tuple[str, str]
    b: tuple[str, str]


@dataclass(frozen=True)
class AuditRequest:
    """An audit job's request, as :func:`audit_request` reads it from the record.
    ``uncertainty``: how the kept results' uncertainty is stated (None: the defaults)."""

    pairs: tuple[AuditPairSpec, ...]
    methods: tuple[tuple[str, dict[str, Any]], ...]
    metrics: tuple[str, ...]
    steps: int
    substrate: str
    keep_maps: bool
    align: dict[str, str]
    uncertainty: UncertaintyOptions | None = None

    def to_params(self) -> dict[str, Any]:
        """The record's ``params`` (plain JSON values; what the content hash covers; default
        uncertainty options are left out, so such an audit keeps its content id)."""
        extra = {} if self.uncertainty is None or self.uncertainty.is_default else {
            "uncertainty": self.uncertainty.to_dict()}
        return {
            "pairs": [{"name": p.name, "same": p.same, "a": list(p.a), "b": list(p.b)} for p in self.pairs],
            "methods": [{"name": n, "params": dict(params)} for n, params in self.methods],
            "metrics": list(self.metrics),
            "steps": self.steps,
            "substrate": self.substrate,
            "keep_maps": self.keep_maps,
            "align": dict(self.align),
            **extra,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "audit") -> AuditRequest:
        """Read :meth:`to_params` back; InputError naming ``where`` when it is malformed."""
        try:
            pairs = tuple(
                AuditPairSpec(str(p["name"]), bool(p["same"]), _ref(p["a"]), _ref(p["b"])) for p in params["pairs"]
            )
            methods = tuple((str(m["name"]), dict(m["params"])) for m in params["methods"])
            metrics = tuple(str(m) for m in params["metrics"])
            steps = int(params["steps"])
            substrate = str(params["substrate"])
            keep = bool(params["keep_maps"])
            align = {str(k): str(v) for k, v in dict(params["align"]).items()}
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed audit parameters ({type(e).__name__}: {e})") from None
        uncertainty = None
        if "uncertainty" in params:
            uncertainty = UncertaintyOptions.from_dict(params["uncertainty"], f"{where} uncertainty")
        unknown = [m for m in metrics if m not in AUDIT_METRICS]
        if unknown:
            raise InputError(f"{where}: unknown metric(s) {', '.join(unknown)} (known: {', '.join(AUDIT_METRICS)})")
        if steps < 2:
            raise InputError(f"{where}: a curve needs at least 2 steps, got {steps}")
        return cls(pairs, methods, metrics, steps, substrate, keep, align, uncertainty)


def _ref(value: Any) -> tuple[str, str]:
    kind, where = value
    if kind not in ("input", "path"):
        raise ValueError(f"image reference kind {kind!r}")
    return str(kind), str(where)


def audit_request(record: JobRecord) -> AuditRequest:
    """The request of an audit job's record (InputError for another kind or malformed params)."""
    if record.kind is not JobKind.AUDIT:
        raise InputError(f"job {record.id} is an {record.kind.value} job, not an audit")
    return AuditRequest.from_params(record.params, f"job {record.id}")


#: Parsed requests of the audits this process works on, by (job id, creation time): a pair task
#: reads the job's progress (a few fields), not its whole pair list, once the request is known.
_REQUESTS: dict[tuple[str, float], tuple[str, int, AuditRequest]] = {}
_REQUESTS_KEPT = 8


def _job_request(store: JobStore, job_id: str) -> tuple[str, int, AuditRequest]:
    """``(model, total, request)`` of the audit ``job_id``, parsed once per process and job."""
    key = (job_id, store.job_progress(job_id).created_at)
    known = _REQUESTS.get(key)
    if known is None:
        record = store.get_job(job_id)
        known = (record.model, record.total, audit_request(record))
        key = (job_id, record.created_at)  # the record read: a recreated job has another time
        while len(_REQUESTS) >= _REQUESTS_KEPT:
            _REQUESTS.pop(next(iter(_REQUESTS)))
        _REQUESTS[key] = known
    return known


def _image(store: JobStore, job_id: str, ref: tuple[str, str]) -> bytes | str:
    kind, where = ref
    return store.get_input(job_id, where) if kind == "input" else where


def _pixels(image: bytes | str, name: str) -> np.ndarray:
    """An audit image decoded (bytes, limits from the settings) or read (a dataset path), as
    ``pipeline.align_image`` would before aligning: an error here makes the pair ``unreadable``."""
    from ..images import decode_image, load_image

    return load_image(image) if isinstance(image, str) else decode_image(image, name)


def _row_error(exc: BaseException) -> dict[str, str]:
    err = JobError.from_exception(exc)
    return {"status": err.status, "message": err.message}


def run_pair(ctx: WorkerContext, job_id: str, index: int) -> Outcome:
    """Do pair ``index`` of an audit job (see the module docstring).

    A pair's own failure (bad image, no face) is its row's error; errors that concern the whole
    job (NotFoundError, CancelledError, TransientError, a malformed request) propagate as in
    ``explain.run_unit``.
    """
    from ..models.base import cosine_to
    from ..pipeline import align_image, embed_chips

    store = ctx.store
    model_name, total, request = _job_request(store, job_id)
    if not 0 <= index < len(request.pairs):
        raise InputError(f"job {job_id}: pair {index} is outside its {len(request.pairs)} pairs")
    unit = lease_unit("pair", index=index)
    claim = store.claim(job_id, unit, ctx.worker, lease_s=ctx.lease_s)
    if claim is ClaimResult.STOPPED:
        settle_cancel(store, job_id)
        return Outcome.STOPPED
    if claim is ClaimResult.HELD:
        return Outcome.HELD
    if claim is ClaimResult.DONE:  # a redelivered task: the audit may still want its summary
        if store.job_progress(job_id).done >= total:
            finished = finish_audit(ctx, job_id)
            return Outcome.SKIPPED if finished is Outcome.DONE else finished
        return Outcome.SKIPPED
    spec = request.pairs[index]
    model = ctx.models.get(model_name)
    row: dict[str, Any] = {"index": index, "name": spec.name, "same": spec.same, "score": None,
                           "decision": "unknown", "correct": False, "methods": [], "error": None}
    aligner = Aligner(multiple_faces=request.align.get("face", "largest"),
                      pre_aligned=request.align.get("aligned", "auto"),
                      detector=request.align.get("detector", DEFAULT_DETECTOR))
    t_align = time.perf_counter()
    stage = "load"
    try:
        pixels_a = _pixels(_image(store, job_id, spec.a), f"{spec.name} A")
        pixels_b = _pixels(_image(store, job_id, spec.b), f"{spec.name} B")
        stage = "align"
        face_a = align_image(pixels_a, model.spec.chip, aligner=aligner, name=f"{spec.name} A")
        face_b = align_image(pixels_b, model.spec.chip, aligner=aligner, name=f"{spec.name} B")
    except FacexplainError as exc:
        if is_retryable(exc):
            raise
        row["error"] = _row_error(exc)
        row["drop_reason"] = drop_reason(exc, stage="load" if stage == "load" else "align")
        store.put_pair(job_id, index, row)
        log.info("job %s: pair %d failed (%s)", job_id, index, row["error"]["status"])
        return _after_row(ctx, job_id)
    chip_a, chip_b = face_a.chip, face_b.chip
    align_s = time.perf_counter() - t_align
    emb = embed_chips([chip_a, chip_b], model)
    score = float(cosine_to(emb[:1], emb[1])[0])
    threshold = model.spec.threshold
    from ..explanation import decide

    decision = decide(score, threshold)
    row.update(score=score, decision=decision,
               correct=decision != "unknown" and (decision == "match") == spec.same)
    explained: dict[str, tuple[Any, float]] = {}
    for name, params in request.methods:
        row["methods"].append(_run_method(ctx, job_id, unit, name, params, model, chip_a, chip_b, request, explained))
    blob = _kept(ctx, model, face_a, face_b, explained, align_s) if request.keep_maps and explained else None
    store.put_pair(job_id, index, row, maps=blob)
    log.info("job %s: pair %d stored by %s", job_id, index, ctx.worker)
    return _after_row(ctx, job_id)


def _run_method(
    ctx: WorkerContext, job_id: str, unit: str, name: str, params: Mapping[str, Any], model: Any,
    chip_a: np.ndarray, chip_b: np.ndarray, request: AuditRequest, explained: dict[str, tuple[Any, float]],
) -> dict[str, Any]:
    from ..evaluation import score_maps
    from ..methods import build
    from ..metrics import default_steps
    from .explain import _Guard

    method = build(name, model, **dict(params))
    t0 = time.perf_counter()
    ex = method.attribute(chip_a, chip_b, progress=_Guard(ctx, job_id, unit))
    if request.uncertainty is not None:  # intervals and significance only: the maps are unchanged
        ex = restate(ex, request.uncertainty)
    out: dict[str, Any] = {"method": name, "explain_s": time.perf_counter() - t0}
    s_a, s_b = np.asarray(ex.s_a, np.float32), np.asarray(ex.s_b, np.float32)
    explained[name] = (ex, out["explain_s"])
    if request.metrics and model.spec.threshold is not None:
        d, ins = score_maps(chip_a[None], chip_b[None], s_a[None], s_b[None], model,
                            steps=default_steps(request.steps), substrate=request.substrate)
        for curve in (d, ins):
            if curve.mode in request.metrics:
                out[curve.mode] = {"auc": float(curve.auc), "kept": [bool(k) for k in curve.kept[0]],
                                   "scores": [float(s) for s in curve.scores[0]]}
    return out


def _kept(ctx: WorkerContext, model: Any, face_a: Any, face_b: Any, explained: Mapping[str, tuple[Any, float]],
          align_s: float) -> bytes:
    """The pair's kept results (``keep_maps``): one complete PairResult per method, as
    ``facexplain explain`` writes it, in one archive (``pair_archive``)."""
    from ..pair_archive import pack_pair_results
    from ..pipeline import model_info
    from ..results import FaceRecord, PairResult, Timing

    rec_a, rec_b = FaceRecord.from_aligned(face_a), FaceRecord.from_aligned(face_b)
    return pack_pair_results([
        PairResult.from_explanation(ex, rec_a, rec_b, model_info(model.spec), engine=ctx.models.label,
                                    server_masks=bool(getattr(model, "server_masks", False)),
                                    timing=Timing(align_s=align_s, explain_s=explain_s))
        for ex, explain_s in explained.values()
    ])


def _after_row(ctx: WorkerContext, job_id: str) -> Outcome:
    progress = ctx.store.job_progress(job_id)
    if progress.done >= progress.total:
        finish_audit(ctx, job_id)
    return Outcome.DONE


def finish_audit(ctx: WorkerContext, job_id: str) -> Outcome:
    """Write an audit's summary once all its rows are stored, then mark it done (idempotent like
    ``explain.finish_explain``: HELD while another finisher works, STOPPED once done)."""
    store = ctx.store
    refused = claim_merge(ctx, job_id)
    if refused is not None:
        return refused
    record = store.get_job(job_id)
    if store.get_summary(job_id) is None:
        request = audit_request(record)
        rows = [row for _, row in store.get_pairs(job_id, offset=0, limit=len(request.pairs))]
        if len(rows) != len(request.pairs):
            raise InputError(f"job {job_id}: {len(rows)} of {len(request.pairs)} rows stored, cannot summarize")
        threshold = ctx.models.get(record.model).spec.threshold
        store.put_summary(job_id, summarize(rows, request, threshold))
        log.info("job %s: audit summary of %d pairs written by %s", job_id, len(rows), ctx.worker)
    store.set_state(job_id, JobState.DONE)
    return Outcome.DONE


def _mean_ci(curve_rows: Sequence[Mapping[str, Any]], mode: str, steps: np.ndarray) -> dict[str, Any] | None:
    from ..metrics import CausalCurve

    if not curve_rows:
        return None
    kept = np.array([r["kept"] for r in curve_rows], dtype=bool)
    scores = np.array([r["scores"] for r in curve_rows], dtype=np.float64)
    curve = CausalCurve(mode, steps, scores, kept, 0.0)
    ci = curve.confidence_interval()
    return {"mean": float(curve.auc), "ci_low": None if ci is None else ci[0],
            "ci_high": None if ci is None else ci[1], "n": len(curve_rows), "curve": mean_curve(curve)}


def mean_curve(curve: Any) -> dict[str, list[float]]:
    """The mean curve of a :class:`~explainer_service.metrics.CausalCurve` as plain JSON:
    ``fractions`` (the fraction of pixels removed, Deletion, or inserted, Insertion, at each
    step), ``accuracy`` (the fraction of the pairs still verified as the same person at each step:
    the curve whose area :attr:`CausalCurve.auc` is, so ``metrics.auc(accuracy, fractions)`` is the
    summary's mean) and ``mean_score`` (the pairs' mean cosine score at each step), over the pairs
    of the mean."""
    return {
        "fractions": [float(x) for x in np.asarray(curve.steps, np.float64)],
        "accuracy": [float(a) for a in curve.accuracy],
        "mean_score": [float(s) for s in np.asarray(curve.scores, np.float64).mean(axis=0)],
    }


def summarize(rows: Sequence[Mapping[str, Any]], request: AuditRequest, threshold: float | None) -> dict[str, Any]:
    """The audit's summary from its rows (plain JSON; the fields of ``AuditSummary``).

    Deletion/Insertion means are over the matched pairs that succeeded (as ``evaluate_methods``
    scores matched pairs), from each pair's stored 0/1 curve, so they equal the library's.
    """
    from ..metrics import default_steps

    steps = default_steps(request.steps)
    ok = [r for r in rows if r.get("error") is None]
    counts = {"true_matches": 0, "false_matches": 0, "false_non_matches": 0, "true_non_matches": 0}
    for r in ok:
        match = r["decision"] == "match"
        if r["decision"] == "unknown":
            continue
        key = ("true_matches" if match else "false_non_matches") if r["same"] else (
            "false_matches" if match else "true_non_matches")
        counts[key] += 1
    correct = sum(1 for r in ok if r["correct"])
    methods = []
    for name, _ in request.methods:
        outcomes = [m for r in ok if r["same"] for m in r["methods"] if m["method"] == name]
        all_outcomes = [m for r in ok for m in r["methods"] if m["method"] == name]
        explain_s = sum(float(m["explain_s"]) for m in all_outcomes)
        entry: dict[str, Any] = {"method": name,
                                 "explain_pairs_per_s": len(all_outcomes) / explain_s if explain_s > 0 else 0.0}
        for mode in AUDIT_METRICS:
            curves = [m[mode] for m in outcomes if mode in m]
            entry[mode] = _mean_ci(curves, mode, steps) if mode in request.metrics else None
        methods.append(entry)

    def distance(r: Mapping[str, Any]) -> float:
        return 0.0 if threshold is None or r["score"] is None else abs(float(r["score"]) - threshold)

    wrong = sorted((r for r in ok if not r["correct"] and r["decision"] != "unknown"), key=lambda r: -distance(r))
    right = sorted((r for r in ok if r["correct"]), key=distance)
    gallery = [{k: v for k, v in r.items() if k not in ("methods", "drop_reason")} for r in (wrong + right)[:GALLERY_SIZE]]
    failed = [r for r in rows if r.get("error")]
    return {
        "pairs": len(rows),
        "pairs_failed": len(rows) - len(ok),
        "threshold": threshold,
        "accuracy": correct / len(ok) if ok else 0.0,
        **counts,
        "methods": methods,
        "worst": gallery,
        "dropped": [{"index": r["index"], "name": r["name"], "error": r["error"], "reason": _reason(r)} for r in failed],
        "dropped_reasons": count_drops(_reason(r) for r in failed),
        "detector": request.align.get("detector", DEFAULT_DETECTOR),
        **({"uncertainty": (request.uncertainty or UncertaintyOptions()).to_dict()}
           if request.keep_maps and request.methods else {}),
    }


def _reason(row: Mapping[str, Any]) -> str:
    """A failed row's drop reason (rows stored before reasons were kept: from the error's status,
    ``unreadable`` for a bad image, ``no_face`` otherwise, as the aligner's errors were)."""
    reason = row.get("drop_reason")
    if isinstance(reason, str) and reason:
        return reason
    message = str((row.get("error") or {}).get("message", ""))
    return drop_reason(FaceNotFoundError(message), stage="align") if "face" in message else "unreadable"


def dataset_path(spec_path: str, roots: Sequence[Path]) -> Path:
    """``spec_path`` resolved (symlinks followed) inside one of ``roots``; InputError otherwise.
    A relative path is taken under the first root."""
    if not roots:
        raise InputError("this server allows no dataset (start it with --dataset-root DIR)")
    if "\0" in spec_path:  # no file name holds one (resolving it would raise ValueError)
        raise InputError(f"dataset path {spec_path!r} contains a NUL character")
    raw = Path(spec_path)
    if ".." in raw.parts:
        raise InputError(f"dataset path {spec_path!r} may not contain '..'")
    base = [r.resolve() for r in roots]
    candidate = (raw if raw.is_absolute() else base[0] / raw).resolve()
    for root in base:
        if candidate == root or root in candidate.parents:
            return candidate
    raise InputError(f"dataset path {spec_path!r} is outside the allowed dataset roots")
