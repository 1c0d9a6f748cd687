"""Unit tests of explainer_service.correlation (the CorrRISE correlation step)."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from explainer_service import correlation
from explainer_service.correlation import (
    CorrelationAccumulator,
    pearson_map,
    spearman_map,
    split_signed,
)
from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig, generate_masks

N, H, W = 40, 6, 7


def _inputs(seed: int = 0, score_ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Small masks (N, H, W) and scores (N,) with ties: half the pixels take few distinct values."""
    rng = np.random.default_rng(seed)
    masks = rng.random((N, H, W)).astype(np.float32)
    coarse = rng.choice(np.array([0.0, 0.25, 1.0], dtype=np.float32), size=(N, H, W))
    masks[:, :, ::2] = coarse[:, :, ::2]  # ties in every even column
    masks[: N // 2, 0, 1] = 1.0  # many tied 1s, as in real masks
    # Scores depend on a few pixels, so that correlations are far from 0 there.
    scores = 0.6 * masks[:, 1, 1] - 0.4 * masks[:, 4, 5] + 0.2 * rng.standard_normal(N)
    scores = np.clip(scores, -1, 1)
    if score_ties:
        scores = np.round(scores, 1)
    return masks, scores


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    """Turn every Python warning and every floating-point exception into an error."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


# --- agreement with references --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_matches_scipy_per_pixel(seed: int) -> None:
    masks, scores = _inputs(seed)
    result = pearson_map(masks, scores)
    assert result.shape == (H, W) and result.dtype == np.float32
    expected = np.array(
        [[pearsonr(masks[:, i, j], scores).statistic for j in range(W)] for i in range(H)]
    )
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    assert result[1, 1] > 0.5 and result[4, 5] < -0.3  # the pixels the scores depend on


@pytest.mark.parametrize(("seed", "score_ties"), [(0, False), (1, True), (2, True)])
def test_spearman_matches_scipy_per_pixel(seed: int, score_ties: bool) -> None:
    masks, scores = _inputs(seed, score_ties)
    if score_ties:
        assert np.unique(scores).size < N // 2
    result = spearman_map(masks, scores)
    assert result.shape == (H, W) and result.dtype == np.float32
    expected = np.array(
        [[spearmanr(masks[:, i, j], scores).statistic for j in range(W)] for i in range(H)]
    )
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def _algorithm1_correlation(masks: np.ndarray, scores: np.ndarray) -> list[list[float]]:
    """The correlation step of Algorithm 1 (Lu, Xu, Ebrahimi, WACV 2024), transcribed literally:
    for every pixel (i, j), the Pearson coefficient between the N mask values M_k(i, j) and the N
    similarity scores s_k, by the textbook formula, in plain Python floats."""
    n = len(scores)
    s = [float(v) for v in scores]
    s_mean = sum(s) / n
    saliency = []
    for i in range(masks.shape[1]):
        row = []
        for j in range(masks.shape[2]):
            m = [float(masks[k, i, j]) for k in range(n)]
            m_mean = sum(m) / n
            cov = sum((m[k] - m_mean) * (s[k] - s_mean) for k in range(n))
            var_m = sum((m[k] - m_mean) ** 2 for k in range(n))
            var_s = sum((s[k] - s_mean) ** 2 for k in range(n))
            row.append(cov / math.sqrt(var_m * var_s))
        saliency.append(row)
    return saliency


def test_agrees_with_a_literal_transcription_of_algorithm_1() -> None:
    """Real masks from generate_masks, scores from a toy face 'model' (cosine of a weighted pooling
    of the masked image with a reference embedding), then the paper's loop over pixels."""
    masks = generate_masks(MaskConfig(n_masks=60, seed=4, patch_size=4), 10)
    rng = np.random.default_rng(0)
    image_a = rng.random((10, 10))
    projection = rng.standard_normal((8, 100))  # a linear 8-d "embedding"
    embedding_b = projection @ rng.random(100)

    def score(image: np.ndarray) -> float:
        e = projection @ image.ravel()
        return float(e @ embedding_b / (np.linalg.norm(e) * np.linalg.norm(embedding_b)))

    scores = np.array([score(image_a * m) for m in masks])
    expected = np.array(_algorithm1_correlation(masks, scores))
    assert np.isfinite(expected).all()  # every pixel was covered at least once
    np.testing.assert_allclose(pearson_map(masks, scores), expected, rtol=0, atol=1e-6)


def test_answers_known_by_hand() -> None:
    masks, _ = _inputs(3)
    pixel = masks[:, 2, 3].astype(np.float64)
    # A score that is an increasing affine function of one pixel correlates exactly with it.
    assert pearson_map(masks, 0.5 * pixel - 0.2)[2, 3] == pytest.approx(1.0, abs=1e-6)
    assert pearson_map(masks, -3.0 * pixel + 1.0)[2, 3] == pytest.approx(-1.0, abs=1e-6)
    # Swapping roles: every pixel equal to an affine function of the scores gets +-1.
    scores = np.linspace(-1, 1, N)
    ramp = np.broadcast_to((0.25 * scores + 0.5)[:, None, None], (N, H, W)).copy()
    ramp[:, :, 3] = 1.0 - ramp[:, :, 3]
    result = pearson_map(ramp, scores)
    np.testing.assert_allclose(np.delete(result, 3, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(result[:, 3], -1.0, atol=1e-6)
    assert np.all(np.abs(result) <= 1.0)  # never above 1 by rounding


def test_similar_and_dissimilar_regions_are_found() -> None:
    """Toy verification score: rises with how much of region R1 is kept, falls with R2 (e.g. an
    occluding accessory). Pixels farther than a patch from R1 and R2 are independent of the
    score, so their correlation is sampling noise of standard deviation 1/sqrt(N)."""
    n, chip = 500, 40
    masks = generate_masks(MaskConfig(n_masks=n, seed=8, patch_size=8), chip)
    r1 = (slice(4, 12), slice(4, 12))
    r2 = (slice(4, 12), slice(28, 36))
    scores = masks[:, r1[0], r1[1]].mean(axis=(1, 2)) - masks[:, r2[0], r2[1]].mean(axis=(1, 2))
    saliency = pearson_map(masks, scores)
    # Inside the regions the coefficient is ~0.3-0.45, far above the noise level 1/sqrt(N) = 0.045.
    assert saliency[r1].min() > 0.2
    assert saliency[r2].max() < -0.2
    far = saliency[24:, :]  # rows >= 24 are at least 12 px (> 8 px patch) from both regions
    assert np.abs(far).max() < 5 / np.sqrt(n)  # 640 pixels, P(|z| > 5) ~ 6e-7 each
    similar, dissimilar = split_signed(saliency)
    assert similar[r1].min() > 0.2 and dissimilar[r1].max() == 0
    assert dissimilar[r2].min() > 0.2 and similar[r2].max() == 0


# --- streaming: chunks, shards, state -------------------------------------------------------------


def _one_pass(masks: np.ndarray, scores: np.ndarray) -> CorrelationAccumulator:
    acc = CorrelationAccumulator(masks.shape[1:])
    acc.update(masks, scores)
    return acc


def _assert_states_close(a: dict, b: dict) -> None:
    assert a["n"] == b["n"]
    for key in ("mean_s", "m2_s", "mean_m", "m2_m", "c_ms"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_shard_merge_equals_one_pass() -> None:
    masks, scores = _inputs(5)
    bounds = [0, 3, 4, 4, 40]  # uneven shards of 3, 1, 0 and 36 samples
    shards = []
    for a, b in itertools.pairwise(bounds):
        acc = CorrelationAccumulator((H, W))
        acc.update(masks[a:b], scores[a:b])
        shards.append(acc)
    whole = _one_pass(masks, scores)
    left_to_right = shards[0].merge(shards[1]).merge(shards[2]).merge(shards[3])
    right_to_left = shards[3].merge(shards[2].merge(shards[1].merge(shards[0])))
    for merged in (left_to_right, right_to_left):
        assert merged.n == N
        _assert_states_close(merged.state(), whole.state())
        np.testing.assert_allclose(merged.pearson(), whole.pearson(), rtol=0, atol=1e-6)


def test_merge_leaves_its_inputs_unchanged() -> None:
    masks, scores = _inputs(6)
    a, b = _one_pass(masks[:10], scores[:10]), _one_pass(masks[10:], scores[10:])
    before_a, before_b = a.state(), b.state()
    merged = a.merge(b)
    assert merged is not a and merged is not b
    _assert_states_close(a.state(), before_a)
    _assert_states_close(b.state(), before_b)
    merged.update(masks[:2], scores[:2])
    _assert_states_close(a.state(), before_a)


def test_merge_with_empty_accumulators() -> None:
    masks, scores = _inputs(7)
    full = _one_pass(masks, scores)
    empty = CorrelationAccumulator((H, W))
    np.testing.assert_array_equal(full.merge(empty).pearson(), full.pearson())
    np.testing.assert_array_equal(empty.merge(full).pearson(), full.pearson())
    assert empty.merge(empty).n == 0


def test_updates_in_chunks_equal_one_update(monkeypatch: pytest.MonkeyPatch) -> None:
    masks, scores = _inputs(8)
    whole = _one_pass(masks, scores)
    chunked = CorrelationAccumulator((H, W))
    for a, b in [(0, 1), (1, 17), (17, 17), (17, 40)]:
        chunked.update(masks[a:b], scores[a:b])
    _assert_states_close(chunked.state(), whole.state())
    # The internal sub-batching of a large update (here forced to 1 sample at a time).
    monkeypatch.setattr(correlation, "_CHUNK_ELEMENTS", 1)
    _assert_states_close(_one_pass(masks, scores).state(), whole.state())


def test_state_round_trip() -> None:
    masks, scores = _inputs(9)
    acc = _one_pass(masks[:25], scores[:25])
    state = acc.state()
    assert set(state) == {"n", "mean_s", "m2_s", "mean_m", "m2_m", "c_ms"}
    assert type(state["n"]) is int and type(state["mean_s"]) is float
    assert all(type(state[k]) is np.ndarray for k in ("mean_m", "m2_m", "c_ms"))
    for key in ("mean_m", "m2_m", "c_ms"):
        assert state[key].dtype == np.float64 and state[key].shape == (H, W)

    restored = CorrelationAccumulator.from_state(state)
    assert restored.n == 25 and restored.shape == (H, W)
    np.testing.assert_array_equal(restored.pearson(), acc.pearson())
    # Lists (e.g. after JSON) work as well as arrays.
    listed = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    from_lists = CorrelationAccumulator.from_state(listed)
    np.testing.assert_array_equal(from_lists.pearson(), acc.pearson())
    # The state is a copy: changing it does not change the accumulator.
    state["c_ms"][:] = 0
    assert np.any(acc.pearson() != 0)
    # Resuming after the round trip equals never stopping.
    restored.update(masks[25:], scores[25:])
    _assert_states_close(restored.state(), _one_pass(masks, scores).state())


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.pop("c_ms"),
        lambda s: s.update(n=-1),
        lambda s: s.update(n=2.5),
        lambda s: s.update(m2_m=np.zeros((H, W + 1))),
        lambda s: s.update(mean_m=np.float64(0.0), m2_m=np.float64(0.0), c_ms=np.float64(0.0)),
        lambda s: s.update(mean_s=float("nan")),
        lambda s: s.update(mean_s="x"),
    ],
)
def test_bad_state_raises_input_error(change) -> None:
    masks, scores = _inputs(9)
    state = _one_pass(masks, scores).state()
    change(state)
    with pytest.raises(InputError, match="state"):
        CorrelationAccumulator.from_state(state)


def test_no_cancellation_with_a_large_score_offset() -> None:
    """Centred moments stay exact when scores sit far from 0 (raw sums of squares would lose all
    digits: with an offset of 1e8, sum(s**2) ~ 4e17 while the centred sum is ~ 4)."""
    masks, scores = _inputs(10)
    shifted = scores + 1e8
    acc = CorrelationAccumulator((H, W))
    for a, b in [(0, 13), (13, 14), (14, 40)]:
        acc.update(masks[a:b], shifted[a:b])
    d_s = shifted - shifted.mean()
    m = masks.astype(np.float64)
    expected_c = np.einsum("k,kij->ij", d_s, m - m.mean(axis=0))
    state = acc.state()
    assert state["m2_s"] == pytest.approx(float(d_s @ d_s), rel=1e-6)
    np.testing.assert_allclose(state["c_ms"], expected_c, rtol=1e-6, atol=1e-7)


# --- degenerate inputs: constants, n < 2 ----------------------------------------------------------


def test_constant_pixels_give_zero_without_warnings() -> None:
    masks, scores = _inputs(11)
    masks[:, 0, 0] = 1.0
    masks[:, 2, 2] = np.float32(0.3)  # constant but not exactly representable
    masks[:, 5, 6] = 0.0
    with _no_warnings():
        for result in (pearson_map(masks, scores), spearman_map(masks, scores)):
            assert np.isfinite(result).all()
            assert result[0, 0] == 0 and result[2, 2] == 0 and result[5, 6] == 0
            assert np.count_nonzero(result) == H * W - 3


def test_rounding_noise_of_a_constant_is_not_a_correlation() -> None:
    """Seven float64 copies of 0.1 do not average to exactly 0.1, so their centred sum of squares is
    rounding noise (~1e-33), not 0; dividing by it would give an arbitrary +-1. The pixel, or
    the scores, must count as constant."""
    assert np.full(7, 0.1).mean() != 0.1
    rng = np.random.default_rng(16)
    masks = rng.random((7, 3, 4))
    masks[:, 1, 2] = 0.1
    scores = rng.uniform(-1, 1, 7)
    with _no_warnings():
        result = pearson_map(masks, scores)
        assert result[1, 2] == 0 and np.count_nonzero(result) == 11
        np.testing.assert_array_equal(pearson_map(masks, np.full(7, 0.1)), 0)
        acc = CorrelationAccumulator((3, 4))  # the same through merges
        for a, b in [(0, 2), (2, 3), (3, 7)]:
            acc.update(masks[a:b], np.full(b - a, 0.1))
        np.testing.assert_array_equal(acc.pearson(), 0)


@pytest.mark.parametrize("value", [0.0, 0.7312, -1.0])
def test_constant_scores_give_zero_without_warnings(value: float) -> None:
    masks, _ = _inputs(12)
    scores = np.full(N, value)
    with _no_warnings():
        for result in (pearson_map(masks, scores), spearman_map(masks, scores)):
            assert result.dtype == np.float32
            np.testing.assert_array_equal(result, np.zeros((H, W), dtype=np.float32))
        # The same when the constant scores arrive in several batches.
        acc = CorrelationAccumulator((H, W))
        acc.update(masks[:7], scores[:7])
        acc.update(masks[7:], scores[7:])
        np.testing.assert_array_equal(acc.pearson(), 0)


def test_fewer_than_two_samples_give_zeros() -> None:
    masks, scores = _inputs(13)
    acc = CorrelationAccumulator((H, W))
    with _no_warnings():
        np.testing.assert_array_equal(acc.pearson(), np.zeros((H, W), dtype=np.float32))
        acc.update(masks[:1], scores[:1])
        assert acc.n == 1
        np.testing.assert_array_equal(acc.pearson(), 0)
        np.testing.assert_array_equal(pearson_map(masks[:1], scores[:1]), 0)
        np.testing.assert_array_equal(spearman_map(masks[:1], scores[:1]), 0)
        np.testing.assert_array_equal(spearman_map(masks[:0], scores[:0]), 0)
    acc.update(masks[1:2], scores[1:2])
    assert acc.n == 2
    assert np.any(acc.pearson() != 0)  # two distinct samples: +-1 wherever masks differ


def test_pearson_output_is_float32_in_range_for_any_input_dtype() -> None:
    masks, scores = _inputs(14)
    for m in (masks.astype(np.float64), (masks > 0.5), (masks * 4).astype(np.uint8)):
        result = pearson_map(m, scores.astype(np.float32))
        assert result.dtype == np.float32
        assert np.all(np.abs(result) <= 1)
    np.testing.assert_allclose(
        pearson_map(masks > 0.5, scores),
        pearson_map((masks > 0.5).astype(np.float32), scores),
        atol=1e-7,
    )


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("masks_shape", "scores_shape", "word"),
    [
        ((N, H, W + 1), (N,), "masks"),
        ((N, H * W), (N,), "masks"),
        ((N, 1, H, W), (N,), "masks"),
        ((N, H, W), (N - 1,), "scores"),
        ((N, H, W), (N, 1), "scores"),
        ((N, H, W), (), "scores"),
    ],
)
def test_update_rejects_bad_shapes(masks_shape, scores_shape, word) -> None:
    acc = CorrelationAccumulator((H, W))
    with pytest.raises(InputError, match=word):
        acc.update(np.ones(masks_shape), np.zeros(scores_shape))
    assert acc.n == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_update_rejects_non_finite_values(bad: float, monkeypatch: pytest.MonkeyPatch) -> None:
    masks, scores = _inputs(15)
    acc = CorrelationAccumulator((H, W))
    bad_scores = scores.copy()
    bad_scores[3] = bad
    with pytest.raises(InputError, match="scores"):
        acc.update(masks, bad_scores)
    bad_masks = masks.copy()
    bad_masks[5, 2, 2] = bad
    with pytest.raises(InputError, match="masks"):
        acc.update(bad_masks, scores)
    assert acc.n == 0
    # A bad value late in a large update leaves the accumulator as it was (all or nothing).
    acc.update(masks[:3], scores[:3])
    before = acc.state()
    monkeypatch.setattr(correlation, "_CHUNK_ELEMENTS", 1)  # one sample per internal chunk
    with pytest.raises(InputError, match="masks"):
        acc.update(bad_masks, scores)
    _assert_states_close(acc.state(), before)
    with pytest.raises(InputError, match="masks"):
        spearman_map(bad_masks, scores)


def test_other_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError, match="shape"):
        CorrelationAccumulator((H, 0))
    with pytest.raises(InputError, match="shape"):
        CorrelationAccumulator(())
    with pytest.raises(InputError, match="shape"):
        CorrelationAccumulator("abc")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shapes"):
        CorrelationAccumulator((H, W)).merge(CorrelationAccumulator((W, H)))
    with pytest.raises(InputError, match="merge"):
        CorrelationAccumulator((H, W)).merge("not an accumulator")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="real"):
        CorrelationAccumulator((2,)).update(np.array([["a", "b"]]), np.zeros(1))
    with pytest.raises(InputError, match="masks"):
        pearson_map(np.ones(5), np.ones(5))
    with pytest.raises(InputError, match="scores"):
        spearman_map(np.ones((5, 2, 2)), np.ones(4))


# --- split_signed ---------------------------------------------------------------------------------


def test_split_signed_by_hand() -> None:
    saliency = np.array([[0.5, -0.25], [0.0, -0.0]], dtype=np.float32)
    similar, dissimilar = split_signed(saliency)
    np.testing.assert_array_equal(similar, [[0.5, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(dissimilar, [[0.0, 0.25], [0.0, 0.0]])
    assert similar.dtype == dissimilar.dtype == np.float32
    assert not np.signbit(similar).any() and not np.signbit(dissimilar).any()
    np.testing.assert_array_equal(similar - dissimilar, saliency)


# --- speed ----------------------------------------------------------------------------------------


def test_accumulator_update_is_fast_at_paper_scale() -> None:
    """500 masks of 150 x 150 (11 M values): ~15 ms here; the 2 s bound catches pixel loops."""
    masks = generate_masks(MaskConfig(), 150)
    scores = np.random.default_rng(0).uniform(-1, 1, 500)
    start = time.perf_counter()
    acc = CorrelationAccumulator((150, 150))
    acc.update(masks, scores)
    result = acc.pearson()
    elapsed = time.perf_counter() - start
    assert result.shape == (150, 150) and np.isfinite(result).all()
    assert elapsed < 2.0, f"{elapsed:.3f} s"
