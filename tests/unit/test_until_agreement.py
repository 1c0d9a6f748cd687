"""Early stopping on the map's own agreement (issue 11 §2): ``CorrRISE.attribute_until`` and
``facexplain explain --until-agreement R --max-masks M``, on the toy model of tests/toy.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from explainer_service.cli import explain as cli_explain
from explainer_service.cli import main
from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig
from explainer_service.methods.corrrise import ACCUMULATION_BLOCK, CorrRISE, CorrRISEConfig, check_until
from tests.toy import ToyModel, toy_pair

MASKS = MaskConfig(n_masks=2000, patches=3, patch_size=8, seed=5)


def runner(n_masks: int = 2000, correlation: str = "pearson") -> CorrRISE:
    return CorrRISE(ToyModel(), CorrRISEConfig(masks=replace(MASKS, n_masks=n_masks), correlation=correlation))


def agreement(explanation) -> float:
    unc = explanation.uncertainty
    return min(unc.a.predicted_r, unc.b.predicted_r)


def assert_same_explanation(got, plain) -> None:
    """Bit for bit: maps, per-mask scores, counts, uncertainty summary and arrays."""
    assert np.array_equal(got.s_a, plain.s_a) and np.array_equal(got.s_b, plain.s_b)
    assert np.array_equal(got.scores_a, plain.scores_a) and np.array_equal(got.scores_b, plain.scores_b)
    assert (got.masks, got.forward_passes, got.score) == (plain.masks, plain.forward_passes, plain.score)
    assert got.uncertainty.summary() == plain.uncertainty.summary()
    for key, value in plain.uncertainty.arrays().items():
        assert np.array_equal(got.uncertainty.arrays()[key], value), key
    assert {k: v for k, v in got.params.items() if k in plain.params} == plain.params


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_stops_at_the_first_step_that_reaches_the_agreement_and_equals_a_plain_run(correlation):
    a, b = toy_pair()
    step = 32
    got = runner(correlation=correlation).attribute_until(a, b, agreement=0.9, max_masks=2000, step=step)
    used = got.masks
    assert used < 2000 and used % step == 0
    assert got.params["stopped_early"] is True and got.params["max_masks"] == 2000
    assert got.params["until_agreement"] == 0.9 and got.params["n_masks"] == used
    assert got.params["agreement_reached"] >= 0.9
    assert got.params["agreement_reached"] == pytest.approx(agreement(got), abs=1e-6)
    plain = runner(used, correlation).attribute(a, b)
    assert_same_explanation(got, plain)
    assert got.forward_passes == 2 * used + 2
    # it did not stop late: one step fewer had not reached the agreement
    if used > step:
        assert agreement(runner(used - step, correlation).attribute(a, b)) < 0.9


def test_runs_to_max_masks_when_the_agreement_is_not_reached():
    a, b = toy_pair()
    model_runner = runner()
    got = model_runner.attribute_until(a, b, agreement=0.9999, max_masks=160, step=32)
    assert got.masks == 160 and got.forward_passes == 322
    assert got.params["stopped_early"] is False and got.params["agreement_reached"] < 0.9999
    assert model_runner.model.images == 322  # type: ignore[attr-defined]
    assert_same_explanation(got, runner(160).attribute(a, b))


def test_last_shard_may_be_shorter_and_max_masks_defaults_to_the_config():
    a, b = toy_pair()
    got = runner(100).attribute_until(a, b, agreement=0.9999, step=64)
    assert got.masks == 100 and got.params["max_masks"] == 100
    assert_same_explanation(got, runner(100).attribute(a, b))


def test_resume_shard_equals_one_shard_bit_for_bit_and_leaves_its_input_alone():
    a, b = toy_pair()
    r = runner(200)
    first = r.run_shard(a, b, 0, 2 * ACCUMULATION_BLOCK)
    before = first.acc_a.state()
    whole = r.resume_shard(a, b, first, 200)
    one = r.run_shard(a, b, 0, 200)
    assert whole.ranges == ((0, 200),) and whole.clean_passes == 2
    assert np.array_equal(r.finish(whole).s_a, r.finish(one).s_a)
    assert np.array_equal(r.finish(whole).s_b, r.finish(one).s_b)
    assert first.masks == 2 * ACCUMULATION_BLOCK
    assert all(np.array_equal(before[k], v) for k, v in first.acc_a.state().items())
    with pytest.raises(InputError, match="another mask set"):
        runner(300).resume_shard(a, b, first, 100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"agreement": 1.0, "max_masks": 128}, "agreement"),
        ({"agreement": 0.0, "max_masks": 128}, "agreement"),
        ({"agreement": float("nan"), "max_masks": 128}, "agreement"),
        ({"agreement": True, "max_masks": 128}, "agreement"),
        ({"agreement": 0.9, "max_masks": 32, "step": 64}, "max_masks"),
        ({"agreement": 0.9, "max_masks": 128, "step": 10}, "step"),
        ({"agreement": 0.9, "max_masks": 128, "step": 0}, "step"),
    ],
)
def test_bad_values_are_refused_before_any_model_call(kwargs, match):
    a, b = toy_pair()
    r = runner()
    with pytest.raises(InputError, match=match):
        r.attribute_until(a, b, **kwargs)
    assert r.model.calls == 0  # type: ignore[attr-defined]


def test_max_masks_sets_the_mask_set_and_the_limit_is_the_registrys():
    from explainer_service.errors import LimitExceededError
    from explainer_service.methods import check_params

    a, b = toy_pair()
    got = runner(100).attribute_until(a, b, agreement=0.9999, max_masks=192)  # beyond the config's 100
    assert got.masks == 192 and got.params["stopped_early"] is False
    with pytest.raises(LimitExceededError, match="n_masks"):
        check_params("corrrise", 32, n_masks=10**9)  # the CLI checks M so before any work
    check_until(0.5, 64)  # the defaults are valid


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path) -> list[str]:
    """Two 112 px images with the toy pair inside (refused before they are read, or aligned to the
    default model's chip)."""
    paths = []
    for name, chip in zip(("a.png", "b.png"), toy_pair(), strict=True):
        big = np.full((112, 112, 3), 90, np.uint8)
        big[:32, :32] = chip
        Image.fromarray(big).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--until-agreement", "1.5", "--max-masks", "128"], "--until-agreement"),
        (["--until-agreement", "0", "--max-masks", "128"], "--until-agreement"),
        (["--until-agreement", "nan", "--max-masks", "128"], "--until-agreement"),
        (["--until-agreement", "abc", "--max-masks", "128"], "--until-agreement"),
        (["--until-agreement", "0.9", "--max-masks", "10"], "--max-masks"),
        (["--until-agreement", "0.9", "--max-masks", "0"], "--max-masks"),
        (["--until-agreement", "0.9", "--max-masks", str(10**9)], "--max-masks"),
        (["--until-agreement", "0.9"], "--max-masks"),
        (["--max-masks", "128"], "--until-agreement"),
        (["--until-agreement", "0.9", "--max-masks", "128", "--masks", "64"], "--masks"),
        (["--until-agreement", "0.9", "--max-masks", "128", "--method", "lime"], "--until-agreement"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line_before_any_work(images, tmp_path, capsys, monkeypatch, extra, needle):
    def no_model(_args):
        raise AssertionError("a model was opened for a refused command")

    monkeypatch.setattr(cli_explain, "open_model", no_model)
    code = main(["explain", *images, "--out", str(tmp_path / "out"), "--engine", "local", "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_masks_used_and_whether_it_stopped_early(images, tmp_path, monkeypatch):
    @contextmanager
    def toy_model(_args) -> Iterator[ToyModel]:
        yield ToyModel(150)  # the default model's chip size, which the CLI aligns the images to

    monkeypatch.setattr(cli_explain, "open_model", toy_model)
    out = tmp_path / "out"
    code = main(["explain", *images, "--out", str(out), "--engine", "local", "--no-progress",
                 "--until-agreement", "0.5", "--max-masks", "2000"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert '"stopped_early": true' in text and '"until_agreement": 0.5' in text
    masks = [v for k, v in _walk(summary) if k == "n_masks"]
    assert masks and all(m < 2000 and m % 64 == 0 for m in masks)


def _walk(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node
