"""Issue 12 in audits: each failed row's drop reason counted per reason in the summary, with the
detector; the API's align parameters carry the detector (so job ids differ per detector)."""

from __future__ import annotations

import pytest

from explainer_service.alignment import DEFAULT_DETECTOR, DETECTORS
from explainer_service.api.service import ALIGN_DEFAULTS, align_params
from explainer_service.errors import InputError
from explainer_service.store import content_job_id
from explainer_service.worker.audit import AuditPairSpec, AuditRequest, summarize


def _row(i: int, reason: str | None, message: str = "") -> dict:
    failed = reason is not None or message
    row = {"index": i, "name": f"p{i}", "same": True, "score": None if failed else 0.9,
           "decision": "unknown" if failed else "match", "correct": not failed, "methods": [],
           "error": {"status": "INVALID_ARGUMENT", "message": message or reason} if failed else None}
    if reason is not None:
        row["drop_reason"] = reason
    return row


def test_summary_counts_dropped_pairs_per_reason_and_names_the_detector():
    rows = [_row(0, None), _row(1, "unreadable"), _row(2, "no_face"), _row(3, "no_face"),
            _row(4, None, message="p4 B: 2 faces found; choose one")]  # stored before reasons were kept
    request = AuditRequest(tuple(AuditPairSpec(r["name"], True, ("input", "a"), ("input", "b")) for r in rows),
                           (), (), 11, "zeros", False, align_params("hog"))
    summary = summarize(rows, request, 0.5)
    assert summary["pairs_failed"] == 4 == sum(summary["dropped_reasons"].values())
    assert summary["dropped_reasons"] == {"unreadable": 1, "no_face": 2, "several_faces": 1, "not_aligned": 0}
    assert [d["reason"] for d in summary["dropped"]] == ["unreadable", "no_face", "no_face", "several_faces"]
    assert summary["detector"] == "hog"
    assert all("drop_reason" not in r for r in summary["worst"])


def test_align_params_carry_a_checked_detector_into_the_job_id():
    assert align_params("") == {**ALIGN_DEFAULTS, "detector": DEFAULT_DETECTOR}
    with pytest.raises(InputError, match="detector: unknown 'nope'"):
        align_params("nope")
    ids = {content_job_id("explain", [b"a", b"b"], model="m", model_sha256="", method="corrrise",
                          params={"method": {}, "align": align_params(d)}) for d in DETECTORS}
    assert len(ids) == len(DETECTORS)  # two detectors never share a stored result
