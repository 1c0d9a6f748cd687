"""The CorrRISE engine on a toy model: sign semantics, Algorithm 1, batching and shards."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig, generate_masks
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.methods.corrrise_literal import corrrise_literal
from explainer_service.models.base import to_model_input
from tests.toy import SIZE, Q, R, ToyModel, toy_pair


def config(n: int = 300, **kw) -> CorrRISEConfig:
    return CorrRISEConfig(masks=MaskConfig(n_masks=n, patches=3, patch_size=6, seed=1), **kw)


def outside(mask_shape=(SIZE, SIZE)) -> np.ndarray:
    sel = np.ones(mask_shape, bool)
    sel[R] = False
    sel[Q] = False
    return sel


def test_similar_and_dissimilar_regions_have_the_right_sign():
    a, b = toy_pair()
    ex = CorrRISE(ToyModel(), config(400)).attribute(a, b)
    # R carries the shared identity: masking it lowers the score in both directions
    assert ex.s_a[R].mean() > 0.15 and ex.s_b[R].mean() > 0.15
    # the occluder in B's Q is what makes B unlike A: masking it raises the score
    assert ex.s_b[Q].mean() < -0.15
    assert (ex.s_b[Q] < 0).mean() > 0.95
    # pixels the model ignores carry no signal beyond sampling noise (~1/sqrt(N))
    assert abs(ex.s_a[outside()].mean()) < 0.03 and abs(ex.s_b[outside()].mean()) < 0.03
    assert ex.dissimilar_b[Q].mean() > 0.15 and ex.similar_b[Q].max() < 0.2
    assert np.all(ex.dissimilar_b >= 0) and np.all(ex.similar_a >= 0)


def test_engine_equals_literal_algorithm_1():
    a, b = toy_pair(3)
    model = ToyModel()
    cfg = config(25)
    ex = CorrRISE(model, cfg).attribute(a, b)
    masks = generate_masks(cfg.masks, SIZE)
    embed_one = lambda img: model.embed(to_model_input(img))[0]  # noqa: E731
    lit_a, lit_b = corrrise_literal(embed_one, a.astype(np.float32), b.astype(np.float32), masks)
    np.testing.assert_allclose(ex.s_a, lit_a, atol=2e-5)
    np.testing.assert_allclose(ex.s_b, lit_b, atol=2e-5)
    assert ex.score == pytest.approx(float(np.dot(embed_one(a), embed_one(b)) / np.linalg.norm(embed_one(a)) / np.linalg.norm(embed_one(b))), abs=1e-6)


def test_forward_pass_count_is_2n_plus_2():
    model = ToyModel()
    ex = CorrRISE(model, config(50, perturbations_per_eval=32)).attribute(*toy_pair())
    assert model.images == 2 * 50 + 2 == ex.forward_passes == ex.summary()["forward_passes"]
    assert model.calls == 1 + 4  # clean pair, then ceil(50 / 16) calls of 16 masks = 32 images
    assert ex.masks == 50 and CorrRISE.forward_passes_for(config(50), 32) == 102


@pytest.mark.parametrize("ppe, calls", [(1, 100), (2, 50), (7, 17), (16, 7), (500, 1)])
def test_perturbations_per_eval_counts_images_per_call(ppe, calls):
    """Every model call holds at most ``ppe`` images (masked A and B of ppe // 2 masks)."""

    class Recording(ToyModel):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def embed(self, images):
            self.batches.append(len(images))
            return super().embed(images)

    model = Recording()
    CorrRISE(model, config(50, perturbations_per_eval=ppe)).attribute(*toy_pair())
    assert model.batches[0] == 2  # the clean pair
    assert max(model.batches[1:]) <= ppe and sum(model.batches[1:]) == 100
    assert len(model.batches) - 1 == calls


@pytest.mark.parametrize("ppe", [1, 7, 64, 500])
def test_batching_never_changes_the_maps(ppe):
    a, b = toy_pair()
    ref = CorrRISE(ToyModel(), config(120, perturbations_per_eval=32)).attribute(a, b)
    ex = CorrRISE(ToyModel(), config(120, perturbations_per_eval=ppe)).attribute(a, b)
    np.testing.assert_allclose(ex.s_a, ref.s_a, atol=1e-6)
    np.testing.assert_allclose(ex.s_b, ref.s_b, atol=1e-6)
    # the accumulators are fed in fixed blocks whatever the batching: equal bit for bit
    np.testing.assert_array_equal(ex.s_a, ref.s_a)
    np.testing.assert_array_equal(ex.s_b, ref.s_b)


def test_shards_merge_to_the_single_pass_result():
    a, b = toy_pair()
    engine = CorrRISE(ToyModel(), config(130))
    whole = engine.attribute(a, b)
    emb = engine.clean_embeddings(a, b)
    parts = [engine.run_shard(a, b, lo, hi, embeddings=emb) for lo, hi in [(0, 17), (17, 90), (90, 130)]]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    ex = engine.finish(merged, whole.score)
    np.testing.assert_allclose(ex.s_a, whole.s_a, atol=1e-6)
    np.testing.assert_allclose(ex.s_b, whole.s_b, atol=1e-6)
    # shards that overlap cannot merge; shards that do not touch can (any order, tests/unit/test_shards.py)
    with pytest.raises(InputError, match="overlap"):
        merged.merge(parts[1])
    gap = parts[0].merge(parts[2])
    assert gap.ranges == ((0, 17), (90, 130)) and not gap.covers(130)


def test_partial_maps_can_be_read_while_running():
    a, b = toy_pair()
    engine = CorrRISE(ToyModel(), config(200))
    seen = []
    shard = engine.run_shard(a, b, 0, 200, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (200, 200) and len(seen) == -(-200 // 16)  # the default: 16 masks per call
    partial = engine.run_shard(a, b, 0, 60)
    assert partial.acc_a.n == 60 and np.isfinite(partial.acc_a.pearson()).all()
    assert shard.acc_a.n == 200


def test_spearman_option_is_rank_correlation_per_pixel():
    a, b = toy_pair()
    cfg = config(60, correlation="spearman")
    ex = CorrRISE(ToyModel(), cfg).attribute(a, b)
    masks = generate_masks(cfg.masks, SIZE)
    for (i, j) in [(5, 5), (20, 10), (30, 30), (8, 20)]:
        col = masks[:, i, j]
        want = 0.0 if np.ptp(col) == 0 else stats.spearmanr(col, ex.scores_b).statistic
        assert ex.s_b[i, j] == pytest.approx(want, abs=1e-5)
    assert ex.s_b[Q].mean() < -0.2


def test_pixels_no_mask_varied_are_zero_not_nan():
    a, b = toy_pair()
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=3, patches=1, patch_size=4, seed=0))
    ex = CorrRISE(ToyModel(), cfg).attribute(a, b)
    assert np.isfinite(ex.s_a).all() and np.isfinite(ex.s_b).all()
    masks = generate_masks(cfg.masks, SIZE)
    never = np.ptp(masks, axis=0) == 0
    assert never.sum() > 500
    assert np.all(ex.s_a[never] == 0) and np.all(ex.s_b[never] == 0)


def test_bad_configuration_and_chips_are_input_errors():
    with pytest.raises(InputError, match="at least 2 masks"):
        CorrRISEConfig(masks=MaskConfig(n_masks=1))
    with pytest.raises(InputError, match="correlation"):
        CorrRISEConfig(correlation="kendall")
    with pytest.raises(InputError, match="perturbations_per_eval"):
        CorrRISEConfig(perturbations_per_eval=0)
    a, b = toy_pair()
    with pytest.raises(InputError, match="chip B"):
        CorrRISE(ToyModel(), config(4)).attribute(a, b[:10])


def test_decision_follows_the_threshold():
    a, b = toy_pair()
    ex = CorrRISE(ToyModel(), config(10)).attribute(a, a)
    assert ex.score == pytest.approx(1.0, abs=1e-6) and ex.decision == "match"
    summary = ex.summary()
    assert summary["decision"] == "match" and summary["masks"] == 10 and summary["model"] == "toy"
