"""`facexplain evaluate` end to end on real LFW pairs: the Table-1 files and their contents."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from explainer_service.cli import main
from explainer_service.datasets import read_dataset
from explainer_service.datasets.prepare import prepare_pairs
from explainer_service.pipeline import load_face_model

pytestmark = [pytest.mark.model, pytest.mark.shared]


@pytest.mark.slow
def test_evaluate_writes_table_and_curves(lfw_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--dataset", f"lfw-aligned:{lfw_dir}", "--methods", "corrrise,rise,gradcam",
                 "--pairs", "3", "--budget", "30", "--out", str(out), "--engine", "local", "--no-progress",
                 "--chip-cache", str(tmp_path / "chips")])
    assert code == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["corrrise", "rise", "gradcam"]
    for r in rows:
        assert 0.0 <= float(r["deletion"]) <= 100.0 and 0.0 <= float(r["insertion"]) <= 100.0
        assert int(r["pairs"]) == 3
    md = (out / "table.md").read_text()
    assert "| corrrise |" in md and "Deletion" in md
    assert (out / "curves.png").stat().st_size > 10_000
    meta = json.loads((out / "evaluation.json").read_text())["meta"]
    assert meta["model"] == "dlib-resnet-v1" and meta["threshold"] == pytest.approx(0.905)


def test_occluded_variant_changes_only_b(lfw_dir):

    model = load_face_model()
    ds = read_dataset(f"lfw-aligned:{lfw_dir}")
    clean = prepare_pairs(ds, model, pairs=4)
    occl = prepare_pairs(ds, model, pairs=4, occlude=True, seed=1)
    assert [a for a, _ in clean.names] == [a for a, _ in occl.names]
    assert all("occluded" in b for _, b in occl.names)
    np.testing.assert_array_equal(clean.chips_a, occl.chips_a)
    assert all(np.abs(c.astype(int) - o.astype(int)).sum() > 0 for c, o in zip(clean.chips_b, occl.chips_b, strict=True))


def test_pairs_are_spread_over_all_folds(lfw_dir):

    ds = read_dataset(f"lfw-aligned:{lfw_dir}")
    prepared = prepare_pairs(ds, load_face_model(), pairs=10)
    folds = {p.fold for p in ds.pairs if p.same and (str(p.a), str(p.b)) in set(prepared.names)}
    assert folds == set(range(5))


def test_bad_evaluate_input_is_one_line(lfw_dir, tmp_path, capsys):
    cases = [
        (["--dataset", f"lfw-aligned:{lfw_dir}", "--methods", "corrrise,shap"], "shap"),
        (["--dataset", f"nope:{lfw_dir}", "--methods", "rise"], "nope"),
        (["--dataset", f"lfw:{lfw_dir}", "--occlude", "--methods", "rise"], "aligned"),
    ]
    for extra, needle in cases:
        capsys.readouterr()
        code = main(["evaluate", *extra, "--pairs", "2", "--out", str(tmp_path / "x"), "--engine", "local", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], (extra, err)


def test_raw_photos_are_aligned_once_then_read_from_the_chip_cache(lfw_dir, tmp_path):
    from explainer_service.chip_cache import ChipCache

    ds = read_dataset(f"lfw:{lfw_dir}")  # raw photos: face detection + landmarks
    model = load_face_model()
    first = prepare_pairs(ds, model, pairs=3, cache=ChipCache(tmp_path))
    second = prepare_pairs(ds, model, pairs=3, cache=ChipCache(tmp_path))
    uncached = prepare_pairs(ds, model, pairs=3)
    assert (first.cache_hits, first.cache_misses) == (0, 6)
    assert (second.cache_hits, second.cache_misses) == (6, 0)
    assert "6 from the cache" in second.summary()
    np.testing.assert_array_equal(second.chips_a, uncached.chips_a)
    np.testing.assert_array_equal(second.chips_b, uncached.chips_b)
