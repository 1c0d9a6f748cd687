"""Audit rows and summaries <-> API messages: the worker's stored JSON (``worker.audit``) goes out
as AuditRow / AuditSummary and comes back in the same shapes, through the wire bytes too; a
summary computed by ``summarize`` itself round-trips, its dropped pairs included; a row's kept
PairResults travel under their methods bit for bit; malformed messages are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from explainer_service.alignment import DEFAULT_DETECTOR
from explainer_service.api import convert
from explainer_service.api.pb import audit_pb2, types_pb2
from explainer_service.errors import InputError
from explainer_service.explanation import Explanation
from explainer_service.models.registry import DLIB_RESNET_V1
from explainer_service.results import FaceRecord, ModelInfo, PairResult, Timing
from explainer_service.worker.audit import AuditPairSpec, AuditRequest, summarize

STEPS = 11


def _curve(auc: float, kept: bool = True) -> dict[str, Any]:
    return {"auc": auc, "kept": [kept] * STEPS, "scores": [auc] * STEPS}


def _row(index: int, *, same: bool, score: float | None, decision: str, methods: bool = True,
         error: dict[str, str] | None = None) -> dict[str, Any]:
    correct = error is None and decision != "unknown" and (decision == "match") == same
    outcomes = [{"method": "gradcam", "explain_s": 0.25, "deletion": _curve(0.125 + index / 64),
                 "insertion": _curve(0.5 + index / 64)}] if methods and error is None else []
    return {"index": index, "name": f"a{index}.jpg|b{index}.jpg", "same": same, "score": score,
            "decision": decision, "correct": correct, "methods": outcomes, "error": error}


ROWS = [
    _row(0, same=True, score=0.75, decision="match"),
    _row(1, same=True, score=0.125, decision="non-match"),
    _row(2, same=False, score=0.5, decision="match"),
    _row(3, same=False, score=None, decision="unknown", error={"status": "INVALID_ARGUMENT", "message": "no face"}),
]


def _wire(msg: Any) -> Any:
    return type(msg).FromString(msg.SerializeToString())


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """What comes back of a stored row: each metric as its AUC only (the curves stay stored)."""
    methods = [{k: ({"auc": v["auc"]} if k in ("deletion", "insertion") else v) for k, v in m.items()}
               for m in row["methods"]]
    return {**row, "methods": methods}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"row{r['index']}")
def test_row_round_trip_over_the_wire(row: dict[str, Any]) -> None:
    msg = _wire(convert.audit_row_to_message(row))
    assert convert.audit_row_from_message(msg) == _public(row)


def test_failed_row_carries_its_error_and_no_score() -> None:
    msg = convert.audit_row_to_message(ROWS[3])
    assert msg.HasField("error") and msg.error.code == "INVALID_ARGUMENT" and msg.error.message == "no face"
    assert not msg.error.retryable and not msg.correct and not msg.methods
    back = convert.audit_row_from_message(msg)
    assert back["score"] is None and back["error"] == {"status": "INVALID_ARGUMENT", "message": "no face"}


def test_metric_absent_when_not_asked() -> None:
    row = _row(0, same=True, score=0.75, decision="match")
    del row["methods"][0]["insertion"]
    m = convert.audit_row_to_message(row).methods[0]
    assert m.HasField("deletion_auc") and not m.HasField("insertion_auc")
    assert "insertion" not in convert.audit_row_from_message(convert.audit_row_to_message(row))["methods"][0]


def test_mean_ci_round_trip_with_and_without_interval() -> None:
    full = {"mean": 0.25, "ci_low": 0.125, "ci_high": 0.375, "n": 7}
    one = {"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}
    for value in (full, one):
        assert convert.mean_ci_from_message(_wire(convert.mean_ci_to_message(value))) == value
    assert not convert.mean_ci_to_message(one).HasField("ci_low")


def test_summary_of_summarize_round_trips() -> None:
    request = AuditRequest(
        pairs=tuple(AuditPairSpec(r["name"], r["same"], ("input", f"a{i}"), ("input", f"b{i}")) for i, r in enumerate(ROWS)),
        methods=(("gradcam", {}),), metrics=("deletion", "insertion"), steps=STEPS, substrate="zeros",
        keep_maps=False, align={},
    )
    summary = summarize(ROWS, request, 0.3)
    msg = _wire(convert.audit_summary_to_message(summary))
    assert (msg.pairs, msg.pairs_failed, msg.true_matches, msg.false_matches, msg.false_non_matches) == (4, 1, 1, 1, 1)
    assert msg.threshold == 0.3 and msg.accuracy == pytest.approx(1 / 3)
    assert [r.index for r in msg.worst][:2] == [2, 1]  # false match farther from the threshold first
    assert [(d.index, d.name, d.error.code, d.error.message) for d in msg.dropped] == [
        (3, "a3.jpg|b3.jpg", "INVALID_ARGUMENT", "no face")]
    back = convert.audit_summary_from_message(msg)
    assert back == summary and back["dropped"] == [
        {"index": 3, "name": "a3.jpg|b3.jpg", "error": {"status": "INVALID_ARGUMENT", "message": "no face"},
         "reason": "no_face"}]  # a row stored without its reason: from the message
    assert dict(msg.dropped_reasons) == {"unreadable": 0, "no_face": 1, "several_faces": 0, "not_aligned": 0}
    assert msg.detector == DEFAULT_DETECTOR == back["detector"]  # the request's align had none: the default
    dele = back["methods"][0]["deletion"]
    assert dele["n"] == 2 and dele["ci_low"] is not None and dele["ci_low"] <= dele["mean"] <= dele["ci_high"]


def test_summary_without_metrics_or_threshold() -> None:
    summary = {"pairs": 1, "pairs_failed": 0, "threshold": None, "accuracy": 0.0, "true_matches": 0,
               "false_matches": 0, "false_non_matches": 0, "true_non_matches": 0,
               "methods": [{"method": "gradcam", "explain_pairs_per_s": 2.0, "deletion": None, "insertion": None}],
               "worst": [], "dropped": []}
    msg = convert.audit_summary_to_message(summary)
    assert not msg.HasField("threshold") and not msg.methods[0].HasField("deletion")
    assert convert.audit_summary_from_message(msg) == summary


def test_malformed_messages_refused() -> None:
    with pytest.raises(InputError, match="row index"):
        convert.audit_row_from_message(audit_pb2.AuditRow(index=-1, decision=types_pb2.DECISION_MATCH))
    with pytest.raises(InputError, match="decision"):
        convert.audit_row_from_message(audit_pb2.AuditRow(index=0))
    with pytest.raises(InputError, match="score"):
        convert.audit_row_from_message(audit_pb2.AuditRow(index=0, score=float("nan"), decision=types_pb2.DECISION_MATCH))
    with pytest.raises(InputError, match="n"):
        convert.mean_ci_from_message(audit_pb2.MeanCI(mean=0.1, n=-2))
    with pytest.raises(InputError, match="accuracy"):
        convert.audit_summary_from_message(audit_pb2.AuditSummary(accuracy=float("inf")))
    with pytest.raises(InputError, match="dropped: pair index -1"):
        convert.audit_summary_from_message(audit_pb2.AuditSummary(dropped=[audit_pb2.DroppedPair(index=-1)]))
    with pytest.raises(InputError, match="dropped: pair 2 has no error"):
        convert.audit_summary_from_message(audit_pb2.AuditSummary(dropped=[audit_pb2.DroppedPair(index=2)]))


def _kept(method: str) -> PairResult:
    rng = np.random.default_rng(len(method))
    ex = Explanation(
        s_a=rng.uniform(-1, 1, (150, 150)).astype(np.float32), s_b=rng.uniform(-1, 1, (150, 150)).astype(np.float32),
        score=0.75, threshold=0.6, model="dlib-resnet-v1", masks=1, method=method, params={"layer": "last"},
        scores_a=rng.standard_normal(1).astype(np.float32), scores_b=rng.standard_normal(1).astype(np.float32),
        forward_passes=4,
    )
    faces = [FaceRecord(f"x {s}", "pre-aligned", 0, chip=rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
             for s in "AB"]
    return PairResult.from_explanation(ex, faces[0], faces[1], ModelInfo.from_spec(DLIB_RESNET_V1), engine="local",
                                       timing=Timing(0.5, 0.25))


def test_kept_results_travel_under_their_methods_exactly() -> None:
    row = _row(0, same=True, score=0.75, decision="match")
    kept = _kept("gradcam")
    msg = _wire(convert.audit_row_to_message(row, results={"gradcam": kept, "rise": _kept("rise")}))
    assert [m.method for m in msg.methods] == ["gradcam"]  # only the row's methods
    back = convert.audit_row_from_message(msg)
    got = back["methods"][0].pop("result")
    assert back == _public(row)
    assert got.to_dict() == kept.to_dict()
    for name in ("s_a", "s_b", "scores_a", "scores_b"):
        assert getattr(got, name).dtype == np.float32
        assert getattr(got, name).tobytes() == getattr(kept, name).tobytes(), name
    assert got.face_a.chip.tobytes() == kept.face_a.chip.tobytes()

    lean = convert.audit_row_to_message(row, results={"gradcam": kept}, include_arrays=False).methods[0].result
    assert lean.score == pytest.approx(0.75) and not lean.HasField("s_a") and not lean.face_a.HasField("chip")
    assert not convert.audit_row_to_message(row).methods[0].HasField("result")


def _varied_rows(steps: int, seed: int = 0) -> list[dict[str, Any]]:
    """Six succeeded pairs (four matched) whose per-pair 0/1 curves and scores differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(6):
        same = i < 4
        outcome: dict[str, Any] = {"method": "gradcam", "explain_s": 0.5}
        for mode in ("deletion", "insertion"):
            scores = rng.uniform(-0.2, 0.9, steps)
            kept = [bool(s >= 0.3) for s in scores]
            outcome[mode] = {"auc": 0.0, "kept": kept, "scores": [float(s) for s in scores]}
        rows.append({"index": i, "name": f"p{i}", "same": same, "score": 0.5, "decision": "match",
                     "correct": same, "methods": [outcome], "error": None})
    return rows


@pytest.mark.parametrize("steps", [2, 5, 11])
def test_mean_curve_is_the_curve_whose_area_is_the_mean(steps: int) -> None:
    rows = _varied_rows(steps, seed=steps)
    request = AuditRequest(
        pairs=tuple(AuditPairSpec(r["name"], r["same"], ("input", f"a{i}"), ("input", f"b{i}")) for i, r in enumerate(rows)),
        methods=(("gradcam", {}),), metrics=("deletion", "insertion"), steps=steps, substrate="zeros",
        keep_maps=False, align={},
    )
    summary = summarize(rows, request, 0.3)
    back = convert.audit_summary_from_message(_wire(convert.audit_summary_to_message(summary)))
    assert back == summary  # the curves survive the wire exactly
    matched = [r for r in rows if r["same"]]
    fractions = np.linspace(0.0, 1.0, steps)
    for mode in ("deletion", "insertion"):
        metric = back["methods"][0][mode]
        curve = metric["curve"]
        assert curve["fractions"] == pytest.approx(list(fractions), abs=0)
        # over the same (matched) pairs as the mean: accuracy and mean score per step, by hand
        kept = np.array([r["methods"][0][mode]["kept"] for r in matched], dtype=float)
        scores = np.array([r["methods"][0][mode]["scores"] for r in matched])
        assert curve["accuracy"] == pytest.approx(list(kept.mean(axis=0)), abs=1e-12)
        assert curve["mean_score"] == pytest.approx(list(scores.mean(axis=0)), abs=1e-12)
        area = 100 * float(np.sum((fractions[1:] - fractions[:-1]) * (np.array(curve["accuracy"][1:])
                                                                      + np.array(curve["accuracy"][:-1])) / 2))
        assert abs(area - metric["mean"]) < 1e-9
        per_pair = [100 * float(np.sum(np.diff(fractions) * (k[1:] + k[:-1]) / 2)) for k in kept]
        assert abs(np.mean(per_pair) - metric["mean"]) < 1e-9
        assert metric["n"] == len(matched) == 4


def test_summary_written_before_curves_converts_without_them() -> None:
    summary = {"pairs": 2, "pairs_failed": 0, "threshold": 0.3, "accuracy": 1.0, "true_matches": 2,
               "false_matches": 0, "false_non_matches": 0, "true_non_matches": 0,
               "methods": [{"method": "gradcam", "explain_pairs_per_s": 2.0,
                            "deletion": {"mean": 25.0, "ci_low": 10.0, "ci_high": 40.0, "n": 2}, "insertion": None}],
               "worst": [], "dropped": []}
    msg = convert.audit_summary_to_message(summary)
    assert msg.methods[0].HasField("deletion") and not msg.methods[0].HasField("deletion_curve")
    assert convert.audit_summary_from_message(_wire(msg)) == summary


@pytest.mark.parametrize(("curve", "words"), [
    ({"fractions": [0.0, 1.0], "accuracy": [1.0], "mean_score": [0.5, 0.4]}, "differ in length"),
    ({"fractions": [0.0], "accuracy": [1.0], "mean_score": [0.5]}, "at least 2 steps"),
    ({"fractions": [0.0, 0.5, 0.4], "accuracy": [1.0, 0.5, 0.0], "mean_score": [0.5, 0.4, 0.1]}, "fractions"),
    ({"fractions": [0.0, 2.0], "accuracy": [1.0, 0.5], "mean_score": [0.5, 0.4]}, "fractions"),
    ({"fractions": [0.0, 1.0], "accuracy": [1.0, 1.5], "mean_score": [0.5, 0.4]}, "accuracy"),
    ({"fractions": [0.0, 1.0], "accuracy": [1.0, 0.5], "mean_score": [0.5, float("nan")]}, "mean_score"),
])
def test_malformed_curves_refused_both_ways(curve: dict[str, Any], words: str) -> None:
    with pytest.raises(InputError, match=words):
        convert.mean_curve_from_message(audit_pb2.MeanCurve(**curve))
    with pytest.raises(InputError, match=words):
        convert.mean_curve_to_message(curve)
    with pytest.raises(InputError, match="expected a list of numbers"):
        convert.mean_curve_to_message({"fractions": "01", "accuracy": [1.0, 0.5], "mean_score": [0.5, 0.4]})
    orphan = audit_pb2.AuditSummary(methods=[audit_pb2.MethodSummary(
        method="gradcam", deletion_curve=audit_pb2.MeanCurve(fractions=[0, 1], accuracy=[1, 0], mean_score=[1, 0]))])
    with pytest.raises(InputError, match="curve without its mean"):
        convert.audit_summary_from_message(orphan)
