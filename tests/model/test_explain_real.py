"""End to end on the real default model and real LFW pairs, through the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from explainer_service.cli import main

pytestmark = [pytest.mark.model, pytest.mark.shared, pytest.mark.slow]


def lfw(lfw_dir, kind, name, i):
    return lfw_dir / kind / name / f"{name}_{i:04d}.jpg"


def run_explain(a, b, out, *extra):
    code = main(["explain", str(a), str(b), "--out", str(out), "--masks", "40", "--no-progress", *extra])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    maps = np.load(out / "maps.npz")
    return summary, maps


@pytest.mark.parametrize("kind", ["images", "aligned112"])
def test_matched_and_mismatched_lfw_pairs(lfw_dir, tmp_path, kind):
    same, _ = run_explain(lfw(lfw_dir, kind, "Abel_Pacheco", 1), lfw(lfw_dir, kind, "Abel_Pacheco", 4), tmp_path / "same")
    diff, maps = run_explain(
        lfw(lfw_dir, kind, "Abel_Pacheco", 1), lfw(lfw_dir, kind, "Akhmed_Zakayev", 1), tmp_path / "diff"
    )
    for s in (same, diff):
        assert set(s) >= {"model", "score", "threshold", "decision", "masks"}
        assert s["model"] == "dlib-resnet-v1" and s["masks"] == 40
    assert same["score"] > diff["score"] + 0.03  # dlib's cosines are compressed: threshold 0.905
    assert same["decision"] == "match" and diff["decision"] == "non-match"
    for key in ("s_a", "s_b"):
        assert maps[key].dtype == np.float32 and maps[key].shape == (150, 150)
        assert np.isfinite(maps[key]).all() and np.abs(maps[key]).max() <= 1.0
        assert np.abs(maps[key]).max() > 0.2  # the model does react to the masks
    assert (tmp_path / "diff" / "figure.png").stat().st_size > 10_000
    method = "detected" if kind == "images" else "pre-aligned"
    assert diff["alignment_a"]["method"] == method


def test_same_seed_same_maps_other_seed_other_maps(lfw_dir, tmp_path):
    a, b = lfw(lfw_dir, "aligned112", "Abel_Pacheco", 1), lfw(lfw_dir, "aligned112", "Abel_Pacheco", 4)
    _, m1 = run_explain(a, b, tmp_path / "1", "--seed", "7")
    _, m2 = run_explain(a, b, tmp_path / "2", "--seed", "7", "--batch", "5")
    _, m3 = run_explain(a, b, tmp_path / "3", "--seed", "8")
    np.testing.assert_allclose(m1["s_a"], m2["s_a"], atol=1e-5)
    assert np.abs(m1["s_a"] - m3["s_a"]).max() > 0.1


def test_embed_prints_one_json_line_per_image(lfw_dir):
    paths = [str(lfw(lfw_dir, "images", "Abel_Pacheco", i)) for i in (1, 4)]
    out = subprocess.run(
        [sys.executable, "-m", "explainer_service.cli", "embed", *paths],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert [r["path"] for r in rows] == paths
    e = np.array([r["embedding"] for r in rows])
    assert e.shape == (2, 128)
    cos = e[0] @ e[1] / np.linalg.norm(e[0]) / np.linalg.norm(e[1])
    assert cos > 0.85


def test_demo_pair_occluded_eyes_come_out_dissimilar(tmp_path):
    from explainer_service.demo import make_demo_pair

    a, b = make_demo_pair(tmp_path / "in")
    summary, maps = run_explain(a, b, tmp_path / "out", "--masks", "150")
    chip_b = maps["chip_b"].astype(int)
    occluder = np.abs(chip_b - np.array([255, 200, 0])).sum(axis=2) < 30
    assert occluder.sum() > 500
    # A's eyes, which B's sunglasses hide, are what makes the pair differ
    assert maps["s_a"][occluder].mean() < -0.1
    assert maps["s_a"][occluder].mean() < maps["s_a"][~occluder].mean() - 0.1
