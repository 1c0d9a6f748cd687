"""CorrRISE shards: they serialise without pickle, merge in any order or grouping to the single
pass, refuse overlaps and foreign shards, and carry what ``finish`` needs."""

from __future__ import annotations

import io

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig, ShardResult
from tests.toy import ToyModel, toy_pair

N = 120
CUTS = [0, 9, 16, 40, 41, 70, 88, 101, N]  # 8 shards of uneven sizes


def engine(correlation: str = "pearson", **kw) -> CorrRISE:
    masks = MaskConfig(n_masks=N, patches=3, patch_size=6, seed=4)
    return CorrRISE(ToyModel(), CorrRISEConfig(masks=masks, correlation=correlation, **kw))


def shards(e: CorrRISE, a: np.ndarray, b: np.ndarray) -> list[ShardResult]:
    return [e.run_shard(a, b, lo, hi) for lo, hi in zip(CUTS, CUTS[1:], strict=False)]


def merge_randomly(parts: list[ShardResult], rng: np.random.Generator) -> ShardResult:
    """Merge in a random order and a random grouping: repeatedly join two random pieces."""
    pool = [parts[i] for i in rng.permutation(len(parts))]
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), 2, replace=False))
        right, left = pool.pop(j), pool.pop(i)
        pool.append(left.merge(right) if rng.random() < 0.5 else right.merge(left))
    return pool[0]


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_random_groupings_of_8_shards_equal_the_single_pass(correlation):
    a, b = toy_pair(2)
    e = engine(correlation)
    whole = e.attribute(a, b)
    parts = shards(e, a, b)
    rng = np.random.default_rng(0)
    for _ in range(6):
        merged = merge_randomly(parts, rng)
        assert merged.covers(N) and merged.ranges == ((0, N),)
        ex = e.finish(merged)  # the clean score comes with the shards
        np.testing.assert_allclose(ex.s_a, whole.s_a, atol=1e-6)
        np.testing.assert_allclose(ex.s_b, whole.s_b, atol=1e-6)
        np.testing.assert_allclose(ex.scores_a, whole.scores_a, atol=1e-6)
        np.testing.assert_allclose(ex.scores_b, whole.scores_b, atol=1e-6)
        # a mask's score never depends on the batching or sharding: equal bit for bit
        np.testing.assert_array_equal(merged.scores_a, e.run_shard(a, b, 0, N).scores_a)
        assert ex.score == whole.score and ex.masks == N
        # every shard embedded the clean pair itself: 2 passes each, 2 per mask
        assert ex.forward_passes == 2 * N + 2 * len(parts)


def test_state_round_trips_through_npz_without_pickle():
    a, b = toy_pair(3)
    e = engine()
    shard = e.run_shard(a, b, 0, 50).merge(e.run_shard(a, b, 80, 120))
    buf = io.BytesIO()
    np.savez(buf, **shard.state())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as stored:
        back = ShardResult.from_state(stored)
    assert back.ranges == shard.ranges == ((0, 50), (80, 120))
    assert back.identity == shard.identity and back.score == shard.score
    assert back.clean_passes == shard.clean_passes == 4
    for key in ("scores_a", "scores_b", "emb_a", "emb_b"):
        np.testing.assert_array_equal(getattr(back, key), getattr(shard, key))
    for acc, acc0 in ((back.acc_a, shard.acc_a), (back.acc_b, shard.acc_b)):
        for k, v in acc.state().items():
            np.testing.assert_array_equal(v, acc0.state()[k])
    np.testing.assert_array_equal(e.finish(back).s_a, e.finish(shard).s_a)
    # the stored halves complete with the missing range
    full = back.merge(e.run_shard(a, b, 50, 80))
    np.testing.assert_allclose(e.finish(full).s_b, e.attribute(a, b).s_b, atol=1e-6)


def test_bad_state_is_an_input_error():
    a, b = toy_pair(3)
    e = engine()
    state = e.run_shard(a, b, 0, 20).state()
    with pytest.raises(InputError, match="lacks"):
        ShardResult.from_state({k: v for k, v in state.items() if k != "score"})
    with pytest.raises(InputError, match="shape"):
        ShardResult.from_state({**state, "scores_a": np.zeros(3)})
    with pytest.raises(InputError, match="version"):
        ShardResult.from_state({**state, "version": 99})
    with pytest.raises(InputError, match="accumulators"):
        ShardResult.from_state({**state, "ranges": np.array([[0, 21]]), "scores_a": np.zeros(21),
                                "scores_b": np.zeros(21)})
    with pytest.raises(InputError, match="mapping"):
        ShardResult.from_state([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-empty"):
        ShardResult.from_state({**state, "ranges": np.array([[5, 5]])})


def test_overlapping_and_foreign_shards_do_not_merge():
    a, b = toy_pair(4)
    e = engine()
    left, mid = e.run_shard(a, b, 0, 30), e.run_shard(a, b, 20, 40)
    with pytest.raises(InputError, match="overlap"):
        left.merge(mid)
    with pytest.raises(InputError, match="overlap"):
        left.merge(left)
    other_seed = CorrRISE(ToyModel(), CorrRISEConfig(masks=MaskConfig(n_masks=N, patches=3, patch_size=6, seed=5)))
    with pytest.raises(InputError, match="different mask sets"):
        left.merge(other_seed.run_shard(a, b, 30, 40))
    with pytest.raises(InputError, match="different pairs"):
        left.merge(e.run_shard(b, a, 30, 40))
    with pytest.raises(InputError, match="another mask set"):
        other_seed.finish(left)
    # batching is not part of a shard's identity: it never changes a score
    fast = engine(perturbations_per_eval=64)
    assert left.merge(fast.run_shard(a, b, 30, 40)).ranges == ((0, 40),)
    with pytest.raises(InputError, match="start, stop"):
        e.run_shard(a, b, 10, 10)
    with pytest.raises(InputError, match="start, stop"):
        e.run_shard(a, b, 0, N + 1)


def test_finish_keeps_the_old_signature():
    a, b = toy_pair(5)
    e = engine()
    emb = e.clean_embeddings(a, b)
    shard = e.run_shard(a, b, 0, N, embeddings=emb)
    assert shard.clean_passes == 0  # the embeddings were given
    whole = e.attribute(a, b)
    ex = e.finish(shard, whole.score)
    np.testing.assert_array_equal(ex.s_a, whole.s_a)
    assert ex.score == whole.score and ex.forward_passes == 2 * N
    assert e.finish(shard, 0.5).score == 0.5


def test_config_round_trips_through_a_dict():
    cfg = CorrRISEConfig(masks=MaskConfig(n_masks=64, patches=4, values="binary", seed=7), correlation="spearman",
                         perturbations_per_eval=48)
    d = cfg.to_dict()
    assert d == {"masks": {"n_masks": 64, "patches": 4, "patch_size": None, "values": "binary", "per_pixel": False,
                           "clip_at_border": True, "seed": 7}, "correlation": "spearman",
                 "perturbations_per_eval": 48}
    assert CorrRISEConfig.from_dict(d) == cfg
    assert CorrRISEConfig.from_dict({}) == CorrRISEConfig()
    assert MaskConfig.from_dict(cfg.masks.to_dict()) == cfg.masks
    with pytest.raises(InputError, match="unknown CorrRISE option.*nmasks"):
        CorrRISEConfig.from_dict({"nmasks": 3})
    with pytest.raises(InputError, match="unknown mask option.*colour"):
        CorrRISEConfig.from_dict({"masks": {"colour": "red"}})
    with pytest.raises(InputError, match="n_masks"):
        CorrRISEConfig.from_dict({"masks": {"n_masks": -1}})
