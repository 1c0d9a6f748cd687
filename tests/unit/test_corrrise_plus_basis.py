"""CorrRISE+'s regression basis and estimator options (issue 11 §1, second round): the ridge fit and
its GCV choice against brute force, region features and pooling against loops, the old estimator
kept, exact shard merges with chip-dependent bases, and bad options."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.methods import build
from explainer_service.methods.corrrise_plus import (
    RIDGE_GRID,
    CorrRISEPlus,
    CorrRISEPlusConfig,
    cell_kernel,
    fit_map,
    grid_labels,
    occlusion_covariance,
    region_matrix,
    region_pool,
    regression_map,
    ridge_fit,
    superpixel_labels,
)
from tests.toy import SIZE, Q, R, ToyModel

TOY_MASKS = {"patches": 3, "patch_size": 6}


def _blocky_pair() -> tuple[np.ndarray, np.ndarray]:
    """The toy pair's layout (R shared, Q dark in A and bright in B) on a background of flat
    8 x 8 colour blocks, so that SLIC finds regions (on the toy pair's pixel noise it finds one)."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(40, 200, size=(SIZE // 8, SIZE // 8, 3))
    a = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1).astype(np.uint8)
    a[Q[0], Q[1]] = 0
    b = a.copy()
    b[Q[0], Q[1]] = 255
    return a, b


def _brute_ridge(x: np.ndarray, y: np.ndarray, rel: float) -> np.ndarray:
    xc, yc = x - x.mean(0), y - y.mean()
    gram = xc.T @ xc
    lam = rel * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)


def test_ridge_fit_is_the_closed_form_and_gcv_the_brute_force_minimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7)) @ rng.normal(size=(7, 7))
    y = x @ rng.normal(size=7) + 3.0 + rng.normal(scale=2.0, size=60)
    for rel in (0.0, 0.01, 1.0, 30.0):
        beta, used = ridge_fit(x, y, rel)
        assert used == rel
        np.testing.assert_allclose(beta, _brute_ridge(x, y, rel), rtol=1e-8, atol=1e-10)
    # GCV by the explicit hat matrix (intercept included) over the same grid
    xc, yc = x - x.mean(0), y - y.mean()
    n = len(y)
    gcv = []
    for rel in RIDGE_GRID:
        lam = rel * np.trace(xc.T @ xc) / x.shape[1]
        hat = xc @ np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T)
        rss = float(((yc - hat @ yc) ** 2).sum())
        gcv.append(n * rss / (n - 1 - np.trace(hat)) ** 2)
    beta, chosen = ridge_fit(x, y, None)
    assert chosen == RIDGE_GRID[int(np.argmin(gcv))]
    np.testing.assert_allclose(beta, _brute_ridge(x, y, chosen), rtol=1e-8, atol=1e-10)


def test_ridge_fit_survives_the_svd_driver_that_does_not_converge(monkeypatch):
    """gesdd (NumPy's SVD) fails to converge on some rank-deficient bases (found on a superpixel +
    nested-cells basis of a real face); ridge_fit then uses gesvd and gives the same fit."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 9))  # rank 6 of 9, like nested cells
    y = x @ rng.normal(size=9) + rng.normal(scale=0.5, size=80)
    want = ridge_fit(x, y, None)

    def no_convergence(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", no_convergence)
    beta, used = ridge_fit(x, y, None)
    assert used == want[1]
    np.testing.assert_allclose(beta, want[0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ridge_fit(x, y, 1.0)[0], _brute_ridge(x, y, 1.0), rtol=1e-8, atol=1e-10)


def test_gcv_penalises_noise_more_than_signal():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 20))
    _, quiet = ridge_fit(x, x @ rng.normal(size=20) + rng.normal(scale=0.01, size=200), None)
    _, noisy = ridge_fit(x, rng.normal(size=200), None)
    assert quiet < 0.01 < 10.0 < noisy


def test_region_features_and_painting_match_loops():
    labels = [grid_labels(6, 2), np.array([[0, 0, 5, 5, 5, 2]] * 3 + [[2] * 6] * 3)]
    a = region_matrix(labels).toarray()
    occ = np.random.default_rng(2).random((4, 36))
    feats = occ @ a
    want = []
    for lab in labels:
        for v in np.unique(lab):
            want.append(occ[:, lab.ravel() == v].mean(axis=1))
    np.testing.assert_allclose(feats, np.stack(want, axis=1))
    beta = np.arange(a.shape[1], dtype=np.float64) + 1.0
    painted = (a @ beta).reshape(6, 6)
    # pixel (0, 0): cell 0 of the 2x2 grid (9 px) and region 0 of the second map (6 px)
    assert painted[0, 0] == pytest.approx(beta[0] / 9 + beta[4] / 6)
    assert grid_labels(6, 2)[4, 1] == 2 and grid_labels(7, 3).max() == 8


def test_the_correlation_output_is_the_first_estimator():
    size, n = 16, 200
    cfg = MaskConfig(n_masks=n, patches=3, patch_size=5, seed=4)
    masks = generate_masks(cfg, size)
    occ = 1.0 - masks.reshape(n, -1).astype(np.float64)
    scores = occ[:, 40:60].mean(1) - 0.5 * occ[:, 200:230].mean(1) + 0.01 * np.random.default_rng(0).normal(size=n)
    cov = occlusion_covariance(cfg, size)
    kernel = cell_kernel(cov, size, (2, 4))
    regions = region_matrix([grid_labels(size, 2), grid_labels(size, 4)])
    for residual in (False, True):
        old = regression_map(masks, scores, kernel, float(np.sqrt(cov[size - 1, size - 1])), (2, 4), 1.0, residual)
        new = fit_map(occ, scores, regions, cov, 1.0, "correlation", residual)
        np.testing.assert_allclose(new, old, atol=1e-5)


def test_the_effect_output_recovers_a_linear_models_region_effects():
    size, n = 16, 300
    cfg = MaskConfig(n_masks=n, patches=3, patch_size=5, seed=5)
    occ = 1.0 - generate_masks(cfg, size).reshape(n, -1).astype(np.float64)
    regions = region_matrix([grid_labels(size, 4)])
    beta = np.zeros(16)
    beta[5], beta[10] = -2.0, 1.0  # occluding cell 5 lowers the score, cell 10 raises it
    scores = 0.7 + occ @ regions @ beta
    cov = occlusion_covariance(cfg, size)
    out = fit_map(occ, scores, regions, cov, 0.0, "effect")
    want = -(regions @ beta).reshape(size, size)
    assert np.corrcoef(out.ravel(), want.ravel())[0, 1] > 0.999
    lab = grid_labels(size, 4)
    assert out[lab == 5].min() > 0 > out[lab == 10].max()  # signed: similar +, dissimilar -
    assert np.abs(out[(lab != 5) & (lab != 10)]).max() < 1e-6


def test_region_pool_paints_region_means():
    sal = np.arange(16, dtype=np.float64).reshape(4, 4)
    lab = grid_labels(4, 2)
    pooled = region_pool(sal, [lab])
    assert pooled[0, 0] == pytest.approx(sal[:2, :2].mean()) and pooled[3, 3] == pytest.approx(sal[2:, 2:].mean())
    assert pooled.sum() == pytest.approx(sal.sum())
    two = region_pool(sal, [lab, grid_labels(4, 4)])
    np.testing.assert_allclose(two, (pooled + sal) / 2, rtol=1e-6)


def test_superpixels_are_deterministic_from_the_chip():
    a, b = _blocky_pair()
    la, la2, lb = superpixel_labels(a, 16), superpixel_labels(a.copy(), 16), superpixel_labels(b, 16)
    np.testing.assert_array_equal(la, la2)
    assert la.shape == (SIZE, SIZE) and set(np.unique(la)) == set(range(la.max() + 1)) and la.max() >= 2
    assert not np.array_equal(la, lb)


CHIP_CONFIGS = [
    {"superpixels": (8,), "ridge": None, "output": "effect"},
    {"superpixels": (8,), "ridge": None, "pool": (8, 16)},
    {"grids": (2, 4), "ridge": 0.5, "pool": (8,)},
]


@pytest.mark.parametrize("options", CHIP_CONFIGS)
def test_shards_merge_exactly_in_any_order_with_chip_bases(options):
    model = ToyModel()
    a, b = _blocky_pair()
    cfg = CorrRISEPlusConfig(masks=MaskConfig(n_masks=60, **TOY_MASKS), **options)
    method = CorrRISEPlus(model, cfg)
    whole = method.attribute(a, b)
    emb = method._sampler.clean_embeddings(a, b)
    parts = [method.run_shard(a, b, lo, hi, embeddings=emb) for lo, hi in ((30, 60), (0, 10), (10, 30))]
    for merged in (parts[0].merge(parts[2]).merge(parts[1]), parts[1].merge(parts[0].merge(parts[2]))):
        ex = method.finish(merged, chips=(a, b))
        np.testing.assert_array_equal(ex.s_a, whole.s_a)
        np.testing.assert_array_equal(ex.s_b, whole.s_b)
    with pytest.raises(InputError, match="needs the chips"):
        method.finish(parts[0])
    assert whole.params["superpixels"] == list(cfg.superpixels) and whole.params["pool"] == list(cfg.pool)


@pytest.mark.parametrize("options", CHIP_CONFIGS)
def test_chip_bases_give_signed_maps_of_the_toy_regions(options):
    model = ToyModel()
    a, b = _blocky_pair()
    cfg = CorrRISEPlusConfig(masks=MaskConfig(n_masks=300, **TOY_MASKS), **options)
    ex = CorrRISEPlus(model, cfg).attribute(a, b)
    inside_r = np.zeros((SIZE, SIZE), bool)
    inside_r[R] = True
    inside_q = np.zeros((SIZE, SIZE), bool)
    inside_q[Q] = True
    rest = ~(inside_r | inside_q)
    assert ex.s_a[inside_r].mean() > max(0.0, ex.s_a[rest].mean())
    assert ex.s_b[inside_q].mean() < min(0.0, ex.s_b[rest].mean())
    assert ex.forward_passes == 2 * 300 + 2


@pytest.mark.parametrize(
    "params, match",
    [
        ({"superpixels": (1,)}, "superpixels must be an integer >= 2"),
        ({"pool": "8"}, "pool must be a tuple"),
        ({"output": "sharp"}, "output must be one of effect, correlation"),
        ({"output": "effect", "residual": True}, "residual=true needs output=correlation"),
        ({"ridge": -0.5}, "ridge must be a finite number >= 0 or None"),
        ({"pool": (5000,)}, "pool: 5000 superpixels is more than the chip's pixels"),
    ],
)
def test_bad_basis_options_are_input_errors(params, match):
    with pytest.raises(InputError, match=match):
        build("corrrise-plus", ToyModel(), **params)


def test_config_round_trips_with_gcv_and_bases():
    cfg = CorrRISEPlusConfig(superpixels=(50, 150), ridge=None, output="effect", pool=(50,))
    assert CorrRISEPlusConfig.from_dict(cfg.to_dict()) == cfg
