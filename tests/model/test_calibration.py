"""The default model's documented threshold and accuracy, re-derived on ../shared LFW pairs."""

from __future__ import annotations

import pytest

from explainer_service.alignment import Aligner
from explainer_service.calibration import calibrate, score_pairs
from explainer_service.datasets import read_lfw_pairs
from explainer_service.models.registry import get_spec
from explainer_service.pipeline import load_face_model
from explainer_service.verification import accuracy, eer_threshold

pytestmark = [pytest.mark.model, pytest.mark.shared, pytest.mark.slow]


def test_threshold_and_accuracy_on_lfw_dev_crops(lfw_dir):
    pairs = read_lfw_pairs(lfw_dir, images="aligned112")
    assert len(pairs) == 3000 and sum(p.same for p in pairs) == 1500
    scored = score_pairs(pairs, load_face_model(), aligner=Aligner())
    assert not scored.failures and scored.skipped_pairs == 0
    res = calibrate(scored)
    threshold = get_spec("dlib-resnet-v1").threshold
    assert res.mean >= 0.98, res.accuracies  # docs/calibration.md: 98.50 %
    assert all(abs(t - threshold) < 0.01 for t in res.thresholds), res.thresholds
    eer_t, eer = eer_threshold(scored.scores, scored.same)
    assert abs(eer_t - threshold) < 0.005 and eer < 0.02
    assert accuracy(scored.scores, scored.same, threshold) >= 0.98
