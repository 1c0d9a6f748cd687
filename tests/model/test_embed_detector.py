"""``facexplain embed``'s JSON lines name the detector that found each face and its confidence
(issue 12): MTCNN's score for a photo with ``--detector mtcnn``, HOG's under the default (auto)
for a frontal photo, and null for a pre-aligned 112x112 crop (which is not detected)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explainer_service.cli import main
from explainer_service.demo import make_demo_pair

CROP = Path("/work/shared/data/lfw-dev/aligned112/Abel_Pacheco/Abel_Pacheco_0001.jpg")


def _lines(capsys: pytest.CaptureFixture[str], *args: object) -> list[dict[str, object]]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_each_line_names_the_detector_and_its_confidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo, _ = make_demo_pair(tmp_path)
    mtcnn = _lines(capsys, "embed", photo, CROP, "--engine", "local", "--detector", "mtcnn")
    assert [r["path"] for r in mtcnn] == [str(photo), str(CROP)]
    assert mtcnn[0]["detector"] == "mtcnn" and isinstance(mtcnn[0]["confidence"], float)
    assert 0.5 < mtcnn[0]["confidence"] <= 1.0  # MTCNN's face probability
    assert mtcnn[1]["detector"] is None and mtcnn[1]["confidence"] is None  # pre-aligned: not detected
    assert list(mtcnn[0]) == ["path", "detector", "confidence", "embedding"]

    auto = _lines(capsys, "embed", photo, "--engine", "local")
    assert auto[0]["detector"] == "hog" and isinstance(auto[0]["confidence"], float)  # auto: HOG found it
    assert auto[0]["embedding"] != mtcnn[0]["embedding"]  # another detector's landmarks, another chip
