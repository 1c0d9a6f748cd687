"""The dashboard's Deletion/Insertion curves and its dataset pair picker, under AppTest against
the fake client: the Audits page draws an audit's mean curves (Deletion and Insertion apart,
axes named, methods in the colour-blind-safe palette) and exports their points; the Evaluation
page overlays the chosen audits' curves; the Explain page lists a dataset's pairs, filters them
by same/different, and explains the chosen pair with its images' bytes as an upload would."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from dashboard import views
from explainer_service.errors import BackendUnavailableError
from tests.dashboard.conftest import open_app
from tests.dashboard.fakes import DATASET, DATASET_PAIRS, FakeClient, _job, _png, audit_summary


def _charts(at: Any) -> list[dict[str, Any]]:
    """The page's vega-lite specs (altair charts), parsed."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _curve_spec(at: Any) -> dict[str, Any]:
    (spec,) = [c for c in _charts(at) if "hconcat" in c]
    return spec


def _values(at: Any, part: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the dataset ``part`` of a chart draws (Streamlit sends them as Arrow)."""
    import pyarrow as pa

    name = part["data"]["name"]
    for chart in at.get("vega_lite_chart"):
        for named in chart.proto.datasets:
            if named.name == name:
                rows: list[dict[str, Any]] = pa.ipc.open_stream(named.data.data).read_all().to_pylist()
                return rows
    raise AssertionError(f"no dataset {name}")


def _finished_audit(at: Any, fake: FakeClient, dataset: str = "lfw-aligned:lfw",
                    methods: tuple[str, ...] = ("corrrise", "xface")) -> str:
    """Submit an audit on the page, let the fake finish it; its job id."""
    before = set(fake.jobs)
    at.text_input(key="audit.dataset").set_value(dataset)
    at.multiselect(key="audit.methods").set_value(list(methods))
    at.button(key="audit.submit").click().run()
    (job_id,) = set(fake.jobs) - before
    fake.get_job(job_id)  # 4 of 4 pairs: done
    at.run()
    return job_id


def test_audit_page_draws_the_mean_curves_and_exports_their_points(fake: FakeClient) -> None:
    fake.step = 4
    at = open_app(fake, "audits.py")
    _finished_audit(at, fake)
    assert not at.exception and not [e.value for e in at.error]
    spec = _curve_spec(at)
    deletion, insertion = spec["hconcat"]
    assert deletion["title"] == "Deletion (lower area is better)"
    assert insertion["title"] == "Insertion (higher area is better)"
    assert deletion["encoding"]["x"]["title"] == "fraction of pixels removed"
    assert insertion["encoding"]["x"]["title"] == "fraction of pixels inserted"
    assert deletion["encoding"]["y"]["title"] == "verification accuracy (matched pairs)"
    assert deletion["encoding"]["color"]["scale"]["range"] == list(views.CURVE_PALETTE[:2])
    assert deletion["encoding"]["shape"]["field"] == "method"  # not colour alone
    points = _values(at, deletion)
    assert [(p["method"], p["fraction"], p["accuracy"]) for p in points] == [
        (m, x, a) for m in ("corrrise", "xface") for x, a in zip([0.0, 0.5, 1.0], [0.8, 0.0, 0.0], strict=True)]
    assert {p["metric"] for p in _values(at, insertion)} == {"insertion"}
    assert "Download curves CSV" in [d.proto.label for d in at.download_button]
    assert any("Per-pair AUC" in e.label for e in at.expander)  # the boxplot stays, folded


def test_curve_points_csv_has_every_step_and_areas_equal_the_means() -> None:
    summary = audit_summary(("corrrise", "rise"))
    rows = list(csv.DictReader(io.StringIO(views.csv_bytes(views.curve_points(summary, audit="abc")).decode())))
    assert len(rows) == 2 * 2 * 3  # methods x metrics x steps
    assert set(rows[0]) == {"audit", "method", "metric", "step", "fraction", "accuracy", "mean_score", "auc"}
    for method in ("corrrise", "rise"):
        for metric, mean in (("deletion", 20.0), ("insertion", 70.0)):
            curve = [r for r in rows if r["method"] == method and r["metric"] == metric]
            xs, ys = [float(r["fraction"]) for r in curve], [float(r["accuracy"]) for r in curve]
            area = 100 * sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))
            assert abs(area - mean) < 1e-9 and {float(r["auc"]) for r in curve} == {mean}


def test_summaries_without_curves_draw_none() -> None:
    summary = audit_summary()
    for m in summary["methods"]:
        del m["deletion"]["curve"]
        m["insertion"] = None
    assert views.curve_points(summary) == [] and views.curve_chart([]) is None


def test_evaluation_overlays_the_chosen_audits_curves(fake: FakeClient) -> None:
    fake.step = 4
    at = open_app(fake, "audits.py")
    first = _finished_audit(at, fake)
    second = _finished_audit(at, fake, dataset="cfp-fp:cfp", methods=("rise",))
    at.switch_page("pages/evaluation.py").run()
    assert not at.exception
    spec = _curve_spec(at)
    deletion = spec["hconcat"][0]
    assert deletion["encoding"]["strokeDash"]["field"] == "audit"
    seen = {(p["audit"], p["method"]) for p in _values(at, deletion)}
    assert seen == {(first[:12], "corrrise"), (first[:12], "xface"), (second[:12], "rise")}
    assert [d.proto.label for d in at.download_button] == ["Download table CSV", "Download curves CSV"]
    rows = views.evaluation_curve_points([(_job(first, "audit", state="done"), audit_summary())])
    assert {r["audit"] for r in rows} == {first[:12]}


def test_explain_a_pair_picked_from_a_dataset(fake: FakeClient) -> None:
    fake.step = 8
    at = open_app(fake)
    at.radio(key="explain.source").set_value("From a dataset on the server").run()
    assert not at.file_uploader  # no uploads in this mode
    at.button(key="submit").click().run()
    assert [e.value for e in at.error] == ["Choose a dataset and one of its pairs first."]
    at.text_input(key="explain.dataset").set_value("lfw-aligned:/etc")
    at.button(key="explain.list_pairs").click().run()
    assert [e.value for e in at.error] == [
        "listing the pairs of lfw-aligned:/etc: dataset path '/etc' is outside the allowed dataset roots"]
    at.text_input(key="explain.dataset").set_value(DATASET)
    at.button(key="explain.list_pairs").click().run()
    assert not at.error
    labels = [views.pair_label(i, n, s) for i, (n, s) in enumerate(DATASET_PAIRS)]
    assert at.selectbox(key="explain.pair").options == labels
    assert labels[1] == "#1 b_0001.png|c_0001.png (different people)"
    at.radio(key="explain.show").set_value("different people").run()
    assert at.selectbox(key="explain.pair").options == [labels[1]]
    at.radio(key="explain.show").set_value("same person").run()
    assert at.selectbox(key="explain.pair").options == [labels[0], labels[2]]
    at.selectbox(key="explain.pair").set_value(2).run()
    at.button(key="submit").click().run()
    assert not at.error and not at.exception
    assert fake.called("dataset_pair") == [((DATASET, 2), {})]
    ((_, kwargs),) = fake.called("explain")
    assert kwargs["names"] == ("aligned/d_0001.png", "aligned/d_0003.png") and kwargs["method"] == "corrrise"
    # the images sent are the pair's bytes: the job is the one their content names
    want = hashlib.sha256(_png(5) + _png(6) + b"corrrise" + repr([]).encode()).hexdigest()
    assert [j for j in fake.jobs] == [want]
    for _ in range(3):
        if at.metric:
            break
        at.run()
    assert [m.label for m in at.metric] == ["Score (cosine)", "Threshold", "Decision"]
    # a failing read later keeps what is shown and says why
    fake.fail["dataset_pair"] = BackendUnavailableError("API server 127.0.0.1:1: connection refused")
    at.button(key="submit").click().run()
    assert [e.value for e in at.error] == ["reading pair 2 of lfw-aligned:lfw: API server 127.0.0.1:1: connection "
                                           "refused (a temporary failure: try again)"]
    assert [m.label for m in at.metric] == ["Score (cosine)", "Threshold", "Decision"]
