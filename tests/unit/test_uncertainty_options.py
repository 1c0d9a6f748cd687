"""The uncertainty's options (issue 11 §2): ``--fdr-q``/``--ci-level``, ``UncertaintyOptions``,
``explanation.restate``, the API's ExplainRequest fields and an early-stopping job's plan
(``worker.plan.Until``), on the toy model of tests/toy.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from explainer_service.api import convert
from explainer_service.api.pb import service_pb2
from explainer_service.cli import main
from explainer_service.errors import InputError
from explainer_service.explanation import restate
from explainer_service.masks import MaskConfig
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.uncertainty import DEFAULT_LEVEL, DEFAULT_Q, UncertaintyOptions
from explainer_service.worker.plan import Until, plan_explain, shard_masks_of
from explainer_service.worker.sweep import missing_explain_units
from tests.toy import ToyModel, toy_pair

MASKS = MaskConfig(n_masks=300, patches=3, patch_size=8, seed=2)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_restate_is_finish_at_the_options_and_keeps_the_split_halves(correlation):
    method = CorrRISE(ToyModel(), CorrRISEConfig(masks=MASKS, correlation=correlation))
    a, b = toy_pair()
    shard = method.run_shard(a, b, 0, MASKS.n_masks)
    options = UncertaintyOptions(q=0.2, level=0.8)
    got = restate(method.finish(shard), options)
    want = method.finish(shard, q=0.2, level=0.8)
    assert got.uncertainty.summary() == want.uncertainty.summary()
    assert got.uncertainty.summary()["q"] == 0.2 and got.uncertainty.summary()["level"] == 0.8
    for key, value in want.uncertainty.arrays().items():
        assert np.array_equal(got.uncertainty.arrays()[key], value), key
    assert np.array_equal(got.s_a, want.s_a)  # the maps are not touched
    default = method.finish(shard)
    # a wider interval at a higher level, more discoveries at a higher false-discovery rate
    assert np.all(got.uncertainty.a.ci_high <= default.uncertainty.a.ci_high)
    assert got.uncertainty.a.significant_fraction >= default.uncertainty.a.significant_fraction
    assert restate(default, UncertaintyOptions()) is default  # already its own options


def test_restate_leaves_a_method_without_uncertainty_alone():
    from explainer_service.methods import build

    explanation = build("rise", ToyModel(), n_masks=32, grid=4).attribute(*toy_pair())
    assert explanation.uncertainty is None
    assert restate(explanation, UncertaintyOptions(q=0.1)) is explanation


@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_options_out_of_range_are_refused_naming_the_option(value):
    with pytest.raises(InputError, match=r"^fdr_q must be a number in \(0, 1\)"):
        UncertaintyOptions(q=value)
    with pytest.raises(InputError, match=r"^ci_level must be a number in \(0, 1\)"):
        UncertaintyOptions(level=value)


def test_options_round_trip_and_unknown_keys():
    options = UncertaintyOptions(q=0.01, level=0.99)
    assert UncertaintyOptions.from_dict(options.to_dict()) == options
    assert UncertaintyOptions.from_dict({}) == UncertaintyOptions(DEFAULT_Q, DEFAULT_LEVEL)
    assert UncertaintyOptions().is_default and not options.is_default
    with pytest.raises(InputError, match="unknown option"):
        UncertaintyOptions.from_dict({"q": 0.1})


def _request(**fields) -> service_pb2.ExplainRequest:
    return service_pb2.ExplainRequest(**fields)


def test_api_fields_become_options():
    assert convert.explain_options(_request()) == (None, None)
    until, options = convert.explain_options(_request(until_agreement=0.9, max_masks=640, fdr_q=0.1))
    assert until == Until(0.9, 640) and options == UncertaintyOptions(q=0.1, level=DEFAULT_LEVEL)
    assert convert.explain_options(_request(ci_level=0.8))[1] == UncertaintyOptions(level=0.8)


@pytest.mark.parametrize("fields, needle", [
    ({"until_agreement": 1.0, "max_masks": 640}, "until_agreement must be in (0, 1)"),
    ({"until_agreement": -0.5, "max_masks": 640}, "until_agreement must be in (0, 1)"),
    ({"until_agreement": 0.9}, "until_agreement needs max_masks"),
    ({"max_masks": 640}, "max_masks needs until_agreement"),
    ({"until_agreement": 0.9, "max_masks": -1}, "max_masks must be a positive integer"),
    ({"until_agreement": 0.9, "max_masks": 32}, "max_masks must be an integer >= step (64)"),
    ({"fdr_q": 1.0}, "fdr_q must be in (0, 1)"),
    ({"ci_level": -0.95}, "ci_level must be in (0, 1)"),
    ({"ci_level": float("nan")}, "ci_level must be in (0, 1)"),
])
def test_api_fields_out_of_range_are_one_line_input_errors(fields, needle):
    with pytest.raises(InputError) as info:
        convert.explain_options(_request(**fields))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_until_plans_the_librarys_steps_in_waves():
    until = Until(0.9, 200)
    assert until.to_dict() == {"agreement": 0.9, "max_masks": 200, "step": 64}
    assert Until.from_params({"until": until.to_dict()}) == until and Until.from_params({}) is None
    assert [until.wave_end(f) for f in (0, 128)] == [128, 200]
    assert until.boundaries(0, 128) == [64, 128] and until.boundaries(128, 200) == [192, 200]
    assert [until.wave_start(f) for f in (128, 200)] == [0, 128]
    params = {"until": until.to_dict()}
    # the sweep and the first enqueue cut the job's waves in its steps, whatever FACEXPLAIN_SHARD_MASKS
    assert shard_masks_of(params, 96) == 64 and shard_masks_of({}, 96) == 96
    assert [(u.lo, u.hi) for u in plan_explain("corrrise", 200, shard_masks_of(params, 96))] == [
        (0, 64), (64, 128), (128, 192), (192, 200)]
    assert missing_explain_units("corrrise", 200, 64, [(0, 64), (64, 128), (192, 200)]) == [
        plan_explain("corrrise", 200, 64)[2]]
    with pytest.raises(InputError, match="until parameters"):
        Until.from_params({"until": {"agreement": 0.9}})
    with pytest.raises(InputError, match="agreement must be a number in"):
        Until(1.5, 200)


@pytest.fixture
def images(tmp_path) -> list[str]:
    """Two 112 px images with the toy pair inside (aligned to the default model's 150 px chip)."""
    paths = []
    for name, chip in zip("ab", toy_pair(), strict=True):
        big = np.full((112, 112, 3), 90, np.uint8)
        big[:32, :32] = chip
        Image.fromarray(big).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    return paths


@pytest.mark.parametrize("extra, needle", [
    (["--fdr-q", "0"], "--fdr-q must be in (0, 1)"),
    (["--fdr-q", "1"], "--fdr-q must be in (0, 1)"),
    (["--ci-level", "1.2"], "--ci-level must be in (0, 1)"),
    (["--ci-level", "nan"], "--ci-level must be in (0, 1)"),
    (["--method", "rise", "--fdr-q", "0.1"], "--fdr-q/--ci-level need a method whose maps carry an uncertainty"),
])
def test_cli_bad_options_exit_2_with_one_line_before_any_work(images, tmp_path, capsys, monkeypatch, extra, needle):
    from explainer_service.cli import explain as cli_explain

    def no_model(_args):
        raise AssertionError("a model was opened for a bad request")

    monkeypatch.setattr(cli_explain, "open_model", no_model)
    code = main(["explain", *images, "--out", str(tmp_path / "out"), "--engine", "local", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("until", [[], ["--until-agreement", "0.99", "--max-masks", "128"]])
def test_cli_records_the_options_in_summary_and_maps(images, tmp_path, monkeypatch, until):
    from contextlib import contextmanager

    from explainer_service.cli import explain as cli_explain

    @contextmanager
    def toy_model(_args):
        yield ToyModel(150)  # the default model's chip size, which the CLI aligns the images to

    monkeypatch.setattr(cli_explain, "open_model", toy_model)
    out = tmp_path / "out"
    masks = ["--masks", "200"] if not until else []
    code = main(["explain", *images, "--out", str(out), "--engine", "local", "--no-progress", "--patches", "3",
                 "--patch-size", "20", "--fdr-q", "0.2", "--ci-level", "0.8", *masks, *until])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    unc = summary["uncertainty"]
    assert (unc["q"], unc["level"]) == (0.2, 0.8)
    config = CorrRISEConfig(masks=MaskConfig(n_masks=summary["masks"], patches=3, patch_size=20))
    method = CorrRISE(ToyModel(150), config)
    with np.load(out / "maps.npz") as npz:
        chips = [npz[k] for k in sorted(npz.files) if k.startswith("chip")]
        assert len(chips) == 2
        want = method.finish(method.run_shard(chips[0], chips[1], 0, summary["masks"]), q=0.2, level=0.8)
        for key, value in want.uncertainty.arrays().items():
            assert np.array_equal(npz[key], value), key
    if until:
        assert summary["params"]["until_agreement"] == 0.99 and summary["masks"] == 128
