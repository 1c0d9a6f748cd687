"""CorrRISE+ (issue 11 §1): the exact mask covariance, the regression estimator on the toy model
(regions recovered, more reproducible than CorrRISE at the same budget), budget, shards and bad
parameters."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.methods import build, forward_passes
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.methods.corrrise_plus import (
    CorrRISEPlus,
    CorrRISEPlusConfig,
    cell_features,
    cell_kernel,
    occlusion_covariance,
)
from tests.toy import SIZE, Q, R, ToyModel, toy_pair

TOY_MASKS = {"patches": 3, "patch_size": 6}


def _r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


@pytest.mark.parametrize("options", [{}, {"values": "binary"}, {"per_pixel": True}])
def test_the_closed_form_covariance_is_the_masks_covariance(options):
    size, n = 20, 20000
    cfg = MaskConfig(n_masks=n, patches=4, patch_size=5, seed=3, **options)
    occ = 1.0 - generate_masks(cfg, size).reshape(n, -1).astype(np.float64)
    cov = occlusion_covariance(cfg, size)
    yy, xx = np.mgrid[0:size, 0:size]
    for p in (0, 47, 210, 399):
        py, px = divmod(p, size)
        want = cov[py - yy + size - 1, px - xx + size - 1].ravel()
        got = (occ - occ.mean(0)).T @ (occ[:, p] - occ[:, p].mean()) / (n - 1)
        # Monte Carlo error of a covariance at n = 20000 is about var / sqrt(n) ~ 1e-3 here
        assert np.abs(got - want).max() < 6 * cov[size - 1, size - 1] / np.sqrt(n) + 1e-4
    features = cell_features(occ.reshape(n, size, size), (3, 4))
    kernel = cell_kernel(cov, size, (3, 4))
    emp = (occ - occ.mean(0)).T @ (features - features.mean(0)) / (n - 1)
    assert kernel.shape == (size * size, 9 + 16)
    assert np.abs(emp - kernel).max() < 6 * cov[size - 1, size - 1] / np.sqrt(n)


def test_cell_features_are_cell_means():
    x = np.arange(2 * 6 * 6, dtype=np.float64).reshape(2, 6, 6)
    f = cell_features(x, (1, 2))
    assert f.shape == (2, 1 + 4)
    assert f[1, 0] == pytest.approx(x[1].mean())
    assert f[0, 1 + 3] == pytest.approx(x[0, 3:, 3:].mean())


def test_recovers_the_toy_models_regions():
    model = ToyModel()
    a, b = toy_pair()
    ex = CorrRISEPlus(model, CorrRISEPlusConfig(masks=MaskConfig(n_masks=300, **TOY_MASKS))).attribute(a, b)
    inside_r = np.zeros((SIZE, SIZE), bool)
    inside_r[R] = True
    inside_q = np.zeros((SIZE, SIZE), bool)
    inside_q[Q] = True
    rest = ~(inside_r | inside_q)
    # masking R of either face lowers the similarity: similar (positive)
    assert ex.s_a[inside_r].mean() > 0.1 and ex.s_b[inside_r].mean() > 0.1
    assert ex.s_a[inside_r].mean() > ex.s_a[rest].mean() + 0.1
    # masking B's bright occluder in Q raises it: dissimilar (negative), stronger than anywhere else
    assert ex.s_b[inside_q].mean() < -0.1
    assert ex.s_b[inside_q].mean() < ex.s_b[rest].mean() - 0.1
    assert ex.method == "corrrise-plus" and ex.masks == 300


def test_more_reproducible_than_corrrise_at_the_same_budget():
    model = ToyModel()
    a, b = toy_pair()
    agreement = {}
    for name, make in (
        ("corrrise", lambda s: CorrRISE(model, CorrRISEConfig(masks=MaskConfig(n_masks=100, seed=s, **TOY_MASKS)))),
        ("plus", lambda s: CorrRISEPlus(model, CorrRISEPlusConfig(masks=MaskConfig(n_masks=100, seed=s, **TOY_MASKS)))),
    ):
        maps = [make(s).attribute(a, b) for s in (0, 1, 2, 3)]
        agreement[name] = np.mean([
            _r(maps[i].s_a, maps[j].s_a) + _r(maps[i].s_b, maps[j].s_b)
            for i in range(4) for j in range(i + 1, 4)
        ]) / 2
    assert agreement["plus"] > agreement["corrrise"] + 0.05, agreement


def test_budget_is_corrrises():
    model = ToyModel()
    a, b = toy_pair()
    method = CorrRISEPlus(model, CorrRISEPlusConfig(masks=MaskConfig(n_masks=40, **TOY_MASKS)))
    ex = method.attribute(a, b)
    assert ex.forward_passes == model.images == 2 * 40 + 2 == method.forward_passes()
    assert forward_passes("corrrise-plus", 150) == 1002
    assert CorrRISEPlus.forward_passes_for(CorrRISEPlusConfig(), 112) == 1002


def test_batching_and_shards_never_change_the_maps():
    model = ToyModel()
    a, b = toy_pair()
    cfg = MaskConfig(n_masks=60, **TOY_MASKS)
    whole = CorrRISEPlus(model, CorrRISEPlusConfig(masks=cfg, perturbations_per_eval=2)).attribute(a, b)
    method = CorrRISEPlus(model, CorrRISEPlusConfig(masks=cfg, perturbations_per_eval=32))
    emb = method._sampler.clean_embeddings(a, b)
    parts = [method.run_shard(a, b, lo, hi, embeddings=emb) for lo, hi in ((40, 60), (0, 25), (25, 40))]
    merged = parts[0].merge(parts[2]).merge(parts[1])
    ex = method.finish(merged)
    np.testing.assert_array_equal(ex.s_a, whole.s_a)
    np.testing.assert_array_equal(ex.s_b, whole.s_b)


def test_the_residual_estimate_approaches_corrrises_map():
    # with the sample correction the estimator targets the paper's map: at large N on the same
    # masks both estimates agree closely
    model = ToyModel()
    a, b = toy_pair()
    cfg = MaskConfig(n_masks=1500, **TOY_MASKS)
    paper = CorrRISE(model, CorrRISEConfig(masks=cfg)).attribute(a, b)
    plus = CorrRISEPlus(model, CorrRISEPlusConfig(masks=cfg, residual=True)).attribute(a, b)
    assert _r(paper.s_a, plus.s_a) > 0.95 and _r(paper.s_b, plus.s_b) > 0.95


@pytest.mark.parametrize(
    "params, match",
    [
        ({"grids": (0,)}, "grids must be an integer >= 1"),
        ({"grids": ()}, "grids must be a non-empty"),
        ({"grids": "8"}, "grids must be a non-empty"),
        ({"grids": (64,)}, "grids: 64 cells per side"),
        ({"ridge": -1.0}, "ridge must be a finite number >= 0"),
        ({"ridge": float("nan")}, "ridge must be a finite number >= 0"),
        ({"residual": "yes"}, "residual must be a bool"),
        ({"clip_at_border": False}, "clip_at_border=True"),
        ({"n_masks": 2}, "at least 3 masks"),
        ({"correlation": "pearson"}, "no parameter correlation"),
    ],
)
def test_bad_parameters_are_input_errors(params, match):
    with pytest.raises(InputError, match=match):
        build("corrrise-plus", ToyModel(), **params)


def test_registry_builds_it_with_the_generic_knobs():
    method = build("corrrise-plus", ToyModel(), seed=5, budget=30, patch_size=6, grids=(2, 4))
    assert isinstance(method, CorrRISEPlus)
    assert method.config.masks.n_masks == 30 and method.config.masks.seed == 5
    assert method.config.grids == (2, 4)
