"""The cascading model-randomisation sanity check on the dlib twin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from explainer_service.errors import InputError
from explainer_service.sanity import cascading_randomization, dlib_stages, map_similarity, randomize_layers

torch = pytest.importorskip("torch", reason="the torch extra is part of `make test` setup")
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def twin():
    from explainer_service.models.convert import dlib_source_path
    from explainer_service.models.dlib_format import read_dlib_resnet
    from explainer_service.models.torch_dlib import build_torch

    return build_torch(read_dlib_resnet(dlib_source_path()))


def test_randomize_layers_changes_only_the_named_layers_of_a_copy(twin):
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    rnd = randomize_layers(twin, ["fc", "blocks.13"], seed=1)
    for k, v in twin.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    changed = {k for k, v in rnd.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("fc.", "blocks.13.")) for k in changed)
    assert {k for k in before if k.startswith(("fc.", "blocks.13.")) and "weight" in k} <= changed
    with pytest.raises(InputError, match="nope"):
        randomize_layers(twin, ["nope"])
    assert dlib_stages(twin)[:2] == ["fc", "blocks.13"] and dlib_stages(twin)[-1] == "stem"


def test_map_similarity_is_spearman_and_ssim():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    b = a + 0.3 * rng.random((20, 20))
    rho, ssim = map_similarity(a, b)
    assert rho == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic)
    assert map_similarity(a, a) == pytest.approx((1.0, 1.0))
    assert 0 < ssim < 1
    assert map_similarity(a, np.zeros_like(a))[0] == 0.0


def test_gradcam_maps_drift_away_as_the_model_is_randomised(twin):
    from explainer_service.methods.gradcam import DLIB_DEFAULT_LAYER, GradCAM, GradTarget
    from explainer_service.models.registry import get_spec

    spec = get_spec("dlib-resnet-v1")
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (150, 150, 3)).astype(np.uint8)
    other = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)

    def make(name, module):
        return GradCAM(GradTarget.for_module(module, DLIB_DEFAULT_LAYER, spec=spec))

    stages = dlib_stages(twin)
    rows = cascading_randomization(twin, stages, ["gradcam"], base[None], other[None], make, measure_at=[len(stages)])
    assert rows[0].stage == "trained" and rows[0].spearman == 1.0
    assert rows[-1].layers_randomized == len(stages) and rows[-1].spearman < 0.6
    # one pair = two maps compared; the interval is over them
    assert rows[-1].maps == 2 and rows[-1].spearman_ci95 > 0
