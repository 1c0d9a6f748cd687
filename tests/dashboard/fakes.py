"""A fake API client for the dashboard's AppTests: :class:`FakeClient`.

It has the methods of ``dashboard.state.DashboardClient`` (the calls of ``FacexplainClient`` the
dashboard makes, same names and signatures) and answers with the library's own value types
(``ModelEntry``, ``MethodInfo`` from the registry, ``JobInfo``, ``PairResult``...). What it does
in place of a server:

- a job advances by ``step`` units each time ``get_job`` reads it (queued -> running -> done),
  so a test moves time forward by running the page again (AppTest does not tick fragments);
- ``fail`` holds an error to raise on the next call of a method by name (then it is forgotten),
  to show how the pages tell an API error; ``explain`` refuses an image whose bytes start with
  ``NOFACE`` as the server would (FaceNotFoundError);
- a CorrRISE result carries an uncertainty, as the server's do (:func:`make_result`: significant
  on the top half of each map), at the ``fdr_q``/``ci_level`` its request asked (0: the
  defaults); a request that names a ``detector`` gets faces detected by it (``auto``: ``hog``,
  as auto's first stage), one that does not gets pre-aligned faces (no detector);
- ``submit_audit`` takes the real signature and checks ``detector``, ``fdr_q`` and ``ci_level`` as
  the server does (q and level need ``keep_maps``); what an audit asked is kept in
  ``audit_options`` by job id (not in ``calls``, whose audit entries keep their older shape), its
  summary states the detector (``auto`` by default, the server's) and, with kept maps, the
  uncertainty options, and its kept CorrRISE results carry an uncertainty at them;
- an audit's summary drops its failed pair 3 (reason ``no_face``, :func:`audit_summary`) unless
  ``audit_drops`` is False (then it says none was dropped; the rows are unchanged);
- ``calls`` records every call (name, positional args without image bytes, keyword args);
- one dataset is allowed, :data:`DATASET` with :data:`DATASET_PAIRS` (its images small PNGs);
  another spec is refused as outside the allowed roots, as the server refuses it.

A real API end to end is the in-process AppTest's (test_real_api.py) and the browser test's job.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from explainer_service.alignment import DEFAULT_DETECTOR, DETECTORS
from explainer_service.api.client import (
    AuditPage,
    DatasetPair,
    DatasetPairImages,
    DatasetPairPage,
    JobErrorInfo,
    JobInfo,
    JobUpdate,
    ModelEntry,
    PartialMaps,
    Submitted,
)
from explainer_service.errors import FaceNotFoundError, FacexplainError, InputError, NotFoundError
from explainer_service.explanation import Explanation
from explainer_service.methods.registry import MethodInfo, list_methods
from explainer_service.results import FaceRecord, PairResult
from explainer_service.uncertainty import (
    DEFAULT_LEVEL,
    DEFAULT_Q,
    MapUncertainty,
    Uncertainty,
    spearman_brown,
)

SIZE = 24  # chip and map side: small, so that pages render fast
#: The fake uncertainty's split-half agreement of A's and B's maps.
SPLIT_HALF_R = (0.9, 0.6)


def fake_uncertainty(s_a: np.ndarray, s_b: np.ndarray, *, q: float = DEFAULT_Q, level: float = DEFAULT_LEVEL,
                     n: int = 8) -> Uncertainty:
    """An uncertainty of maps ``s_a``/``s_b`` with known masks: significant on the top half of the
    rows of each map (half the pixels), not on the bottom half; intervals +-0.1 around the map;
    split-half agreement :data:`SPLIT_HALF_R`."""
    faces = []
    for values, r in zip((s_a, s_b), SPLIT_HALF_R, strict=True):
        significant = np.zeros(values.shape, bool)
        significant[: values.shape[0] // 2] = True
        faces.append(MapUncertainty(float(significant.mean()), r, spearman_brown(r),
                                    (values - 0.1).astype(np.float32), (values + 0.1).astype(np.float32), significant))
    return Uncertainty("fisher-z", level, q, n, faces[0], faces[1])


def make_result(method: str = "corrrise", *, score: float = 0.8, threshold: float | None = 0.6,
                model: str = "fake-model", q: float = DEFAULT_Q, level: float = DEFAULT_LEVEL,
                detector: str | None = None) -> PairResult:
    """A complete PairResult with known maps: A similar on its left half, dissimilar on its right;
    B the opposite. CorrRISE's carries :func:`fake_uncertainty` at ``q`` and ``level``; the faces
    were detected by ``detector`` (None: pre-aligned input)."""
    s_a = np.zeros((SIZE, SIZE), np.float32)
    s_a[:, : SIZE // 2] = 0.5
    s_a[:, SIZE // 2 :] = -0.25
    s_b = -s_a
    chip = np.full((SIZE, SIZE, 3), 120, np.uint8)
    uncertainty = fake_uncertainty(s_a, s_b, q=q, level=level) if method == "corrrise" else None
    expl = Explanation(s_a=s_a, s_b=s_b, score=score, threshold=threshold, model=model, masks=8, method=method,
                       params={"n_masks": 8}, scores_a=np.zeros(8, np.float32), scores_b=np.zeros(8, np.float32),
                       forward_passes=18, uncertainty=uncertainty)
    if detector is None:
        face = FaceRecord(source="<bytes>", method="pre-aligned", faces_found=0, transform=np.eye(2, 3), chip=chip)
    else:
        face = FaceRecord(source="<bytes>", method="detected", faces_found=1, transform=np.eye(2, 3), chip=chip,
                          detector=detector, confidence=0.99)
    return PairResult.from_explanation(expl, face, replace(face), None)


def _check_options(fdr_q: float, ci_level: float, detector: str) -> None:
    """InputError for a q or level outside (0, 1) (0: the default) or an unknown detector, as the
    server checks them."""
    for name, value in (("fdr_q", fdr_q), ("ci_level", ci_level)):
        if value != 0.0 and not 0.0 < value < 1.0:
            raise InputError(f"{name} must be in (0, 1), got {value!r}")
    if detector and detector not in DETECTORS:
        raise InputError(f"detector must be one of {', '.join(DETECTORS)}; got {detector!r}")


def _job(job_id: str, kind: str, *, state: str = "queued", done: int = 0, total: int = 8, model: str = "fake-model",
         methods: tuple[str, ...] = ("corrrise",), error: JobErrorInfo | None = None) -> JobInfo:
    return JobInfo(id=job_id, kind=kind, state=state, done=done, total=total,
                   unit="masks" if kind == "explain" else "pairs", model=model, methods=methods,
                   created_at=1.0, started_at=None, finished_at=None, expires_at=None, error=error,
                   cancel_requested=False, attempts=0)


#: The fake summary's mean curves: their areas (trapezoids over the fractions, x100) are its means,
#: 20 and 70, as a real summary's are.
DELETION_CURVE = {"fractions": [0.0, 0.5, 1.0], "accuracy": [0.8, 0.0, 0.0], "mean_score": [0.7, 0.3, 0.1]}
INSERTION_CURVE = {"fractions": [0.0, 0.5, 1.0], "accuracy": [0.0, 1.0, 0.8], "mean_score": [0.1, 0.6, 0.7]}
#: The one dataset the fake server allows, and its pairs (name, same).
DATASET = "lfw-aligned:lfw"
DATASET_PAIRS = [("a_0001.png|a_0002.png", True), ("b_0001.png|c_0001.png", False), ("d_0001.png|d_0003.png", True)]


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), 40 * seed % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def audit_summary(methods: Sequence[str] = ("corrrise",), *, drops: bool = True, detector: str = DEFAULT_DETECTOR,
                  uncertainty: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A finished audit's summary in the client's shape: 4 pairs, one false match, one failed pair
    (pair 3, dropped for ``no_face`` when ``drops``; else none dropped), the face ``detector``
    and, when given, the kept maps' ``uncertainty`` options (``{fdr_q, ci_level}``)."""
    dropped = [{"index": 3, "name": "g.png|h.png", "reason": "no_face",
                "error": {"status": "INVALID_ARGUMENT", "message": "image a: no face found"}}] if drops else []
    return {
        "pairs": 4, "pairs_failed": len(dropped), "threshold": 0.6, "accuracy": 2 / 3,
        "true_matches": 1, "false_matches": 1, "false_non_matches": 0, "true_non_matches": 1,
        "methods": [{"method": m, "explain_pairs_per_s": 2.5,
                     "deletion": {"mean": 20.0, "ci_low": 10.0, "ci_high": 30.0, "n": 3, "curve": DELETION_CURVE},
                     "insertion": {"mean": 70.0, "ci_low": 60.0, "ci_high": 80.0, "n": 3, "curve": INSERTION_CURVE}}
                    for m in methods],
        "worst": [{"index": 1, "name": "c.png|d.png", "same": False, "score": 0.9, "decision": "match",
                   "correct": False, "error": None}],
        "dropped": dropped,
        "dropped_reasons": {"unreadable": 0, "no_face": len(dropped), "several_faces": 0, "not_aligned": 0},
        "detector": detector,
        **({"uncertainty": dict(uncertainty)} if uncertainty is not None else {}),
    }


def audit_rows(methods: Sequence[str] = ("corrrise",)) -> list[dict[str, Any]]:
    """The four rows of :func:`audit_summary`'s audit."""
    def outcome(d: float) -> list[dict[str, Any]]:
        return [{"method": m, "explain_s": 0.1, "deletion": {"auc": d}, "insertion": {"auc": 1 - d}} for m in methods]

    return [
        {"index": 0, "name": "a.png|b.png", "same": True, "score": 0.85, "decision": "match", "correct": True,
         "methods": outcome(0.1), "error": None},
        {"index": 1, "name": "c.png|d.png", "same": False, "score": 0.9, "decision": "match", "correct": False,
         "methods": outcome(0.3), "error": None},
        {"index": 2, "name": "e.png|f.png", "same": False, "score": 0.2, "decision": "non-match", "correct": True,
         "methods": outcome(0.2), "error": None},
        {"index": 3, "name": "g.png|h.png", "same": True, "score": None, "decision": "unknown", "correct": False,
         "methods": [], "error": {"status": "INVALID_ARGUMENT", "message": "image a: no face found"}},
    ]


class FakeClient:
    """See the module docstring."""

    def __init__(self, *, step: int = 4) -> None:
        self.step = step
        self.jobs: dict[str, JobInfo] = {}
        self.fail: dict[str, FacexplainError] = {}
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.audit_methods: dict[str, tuple[str, ...]] = {}
        self.kept_maps: set[str] = set()  # audits submitted with keep_maps
        self.explain_options: dict[str, dict[str, Any]] = {}  # an explain job's fdr_q, ci_level, detector
        self.audit_options: dict[str, dict[str, Any]] = {}  # an audit's detector, fdr_q, ci_level as sent
        self.audit_drops = True  # whether a finished audit's summary has its failed pair dropped

    def _enter(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, tuple(a for a in args if not isinstance(a, bytes)), kwargs))
        if name in self.fail:
            raise self.fail.pop(name)

    def called(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]

    def _get(self, job_id: str) -> JobInfo:
        if job_id not in self.jobs:
            raise NotFoundError(f"no job {job_id} (it expired, was deleted or never existed)")
        return self.jobs[job_id]

    # -- DashboardClient --------------------------------------------------------------------------

    def list_models(self) -> list[ModelEntry]:
        self._enter("list_models")
        return [
            ModelEntry(name="fake-model", family="dlib", chip_kind="dlib", chip_size=SIZE, embedding_dim=128,
                       threshold=0.6, sha256="0" * 64, description="a fake", ready=True, not_ready_reason="",
                       is_default=True),
            ModelEntry(name="other-model", family="arcface", chip_kind="arcface", chip_size=112, embedding_dim=512,
                       threshold=None, sha256="", description="not imported", ready=False,
                       not_ready_reason="weights not imported", is_default=False),
        ]

    def list_methods(self, *, model: str = "", chip_size: int = 0) -> list[MethodInfo]:
        self._enter("list_methods", model=model, chip_size=chip_size)
        return list_methods(chip_size or None)

    def explain(self, image_a: bytes, image_b: bytes, *, model: str = "", method: str = "corrrise",
                params: Mapping[str, Any] | None = None, force: bool = False,
                names: Sequence[str] = ("", ""), until_agreement: float = 0.0, max_masks: int = 0,
                fdr_q: float = 0.0, ci_level: float = 0.0, detector: str = "") -> Submitted:
        self._enter("explain", image_a, image_b, model=model, method=method, params=dict(params or {}), force=force,
                    names=tuple(names), until_agreement=until_agreement, max_masks=max_masks, fdr_q=fdr_q,
                    ci_level=ci_level, detector=detector)
        for label, data in (("image a", image_a), ("image b", image_b)):
            if data.startswith(b"NOFACE"):
                raise FaceNotFoundError(f"{label}: no face found")
        _check_options(fdr_q, ci_level, detector)
        options = {"fdr_q": fdr_q, "ci_level": ci_level, "detector": detector}
        asked = {k: v for k, v in options.items() if v}  # the defaults keep a job's id, as on the server
        job_id = hashlib.sha256(image_a + image_b + method.encode() + repr(sorted((params or {}).items())).encode()
                                + (repr(sorted(asked.items())).encode() if asked else b"")).hexdigest()
        reused = job_id in self.jobs and not force
        if not reused:
            self.jobs[job_id] = _job(job_id, "explain", model=model or "fake-model", methods=(method,))
            self.explain_options[job_id] = options
        return Submitted(self.jobs[job_id], reused)

    def get_job(self, job_id: str) -> JobInfo:
        self._enter("get_job", job_id)
        job = self._get(job_id)
        if not job.final:
            done = min(job.total, job.done + self.step)
            job = replace(job, done=done, state="done" if done >= job.total else "running")
            self.jobs[job_id] = job
        return job

    def watch(self, job_id: str, *, partial_maps: bool = False, timeout: float | None = None) -> Iterator[JobUpdate]:
        self._enter("watch", job_id, partial_maps=partial_maps)
        job = self._get(job_id)
        full = make_result()
        assert full.s_a is not None and full.s_b is not None
        part = job.done / max(1, job.total)
        partial = PartialMaps(job.done, full.s_a * part, full.s_b * part) if partial_maps and job.done else None
        yield JobUpdate(job, partial)

    def get_result(self, job_id: str, *, summary_only: bool = False) -> PairResult:
        self._enter("get_result", job_id)
        job = self._get(job_id)
        options = self.explain_options.get(job_id, {})
        detector = options.get("detector") or None
        return make_result(job.methods[0], model=job.model, q=options.get("fdr_q") or DEFAULT_Q,
                           level=options.get("ci_level") or DEFAULT_LEVEL,
                           detector="hog" if detector == "auto" else detector)

    def submit_audit(self, *, pairs: Sequence[tuple[bytes, bytes, bool, str]] | None = None, dataset: str = "",
                     model: str = "", methods: Sequence[tuple[str, Mapping[str, Any]]] | Sequence[str] = (),
                     metrics: Sequence[str] = (), steps: int = 0, substrate: str = "", limit: int = 0,
                     keep_maps: bool = False, force: bool = False, detector: str = "", fdr_q: float = 0.0,
                     ci_level: float = 0.0) -> Submitted:
        names = tuple(m if isinstance(m, str) else m[0] for m in methods)
        self._enter("submit_audit", pairs=None if pairs is None else len(pairs), dataset=dataset, model=model,
                    methods=names, metrics=tuple(metrics), limit=limit, keep_maps=keep_maps)
        _check_options(fdr_q, ci_level, detector)
        if (fdr_q or ci_level) and not keep_maps:  # as the server refuses them
            raise InputError("fdr_q/ci_level state the uncertainty of kept maps: they need keep_maps")
        options = {"detector": detector, "fdr_q": fdr_q, "ci_level": ci_level}
        asked = repr(sorted((k, v) for k, v in options.items() if v)) if any(options.values()) else ""
        job_id = "a" + hashlib.sha256(f"{dataset}{pairs and len(pairs)}{names}{keep_maps}{asked}".encode()
                                      ).hexdigest()[1:]
        self.jobs[job_id] = _job(job_id, "audit", total=4, model=model or "fake-model", methods=names)
        self.audit_options[job_id] = options
        if keep_maps:
            self.kept_maps.add(job_id)
        return Submitted(self.jobs[job_id], False)

    def _audit_uncertainty(self, job_id: str) -> dict[str, float] | None:
        """The uncertainty options an audit's kept maps are stated at (None: it kept none)."""
        if job_id not in self.kept_maps:
            return None
        options = self.audit_options.get(job_id, {})
        return {"fdr_q": options.get("fdr_q") or DEFAULT_Q, "ci_level": options.get("ci_level") or DEFAULT_LEVEL}

    def audit_result(self, job_id: str, *, page_token: str = "", page_size: int = 0, maps: bool = False) -> AuditPage:
        """Rows of pair indexes [page_token, page_token + page_size) (as the server pages), each
        method with its kept result when ``maps`` and the audit kept them."""
        self._enter("audit_result", job_id, page_token=page_token, page_size=page_size, maps=maps)
        job = self._get(job_id)
        methods = job.methods or ("corrrise",)
        offset, size = int(page_token or 0), page_size or 100
        rows = [r for r in audit_rows(methods)[: job.done] if offset <= r["index"] < offset + size]
        stated = self._audit_uncertainty(job_id)
        if maps and stated is not None:
            for row in rows:
                for m in row["methods"]:
                    m["result"] = make_result(m["method"], score=row["score"], model=job.model, q=stated["fdr_q"],
                                              level=stated["ci_level"])
        more = offset + size < job.total
        detector = self.audit_options.get(job_id, {}).get("detector") or DEFAULT_DETECTOR
        summary = (audit_summary(methods, drops=self.audit_drops, detector=detector, uncertainty=stated)
                   if job.state == "done" else None)
        return AuditPage(job=job, summary=summary, rows=rows, next_page_token=str(offset + size) if more else "",
                         total_rows=job.total)

    def audit_rows(self, job_id: str, *, page_size: int = 0, maps: bool = False) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            page = self.audit_result(job_id, page_token=token, page_size=page_size, maps=maps)
            yield from page.rows
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str) -> JobInfo:
        self._enter("cancel", job_id)
        job = self._get(job_id)
        if not job.final:
            job = replace(job, state="cancelled", error=JobErrorInfo("CANCELLED", "cancelled on request", False))
            self.jobs[job_id] = job
        return job

    def delete(self, job_id: str) -> int:
        self._enter("delete", job_id)
        self._get(job_id)
        del self.jobs[job_id]
        return 3

    def list_jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 1000) -> list[JobInfo]:
        self._enter("list_jobs", state=state, kind=kind)
        return [j for j in self.jobs.values() if (state is None or j.state == state) and (kind is None or j.kind == kind)]

    def _dataset(self, dataset: str) -> list[tuple[str, bool]]:
        if dataset != DATASET:
            raise InputError(f"dataset path {dataset.partition(':')[2]!r} is outside the allowed dataset roots")
        return DATASET_PAIRS

    def list_dataset_pairs(self, dataset: str, *, page_token: str = "", page_size: int = 0) -> DatasetPairPage:
        """The fake dataset's pairs from ``page_token`` (the offset), ``page_size`` at a time (0: 100)."""
        self._enter("list_dataset_pairs", dataset, page_token=page_token, page_size=page_size)
        pairs = self._dataset(dataset)
        offset, size = int(page_token or 0), page_size or 100
        page = [DatasetPair(i, name, same) for i, (name, same) in enumerate(pairs) if offset <= i < offset + size]
        more = offset + size < len(pairs)
        return DatasetPairPage(page, str(offset + size) if more else "", len(pairs))

    def dataset_pair(self, dataset: str, index: int) -> DatasetPairImages:
        """Pair ``index`` of the fake dataset: two small PNGs (distinct per pair and side)."""
        self._enter("dataset_pair", dataset, index)
        pairs = self._dataset(dataset)
        if not 0 <= index < len(pairs):
            raise InputError(f"dataset {dataset!r}: pair index {index} is outside its {len(pairs)} pairs")
        name, same = pairs[index]
        a, b = name.split("|")
        return DatasetPairImages(index, name, same, _png(2 * index + 1), _png(2 * index + 2), f"aligned/{a}",
                                 f"aligned/{b}")
