"""dashboard.views on its own: overlays and legend, chart points, upload checks, parameters, pairs
CSV, the tables and the result files, with answers worked out by hand."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from dashboard import views
from explainer_service.errors import InputError
from explainer_service.methods.registry import MethodParam, method_info
from explainer_service.results import PairResult
from tests.dashboard.conftest import png
from tests.dashboard.fakes import _job, audit_rows, audit_summary, make_result


def test_overlay_is_the_grey_face_where_the_map_is_zero_and_red_or_blue_where_it_peaks():
    chip = np.zeros((4, 4, 3), np.uint8)
    chip[..., 0] = 30  # grey value (30 + 60 + 90) / 3 = 60
    chip[..., 1] = 60
    chip[..., 2] = 90
    values = np.zeros((4, 4))
    values[0, 0] = 1.0
    values[3, 3] = -1.0
    out = views.overlay(chip, values, vmax=1.0, opacity=1.0)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert tuple(out[1, 1]) == (60, 60, 60)
    r, g, b = (int(v) for v in out[0, 0])
    assert r > 100 and r > 2 * b  # similar: red end of RdBu_r
    r, g, b = (int(v) for v in out[3, 3])
    assert b > 50 and b > 2 * r  # dissimilar: blue end
    assert np.array_equal(views.overlay(chip, values, vmax=1.0, opacity=0.0)[0, 0], [60, 60, 60])


def test_overlay_resizes_the_map_and_draws_on_grey_without_a_chip():
    values = np.array([[1.0, 0.0], [0.0, 0.0]])
    out = views.overlay(np.full((4, 4, 3), 200, np.uint8), values, vmax=2.0, opacity=1.0)
    assert out.shape == (4, 4, 3)
    assert (out[:2, :2] == out[0, 0]).all() and tuple(out[3, 3]) == (200, 200, 200)
    assert tuple(views.overlay(None, np.zeros((3, 5)), vmax=1.0)[0, 0]) == (128, 128, 128)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": np.zeros(3), "vmax": 1.0}, "an \\(H, W\\) array"),
        ({"values": np.zeros((2, 2)), "vmax": 0.0}, "colour scale"),
        ({"values": np.zeros((2, 2)), "vmax": 1.0, "opacity": 1.5}, "opacity"),
    ],
)
def test_overlay_refuses_bad_input(kwargs, message):
    with pytest.raises(InputError, match=message):
        views.overlay(None, **kwargs)
    with pytest.raises(InputError, match="chip"):
        views.overlay(np.zeros((4, 4)), np.zeros((4, 4)), vmax=1.0)


def test_map_parts_split_the_signed_maps_and_the_scale_is_shared():
    s_a = np.array([[0.5, -0.25]])
    s_b = np.array([[-1.0, 0.1]])
    parts = views.map_parts(s_a, s_b)
    assert parts["similar_a"].tolist() == [[0.5, 0.0]] and parts["dissimilar_a"].tolist() == [[0.0, -0.25]]
    assert np.array_equal(parts["similar_b"] + parts["dissimilar_b"], s_b)
    assert views.map_scale(s_a, s_b) == 1.0
    assert views.map_scale(np.zeros((2, 2))) == 1e-6
    assert [k for k, *_ in views.MAP_PARTS] == ["similar_a", "dissimilar_a", "similar_b", "dissimilar_b"]


def test_legend_is_a_png():
    data = views.legend_png(0.5)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError):
        views.legend_png(0.0)


def test_map_points_are_block_means_and_region_value_is_a_window_mean():
    values = np.arange(16, dtype=float).reshape(4, 4)
    points = views.map_points(values, max_side=2)
    assert points == [
        {"x": 0.0, "y": 0.0, "value": 2.5}, {"x": 2.0, "y": 0.0, "value": 4.5},
        {"x": 0.0, "y": 2.0, "value": 10.5}, {"x": 2.0, "y": 2.0, "value": 12.5},
    ]
    assert len(views.map_points(values)) == 16
    assert views.region_value(values, 0, 0, radius=1) == np.mean([0, 1, 4, 5])
    assert views.region_value(values, 2, 1, radius=0) == 6.0
    with pytest.raises(InputError, match="outside the 4x4 map"):
        views.region_value(values, 4, 0)


def test_heatmap_chart_has_a_correlation_tooltip():
    spec = views.heatmap_chart(np.ones((6, 6)) * 0.3, vmax=0.5, title="A").to_dict()
    tooltips = [t["title"] for t in spec["encoding"]["tooltip"]]
    assert "correlation" in tooltips
    assert spec["encoding"]["color"]["scale"]["domain"] == [-0.5, 0.5]
    assert len(spec["datasets"][spec["data"]["name"]]) == 36


def test_check_image_upload():
    views.check_image_upload("image A", png())
    for data, message in ((b"", "empty"), (b"GIF? no", "not an image"), (png(), "larger than")):
        with pytest.raises(InputError, match=f"image A: .*{message}"):
            views.check_image_upload("image A", data, max_bytes=40 if message == "larger than" else 10**6)


def test_parameters_parse_by_type_and_only_changes_are_sent():
    info = method_info("corrrise")
    values = {"n_masks": 500, "patches": 10.0, "patch_size": "none", "per_pixel": False, "correlation": "pearson"}
    assert views.params_from_values(info, values) == {}
    values.update(n_masks=64, patch_size=" 12 ", correlation="spearman", per_pixel=True)
    assert views.params_from_values(info, values) == {"n_masks": 64, "patch_size": 12, "correlation": "spearman",
                                                      "per_pixel": True}
    with pytest.raises(InputError, match="corrrise: patch_size must be int \\| None, got 'x'"):
        views.params_from_values(info, {"patch_size": "x"})
    sizes = MethodParam("patch_sizes", "tuple[int, ...] | None", None, "")
    assert views.parse_param("xface", sizes, "8, 16") == (8, 16)
    assert views.parse_param("xface", sizes, "") is None
    assert views.param_widget_kind(sizes) == "text"
    assert [views.param_widget_kind(p) for p in info.params[:5]] == ["int", "int", "text", "text", "bool"]


def test_pairs_from_csv():
    images = {"a.png": b"A", "b.png": b"B"}
    pairs = views.pairs_from_csv(b"img1,img2,same\nx/a.png,b.png,1\nb.png,a.png,no\n", images)
    assert pairs == [(b"A", b"B", True, "a.png|b.png"), (b"B", b"A", False, "b.png|a.png")]
    for text, message in (
        (b"a,b,c\n", "header must be img1,img2,same"),
        (b"img1,img2,same\n", "no pairs"),
        (b"img1,img2,same\na.png,b.png,maybe\n", "line 2: same must be"),
        (b"img1,img2,same\na.png,,1\n", "line 2: img1, img2 and same are all needed"),
        (b"img1,img2,same\na.png,z.png,1\n", "line 2: image z.png was not uploaded"),
        (b"\xff\xfe", "not UTF-8"),
    ):
        with pytest.raises(InputError, match=message):
            views.pairs_from_csv(text, images)


def test_progress_and_job_rows():
    job = _job("j" * 64, "explain", state="running", done=3, total=12)
    assert views.progress_of(job) == (0.25, "running: 3 / 12 masks")
    assert views.progress_of(_job("k", "audit", state="queued", total=0)) == (0.0, "queued")
    (row,) = views.job_rows([job])
    assert row["progress"] == 0.25 and row["methods"] == "corrrise" and row["error"] == ""


def test_audit_rows_selection_and_gallery():
    flat = views.audit_rows(audit_rows(("corrrise",)))
    assert flat[0] == {"index": 0, "name": "a.png|b.png", "same": True, "score": 0.85, "decision": "match",
                       "correct": True, "corrrise deletion": 0.1, "corrrise insertion": 0.9, "error": ""}
    assert flat[3]["error"] == "INVALID_ARGUMENT: image a: no face found"
    by_score = views.select_rows(flat, sort_by="score")
    assert [r["index"] for r in by_score] == [2, 0, 1, 3]  # ascending, the pair without a score last
    assert [r["index"] for r in views.select_rows(flat, outcome="wrong")] == [1]
    assert [r["index"] for r in views.select_rows(flat, outcome="correct")] == [0, 2]
    assert [r["index"] for r in views.select_rows(flat, decision="match", sort_by="score", descending=True)] == [1, 0]
    with pytest.raises(InputError, match="outcome filter"):
        views.select_rows(flat, outcome="bad")
    gallery = views.gallery_rows(audit_summary())
    assert [(g["verdict"], g["index"]) for g in gallery] == [("false match", 1)]


def test_method_and_evaluation_tables_and_intervals():
    assert views.format_ci(None) == "-"
    assert views.format_ci({"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}) == "0.5000"
    (row,) = views.method_table(audit_summary())
    assert row["deletion"] == "20.0000 [10.0000, 30.0000]" and row["insertion mean"] == 70.0 and row["pairs/s"] == 2.5
    job = _job("b" * 64, "audit", state="done")
    table = views.evaluation_table([(job, audit_summary(("corrrise", "rise")))])
    assert [(r["audit"], r["method"], r["accuracy"]) for r in table] == [("b" * 12, "corrrise", 0.6667),
                                                                         ("b" * 12, "rise", 0.6667)]
    points = views.interval_points(table)
    assert {(p["method"], p["metric"], p["low"], p["high"]) for p in points} == {
        ("corrrise", "deletion", 10.0, 30.0), ("corrrise", "insertion", 60.0, 80.0),
        ("rise", "deletion", 10.0, 30.0), ("rise", "insertion", 60.0, 80.0)}
    assert views.interval_chart(table) is not None and views.interval_chart([]) is None
    points = views.auc_points(audit_rows(("corrrise",)))
    assert len(points) == 6 and {p["metric"] for p in points} == {"deletion", "insertion"}


def test_csv_bytes_keeps_every_column_and_writes_none_empty():
    data = views.csv_bytes([{"a": 1, "b": None}, {"a": 2, "c": "x,y"}])
    assert list(csv.DictReader(io.StringIO(data.decode()))) == [{"a": "1", "b": "", "c": ""},
                                                                {"a": "2", "b": "", "c": "x,y"}]


def test_result_files_are_the_three_files_of_explain():
    result = make_result("rise")
    files = views.result_files(result)
    assert list(files) == ["summary.json", "maps.npz", "figure.png"]
    summary = json.loads(files["summary.json"][0])
    assert summary["method"] == "rise" and summary["decision"] == "match"
    again = PairResult.from_bytes(summary, files["maps.npz"][0])
    assert np.array_equal(again.s_a, result.s_a) and np.array_equal(again.face_b.chip, result.face_b.chip)
    assert files["figure.png"][0][:4] == b"\x89PNG" and files["figure.png"][1] == "image/png"
    with pytest.raises(InputError, match="no maps"):
        views.result_files(PairResult.from_dict(result.to_dict()))


def test_kept_results_picks_one_pairs_results_by_method():
    a, b = make_result("corrrise"), make_result("xface")
    rows = [
        {"index": 3, "methods": [{"method": "corrrise", "result": a}, {"method": "xface", "result": b}]},
        {"index": 4, "methods": [{"method": "corrrise", "result": make_result("corrrise")}]},
        {"index": 5, "methods": [{"method": "corrrise", "deletion": {"auc": 0.1}}]},  # maps not kept
    ]
    kept = views.kept_results(rows, 3)
    assert list(kept) == ["corrrise", "xface"] and kept["corrrise"] is a and kept["xface"] is b
    assert views.kept_results(rows, 5) == {} and views.kept_results(rows, 9) == {}


# -- uncertainty and detector -----------------------------------------------------------------------


def test_significant_only_matches_a_pixel_by_pixel_loop():
    rng = np.random.default_rng(7)
    values = rng.normal(size=(9, 13))
    mask = rng.random((9, 13)) < 0.4
    before = values.copy()
    out = views.significant_only(values, mask)
    expected = np.empty_like(values)
    for y in range(values.shape[0]):
        for x in range(values.shape[1]):
            expected[y, x] = values[y, x] if mask[y, x] else 0.0
    assert np.array_equal(out, expected)
    assert np.array_equal(values, before)  # the map itself is untouched
    assert 0 < int(mask.sum()) < mask.size  # both cases were exercised


def test_shown_parts_split_the_greyed_maps_only_when_masks_are_given():
    rng = np.random.default_rng(8)
    s_a, s_b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    m_a, m_b = rng.random((5, 7)) < 0.5, rng.random((5, 7)) < 0.5
    plain = views.shown_parts(s_a, s_b)
    greyed = views.shown_parts(s_a, s_b, (m_a, m_b))
    for key in plain:
        face_mask = m_a if key.endswith("_a") else m_b
        assert np.array_equal(greyed[key], np.where(face_mask, plain[key], 0.0)), key
    assert np.array_equal(plain["similar_a"], np.maximum(s_a, 0)) and np.array_equal(plain["dissimilar_b"], np.minimum(s_b, 0))


def test_what_is_not_significant_is_transparent_in_the_overlay():
    chip = np.full((6, 6, 3), 90, np.uint8)
    values = np.full((6, 6), 0.8)
    mask = np.zeros((6, 6), bool)
    mask[:3] = True
    out = views.overlay(chip, views.significant_only(values, mask), vmax=1.0, opacity=1.0)
    assert (out[3:] == 90).all()  # the face unchanged where not significant
    assert not (out[:3] == 90).all(axis=2).any()  # coloured where significant


@pytest.mark.parametrize(
    ("values", "mask", "message"),
    [
        (np.zeros((4, 4)), np.ones((4, 5), bool), r"mask's shape \(4, 5\) differs from the map's \(4, 4\)"),
        (np.zeros((4, 4)), np.ones((4, 4)), "must be boolean, got float64"),
        (np.zeros(4), np.ones(4, bool), r"an \(H, W\) array, got shape \(4,\)"),
    ],
    ids=["shape", "not-bool", "1-d"],
)
def test_significant_only_refuses_a_mask_that_does_not_fit(values, mask, message: str):
    with pytest.raises(InputError, match=message):
        views.significant_only(values, mask)


def test_uncertainty_request_reads_empty_and_zero_as_the_server_defaults():
    assert views.uncertainty_request("", "  ") == (0.0, 0.0)
    assert views.uncertainty_request("0", "0.0") == (0.0, 0.0)
    assert views.uncertainty_request(" 0.1 ", "0.9") == (0.1, 0.9)


@pytest.mark.parametrize(
    ("q", "level", "message"),
    [
        ("1", "", "FDR q must be a number in (0, 1) (empty or 0: the server's default), got '1'"),
        ("-0.05", "", "FDR q must be a number in (0, 1) (empty or 0: the server's default), got '-0.05'"),
        ("five percent", "", "FDR q must be a number in (0, 1) (empty or 0: the server's default), got 'five percent'"),
        ("nan", "", "FDR q must be a number in (0, 1) (empty or 0: the server's default), got 'nan'"),
        ("", "95", "CI level must be a number in (0, 1) (empty or 0: the server's default), got '95'"),
        ("", "inf", "CI level must be a number in (0, 1) (empty or 0: the server's default), got 'inf'"),
    ],
)
def test_uncertainty_request_names_the_wrong_field(q: str, level: str, message: str):
    with pytest.raises(InputError) as info:
        views.uncertainty_request(q, level)
    assert str(info.value) == message


def test_uncertainty_rows_and_caption_state_the_figures_per_face():
    from explainer_service.uncertainty import MapUncertainty, Uncertainty

    unc = Uncertainty("fisher-z", 0.9, 0.1, 500, MapUncertainty(0.25, 0.8, 0.888889),
                      MapUncertainty(0.0125, None, None))
    assert views.uncertainty_rows(unc) == [
        {"face": "A", "split-half r": "0.800", "predicted full-map r": "0.889", "significant pixels": "25.0 %"},
        {"face": "B", "split-half r": "-", "predicted full-map r": "-", "significant pixels": "1.2 %"},
    ]
    assert views.uncertainty_caption(unc) == ("Uncertainty over 500 masks: significant = Benjamini-Hochberg at "
                                              "q = 0.1; per-pixel intervals: Fisher z at level 0.9")
    ranked = Uncertainty("fisher-z-spearman", 0.95, 0.05, 64, unc.a, unc.b)
    assert "Fisher z (ranks) at level 0.95" in views.uncertainty_caption(ranked)


def test_face_caption_names_the_detector_when_the_result_has_one():
    assert views.face_caption("A", make_result().face_a) == "A (aligned)"  # pre-aligned: nothing detected
    detected = make_result(detector="mtcnn").face_b
    assert views.face_caption("B", detected) == "B (aligned; detected by mtcnn, confidence 0.990)"
    from dataclasses import replace

    assert views.face_caption("A", replace(detected, confidence=None)) == "A (aligned; detected by mtcnn)"


def test_detector_choices_are_the_server_default_then_every_detector():
    from explainer_service.alignment import DETECTORS

    assert views.DETECTOR_CHOICES == ("", *DETECTORS) and set(DETECTORS) == {"hog", "mtcnn", "mmod", "auto"}
    assert [views.detector_label(d) for d in views.DETECTOR_CHOICES[:2]] == ["server default", "hog"]


def test_result_files_can_grey_out_the_figure_only_with_an_uncertainty():
    result = make_result("corrrise")
    plain = views.result_files(result)["figure.png"][0]
    grey = views.result_files(result, grey_insignificant=True)["figure.png"][0]
    assert grey[:4] == b"\x89PNG" and grey != plain
    with pytest.raises(InputError, match="needs a map with an uncertainty"):
        views.result_files(make_result("rise"), grey_insignificant=True)
