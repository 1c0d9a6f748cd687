"""The Explain page's face detector and uncertainty under AppTest with the fake client: the
detector, FDR q and CI level reach ``explain`` (empty: the server's defaults), a bad q is refused
before anything is sent, a CorrRISE result shows its split-half agreement and significant share
and greys out what is not significant on request, a result without an uncertainty has no such
controls, and the detector that found a face is in its caption."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dashboard import views
from tests.dashboard.conftest import explain_until_done, open_app, png
from tests.dashboard.fakes import SIZE, FakeClient, make_result

FDR_Q_ERROR = "FDR q must be a number in (0, 1) (empty or 0: the server's default), got '{}'"


def _upload_pair(at) -> None:
    at.file_uploader(key="image_a").upload("a.png", png(), "image/png")
    at.file_uploader(key="image_b").upload("b.png", png((10, 20, 30)), "image/png")
    at.run()


def _grey_boxes(at) -> list[Any]:
    return [c for c in at.checkbox if str(c.key).startswith("grey.")]


def test_an_unchanged_form_asks_the_servers_detector_and_uncertainty_defaults(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    assert at.selectbox(key="detector").options == ["server default", "hog", "mtcnn", "mmod", "auto"]
    assert "Uncertainty" in [e.label for e in at.expander]
    at.button(key="submit").click().run()
    (_, kwargs), = fake.called("explain")
    assert (kwargs["detector"], kwargs["fdr_q"], kwargs["ci_level"]) == ("", 0.0, 0.0)


def test_the_detector_q_and_level_reach_explain_and_the_result_states_them(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.selectbox(key="detector").set_value("mtcnn")
    at.text_input(key="fdr_q").set_value("0.1")
    at.text_input(key="ci_level").set_value(" 0.9 ")
    at.run()
    explain_until_done(at)
    assert not at.error and not at.exception
    (_, kwargs), = fake.called("explain")
    assert (kwargs["detector"], kwargs["fdr_q"], kwargs["ci_level"]) == ("mtcnn", 0.1, 0.9)
    captions = [c for img in at.image for c in img.captions]
    assert "A (aligned; detected by mtcnn, confidence 0.990)" in captions
    assert "B (aligned; detected by mtcnn, confidence 0.990)" in captions
    notes = [c.value for c in at.caption]
    assert ("Uncertainty over 8 masks: significant = Benjamini-Hochberg at q = 0.1; per-pixel intervals: "
            "Fisher z at level 0.9") in notes
    table = next(d.value for d in at.dataframe if "split-half r" in d.value.columns)
    assert list(table["face"]) == ["A", "B"]
    assert list(table["split-half r"]) == ["0.900", "0.600"]  # the fake's SPLIT_HALF_R
    assert list(table["predicted full-map r"]) == ["0.947", "0.750"]  # 2r / (1 + r)
    assert list(table["significant pixels"]) == ["50.0 %", "50.0 %"]  # the top half of each map
    # the region inspector's default pixel (12, 12) is on the first row of the bottom half
    assert f"Pixel ({SIZE // 2}, {SIZE // 2}) is not significant (q = 0.1)" in notes


@pytest.mark.parametrize("q", ["1.5", "0,05", "-1"])
def test_a_bad_q_is_refused_with_a_message_and_nothing_is_sent(fake: FakeClient, q: str):
    at = open_app(fake)
    _upload_pair(at)
    at.text_input(key="fdr_q").set_value(q)
    at.button(key="submit").click().run()
    assert [e.value for e in at.error] == [FDR_Q_ERROR.format(q)]
    assert not fake.called("explain") and not at.exception and not at.get("progress")


def test_a_bad_level_is_refused_even_before_the_images_are_checked(fake: FakeClient):
    at = open_app(fake)  # no images uploaded: only the level's error is shown
    at.text_input(key="ci_level").set_value("95")
    at.button(key="submit").click().run()
    assert [e.value for e in at.error] == [
        "CI level must be a number in (0, 1) (empty or 0: the server's default), got '95'"]
    assert not fake.called("explain")


def test_grey_out_makes_what_is_not_significant_transparent_in_the_shown_maps(fake: FakeClient, monkeypatch):
    drawn: list[np.ndarray] = []
    overlay = views.overlay

    def recording(chip: np.ndarray | None, values: np.ndarray, **kwargs: Any) -> np.ndarray:
        if chip is not None:  # a result's map (the partial maps are drawn without a chip)
            drawn.append(np.array(values, np.float64))
        return overlay(chip, values, **kwargs)

    monkeypatch.setattr(views, "overlay", recording)
    at = open_app(fake)
    _upload_pair(at)
    explain_until_done(at)
    (box,) = _grey_boxes(at)
    assert box.label == "Grey out what is not significant" and not box.value
    drawn.clear()
    at.run()
    plain_urls = [img.value for img in at.image if "A: similar regions" in img.captions]
    plain = list(drawn)
    drawn.clear()
    box.check().run()
    grey_urls = [img.value for img in at.image if "A: similar regions" in img.captions]
    greyed = list(drawn)
    assert plain_urls and grey_urls != plain_urls  # the page shows a different picture

    expected = make_result()
    assert expected.s_a is not None and expected.s_b is not None
    parts = views.map_parts(expected.s_a, expected.s_b)
    assert len(plain) == len(greyed) == 4  # A similar, A dissimilar, B similar, B dissimilar
    for shown, (key, _face, _part, _title) in zip(plain, views.MAP_PARTS, strict=True):
        assert np.array_equal(shown, parts[key])
    half = SIZE // 2  # the fake's masks: significant on the top half of the rows
    for shown, (key, _face, _part, _title) in zip(greyed, views.MAP_PARTS, strict=True):
        assert np.array_equal(shown[:half], parts[key][:half])
        assert not shown[half:].any()
    assert any(parts[key][half:].any() for key in parts)  # there was something to grey out
    assert any("not significant: transparent" in c for img in at.image for c in img.captions)


def test_a_result_without_an_uncertainty_shows_no_uncertainty_controls(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.selectbox(key="method2").set_value("rise").run()
    explain_until_done(at)
    at.run()
    assert [s.value for s in at.subheader] == ["corrrise · fake-model", "rise · fake-model"]
    jobs = [job_id for _, job_id in at.session_state["explain_jobs"]]
    assert [c.key for c in _grey_boxes(at)] == [f"grey.{jobs[0]}"]  # corrrise's only
    assert sum("split-half r" in d.value.columns for d in at.dataframe) == 1
    assert sum(c.value.startswith("Uncertainty over") for c in at.caption) == 1


def test_only_rise_shows_nothing_about_uncertainty(fake: FakeClient):
    at = open_app(fake)
    _upload_pair(at)
    at.selectbox(key="method").set_value("rise").run()
    explain_until_done(at)
    assert [m.value for m in at.metric][2] == "match"
    assert not _grey_boxes(at) and not at.dataframe
    assert not any(c.value.startswith(("Uncertainty over", "Pixel (")) for c in at.caption)
    captions = [c for img in at.image for c in img.captions]
    assert "A (aligned)" in captions and not any("not significant" in c for c in captions)


def test_masks_that_do_not_fit_the_maps_are_said_so_and_offer_no_grey_out(fake: FakeClient, monkeypatch):
    from dataclasses import replace

    from tests.dashboard.fakes import fake_uncertainty

    small = np.zeros((SIZE // 2, SIZE // 2))

    def get_result(job_id: str, *, summary_only: bool = False):
        return replace(make_result(), uncertainty=fake_uncertainty(small, small))

    monkeypatch.setattr(fake, "get_result", get_result)
    at = open_app(fake)
    _upload_pair(at)
    explain_until_done(at)
    assert not at.exception and not _grey_boxes(at)
    assert (f"The significance masks ({SIZE // 2}, {SIZE // 2}), ({SIZE // 2}, {SIZE // 2}) do not fit the maps "
            f"({SIZE}, {SIZE}), ({SIZE}, {SIZE}): nothing to grey out.") in [c.value for c in at.caption]
