"""The evaluation library: method construction knobs, evaluate = explain + score, the table rows."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.evaluation import METHODS, check_methods, evaluate_methods, explain_pairs, score_maps
from explainer_service.methods import METHOD_NAMES
from explainer_service.methods import build as build_method
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


def test_the_method_list_is_the_registrys_and_is_checked():
    assert METHODS is METHOD_NAMES
    assert check_methods([" rise", "lime "]) == ["rise", "lime"]
    with pytest.raises(InputError, match="--methods: unknown shap .*known: corrrise, rise"):
        check_methods(["corrrise", "shap"], "--methods")
    with pytest.raises(InputError, match="none given"):
        check_methods(["", " "])
    a, b = toy_pair(0)
    with pytest.raises(InputError, match="shap"):
        evaluate_methods(a[None], b[None], ToyModel(), ["shap"])


def test_one_pair_has_no_interval_and_no_nan(tmp_path):
    """With one pair there is no spread to estimate: the interval is None / n/a, never NaN."""
    from explainer_service.report import write_evaluation

    a, b = toy_pair(1)
    (res,) = evaluate_methods(a[None], b[None], ToyModel(), ["corrrise"], budget=16)
    assert res.deletion.confidence_interval() is None
    row = res.row()
    assert row["deletion_ci95"] is None and row["insertion_ci95"] is None
    paths = write_evaluation(tmp_path, [res], {"model": "toy"})
    for key in ("md", "csv", "json"):
        text = paths[key].read_text()
        assert "nan" not in text.lower(), key
    assert "n/a" in paths["md"].read_text() and "n/a" in paths["csv"].read_text()
    # two pairs or more: an interval around the AUC
    pairs = [toy_pair(s) for s in range(3)]
    (res3,) = evaluate_methods(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), ToyModel(),
                               ["corrrise"], budget=16)
    lo, hi = res3.row()["deletion_ci95"]
    assert lo <= res3.row()["deletion"] <= hi
