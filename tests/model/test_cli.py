"""The CLI's contract for bad input: exit code 2 and one line naming the file and the problem."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "explainer_service.cli", *args], capture_output=True, text=True
    )


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_file(tmp_path):
    p = run("explain", str(tmp_path / "nope.jpg"), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o"))
    one_line_error(p, "nope.jpg", "no such file")
    assert not (tmp_path / "o").exists()


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    p = run("embed", str(bad))
    one_line_error(p, "notes.jpg", "not an image")


def test_no_face(tmp_path):
    img = tmp_path / "sky.png"
    y = np.linspace(0, 255, 200)
    Image.fromarray(np.stack([np.tile(y, (200, 1))] * 3, axis=2).astype(np.uint8)).save(img)
    p = run("embed", str(img))
    one_line_error(p, "sky.png", "no face")


def test_unknown_model_and_bad_options(tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(img)
    p = run("embed", str(img), "--model", "nonexistent")
    one_line_error(p, "nonexistent")
    p = run("explain", str(img), str(img), "--out", str(tmp_path / "o"), "--masks", "0")
    assert p.returncode == 2 and "--masks" in p.stderr
    p = run("explain", str(img), str(img), "--out", str(tmp_path / "o"), "--patch-size", "500")
    one_line_error(p, "patch")


def test_embed_reports_good_images_before_a_bad_one(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((112, 112, 3), 120, np.uint8)).save(good)
    p = run("embed", str(good), str(tmp_path / "missing.png"))
    assert p.returncode == 2
    assert len(p.stdout.strip().splitlines()) == 1 and "good.png" in p.stdout
    assert "missing.png" in p.stderr


def test_unwritable_output_is_one_line_not_a_traceback(tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.full((112, 112, 3), 90, np.uint8)).save(img)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    p = run("explain", str(img), str(img), "--out", str(blocker / "out"), "--masks", "4", "--engine", "local")
    # refused before any computation, as bad input naming the folder
    one_line_error(p, str(blocker / "out"), "a folder on its path is a file")
