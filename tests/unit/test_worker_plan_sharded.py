"""Which methods the worker shards: corrrise-plus is planned in CorrRISE's mask shards, and every
method the plan shards is one whose masks are its units (``run_shard``/``finish``, 2 forward
passes per mask beside the clean pair's 2, the API's ``total``)."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.methods.registry import build, forward_passes
from explainer_service.worker.plan import SHARDED_METHODS, Unit, plan_explain, plan_shards
from tests.toy import ToyModel, toy_pair


@pytest.mark.parametrize("method", ["corrrise", "corrrise-plus"])
def test_mask_sampling_methods_are_planned_in_mask_shards(method):
    assert method in SHARDED_METHODS
    units = plan_explain(method, 500, 96)
    assert units == [Unit(lo, hi) for lo, hi in plan_shards(500, 96)]
    assert [u.lease for u in units[:2]] == ["shard:0-96", "shard:96-192"] and units[-1] == Unit(480, 500)
    assert all(u.sharded for u in units)


def test_corrrise_plus_and_corrrise_get_the_same_shards():
    for n, size in ((64, 16), (100, 40), (5, 96), (1002, 96)):
        assert plan_explain("corrrise-plus", n, size) == plan_explain("corrrise", n, size)


@pytest.mark.parametrize("method", ["rise", "lime"])
def test_other_methods_are_one_task(method):
    assert method not in SHARDED_METHODS
    assert plan_explain(method, 1, 16) == [Unit()]


@pytest.mark.parametrize("method", sorted(SHARDED_METHODS))
def test_every_sharded_method_counts_masks_and_its_planned_shards_give_its_maps(method):
    for n in (3, 64, 500):  # the API's total: (forward passes - 2) / 2 is the masks
        assert (forward_passes(method, 112, n_masks=n) - 2) // 2 == n
    model = ToyModel()
    explainer = build(method, model, n_masks=40, seed=2)
    a, b = toy_pair(1)
    shards = [explainer.run_shard(a, b, lo, hi) for lo, hi in plan_shards(40, 16)]  # type: ignore[attr-defined]
    merged = shards[2].merge(shards[0]).merge(shards[1])  # as the store merges, in any order
    got = explainer.finish(merged)  # type: ignore[attr-defined]
    want = explainer.attribute(a, b)
    assert got.masks == want.masks == 40
    np.testing.assert_allclose(got.s_a, want.s_a, atol=1e-6)
    np.testing.assert_allclose(got.s_b, want.s_b, atol=1e-6)
