"""The uncertainty in the outputs (issue 11 §2): summary.json, maps.npz, the figure and the CLI flag;
results written before it read back with ``uncertainty`` None."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from explainer_service.cli import main
from explainer_service.errors import InputError
from explainer_service.masks import MaskConfig
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig
from explainer_service.report import render_figure_png
from explainer_service.results import FaceRecord, PairResult
from tests.toy import ToyModel, toy_pair


def corrrise_result() -> PairResult:
    a, b = toy_pair()
    ex = CorrRISE(ToyModel(), CorrRISEConfig(masks=MaskConfig(n_masks=60, patches=3, patch_size=6, seed=2))).attribute(a, b)
    return PairResult.from_explanation(
        ex, FaceRecord("a.png", "pre-aligned", 0, chip=a), FaceRecord("b.png", "pre-aligned", 0, chip=b), None
    )


def test_summary_and_archive_carry_the_uncertainty_and_round_trip(tmp_path):
    result = corrrise_result()
    summary = json.loads(json.dumps(result.to_dict()))
    unc = summary["uncertainty"]
    assert set(unc) == {"method", "level", "q", "n", "significant_fraction_a", "significant_fraction_b",
                        "split_half_r_a", "split_half_r_b", "predicted_r_a", "predicted_r_b"}
    assert unc["method"] == "fisher-z" and unc["q"] == 0.05 and unc["n"] == 60
    data = result.maps_to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for face in ("a", "b"):
            assert npz[f"significant_{face}"].dtype == bool and npz[f"significant_{face}"].shape == (32, 32)
            assert npz[f"ci_low_{face}"].dtype == np.float32
            s = npz[f"s_{face}"]
            assert np.all(npz[f"ci_low_{face}"] <= s) and np.all(s <= npz[f"ci_high_{face}"])
            assert npz[f"significant_{face}"].mean() == pytest.approx(unc[f"significant_fraction_{face}"], abs=1e-6)
    back = PairResult.from_bytes(summary, data)
    assert back.to_dict() == summary
    assert back.uncertainty is not None and back.uncertainty.has_arrays
    assert np.array_equal(back.uncertainty.a.significant, result.uncertainty.a.significant)
    paths = result.write(tmp_path / "out", grey_insignificant=True)
    again = PairResult.read(tmp_path / "out")
    assert again.to_dict() == json.loads(paths["summary"].read_text())
    assert PairResult.read(tmp_path / "out", maps=False).uncertainty.a.ci_low is None


def test_results_written_before_the_uncertainty_read_back_with_none():
    result = corrrise_result()
    summary = result.to_dict()
    del summary["uncertainty"]
    arrays = {k: v for k, v in result.arrays().items() if not k.startswith(("ci_", "significant_"))}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = PairResult.from_bytes(summary, buf.getvalue())
    assert old.uncertainty is None and old.explanation.uncertainty is None
    assert old.to_dict()["uncertainty"] is None
    # a summary that announces an uncertainty needs its arrays
    with pytest.raises(InputError, match="missing array 'ci_low_a'"):
        PairResult.from_bytes(result.to_dict(), buf.getvalue())
    bad = result.to_dict()
    bad["uncertainty"]["q"] = "x"
    with pytest.raises(InputError, match=r"uncertainty.q"):
        PairResult.from_dict(bad)


def test_figure_greys_out_what_is_not_significant():
    result = corrrise_result()
    expl = result.explanation
    a, b = toy_pair()
    plain = render_figure_png(a, b, expl, dpi=40)
    grey = render_figure_png(a, b, expl, dpi=40, grey_insignificant=True)
    assert grey[:8] == b"\x89PNG\r\n\x1a\n" and grey != plain
    from dataclasses import replace

    with pytest.raises(InputError, match="needs a map with an uncertainty"):
        render_figure_png(a, b, replace(expl, uncertainty=None), grey_insignificant=True)


def test_cli_refuses_grey_insignificant_for_a_method_without_uncertainty(tmp_path, capsys):
    paths = []
    for name in ("a.png", "b.png"):
        p = tmp_path / name
        p.write_bytes(b"not an image")  # refused before the images are read
        paths.append(str(p))
    code = main(["explain", *paths, "--out", str(tmp_path / "out"), "--method", "lime", "--grey-insignificant"])
    assert code == 2
    assert "--grey-insignificant needs a method whose maps carry an uncertainty" in capsys.readouterr().err
