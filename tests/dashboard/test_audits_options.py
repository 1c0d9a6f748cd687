"""The Audits page's face detector, kept maps' uncertainty and dropped pairs under AppTest with the
fake client: the detector, FDR q and CI level reach ``submit_audit`` (empty: the server's
defaults), a bad q, or a q without kept maps, is refused with one message before anything is
sent, a finished audit states its detector and options, shows its dropped pairs per reason when it
dropped any (and nothing about drops otherwise), and a kept CorrRISE map greys out what is not
significant on request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dashboard import views
from tests.dashboard.conftest import open_app
from tests.dashboard.fakes import SIZE, FakeClient, make_result

FDR_Q_ERROR = "FDR q must be a number in (0, 1) (empty or 0: the server's default), got '{}'"
NEEDS_KEPT_MAPS = ("FDR q and CI level state the uncertainty of the kept maps: tick \"Keep each pair's maps (shown "
                   "in the failure gallery)\" and choose a method, or leave them empty.")


def _fill(at, *, methods: list[str] | None = None, keep_maps: bool = False, detector: str = "", q: str = "",
          level: str = "") -> None:
    at.text_input(key="audit.dataset").set_value("lfw-aligned:lfw")
    at.multiselect(key="audit.methods").set_value(["corrrise"] if methods is None else methods)
    if keep_maps:
        at.checkbox(key="audit.keep_maps").check()
    at.selectbox(key="audit.detector").set_value(detector)
    at.text_input(key="audit.fdr_q").set_value(q)
    at.text_input(key="audit.ci_level").set_value(level)


def _submit_until_done(at, fake: FakeClient) -> str:
    at.button(key="audit.submit").click().run()
    (job_id,) = fake.jobs
    for _ in range(4):
        if fake.jobs[job_id].state == "done" and at.metric:
            break
        at.run()
    assert fake.jobs[job_id].state == "done" and at.metric
    return job_id


def _frame(at, *columns: str) -> Any:
    """The first table on the page with all of ``columns`` (a pandas DataFrame), or None."""
    return next((d.value for d in at.dataframe if set(columns) <= set(d.value.columns)), None)


def test_an_unchanged_form_asks_the_servers_detector_and_uncertainty_defaults(fake: FakeClient):
    at = open_app(fake, "audits.py")
    assert at.selectbox(key="audit.detector").options == ["server default", "hog", "mtcnn", "mmod", "auto"]
    assert "Uncertainty of the kept maps" in [e.label for e in at.expander]
    at.text_input(key="audit.dataset").set_value("lfw-aligned:lfw")
    at.button(key="audit.submit").click().run()
    assert not at.error and not at.exception
    (job_id,) = fake.jobs
    assert fake.audit_options[job_id] == {"detector": "", "fdr_q": 0.0, "ci_level": 0.0}


def test_the_detector_q_and_level_reach_submit_audit_and_the_audit_states_them(fake: FakeClient):
    at = open_app(fake, "audits.py")
    _fill(at, keep_maps=True, detector="mtcnn", q="0.1", level=" 0.9 ")
    job_id = _submit_until_done(at, fake)
    assert not at.error and not at.exception
    (_, kwargs), = fake.called("submit_audit")
    assert kwargs["keep_maps"] is True and kwargs["methods"] == ("corrrise",)
    assert fake.audit_options[job_id] == {"detector": "mtcnn", "fdr_q": 0.1, "ci_level": 0.9}
    notes = [c.value for c in at.caption]
    assert "Face detector: mtcnn · kept maps' uncertainty: FDR q = 0.1, CI level 0.9" in notes
    # the kept map's uncertainty is stated at the audit's q: its grey-out says so
    (box,) = [c for c in at.checkbox if str(c.key).startswith("audit.grey.")]
    assert "q = 0.1 " in box.help


def test_the_detector_alone_is_sent_without_kept_maps(fake: FakeClient):
    at = open_app(fake, "audits.py")
    _fill(at, detector="hog")
    job_id = _submit_until_done(at, fake)
    assert not at.error
    assert fake.audit_options[job_id] == {"detector": "hog", "fdr_q": 0.0, "ci_level": 0.0}
    assert "Face detector: hog" in [c.value for c in at.caption]


@pytest.mark.parametrize("q", ["1.5", "0,05", "-1"])
def test_a_bad_q_is_refused_with_one_message_and_nothing_is_submitted(fake: FakeClient, q: str):
    at = open_app(fake, "audits.py")
    _fill(at, keep_maps=True, q=q)
    at.button(key="audit.submit").click().run()
    assert [e.value for e in at.error] == [FDR_Q_ERROR.format(q)]
    assert not fake.called("submit_audit") and not fake.jobs and not at.exception


def test_a_bad_level_is_refused_even_before_the_dataset_is_checked(fake: FakeClient):
    at = open_app(fake, "audits.py")  # no dataset spec: only the level's error is shown
    at.text_input(key="audit.ci_level").set_value("95")
    at.button(key="audit.submit").click().run()
    assert [e.value for e in at.error] == [
        "CI level must be a number in (0, 1) (empty or 0: the server's default), got '95'"]
    assert not fake.called("submit_audit")


@pytest.mark.parametrize(("methods", "keep_maps"), [(["corrrise"], False), ([], True)])
def test_a_q_without_kept_maps_is_refused_as_the_server_would(fake: FakeClient, methods: list[str], keep_maps: bool):
    at = open_app(fake, "audits.py")
    _fill(at, methods=methods, keep_maps=keep_maps, q="0.1")
    at.button(key="audit.submit").click().run()
    assert [e.value for e in at.error] == [NEEDS_KEPT_MAPS]
    assert not fake.called("submit_audit") and not fake.jobs


def test_a_finished_audit_shows_its_dropped_pairs_per_reason_and_the_detector(fake: FakeClient):
    at = open_app(fake, "audits.py")
    _fill(at)
    _submit_until_done(at, fake)
    assert "Dropped pairs" in [s.value for s in at.subheader]
    table = _frame(at, "reason")
    assert table is not None
    assert list(table["reason"]) == ["unreadable", "no_face", "several_faces", "not_aligned"]  # none hidden
    assert list(table["pairs"]) == [0, 1, 0, 0]
    assert list(table["meaning"]) == ["unreadable image", "no face", "several faces refused", "not aligned"]
    # the server's default detector, as the summary states it
    assert "1 pair dropped (not in the accuracy or the means); face detector: auto" in [c.value for c in at.caption]
    listed = _frame(at, "reason", "error")
    assert listed is not None
    assert listed.to_dict("records") == [{"index": 3, "name": "g.png|h.png", "reason": "no_face",
                                          "error": "INVALID_ARGUMENT: image a: no face found"}]


def test_an_audit_that_dropped_nothing_shows_nothing_about_drops(fake: FakeClient):
    fake.audit_drops = False
    at = open_app(fake, "audits.py")
    _fill(at)
    _submit_until_done(at, fake)
    assert not at.error and not at.exception
    assert "Dropped pairs" not in [s.value for s in at.subheader]
    assert _frame(at, "reason") is None
    assert not any("dropped" in c.value for c in at.caption)
    assert "Face detector: auto" in [c.value for c in at.caption]


def test_grey_out_makes_what_is_not_significant_transparent_in_a_kept_map(fake: FakeClient, monkeypatch):
    drawn: list[np.ndarray] = []
    overlay = views.overlay

    def recording(chip: np.ndarray | None, values: np.ndarray, **kwargs: Any) -> np.ndarray:
        drawn.append(np.array(values, np.float64))
        return overlay(chip, values, **kwargs)

    monkeypatch.setattr(views, "overlay", recording)
    at = open_app(fake, "audits.py")
    _fill(at, methods=["corrrise", "xface"], keep_maps=True)
    job_id = _submit_until_done(at, fake)
    # the gallery's one pair (1): corrrise's result has an uncertainty, xface's has none
    boxes = [c for c in at.checkbox if str(c.key).startswith("audit.grey.")]
    assert [(b.key, b.label, b.value) for b in boxes] == [
        (f"audit.grey.{job_id}.1.corrrise", "Grey out what is not significant", False)]
    drawn.clear()
    at.run()
    plain = list(drawn)
    plain_urls = [img.value for img in at.image if "corrrise · A: similar regions" in img.captions]
    drawn.clear()
    boxes[0].check().run()
    greyed = list(drawn)
    grey_urls = [img.value for img in at.image if "corrrise · A: similar regions (significant only)" in img.captions]
    assert not at.exception and plain_urls and grey_urls and grey_urls != plain_urls

    expected = make_result()
    assert expected.s_a is not None and expected.s_b is not None
    parts = views.map_parts(expected.s_a, expected.s_b)
    assert len(plain) == len(greyed) == 8  # corrrise's four maps, then xface's
    half = SIZE // 2  # the fake's masks: significant on the top half of the rows
    for shown, was, (key, _face, _part, _title) in zip(greyed[:4], plain[:4], views.MAP_PARTS, strict=True):
        assert np.array_equal(was, parts[key])
        assert np.array_equal(shown[:half], parts[key][:half])
        assert not shown[half:].any()
    assert any(parts[key][half:].any() for key in parts)  # there was something to grey out
    for shown, was in zip(greyed[4:], plain[4:], strict=True):  # xface's maps are untouched
        assert np.array_equal(shown, was)
    captions = [c for img in at.image for c in img.captions]
    assert "xface · A: similar regions" in captions and "corrrise · A: similar regions" not in captions


# -- the views behind it, on summaries in the client's shape --------------------------------------


def test_dropped_rows_list_every_reason_once_any_pair_was_dropped():
    summary = {"dropped_reasons": {"unreadable": 2, "no_face": 0, "several_faces": 1, "not_aligned": 0}}
    assert [(r["reason"], r["pairs"]) for r in views.dropped_rows(summary)] == [
        ("unreadable", 2), ("no_face", 0), ("several_faces", 1), ("not_aligned", 0)]
    assert views.dropped_rows({"dropped_reasons": dict.fromkeys(summary["dropped_reasons"], 0)}) == []
    assert views.dropped_rows({}) == []  # a summary from before drops were counted: nothing to say


def test_an_older_summary_without_reasons_counts_its_dropped_list():
    error = {"status": "INVALID_ARGUMENT", "message": "image b: no face found"}
    summary = {"dropped": [{"index": 5, "name": "x|y", "error": error},
                           {"index": 7, "name": "z|w", "error": error, "reason": "no_face"}]}
    counts = {r["reason"]: r["pairs"] for r in views.dropped_rows(summary)}
    assert counts == {"unreadable": 0, "no_face": 1, "several_faces": 0, "not_aligned": 0, "unknown": 1}
    assert views.dropped_pairs(summary) == [
        {"index": 5, "name": "x|y", "reason": "-", "error": "INVALID_ARGUMENT: image b: no face found"},
        {"index": 7, "name": "z|w", "reason": "no_face", "error": "INVALID_ARGUMENT: image b: no face found"}]


def test_audit_options_caption_states_what_the_summary_states():
    assert views.audit_options_caption({}) == ""
    assert views.audit_options_caption({"detector": "mmod"}) == "Face detector: mmod"
    assert (views.audit_options_caption({"detector": "auto", "uncertainty": {"fdr_q": 0.05, "ci_level": 0.95}})
            == "Face detector: auto · kept maps' uncertainty: FDR q = 0.05, CI level 0.95")
