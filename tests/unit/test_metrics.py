"""Deletion/Insertion: the curve maths against numpy and brute force, and the metric on a toy model."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.metrics import CausalMetric, auc, default_steps, resolve_substrate, top_fraction_masks
from explainer_service.models.base import cosine_to, to_model_input
from tests.toy import SIZE, Q, R, ToyModel, toy_pair


def test_auc_is_the_normalised_trapezoid_times_100():
    assert auc([1, 1, 1]) == pytest.approx(100.0)
    assert auc([1, 0]) == pytest.approx(50.0)
    v = np.random.default_rng(0).random(11)
    x = default_steps()
    assert auc(v, x) == pytest.approx(100 * np.trapezoid(v, x))
    xs = np.array([0.0, 0.1, 0.5, 1.0])
    assert auc([0.2, 0.4, 0.9, 1.0], xs) == pytest.approx(100 * np.trapezoid([0.2, 0.4, 0.9, 1.0], xs))
    per_pair = np.random.default_rng(1).integers(0, 2, (7, 11)).astype(float)
    assert np.mean(auc(per_pair)) == pytest.approx(auc(per_pair.mean(axis=0)))
    with pytest.raises(InputError):
        auc([1.0])


def test_top_fraction_masks_are_nested_exact_and_deterministic():
    rng = np.random.default_rng(2)
    s = rng.random((9, 7))
    s[0, :3] = 5.0  # ties
    m = top_fraction_masks(s, default_steps())
    assert m.shape == (11, 9, 7)
    assert [int(k.sum()) for k in m] == [int(round(f * 63)) for f in default_steps()]
    assert all(np.all(m[i] <= m[i + 1]) for i in range(10))
    k = int(m[3].sum())
    assert set(np.flatnonzero(m[3])) == set(np.argsort(-s.ravel(), kind="stable")[:k])
    np.testing.assert_array_equal(m, top_fraction_masks(s, default_steps()))


def _maps():
    good = np.zeros((SIZE, SIZE), np.float32)
    good[R] = 1.0
    good[Q] = 0.5
    rng = np.random.default_rng(4)
    return good, rng.random((SIZE, SIZE)).astype(np.float32)


def test_deletion_of_the_important_region_drops_faster_than_random():
    a, _ = toy_pair()
    b = a.copy()  # a matched pair: identical faces
    good, rand = _maps()
    model = ToyModel()
    metric = CausalMetric(model, "deletion")
    chips_a = np.stack([a] * 3)
    chips_b = np.stack([b] * 3)
    good_curve = metric.curve(chips_a, chips_b, np.stack([good] * 3), np.stack([good] * 3), threshold=0.7)
    rand_curve = metric.curve(chips_a, chips_b, np.stack([rand] * 3), np.stack([rand] * 3), threshold=0.7)
    assert good_curve.accuracy[0] == 1.0 and good_curve.auc < rand_curve.auc
    ins = CausalMetric(model, "insertion")
    assert ins.curve(chips_a, chips_b, np.stack([good] * 3), np.stack([good] * 3), threshold=0.7).auc > ins.curve(
        chips_a, chips_b, np.stack([rand] * 3), np.stack([rand] * 3), threshold=0.7
    ).auc


def test_scores_equal_a_one_image_at_a_time_transcription():
    rng = np.random.default_rng(5)
    a, b = toy_pair(1)
    maps = rng.random((2, SIZE, SIZE)).astype(np.float32)
    model = ToyModel()
    steps = default_steps(6)
    curve = CausalMetric(model, "deletion", steps=steps, batch_size=5).curve(
        np.stack([a, b]), np.stack([b, a]), maps, maps[::-1], threshold=0.5
    )
    for i, (ca, cb, mb) in enumerate([(a, b, maps[::-1][0]), (b, a, maps[::-1][1])]):
        ref = model.embed(to_model_input(ca))[0]
        for j, f in enumerate(steps):
            k = int(round(f * SIZE * SIZE))
            top = np.argsort(-mb.ravel(), kind="stable")[:k]
            x = cb.astype(np.float32).reshape(-1, 3).copy()
            x[top] = 0
            want = cosine_to(model.embed(to_model_input(x.reshape(SIZE, SIZE, 3))), ref)[0]
            assert curve.scores[i, j] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_batching_never_changes_the_curve(batch):
    rng = np.random.default_rng(6)
    a, b = toy_pair(2)
    maps = rng.random((4, SIZE, SIZE)).astype(np.float32)
    args = (np.stack([a] * 4), np.stack([b] * 4), maps, maps)
    ref = CausalMetric(ToyModel(), "insertion", batch_size=64, perturb="both").curve(*args, threshold=0.5)
    got = CausalMetric(ToyModel(), "insertion", batch_size=batch, perturb="both").curve(*args, threshold=0.5)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)


def test_confidence_interval_brackets_the_auc():
    rng = np.random.default_rng(7)
    a, b = toy_pair(3)
    maps = rng.random((10, SIZE, SIZE)).astype(np.float32)
    curve = CausalMetric(ToyModel(), "deletion").curve(np.stack([a] * 10), np.stack([a] * 10), maps, maps, threshold=0.97)
    lo, hi = curve.confidence_interval()
    assert lo <= curve.auc <= hi
    assert np.mean(curve.per_pair_auc()) == pytest.approx(curve.auc)


def test_substrates_and_bad_input():
    chip = np.random.default_rng(8).integers(0, 255, (SIZE, SIZE, 3)).astype(np.uint8)
    assert resolve_substrate("zeros")(chip).max() == 0
    mean = resolve_substrate("mean")(chip)
    np.testing.assert_allclose(mean[0, 0], chip.reshape(-1, 3).mean(0), rtol=1e-5)
    blur = resolve_substrate("blur")(chip)
    assert blur.shape == chip.shape and blur.std() < chip.std()
    with pytest.raises(InputError, match="substrate"):
        resolve_substrate("noise")
    with pytest.raises(InputError, match="mode"):
        CausalMetric(ToyModel(), "both")
    with pytest.raises(InputError, match="steps"):
        CausalMetric(ToyModel(), "deletion", steps=[0.0, 0.5, 0.4])
    model = ToyModel()
    model.spec = type(model.spec)(**{**model.spec.__dict__, "threshold": None})
    with pytest.raises(InputError, match="threshold"):
        CausalMetric(model, "deletion").curve(chip[None], chip[None], np.zeros((1, SIZE, SIZE)), np.zeros((1, SIZE, SIZE)))
