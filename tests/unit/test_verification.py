"""Accuracy, thresholds and the k-fold protocol, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.verification import accuracy, best_threshold, eer_threshold, kfold_accuracy


def brute_best_accuracy(s, y):
    cands = np.concatenate([[s.min() - 1], (np.sort(s)[1:] + np.sort(s)[:-1]) / 2, [s.max() + 1]])
    return max(np.mean((s >= t) == y) for t in cands)


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_reaches_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.5
    s = rng.normal(0.0, 1.0, 200) + 1.2 * y
    t = best_threshold(s, y)
    assert accuracy(s, y, t) == pytest.approx(brute_best_accuracy(s, y))


def test_separable_scores_give_full_accuracy_and_a_threshold_between_classes():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    y = np.array([0, 0, 0, 1, 1])
    t = best_threshold(s, y)
    assert 0.3 < t < 0.7 and accuracy(s, y, t) == 1.0


def test_ties_are_not_split():
    s = np.array([0.5, 0.5, 0.5, 0.5])
    y = np.array([1, 0, 1, 1])
    t = best_threshold(s, y)
    assert accuracy(s, y, t) == 0.75


def test_kfold_chooses_thresholds_without_the_test_fold():
    rng = np.random.default_rng(0)
    y = np.tile([1] * 30 + [0] * 30, 5).astype(bool)
    s = rng.normal(0, 1, 300) + 2.5 * y
    folds = np.repeat(np.arange(5), 60)
    res = kfold_accuracy(s, y, folds)
    for k in range(5):
        test = folds == k
        assert res.thresholds[k] == pytest.approx(best_threshold(s[~test], y[~test]))
        assert res.accuracies[k] == pytest.approx(accuracy(s[test], y[test], res.thresholds[k]))
    assert 0.85 < res.mean <= 1.0


def test_eer_threshold_balances_errors():
    rng = np.random.default_rng(1)
    y = rng.random(2000) < 0.5
    s = rng.normal(0, 1, 2000) + 2 * y
    t, eer = eer_threshold(s, y)
    far = np.mean(s[~y] >= t)
    frr = np.mean(s[y] < t)
    assert abs(far - frr) < 0.02 and eer == pytest.approx((far + frr) / 2)
    assert 0.1 < eer < 0.2  # two unit normals 2 apart: EER = Phi(-1) = 0.159


def test_bad_input_is_an_input_error():
    with pytest.raises(InputError):
        best_threshold(np.array([]), np.array([]))
    with pytest.raises(InputError, match="NaN"):
        accuracy(np.array([np.nan, 1.0]), np.array([1, 0]), 0.5)
    with pytest.raises(InputError, match="2 folds"):
        kfold_accuracy(np.ones(4), np.array([1, 0, 1, 0]), np.zeros(4))
