"""Limits and ranges of every method parameter, checked in the library (``registry.check_params``
and ``build``, so the CLI and the API are both covered) before any model call: each parameter at
its bound passes, one above is refused with an error naming it (and the limit's variable)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from explainer_service.errors import InputError, LimitExceededError
from explainer_service.masks import MaskConfig
from explainer_service.methods import build, check_params, forward_passes, list_methods
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.methods.lime import LIME, LIMEConfig
from explainer_service.methods.minplus import MinPlus, MinPlusConfig
from explainer_service.methods.registry import PARAM_LIMITS
from explainer_service.methods.rise import RISE, RISEConfig
from explainer_service.methods.xface import XFace, XFaceConfig
from tests.toy import SIZE, ToyModel, toy_pair

# small limits, so that "at the limit" is cheap to build and run on the 32 px toy chips
LIMITS = {
    "FACEXPLAIN_MAX_MASKS": 40,
    "FACEXPLAIN_MAX_PATCHES": 12,
    "FACEXPLAIN_MAX_PATCH_SIZE": 20,
    "FACEXPLAIN_MAX_BATCH": 16,
}


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LIMITS.items():
        monkeypatch.setenv(name, str(value))


# (method, parameter, value at its limit, other parameters keeping the request small, variable)
AT_LIMIT = [
    ("corrrise", "n_masks", 40, {"patches": 2}, "FACEXPLAIN_MAX_MASKS"),
    ("corrrise", "budget", 40, {"patches": 2}, "FACEXPLAIN_MAX_MASKS"),
    ("corrrise", "patches", 12, {"n_masks": 4}, "FACEXPLAIN_MAX_PATCHES"),
    ("corrrise", "patch_size", 20, {"n_masks": 4}, "FACEXPLAIN_MAX_PATCH_SIZE"),
    ("corrrise", "perturbations_per_eval", 16, {"n_masks": 4}, "FACEXPLAIN_MAX_BATCH"),
    ("rise", "n_masks", 40, {"grid": 4}, "FACEXPLAIN_MAX_MASKS"),
    ("rise", "budget", 40, {"grid": 4}, "FACEXPLAIN_MAX_MASKS"),
    ("rise", "perturbations_per_eval", 16, {"n_masks": 4, "grid": 4}, "FACEXPLAIN_MAX_BATCH"),
    ("lime", "n_samples", 40, {"n_segments": 8}, "FACEXPLAIN_MAX_MASKS"),
    ("lime", "budget", 40, {"n_segments": 8}, "FACEXPLAIN_MAX_MASKS"),
    ("lime", "n_segments", 12, {"n_samples": 10}, "FACEXPLAIN_MAX_PATCHES"),
    ("lime", "perturbations_per_eval", 16, {"n_samples": 10, "n_segments": 8}, "FACEXPLAIN_MAX_BATCH"),
    ("xface", "patch_sizes", (20,), {"stride": 6}, "FACEXPLAIN_MAX_PATCH_SIZE"),
    ("xface", "perturbations_per_eval", 16, {"patch_sizes": (20,), "stride": 6}, "FACEXPLAIN_MAX_BATCH"),
    ("minplus", "perturbations_per_eval", 16, {"steps": 1, "stride": 16, "mode": "minus"},
     "FACEXPLAIN_MAX_BATCH"),
    ("corrrise-plus", "n_masks", 40, {"patches": 2}, "FACEXPLAIN_MAX_MASKS"),
    ("corrrise-plus", "budget", 40, {"patches": 2}, "FACEXPLAIN_MAX_MASKS"),
    ("corrrise-plus", "patches", 12, {"n_masks": 4}, "FACEXPLAIN_MAX_PATCHES"),
    ("corrrise-plus", "patch_size", 20, {"n_masks": 4}, "FACEXPLAIN_MAX_PATCH_SIZE"),
    ("corrrise-plus", "perturbations_per_eval", 16, {"n_masks": 4}, "FACEXPLAIN_MAX_BATCH"),
]


def _above(value: object) -> object:
    return tuple(v + 1 for v in value) if isinstance(value, tuple) else value + 1  # type: ignore[operator]


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize("method, param, value, rest, variable", AT_LIMIT,
                         ids=[f"{m}-{p}" for m, p, *_ in AT_LIMIT])
def test_each_limited_parameter_passes_at_its_limit_and_is_refused_above(method, param, value, rest, variable):
    model = ToyModel()
    params = {**rest, param: value}
    passes = check_params(method, SIZE, **params)
    assert passes == forward_passes(method, SIZE, **params)
    ex = build(method, model, **params).attribute(*toy_pair())  # at the limit: it runs
    assert ex.forward_passes == passes
    assert np.all(np.isfinite(ex.s_a)) and np.all(np.isfinite(ex.s_b))

    model = ToyModel()
    over = {**rest, param: _above(value)}
    for call in (lambda: check_params(method, SIZE, **over), lambda: build(method, model, **over)):
        with pytest.raises(LimitExceededError) as err:
            call()
        message = str(err.value)
        assert param in message and variable in message and str(LIMITS[variable]) in message, message
    assert model.calls == 0  # refused before any model call


def test_every_bounded_parameter_is_listed_and_is_a_parameter_of_its_method():
    for info in list_methods(SIZE):
        names = {p.name for p in info.params} | {"budget", "perturbations_per_eval"}
        assert set(PARAM_LIMITS[info.name]) <= names, info.name
        assert PARAM_LIMITS[info.name]["perturbations_per_eval"] == "max_batch"
        if info.budget_param is not None:
            assert PARAM_LIMITS[info.name][info.budget_param] == "max_masks"
    # every limit of every perturbation method is run at its bound above (the budget of the
    # methods without one, and the gradient methods, in the next test)
    tested = {(m, p) for m, p, *_ in AT_LIMIT}
    no_budget = {m.name for m in list_methods(SIZE) if m.budget_param is None}
    assert tested == {(m, p) for m, limited in PARAM_LIMITS.items() if m not in ("gradcam", "gradcampp")
                      for p in limited if not (p == "budget" and m in no_budget)}


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xface", "minplus"])
def test_generic_parameters_are_bounded_even_where_they_are_ignored(method):
    with pytest.raises(LimitExceededError, match="budget 41 .*FACEXPLAIN_MAX_MASKS"):
        check_params(method, SIZE, budget=41)
    with pytest.raises(LimitExceededError, match="perturbations_per_eval 17 .*FACEXPLAIN_MAX_BATCH"):
        check_params(method, SIZE, perturbations_per_eval=17)
    with pytest.raises(InputError, match="budget must be an integer >= 1"):
        check_params(method, SIZE, budget=0)
    with pytest.raises(InputError, match="perturbations_per_eval must be an integer >= 1"):
        check_params(method, SIZE, perturbations_per_eval=2.5)


def test_the_whole_cost_is_bounded_by_max_masks_per_face(monkeypatch):
    # xFace with stride 1 on the toy chip: (30^2 + 28^2 + 24^2) = 2,260 occlusions per face
    assert forward_passes("xface", SIZE, stride=1) == 2 + 2 * 2260
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", "2260")
    assert check_params("xface", SIZE, stride=1) == 2 + 2 * 2260
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", "2259")
    with pytest.raises(LimitExceededError) as err:
        check_params("xface", SIZE, stride=1)
    assert "stride=1" in str(err.value) and "FACEXPLAIN_MAX_MASKS" in str(err.value)
    # MinPlus has no budget parameter: its steps and stride make its cost
    passes = forward_passes("minplus", SIZE, steps=3, stride=4)
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", str((passes - 2) // 2))
    assert check_params("minplus", SIZE, steps=3, stride=4) == passes
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", str((passes - 2) // 2 - 1))
    with pytest.raises(LimitExceededError, match="steps=3, stride=4"):
        check_params("minplus", SIZE, steps=3, stride=4)


def test_limits_are_read_when_a_method_is_built(monkeypatch):
    model = ToyModel()
    build("rise", model, n_masks=200)
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", "199")
    with pytest.raises(LimitExceededError, match="n_masks 200"):
        build("rise", model, n_masks=200)


# (method, parameter, largest value that fits the 32 px chip, other parameters)
CHIP_RANGES = [
    ("corrrise", "patch_size", SIZE, {}),
    ("rise", "grid", SIZE, {"n_masks": 4}),
    ("lime", "n_segments", SIZE * SIZE, {"n_samples": 4}),
    ("lime", "kernel_size", float(SIZE), {"n_samples": 4}),
    ("xface", "patch_sizes", (SIZE - 1,), {}),
    ("xface", "stride", SIZE, {}),
    ("minplus", "stride", SIZE, {"steps": 1}),
    ("minplus", "sigma", float(SIZE), {}),
    ("minplus", "blur_sigma", float(SIZE), {"substrate": "blur"}),
    ("minplus", "steps", 64, {}),  # the default 8 x 8 grid of candidates (stride 4 px on 32 px)
]


@pytest.mark.parametrize("method, param, value, rest", CHIP_RANGES, ids=[f"{m}-{p}" for m, p, *_ in CHIP_RANGES])
def test_parameters_measured_on_the_chip_fit_it(method, param, value, rest):
    check_params(method, SIZE, **rest, **{param: value})
    above = tuple(v + 1 for v in value) if isinstance(value, tuple) else value + 1
    model = ToyModel()
    for call in (lambda: check_params(method, SIZE, **rest, **{param: above}),
                 lambda: build(method, model, **rest, **{param: above}),
                 lambda: forward_passes(method, SIZE, **rest, **{param: above})):
        with pytest.raises(InputError) as err:
            call()
        assert param in str(err.value) and not isinstance(err.value, LimitExceededError), str(err.value)
    assert model.calls == 0


def test_minplus_names_steps_and_stride_when_the_grid_is_too_small():
    with pytest.raises(InputError) as err:
        check_params("minplus", SIZE, stride=SIZE)  # a 1 x 1 grid: one candidate, 10 steps
    assert "steps 10" in str(err.value) and "stride 32" in str(err.value)
    with pytest.raises(InputError, match="sigma 0.05 must be in"):
        check_params("minplus", SIZE, sigma=0.05)


@pytest.mark.parametrize(
    "method, config",
    [
        (CorrRISE, CorrRISEConfig(masks=MaskConfig(patch_size=SIZE + 1))),
        (RISE, RISEConfig(grid=SIZE + 1)),
        (LIME, LIMEConfig(n_segments=SIZE * SIZE + 1)),
        (XFace, XFaceConfig(stride=SIZE + 1)),
        (MinPlus, MinPlusConfig(steps=65)),
    ],
)
def test_a_method_built_directly_checks_its_config_on_the_models_chip(method, config):
    model = ToyModel()
    with pytest.raises(InputError):
        method(model, config)
    assert model.calls == 0


def _numeric_params():
    for info in list_methods(150):
        for p in info.params:
            kind = p.type.split("|")[0].strip()
            if kind in ("int", "float") and p.name != "seed":
                yield info.name, p.name, kind
        yield info.name, "budget", "int"
        yield info.name, "perturbations_per_eval", "int"


@pytest.mark.parametrize("huge", [10**9, 10**30])
def test_huge_values_of_every_numeric_parameter_are_refused_at_once(huge):
    """What a new user tried (--param NAME=1e9 or 1e30): refused within a second, naming the
    parameter, without allocating anything."""
    cases = list(_numeric_params())
    assert len(cases) >= 20
    for method, param, kind in cases:
        value = float(huge) if kind == "float" else huge
        if kind == "float" and method == "lime" and param in ("compactness", "max_dist", "kernel_width"):
            continue  # unbounded: a larger number costs nothing
        if method == "lime" and param in ("ratio",) or method == "xface" and param == "fill_value":
            continue  # their ranges are [0, 1] and [0, 255], tested with the configs
        if method == "lime" and param == "alpha" or method == "corrrise-plus" and param == "ridge":
            continue  # any ridge penalty >= 0 is cheap
        if method in ("gradcam", "gradcampp") and param not in ("budget", "perturbations_per_eval"):
            continue
        t0 = time.monotonic()
        with pytest.raises(InputError) as err:
            check_params(method, 150, **{param: value})
        assert time.monotonic() - t0 < 1.0, (method, param)
        assert param in str(err.value), (method, param, str(err.value))


def test_rise_grids_drawn_in_blocks_equal_one_draw(monkeypatch):
    """Blocks keep memory bounded without changing a single grid cell or shift."""
    from explainer_service.methods import rise

    config = rise.RISEConfig(n_masks=37, grid=5, seed=11)
    rng = np.random.default_rng(11)
    expected_grids = rng.random((37, 5, 5)) < config.p
    expected_shifts = rng.integers(0, rise.rise_cell_size(150, 5), size=(37, 2))
    monkeypatch.setattr(rise, "_GRID_DRAW_CELLS", 3 * 25 + 7)  # 3 masks per block, a ragged last block
    grids, shifts = rise.rise_grids(config, 150)
    assert np.array_equal(grids, expected_grids)
    assert np.array_equal(shifts, expected_shifts)


def test_rise_grid_memory_is_bounded():
    from explainer_service.errors import LimitExceededError
    from explainer_service.methods import rise

    at_limit = rise.RISEConfig(n_masks=rise.MAX_GRID_CELLS // (150 * 150), grid=150)
    at_limit.check_for_chip(150)
    with pytest.raises(LimitExceededError, match="n_masks .* grid"):
        rise.RISEConfig(n_masks=rise.MAX_GRID_CELLS // (150 * 150) + 1, grid=150).check_for_chip(150)


@pytest.mark.parametrize("method", ["corrrise", "rise", "lime", "gradcam"])
def test_a_seed_that_cannot_travel_as_a_64_bit_integer_is_refused(method):
    from explainer_service.methods.registry import MAX_SEED

    check_params(method, SIZE, seed=MAX_SEED)  # the largest one passes
    for bad in (MAX_SEED + 1, 10**30):
        with pytest.raises(InputError, match=f"{method}: seed must be an integer in 0..{MAX_SEED}, got {bad}"):
            check_params(method, SIZE, seed=bad)
    for bad in (-1, True, "7"):  # the method's own config may name it first
        with pytest.raises(InputError, match="seed must be"):
            check_params(method, SIZE, seed=bad)
