"""Issue 12 at the CLI: ``--detector`` on explain/embed/evaluate/sanity (an unknown one is one line,
exit 2; the detector is recorded in summary.json and evaluation.json), and evaluate's dropped-pair
report on a set with an unreadable image and a photo without a face: counted per reason in the
printed line, table.md and evaluation.json, replaced so that ``--pairs K`` delivers K."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from explainer_service.alignment import DEFAULT_DETECTOR, DETECTORS
from explainer_service.cli import main


def call(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["explain", "embed", "evaluate", "sanity"])
def test_an_unknown_detector_is_one_line_naming_the_choices(tmp_path, capsys, command):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(img)
    args = {
        "explain": [img, img, "--out", tmp_path / "o"],
        "embed": [img],
        "evaluate": ["--dataset", f"csv:{tmp_path / 'p.csv'}", "--out", tmp_path / "o"],
        "sanity": ["--dataset", f"csv:{tmp_path / 'p.csv'}", "--out", tmp_path / "o"],
    }[command]
    code, _out, err = call(capsys, command, *args, "--detector", "nope")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--detector" in lines[0] and "nope" in lines[0] and all(d in lines[0] for d in DETECTORS)


def test_the_help_names_the_detectors_and_the_default(capsys):
    assert main(["explain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--detector" in text and f"default {DEFAULT_DETECTOR}" in text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from explainer_service.demo import make_demo_pair

    return make_demo_pair(tmp_path_factory.mktemp("demo"))


def test_summary_json_records_the_detector_of_each_face(demo, tmp_path, capsys):
    out = tmp_path / "out"
    code, _stdout, err = call(capsys, "explain", *demo, "--out", out, "--engine", "local", "--no-progress",
                              "--method", "gradcam", "--detector", "hog")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    for side in ("alignment_a", "alignment_b"):
        face = summary[side]
        assert face["method"] == "detected" and face["detector"] == "hog"
        assert "confidence" in face and "pose" in face  # None when the detector gives none


def test_a_pre_aligned_crop_has_no_detector(tmp_path, capsys, lfw_dir):
    crops = sorted((lfw_dir / "aligned112").rglob("*.jpg"))[:2]
    out = tmp_path / "out"
    code, _stdout, err = call(capsys, "explain", *crops, "--out", out, "--engine", "local", "--no-progress",
                              "--method", "gradcam")  # 112x112 crops: taken as ArcFace crops, cut to dlib's chip
    assert code == 0, err
    face = json.loads((out / "summary.json").read_text())["alignment_a"]
    assert face["method"] == "pre-aligned" and face["detector"] is None and face["confidence"] is None


def _set_with_a_bad_and_a_faceless_image(tmp_path, lfw_dir):
    """Six matched pairs, four in fold 0 and two in fold 1: pair 1's B is unreadable, pair 3's B is
    a blank image (no face); the rest are LFW photos. ``--pairs 3`` chooses pairs 0, 1 and 2."""
    images = lfw_dir / "images"

    def photo(name: str, n: int) -> str:
        return str(images / name / f"{name}_{n:04d}.jpg")

    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    Image.fromarray(np.full((250, 250, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    rows = [
        (photo("Abel_Pacheco", 1), photo("Abel_Pacheco", 4), 0),
        (photo("Akhmed_Zakayev", 1), str(tmp_path / "broken.jpg"), 0),
        (photo("Akhmed_Zakayev", 1), photo("Akhmed_Zakayev", 3), 0),
        (photo("Amber_Tamblyn", 1), str(tmp_path / "blank.png"), 0),
        (photo("Akhmed_Zakayev", 2), photo("Akhmed_Zakayev", 3), 1),
        (photo("Amber_Tamblyn", 1), photo("Amber_Tamblyn", 2), 1),
    ]
    csv = tmp_path / "pairs.csv"
    csv.write_text("img1,img2,same,fold\n" + "".join(f"{a},{b},1,{f}\n" for a, b, f in rows))
    return csv


@pytest.mark.slow
def test_evaluate_reports_dropped_pairs_per_reason_and_delivers_k(tmp_path, capsys, lfw_dir):
    csv = _set_with_a_bad_and_a_faceless_image(tmp_path, lfw_dir)
    out = tmp_path / "eval"
    code, stdout, err = call(capsys, "evaluate", "--dataset", f"csv:{csv}", "--methods", "gradcam", "--pairs", 3,
                             "--steps", 3, "--out", out, "--engine", "local", "--no-progress", "--no-chip-cache",
                             "--detector", "hog")
    assert code == 0, err
    first = stdout.splitlines()[0]
    assert first.startswith("pairs: 3 matched pairs of 6; 2 dropped (1 unreadable image, 1 no face), 2 replaced")
    assert "(1 from another fold)" in first and "only" not in first
    meta = json.loads((out / "evaluation.json").read_text())["meta"]
    report = meta["pairs_report"]
    assert report["dropped"] == {"unreadable": 1, "no_face": 1, "several_faces": 0, "not_aligned": 0}
    assert (report["requested"], report["delivered"], report["replaced"], report["replaced_cross_fold"]) == (3, 3, 2, 1)
    assert meta["detector"] == "hog" and meta["pairs"] == 3
    assert set(meta["skipped"]) == {str(tmp_path / "broken.jpg"), str(tmp_path / "blank.png")}
    md = (out / "table.md").read_text()
    assert "| gradcam |" in md
    assert (f"Pairs of csv:{csv}: 3 of 3 asked (6 matched in the set); dropped 2 (unreadable image 1, no face 1, "
            "several faces refused 0, not aligned 0); replaced 2 (1 from another fold).") in md


@pytest.mark.slow
def test_evaluate_says_when_the_set_has_fewer_usable_pairs(tmp_path, capsys, lfw_dir):
    csv = _set_with_a_bad_and_a_faceless_image(tmp_path, lfw_dir)
    out = tmp_path / "eval"
    code, stdout, err = call(capsys, "evaluate", "--dataset", f"csv:{csv}", "--methods", "gradcam", "--pairs", 6,
                             "--steps", 3, "--out", out, "--engine", "local", "--no-progress", "--no-chip-cache")
    assert code == 0, err
    assert "only 4 of the 6 pairs asked" in stdout.splitlines()[0]
    md = (out / "table.md").read_text()
    assert "4 of 6 asked" in md and "2 short" in md
