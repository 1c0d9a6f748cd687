"""The evaluation library: method construction knobs, and evaluate = explain + score."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.evaluation import build_method, evaluate_methods, explain_pairs, score_maps
from explainer_service.metrics import default_steps
from tests.toy import ToyModel, toy_pair

PERTURBATION_METHODS = ("corrrise", "rise", "lime", "xface", "minplus")


@pytest.mark.parametrize("name", PERTURBATION_METHODS)
def test_perturbations_per_eval_changes_the_calls_not_the_maps(name):
    a, b = toy_pair(0)
    default_model, small_model = ToyModel(), ToyModel()
    ex_default = build_method(name, default_model, budget=64).attribute(a, b)
    ex_small = build_method(name, small_model, budget=64, perturbations_per_eval=3).attribute(a, b)
    np.testing.assert_array_equal(ex_default.s_a, ex_small.s_a)
    np.testing.assert_array_equal(ex_default.s_b, ex_small.s_b)
    assert default_model.images == small_model.images
    assert small_model.calls > default_model.calls  # the knob reached the method


def test_evaluate_is_explain_then_score():
    pairs = [toy_pair(s) for s in range(3)]
    ca = np.stack([p[0] for p in pairs])
    cb = np.stack([p[1] for p in pairs])
    model = ToyModel()
    (res,) = evaluate_methods(ca, cb, model, ["corrrise"], budget=48)
    ma, mb, params = explain_pairs(build_method("corrrise", model, budget=48), ca, cb)
    d, i = score_maps(ca, cb, ma, mb, model)
    np.testing.assert_array_equal(res.deletion.kept, d.kept)
    np.testing.assert_array_equal(res.insertion.scores, i.scores)
    assert params == res.params and params["n_masks"] == 48
    # the same maps scored with finer steps: one curve point per step, same end points
    d51, _ = score_maps(ca, cb, ma, mb, model, steps=default_steps(51))
    assert d51.kept.shape == (3, 51)
    np.testing.assert_array_equal(d51.kept[:, [0, -1]], d.kept[:, [0, -1]])
