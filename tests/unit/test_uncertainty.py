"""Uncertainty of correlation maps (issue 11 §2): intervals and p-values against SciPy per pixel,
Benjamini-Hochberg against a literal implementation, split halves against maps computed directly,
merge invariance of the engine's even-mask accumulators, and coverage on the toy model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from explainer_service.correlation import CorrelationAccumulator, pearson_map, spearman_map
from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig, ShardResult
from explainer_service.uncertainty import (
    Uncertainty,
    benjamini_hochberg,
    correlation_p_values,
    correlation_se,
    fisher_interval,
    map_uncertainty,
    spearman_brown,
    split_half_r,
)
from tests.toy import SIZE, ToyModel, toy_pair


def random_data(n: int = 40, shape: tuple[int, int] = (5, 6), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks and scores where some pixels drive the score (so r spans weak to strong)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n,) + shape)
    weights = rng.normal(size=shape) * (rng.random(shape) < 0.5)
    scores = np.einsum("nhw,hw->n", masks, weights) + rng.normal(size=n)
    return masks, scores


def per_pixel(masks: np.ndarray, scores: np.ndarray, fn) -> list:
    h, w = masks.shape[1:]
    return [fn(masks[:, i, j], scores) for i in range(h) for j in range(w)]


# ---- intervals and p-values vs SciPy ---------------------------------------------------------


def test_pearson_interval_se_and_p_values_match_scipy_per_pixel():
    masks, scores = random_data()
    n = len(scores)
    r = pearson_map(masks, scores).astype(np.float64)
    refs = per_pixel(masks, scores, stats.pearsonr)
    ref_r = np.array([x.statistic for x in refs]).reshape(r.shape)
    np.testing.assert_allclose(r, ref_r, atol=1e-6)
    low, high = fisher_interval(ref_r, n)
    cis = [x.confidence_interval(0.95) for x in refs]  # SciPy: Fisher z, se 1/sqrt(n - 3)
    np.testing.assert_allclose(low.ravel(), [c.low for c in cis], atol=1e-12)
    np.testing.assert_allclose(high.ravel(), [c.high for c in cis], atol=1e-12)
    np.testing.assert_allclose(correlation_p_values(ref_r, n).ravel(), [x.pvalue for x in refs], rtol=1e-9,
                               atol=1e-15)
    # the delta-method standard error is the z-scale one times dr/dz = 1 - r^2
    np.testing.assert_allclose(correlation_se(ref_r, n), (1 - ref_r**2) / np.sqrt(n - 3))
    low90, high90 = fisher_interval(ref_r, n, level=0.9)
    assert np.all(low90 > low) and np.all(high90 < high)


def test_spearman_p_values_match_scipy_and_the_interval_is_wider():
    masks, scores = random_data(n=30, seed=3)
    n = len(scores)
    rho = spearman_map(masks, scores).astype(np.float64)
    refs = per_pixel(masks, scores, stats.spearmanr)
    ref_rho = np.array([x.statistic for x in refs]).reshape(rho.shape)
    np.testing.assert_allclose(rho, ref_rho, atol=1e-6)
    np.testing.assert_allclose(correlation_p_values(ref_rho, n).ravel(), [x.pvalue for x in refs], rtol=1e-9,
                               atol=1e-15)
    low, high = fisher_interval(ref_rho, n, rank=True)
    z = np.arctanh(ref_rho)
    np.testing.assert_allclose(np.arctanh(high) - z, stats.norm.ppf(0.975) * np.sqrt(1.06 / (n - 3)))
    assert np.all(high - low > np.subtract(*fisher_interval(ref_rho, n)[::-1]))


def test_perfect_correlations_stay_finite():
    r = np.array([-1.0, 0.0, 1.0])
    low, high = fisher_interval(r, 10)
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    assert np.all((low <= r) & (r <= high))
    p = correlation_p_values(r, 10)
    assert p[0] == 0.0 and p[2] == 0.0 and p[1] == 1.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fisher_interval(np.zeros(3), 3), "n must be"),
        (lambda: fisher_interval(np.array([1.5]), 10), r"\[-1, 1\]"),
        (lambda: fisher_interval(np.zeros(3), 10, level=1.0), "level"),
        (lambda: correlation_p_values(np.array([np.nan]), 10), "finite"),
        (lambda: benjamini_hochberg(np.array([0.1]), q=0.0), "q must"),
        (lambda: benjamini_hochberg(np.array([1.2])), "p-values"),
        (lambda: split_half_r(np.zeros((2, 2)), np.zeros((3, 3))), "share a shape"),
    ],
)
def test_bad_input_is_an_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


# ---- Benjamini-Hochberg ------------------------------------------------------------------------


def literal_bh(p: list[float], q: float) -> list[bool]:
    """The procedure as written in Benjamini & Hochberg (1995): find the largest k with
    p_(k) <= k q / m, reject H_(1)..H_(k)."""
    m = len(p)
    ranked = sorted(range(m), key=lambda i: (p[i], i))
    k = 0
    for i in range(1, m + 1):
        if p[ranked[i - 1]] <= i * q / m:
            k = i
    rejected = [False] * m
    for i in range(k):
        rejected[ranked[i]] = True
    return rejected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("q", [0.01, 0.05, 0.2])
def test_benjamini_hochberg_equals_a_literal_implementation(seed, q):
    rng = np.random.default_rng(seed)
    # a mixture of nulls (uniform) and signals (near 0), with ties
    p = np.concatenate([rng.random(150), rng.random(50) ** 6, np.full(5, 0.01)])
    rng.shuffle(p)
    got = benjamini_hochberg(p.reshape(5, 41), q)
    assert got.shape == (5, 41) and got.dtype == bool
    assert got.ravel().tolist() == literal_bh(p.tolist(), q)
    # and the adjusted p-values of SciPy give the same decision
    assert np.array_equal(got.ravel(), stats.false_discovery_control(p) <= q)


def test_benjamini_hochberg_edge_cases():
    assert not benjamini_hochberg(np.ones(10)).any()
    assert benjamini_hochberg(np.zeros(10)).all()
    assert benjamini_hochberg(np.zeros((0,))).shape == (0,)


# ---- split halves ------------------------------------------------------------------------------


def test_split_half_r_and_spearman_brown():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 7, 8))
    assert split_half_r(x, y) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], abs=1e-12)
    assert split_half_r(x, np.zeros_like(y)) == 0.0
    assert spearman_brown(0.5) == pytest.approx(2 * 0.5 / 1.5)
    assert spearman_brown(1.0) == 1.0 and spearman_brown(0.0) == 0.0 and spearman_brown(-1.0) == -1.0
    # a map from twice the masks agrees better than either half
    assert 0.5 < spearman_brown(0.5) < 1.0


def test_subtract_is_the_inverse_of_merge():
    masks, scores = random_data(n=61, seed=5)
    masks = masks + 7.0  # an offset: the differences must not cancel badly
    whole = CorrelationAccumulator(masks.shape[1:])
    whole.update(masks, scores)
    part = CorrelationAccumulator(masks.shape[1:])
    part.update(masks[::2], scores[::2])
    direct = CorrelationAccumulator(masks.shape[1:])
    direct.update(masks[1::2], scores[1::2])
    rest = whole.subtract(part)
    for key, value in direct.state().items():
        np.testing.assert_allclose(rest.state()[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(rest.pearson(), direct.pearson(), atol=1e-6)
    assert whole.subtract(whole).n == 0 and whole.subtract(CorrelationAccumulator(masks.shape[1:])).n == 61
    with pytest.raises(InputError, match="cannot subtract 61 samples"):
        part.subtract(whole)


def engine(correlation: str = "pearson", n: int = 90) -> CorrRISE:
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=n, patches=3, patch_size=6, seed=4), correlation=correlation)
    return CorrRISE(ToyModel(), cfg)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_split_half_figures_equal_the_two_half_maps_computed_directly(correlation):
    a, b = toy_pair()
    e = engine(correlation)
    ex = e.attribute(a, b)
    assert ex.uncertainty is not None
    masks = generate_masks(e.config.masks, SIZE, 0, 90)
    corr = spearman_map if correlation == "spearman" else pearson_map
    shard = e.run_shard(a, b, 0, 90)  # the float64 scores (the explanation keeps float32 ones)
    for face, s in (("a", shard.scores_a), ("b", shard.scores_b)):
        even, odd = corr(masks[0::2], s[0::2]), corr(masks[1::2], s[1::2])
        expected = np.corrcoef(even.ravel().astype(np.float64), odd.ravel().astype(np.float64))[0, 1]
        got = getattr(ex.uncertainty, face)
        assert got.split_half_r == pytest.approx(expected, abs=1e-5)
        assert got.predicted_r == pytest.approx(2 * expected / (1 + expected), abs=1e-5)
        full = corr(masks, s)
        ref = map_uncertainty(full, 90, rank=correlation == "spearman")
        np.testing.assert_allclose(got.ci_low, ref.ci_low, atol=1e-6)
        assert np.array_equal(got.significant, ref.significant)
    assert ex.uncertainty.method == ("fisher-z-spearman" if correlation == "spearman" else "fisher-z")
    summary = ex.summary()["uncertainty"]
    assert summary["q"] == 0.05 and summary["n"] == 90
    assert 0 < summary["significant_fraction_a"] < 1 and summary["split_half_r_b"] is not None


# ---- merge invariance --------------------------------------------------------------------------


def same_uncertainty(u: Uncertainty, v: Uncertainty) -> None:
    for face in ("a", "b"):
        x, y = getattr(u, face), getattr(v, face)
        assert x.split_half_r == pytest.approx(y.split_half_r, abs=1e-9)
        assert x.predicted_r == pytest.approx(y.predicted_r, abs=1e-9)
        np.testing.assert_allclose(x.ci_low, y.ci_low, atol=1e-6)
        np.testing.assert_allclose(x.ci_high, y.ci_high, atol=1e-6)
        assert np.array_equal(x.significant, y.significant)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_random_shard_groupings_give_the_same_uncertainty(correlation):
    a, b = toy_pair()
    e = engine(correlation)
    single = e.attribute(a, b).uncertainty
    assert single is not None
    rng = np.random.default_rng(9)
    emb = e.clean_embeddings(a, b)
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, 90), size=6, replace=False))  # odd and even starts
        bounds = [0, *cuts.tolist(), 90]
        parts = [e.run_shard(a, b, lo, hi, embeddings=emb) for lo, hi in zip(bounds, bounds[1:], strict=False)]
        # a state round trip on the way, as shards travel through the store
        parts = [ShardResult.from_state(p.state()) for p in parts]
        while len(parts) > 1:
            i, j = sorted(rng.choice(len(parts), size=2, replace=False))
            merged = parts[j].merge(parts[i])
            parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [merged]
        got = e.finish(parts[0]).uncertainty
        assert got is not None
        same_uncertainty(single, got)


def test_a_shard_stored_without_even_accumulators_still_finishes():
    a, b = toy_pair()
    e = engine()
    shard = e.run_shard(a, b, 0, 90)
    state = {k: v for k, v in shard.state().items() if not k.startswith("even_")}
    old = ShardResult.from_state(state)
    assert old.even_a is None
    ex = e.finish(old)
    assert np.array_equal(ex.s_a, e.finish(shard).s_a)
    assert ex.uncertainty is not None and ex.uncertainty.a.split_half_r is None
    assert ex.uncertainty.summary()["predicted_r_b"] is None
    # an old shard merged with a new one: no halves, the same maps
    old_part = ShardResult.from_state({k: v for k, v in e.run_shard(a, b, 0, 40).state().items()
                                       if not k.startswith("even_")})
    mixed = old_part.merge(e.run_shard(a, b, 40, 90, embeddings=(shard.emb_a, shard.emb_b)))
    assert mixed.even_a is None and mixed.even_b is None
    assert e.finish(mixed).uncertainty.a.split_half_r is None
    bad = dict(shard.state())
    bad["even_a.n"] = 3
    with pytest.raises(InputError, match="even-mask accumulators"):
        ShardResult.from_state(bad)
    one_face = {k: v for k, v in shard.state().items() if not k.startswith("even_b.")}
    with pytest.raises(InputError, match="one face only"):
        ShardResult.from_state(one_face)


def test_fewer_than_4_masks_have_no_uncertainty():
    a, b = toy_pair()
    assert engine(n=3).attribute(a, b).uncertainty is None


# ---- coverage on a model whose true map is known -------------------------------------------------


def test_intervals_cover_the_true_map_at_about_the_stated_rate():
    """The toy model's true map (the correlation of the infinite mask set) is taken from N = 10,000
    masks of another seed: its own error (~1/sqrt(10,000) = 0.01) is small beside the half-width of
    an N = 100 interval (~0.2). Over 20 independent runs (seeds) x 2 faces x 1,024 pixels the mean
    coverage of the 95 % intervals must be within 0.02 + 3 standard errors of 0.95: 0.02 allows for
    Fisher's normal approximation on CorrRISE's non-normal data (measured: 0.94 at N = 100); the
    standard error is that of the mean over the 40 independent runs' coverages (pixels of one run
    share its masks, so they are not independent: the between-run spread, not the binomial spread
    of 40,960 independent pixels (0.001), is the honest one; it is at least as large)."""
    a, b = toy_pair()
    cfg = MaskConfig(n_masks=10_000, patches=10, seed=12_345)
    truth = CorrRISE(ToyModel(), CorrRISEConfig(masks=cfg)).attribute(a, b)
    coverages = []
    for seed in range(20):
        ex = CorrRISE(ToyModel(), CorrRISEConfig(masks=MaskConfig(n_masks=100, seed=seed))).attribute(a, b)
        assert ex.uncertainty is not None
        for face, true_map in (("a", truth.s_a), ("b", truth.s_b)):
            m = getattr(ex.uncertainty, face)
            coverages.append(float(np.mean((m.ci_low <= true_map) & (true_map <= m.ci_high))))
    cov = np.array(coverages)
    se = max(cov.std(ddof=1) / np.sqrt(len(cov)), np.sqrt(0.95 * 0.05 / cov.size / SIZE**2))
    assert abs(cov.mean() - 0.95) <= 0.02 + 3 * se, (cov.mean(), se)
    # and 90 % intervals cover less, as they should
    ex = CorrRISE(ToyModel(), CorrRISEConfig(masks=MaskConfig(n_masks=100, seed=0))).attribute(a, b)
    low, high = fisher_interval(ex.s_a, 100, level=0.5)
    assert np.mean((low <= truth.s_a) & (truth.s_a <= high)) < coverages[0]
