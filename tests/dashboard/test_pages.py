"""The dashboard's pages under Streamlit's AppTest against the fake client (tests/dashboard/fakes.py):
uploads valid and invalid, parameters, the progress of a job and its result, API errors as
readable messages that keep what is shown, audits from submission to the failure gallery, the
evaluation table and the models."""

from __future__ import annotations

import csv
import io

import pytest

from explainer_service.errors import BackendUnavailableError, FaceNotFoundError, LimitExceededError
from tests.dashboard.conftest import explain_until_done, open_app, png
from tests.dashboard.fakes import FakeClient


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _frame(at, column: str):
    """The first table on the page with ``column`` (as a pandas DataFrame)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _upload_pair(at, a: bytes | None = None, b: bytes | None = None) -> None:
    at.file_uploader(key="image_a").upload("a.png", a if a is not None else png(), "image/png")
    at.file_uploader(key="image_b").upload("b.png", b if b is not None else png((10, 20, 30)), "image/png")
    at.run()


def test_explain_shows_progress_then_the_result_with_four_maps_and_downloads(fake: FakeClient):
    fake.step = 2  # 8 masks: four reads of the job
    at = open_app(fake)
    assert [t.value for t in at.title] == ["Explain a pair"]
    _upload_pair(at)
    at.button(key="submit").click().run()
    assert not _errors(at) and not at.exception
    (args, kwargs), = fake.called("explain")
    assert kwargs["method"] == "corrrise" and kwargs["params"] == {}  # an unchanged form asks the defaults
    assert kwargs["model"] == "fake-model" and kwargs["names"] == ("a.png", "b.png")
    bars = [p.value for p in at.get("progress")]
    assert bars and 0 < bars[0] < 100  # running: 2 of 8 masks
    assert any("Partial maps over 2 masks" in c.value for c in at.caption)
    for _ in range(4):
        at.run()
    assert [m.label for m in at.metric] == ["Score (cosine)", "Threshold", "Decision"]
    assert [m.value for m in at.metric] == ["0.8000", "0.6000", "match"]
    captions = [c for img in at.image for c in img.captions]
    for title in ("A: similar regions", "A: dissimilar regions", "B: similar regions", "B: dissimilar regions",
                  "A (aligned)", "B (aligned)"):
        assert title in captions
    labels = [d.proto.label for d in at.download_button]
    assert labels == ["Download summary.json", "Download maps.npz", "Download figure.png"]
    assert at.slider(key="opacity").value == 0.8
    assert not at.get("progress")  # nothing left to follow


def test_changed_parameters_are_sent_typed_and_defaults_are_not(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    assert at.expander[0].label == "Parameters of CorrRISE"
    at.number_input(key="p1.corrrise.n_masks").set_value(64)
    at.text_input(key="p1.corrrise.patch_size").set_value("12")
    at.checkbox(key="p1.corrrise.per_pixel").check()
    at.text_input(key="p1.corrrise.correlation").set_value("spearman")
    at.run()
    at.button(key="submit").click().run()
    (_, kwargs), = fake.called("explain")
    assert kwargs["params"] == {"n_masks": 64, "patch_size": 12, "per_pixel": True, "correlation": "spearman"}


def test_a_malformed_parameter_is_named_and_nothing_is_sent(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.text_input(key="p1.corrrise.patch_size").set_value("twelve")
    at.button(key="submit").click().run()
    assert _errors(at) == ["corrrise: patch_size must be int | None, got 'twelve'"]
    assert not fake.called("explain") and not at.exception


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not an image", "image A (a.png): not an image"),
        (b"", "image A (a.png): the file is empty"),
        (png()[:40], "image A (a.png): not an image"),  # truncated inside its first chunk
    ],
    ids=["text", "empty", "truncated"],
)
def test_a_bad_upload_is_a_message_and_keeps_the_result_shown(fake: FakeClient, data: bytes, message: str):
    at = open_app(fake)
    _upload_pair(at)
    explain_until_done(at)
    assert [m.value for m in at.metric][2] == "match"
    _upload_pair(at, a=data)
    at.button(key="submit").click().run()
    assert len(_errors(at)) == 1 and _errors(at)[0].startswith(message)
    assert not at.exception
    assert len(fake.called("explain")) == 1  # the bad pair was never sent
    assert [m.value for m in at.metric] == ["0.8000", "0.6000", "match"]  # still shown


def test_submit_without_both_images_says_so(fake: FakeClient):
    at = open_app(fake)
    at.file_uploader(key="image_a").upload("a.png", png(), "image/png")
    at.run()
    at.button(key="submit").click().run()
    assert _errors(at) == ["Upload both images (A and B) first."]
    assert not fake.called("explain")


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (FaceNotFoundError("image b: no face found"), "submitting corrrise: image b: no face found"),
        (LimitExceededError("n_masks 200000 is over FACEXPLAIN_MAX_MASKS=100000"),
         "submitting corrrise: n_masks 200000 is over FACEXPLAIN_MAX_MASKS=100000"),
        (BackendUnavailableError("API server 127.0.0.1:1: not answering"),
         "submitting corrrise: API server 127.0.0.1:1: not answering (a temporary failure: try again)"),
    ],
)
def test_api_errors_are_readable_messages(fake: FakeClient, error, shown: str):
    at = open_app(fake)
    _upload_pair(at)
    fake.fail["explain"] = error
    at.button(key="submit").click().run()
    assert _errors(at) == [shown]
    assert not at.exception and not at.get("progress")


def test_a_server_that_cannot_list_methods_is_a_message_not_a_traceback(fake: FakeClient):
    fake.fail["list_methods"] = BackendUnavailableError("API server 127.0.0.1:50051: connection refused")
    at = open_app(fake)
    assert _errors(at) == ["listing the methods: API server 127.0.0.1:50051: connection refused "
                           "(a temporary failure: try again)"]
    assert not at.exception


def test_a_failed_job_shows_its_error_and_stops_polling(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.button(key="submit").click().run()
    (job_id,) = fake.jobs
    from dataclasses import replace

    from explainer_service.api.client import JobErrorInfo

    fake.jobs[job_id] = replace(fake.jobs[job_id], state="failed",
                                error=JobErrorInfo("UNAVAILABLE", "Triton at 127.0.0.1:8001 is not answering", True))
    at.run()
    assert "The corrrise job failed: Triton at 127.0.0.1:8001 is not answering" in _errors(at)
    reads = len(fake.called("get_job"))
    at.run()
    assert len(fake.called("get_job")) == reads and not at.metric


def test_a_second_method_is_shown_side_by_side(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.selectbox(key="method2").set_value("rise").run()
    at.number_input(key="p2.rise.n_masks").set_value(100).run()
    explain_until_done(at)
    at.run()
    calls = [k for _, k in fake.called("explain")]
    assert [(k["method"], k["params"]) for k in calls] == [("corrrise", {}), ("rise", {"n_masks": 100})]
    assert [m.value for m in at.metric].count("match") == 2
    assert [s.value for s in at.subheader] == ["corrrise · fake-model", "rise · fake-model"]


def test_models_page_lists_ready_and_not_ready_models(fake: FakeClient):
    at = open_app(fake, "models.py")
    models = at.dataframe[0].value
    assert list(models["model"]) == ["fake-model (default)", "other-model"]
    assert list(models["ready"]) == [True, False]
    assert list(models["why not ready"]) == ["", "weights not imported"]
    assert list(models["threshold"])[0] == 0.6
    methods = at.dataframe[1].value
    assert list(methods["method"]) == ["corrrise", "rise", "lime", "xface", "minplus", "corrrise-plus", "gradcam",
                                       "gradcampp"]


def test_models_page_error(fake: FakeClient):
    at = open_app(fake, "models.py")
    fake.fail["list_models"] = BackendUnavailableError("API server 127.0.0.1:50051: connection refused")
    at.run()
    assert _errors(at)[0].startswith("listing the models: API server 127.0.0.1:50051: connection refused")
    assert not at.exception


def _submit_dataset_audit(at, fake: FakeClient) -> str:
    at.text_input(key="audit.dataset").set_value("lfw-aligned:lfw")
    at.multiselect(key="audit.methods").set_value(["corrrise", "xface"])
    at.button(key="audit.submit").click().run()
    (job_id,) = fake.jobs
    return job_id


def test_audit_from_submission_to_the_failure_gallery_and_filtered_pairs(fake: FakeClient):
    fake.step = 2
    at = open_app(fake, "audits.py")
    job_id = _submit_dataset_audit(at, fake)
    (_, kwargs), = fake.called("submit_audit")
    assert kwargs == {"pairs": None, "dataset": "lfw-aligned:lfw", "model": "fake-model",
                      "methods": ("corrrise", "xface"), "metrics": ("deletion", "insertion"), "limit": 0,
                      "keep_maps": False}
    assert not _errors(at) and not at.exception
    assert [s.value for s in at.success] == [f"Audit {job_id[:12]} queued."]
    assert [i.value for i in at.info] == ["This audit is still running; its results appear here when it finishes."]
    assert [p.value for p in at.get("progress")] == [50]  # 2 of 4 pairs
    for _ in range(3):
        at.run()
    assert fake.jobs[job_id].state == "done"
    assert [m.value for m in at.metric] == ["0.667", "4", "1", "0", "1"]
    gallery = _frame(at, "verdict")
    assert list(gallery["verdict"]) == ["false match"] and list(gallery["index"]) == [1]
    table = _frame(at, "pairs/s")
    assert list(table["method"]) == ["corrrise", "xface"]
    assert list(table["deletion"]) == ["20.0000 [10.0000, 30.0000]"] * 2
    rows = _frame(at, "correct")
    assert list(rows["index"]) == [1, 0, 2, 3]  # by score, descending; the failed pair last
    at.selectbox(key="audit.outcome").set_value("wrong").run()
    assert list(_frame(at, "correct")["index"]) == [1]
    at.selectbox(key="audit.outcome").set_value("failed").run()
    assert list(_frame(at, "correct")["error"]) == ["INVALID_ARGUMENT: image a: no face found"]
    at.selectbox(key="audit.outcome").set_value("all").run()
    at.selectbox(key="audit.decision").set_value("non-match").run()
    assert list(_frame(at, "correct")["index"]) == [2]
    labels = [d.proto.label for d in at.download_button]
    assert labels == ["Download curves CSV", "Download pairs CSV"]


def test_the_failure_gallery_shows_each_pairs_kept_maps(fake: FakeClient):
    fake.step = 4
    at = open_app(fake, "audits.py")
    at.checkbox(key="audit.keep_maps").check()
    job_id = _submit_dataset_audit(at, fake)
    (_, kwargs), = fake.called("submit_audit")
    assert kwargs["keep_maps"] is True
    at.run()
    assert fake.jobs[job_id].state == "done" and not _errors(at) and not at.exception
    # the gallery's one false match (pair 1) read alone, with its maps
    assert [(a, k) for a, k in fake.called("audit_result") if k["maps"]] == [
        ((job_id,), {"page_token": "1", "page_size": 1, "maps": True})]
    captions = [c for img in at.image for c in img.captions]
    for method in ("corrrise", "xface"):
        for title in ("A: similar regions", "A: dissimilar regions", "B: similar regions", "B: dissimilar regions"):
            assert f"{method} · {title}" in captions
    assert any(c.startswith("Colour scale of the gallery's maps") for c in captions)
    assert any("false match" in m.value and "c.png|d.png" in m.value for m in at.markdown)
    at.run()
    assert len([k for _, k in fake.called("audit_result") if k["maps"]]) == 1  # read once per session


def test_an_audit_that_kept_no_maps_says_how_to_keep_them(fake: FakeClient):
    fake.step = 4
    at = open_app(fake, "audits.py")
    _submit_dataset_audit(at, fake)
    at.run()
    assert not [c for img in at.image for c in img.captions if "similar regions" in c]
    assert any("This audit kept no maps" in c.value for c in at.caption)


def test_audit_of_an_uploaded_csv_names_a_missing_image_then_sends_the_pairs(fake: FakeClient):
    at = open_app(fake, "audits.py")
    at.radio(key="audit.source").set_value("A CSV of pairs and its images").run()
    at.file_uploader(key="audit.csv").upload("pairs.csv", b"img1,img2,same\na.png,b.png,1\na.png,c.png,0\n", "text/csv")
    at.file_uploader(key="audit.images").set_value([("a.png", png(), "image/png"), ("b.png", png(), "image/png")])
    at.run()
    at.button(key="audit.submit").click().run()
    assert _errors(at) == ["pairs CSV line 3: image c.png was not uploaded"]
    assert not fake.called("submit_audit")
    at.file_uploader(key="audit.images").set_value(
        [("a.png", png(), "image/png"), ("b.png", png(), "image/png"), ("c.png", png(), "image/png")])
    at.run()
    at.button(key="audit.submit").click().run()
    assert not _errors(at)
    (_, kwargs), = fake.called("submit_audit")
    assert kwargs["pairs"] == 2 and kwargs["dataset"] == "" and kwargs["metrics"] == ()  # no methods: no metrics


def test_audit_without_a_dataset_spec_says_so(fake: FakeClient):
    at = open_app(fake, "audits.py")
    at.button(key="audit.submit").click().run()
    assert _errors(at) == ["Give a dataset spec (e.g. lfw-aligned:lfw)."]
    fake.fail["submit_audit"] = FaceNotFoundError("lfw:../../etc: the dataset spec escapes the allowed roots")
    at.text_input(key="audit.dataset").set_value("lfw:../../etc")
    at.button(key="audit.submit").click().run()
    assert _errors(at) == ["submitting the audit: lfw:../../etc: the dataset spec escapes the allowed roots"]


def test_cancel_and_delete_an_audit(fake: FakeClient):
    fake.step = 1
    at = open_app(fake, "audits.py")
    job_id = _submit_dataset_audit(at, fake)
    at.button(key="audit.cancel").click().run()
    assert fake.jobs[job_id].state == "cancelled"
    assert _errors(at) == ["This audit cancelled: cancelled on request"]
    assert at.button(key="audit.cancel").disabled
    at.button(key="audit.delete").click().run()
    assert job_id not in fake.jobs
    assert [i.value for i in at.info] == ["No audits yet: submit one above."]


def test_evaluation_puts_finished_audits_side_by_side_and_exports_csv(fake: FakeClient):
    at = open_app(fake, "audits.py")
    _submit_dataset_audit(at, fake)
    at.text_input(key="audit.dataset").set_value("cfp-fp:cfp")
    at.multiselect(key="audit.methods").set_value(["rise"])
    at.button(key="audit.submit").click().run()
    for job_id in list(fake.jobs):
        fake.get_job(job_id)  # 4 of 4 pairs: done
    at.switch_page("pages/evaluation.py").run()
    table = _frame(at, "audit")
    assert sorted(table["method"]) == ["corrrise", "rise", "xface"]
    assert set(table["insertion"]) == {"70.0000 [60.0000, 80.0000]"}
    button = at.download_button[0].proto
    assert button.label == "Download table CSV"
    at.multiselect(key="eval.audits").set_value([]).run()
    assert [i.value for i in at.info] == ["Choose at least one audit."]


def test_evaluation_csv_content(fake: FakeClient):
    from dashboard import views
    from tests.dashboard.fakes import _job, audit_summary

    table = views.evaluation_table([(_job("a" * 64, "audit", state="done"), audit_summary(("corrrise",)))])
    rows = list(csv.DictReader(io.StringIO(views.csv_bytes(table).decode())))
    assert rows[0]["method"] == "corrrise" and rows[0]["deletion mean"] == "20.0" and rows[0]["pairs"] == "4"
