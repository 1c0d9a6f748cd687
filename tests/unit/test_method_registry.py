"""The method registry: every method by name, its parameters and cost, the generic knobs, the
gradient methods on a PyTorch model, and ``facexplain methods``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.methods import METHOD_NAMES, SaliencyMethod, build, forward_passes, list_methods
from explainer_service.methods.corrrise import CorrRISEConfig
from explainer_service.methods.lime import LIMEConfig
from explainer_service.methods.minplus import MinPlusConfig
from explainer_service.methods.registry import GENERIC_PARAMS, method_info, parse_params
from explainer_service.methods.rise import RISEConfig
from explainer_service.methods.xface import XFaceConfig
from tests.toy import SIZE, ToyModel, toy_pair

# small, fast parameters on the 32 px toy chips
SMALL = {
    "corrrise": {"n_masks": 40, "patches": 3, "patch_size": 6, "seed": 1},
    "rise": {"n_masks": 30, "grid": 4, "seed": 1},
    "lime": {"n_samples": 30, "n_segments": 16, "compactness": 100.0, "seed": 1},
    "xface": {"patch_sizes": (4, 8), "stride": 4},
    "minplus": {"steps": 2},
}
PERTURBATION = tuple(SMALL)


def test_the_names_in_the_papers_order():
    assert METHOD_NAMES == ("corrrise", "rise", "lime", "xface", "minplus", "corrrise-plus", "gradcam", "gradcampp")
    assert [m.name for m in list_methods(112)] == list(METHOD_NAMES)


@pytest.mark.parametrize(
    "name, config",
    [("rise", RISEConfig()), ("lime", LIMEConfig()), ("xface", XFaceConfig()), ("minplus", MinPlusConfig())],
)
def test_listed_defaults_are_the_configs(name, config):
    info = method_info(name, 112)
    assert {p.name: p.default for p in info.params} == dataclasses.asdict(config)
    assert all(p.help for p in info.params), [p.name for p in info.params if not p.help]


def test_corrrise_lists_its_mask_options_flat():
    info = method_info("corrrise", 150)
    defaults = {p.name: p.default for p in info.params}
    cfg = CorrRISEConfig()
    assert defaults == {**cfg.masks.to_dict(), "correlation": "pearson", "perturbations_per_eval": None}
    assert info.budget_param == "n_masks" and info.seeded and info.needs == "face model"
    assert info.forward_passes == 2 * 500 + 2


def test_budgets_per_pair_are_the_documented_costs():
    by_name = {m.name: m for m in list_methods(112)}
    assert by_name["xface"].forward_passes == 2 + 2 * (441 + 400 + 289)  # 2,262 on 112 px
    assert {m.name: m.forward_passes for m in list_methods(150)}["xface"] == 2118
    assert by_name["minplus"].forward_passes == 2384
    assert by_name["lime"].forward_passes == by_name["rise"].forward_passes == 1002
    assert by_name["gradcam"].forward_passes == by_name["gradcampp"].forward_passes == 2
    assert by_name["gradcam"].needs == "pytorch twin" and not by_name["xface"].seeded
    assert forward_passes("corrrise", 112, budget=64) == 130
    doc = json.loads(json.dumps([m.to_dict() for m in list_methods(112)]))
    assert doc[3]["params"][0] == {"name": "patch_sizes", "type": "tuple[int, ...] | None", "default": None,
                                   "help": doc[3]["params"][0]["help"]}


@pytest.mark.parametrize("name", PERTURBATION)
def test_built_methods_spend_their_budget(name):
    model = ToyModel()
    method = build(name, model, **SMALL[name])
    assert isinstance(method, SaliencyMethod) and method.name == name
    ex = method.attribute(*toy_pair())
    expected = forward_passes(name, SIZE, **SMALL[name])
    assert ex.forward_passes == model.images == expected
    assert ex.summary()["forward_passes"] == expected
    assert ex.masks == (expected - 2) // 2  # perturbed images per face, one meaning for all


@pytest.mark.parametrize("name", PERTURBATION)
def test_perturbations_per_eval_is_images_per_call_everywhere(name):
    class Recording(ToyModel):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def embed(self, images):
            self.batches.append(len(images))
            return super().embed(images)

    maps = []
    for per_eval in (5, 12):
        model = Recording()
        ex = build(name, model, perturbations_per_eval=per_eval, **SMALL[name]).attribute(*toy_pair())
        assert max(model.batches[1:]) <= per_eval and model.batches[0] == 2
        maps.append(ex)
    np.testing.assert_array_equal(maps[0].s_a, maps[1].s_a)
    np.testing.assert_array_equal(maps[0].s_b, maps[1].s_b)


def test_generic_parameters():
    model = ToyModel()
    assert build("corrrise", model, budget=64).config.masks.n_masks == 64  # type: ignore[attr-defined]
    assert build("rise", model, budget=64, seed=5).config.n_masks == 64  # type: ignore[attr-defined]
    assert build("lime", model, budget=64).config.n_samples == 64  # type: ignore[attr-defined]
    # deterministic methods ignore seed and budget; None keeps the default
    xface = build("xface", model, seed=3, budget=64, perturbations_per_eval=None)
    assert xface.config == XFaceConfig()  # type: ignore[attr-defined]
    assert build("rise", model, seed=None).config.seed == 0  # type: ignore[attr-defined]
    assert build("corrrise", model, n_masks=64, budget=64).config.masks.n_masks == 64  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="budget=32 contradicts n_masks=64"):
        build("rise", model, n_masks=64, budget=32)
    assert set(GENERIC_PARAMS) == {"seed", "budget", "perturbations_per_eval"}


def test_unknown_names_and_bad_values_are_input_errors():
    model = ToyModel()
    with pytest.raises(InputError, match="unknown method 'shap' .*corrrise, rise, lime, xface, minplus, corrrise-plus, gradcam"):
        build("shap", model)
    with pytest.raises(InputError, match=r"method rise has no parameter grids \(its parameters: .*grid"):
        build("rise", model, grids=4)
    with pytest.raises(InputError, match="perturbations_per_eval"):
        build("lime", model, perturbations_per_eval=0)
    with pytest.raises(InputError, match="correlation"):
        build("corrrise", model, correlation="kendall")
    with pytest.raises(InputError, match="patches"):
        build("corrrise", model, patches=0)


def test_parameters_from_text():
    assert parse_params("xface", {"patch_sizes": "4,8", "smooth": "no", "stride": "none"}) == {
        "patch_sizes": (4, 8), "smooth": False, "stride": None}
    assert parse_params("corrrise", {"n_masks": "64", "values": "binary", "budget": "9"}) == {
        "n_masks": 64, "values": "binary", "budget": 9}
    assert parse_params("gradcam", {"layer": "blocks.9", "relu": "true"}) == {"layer": "blocks.9", "relu": True}
    with pytest.raises(InputError, match="p must be float"):
        parse_params("rise", {"p": "half"})
    with pytest.raises(InputError, match="no parameter nope"):
        parse_params("rise", {"nope": "1"})


def test_gradient_methods_run_on_the_module_of_a_torch_model():
    torch = pytest.importorskip("torch")
    from torch import nn

    from explainer_service.models.torch_model import TorchFaceModel

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4))
            self.fc = nn.Linear(4 * 8 * 8, 6)

        def forward(self, x):
            return self.fc(self.features((x - 128.0) / 64.0).flatten(1))

    net = Net()
    model = TorchFaceModel(net, ToyModel().spec)
    a, b = toy_pair()
    for name in ("gradcam", "gradcampp"):
        method = build(name, model, layer="features", seed=3, budget=10, perturbations_per_eval=4)
        assert method.target.module is net and method.target.layer_name == "features"  # type: ignore[attr-defined]
        ex = method.attribute(a, b)
        assert ex.method == name and ex.forward_passes == 2 and ex.masks == 0
        assert ex.s_a.shape == (SIZE, SIZE) and np.isfinite(ex.s_a).all()
    # a plain FaceModel has no module: its twin is found by the model's name
    from explainer_service.errors import ModelNotReadyError

    with pytest.raises(ModelNotReadyError, match="toy"):
        build("gradcam", ToyModel())


def test_facexplain_methods_prints_the_table_and_json(capsys):
    from explainer_service.cli import main

    assert main(["methods", "--chip-size", "112", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["chip_size"] == 112 and [m["name"] for m in doc["methods"]] == list(METHOD_NAMES)
    assert {m["name"]: m["forward_passes"] for m in doc["methods"]}["xface"] == 2262
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "dlib-resnet-v1's 150 px chip" in text
    for name in METHOD_NAMES:
        assert f"\n{name}  " in text
    assert "forward passes per pair: 2,118" in text and "n_masks=500" in text and "layer=None" in text
    assert main(["methods", "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
