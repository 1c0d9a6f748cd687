"""The CLI's contract: bad input is exit code 2 and one line naming the file and the problem, found
before any model or server is used; explain runs any method; embed goes on past bad images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from explainer_service.cli import main
from explainer_service.methods import METHOD_NAMES, forward_passes
from explainer_service.results import PairResult


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


@pytest.mark.integration
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


# ---- explain: any method; everything checked before a model or server is used -----------------

#: A server address where nothing listens: a command that reached for the model would fail with a
#: backend error (exit 75), so exit 2 proves the input was refused first.
NOWHERE = "127.0.0.1:1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from explainer_service.demo import make_demo_pair

    return make_demo_pair(tmp_path_factory.mktemp("demo"))


def call(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


CHEAP = {
    "corrrise": (["--masks", "8"], {"n_masks": 8}),
    "rise": (["--budget", "8"], {"budget": 8}),
    "lime": (["--budget", "8", "--param", "n_segments=20"], {"budget": 8, "n_segments": 20}),
    "xface": (["--param", "stride=30"], {"stride": 30}),
    "minplus": (["--param", "steps=1"], {"steps": 1}),
    "corrrise-plus": (["--budget", "8"], {"budget": 8}),
    "gradcam": ([], {}),
    "gradcampp": ([], {}),
}


def test_cheap_covers_every_method():
    assert set(CHEAP) == set(METHOD_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CHEAP))
def test_explain_runs_any_method(demo, tmp_path, capsys, method):
    options, params = CHEAP[method]
    out = tmp_path / "out"
    code, stdout, err = call(capsys, "explain", *demo, "--out", out, "--engine", "local", "--no-progress",
                             "--method", method, *options)
    assert code == 0, err
    assert "decision" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "maps.npz", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["engine"] == "local"
    assert summary["forward_passes"] == forward_passes(method, 150, **params)
    result = PairResult.read(out)
    assert result.s_a.shape == result.s_b.shape == (150, 150) and result.s_a.dtype == np.float32
    assert np.isfinite(result.s_a).all() and np.abs(result.s_a).max() > 0


@pytest.mark.parametrize(
    "options,needles",
    [
        (["--method", "rise", "--patches", "3"], ["--patches", "CorrRISE options", "--param"]),
        (["--param", "n_masks"], ["--param 'n_masks'", "NAME=VALUE"]),
        (["--method", "rise", "--param", "colour=3"], ["rise", "colour"]),
        (["--method", "lime", "--param", "n_segments=many"], ["n_segments", "many"]),
        (["--masks", "8", "--param", "n_masks=9"], ["--param n_masks", "--masks"]),
        (["--masks", "8", "--budget", "9"], ["budget", "n_masks"]),
        (["--patch-size", "500"], ["patch_size 500", "150"]),
        (["--method", "lime", "--param", "n_samples=200000"], ["200000", "FACEXPLAIN_MAX_MASKS"]),
    ],
)
def test_bad_method_options_are_refused_before_the_server(demo, tmp_path, capsys, options, needles):
    code, stdout, err = call(capsys, "explain", *demo, "--out", tmp_path / "o", "--triton", NOWHERE, *options)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facexplain: error:")
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "o").exists()  # refused before the output folder was made


def _sky(path):
    y = np.linspace(0, 255, 200)
    Image.fromarray(np.stack([np.tile(y, (200, 1))] * 3, axis=2).astype(np.uint8)).save(path)
    return path


def test_a_bad_image_is_found_before_the_server(demo, tmp_path, capsys):
    sky = _sky(tmp_path / "sky.png")
    code, _, err = call(capsys, "explain", demo[0], sky, "--out", tmp_path / "o", "--triton", NOWHERE)
    assert code == 2 and "sky.png" in err and "no face" in err, err
    garbage = tmp_path / "photo.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, _, err = call(capsys, "explain", garbage, demo[1], "--out", tmp_path / "o", "--triton", NOWHERE)
    assert code == 2 and "photo.jpg" in err, err


# ---- embed: batch use ---------------------------------------------------------------------------


def _flat(path, value):
    Image.fromarray(np.full((112, 112, 3), value, np.uint8)).save(path)
    return str(path)


def test_embed_reports_each_failure_and_goes_on(tmp_path, capsys):
    good1 = _flat(tmp_path / "good1.png", 120)
    good2 = _flat(tmp_path / "good2.png", 90)
    notes = tmp_path / "notes.jpg"
    notes.write_text("hello")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    images = [good1, tmp_path / "missing.png", notes, fifo, good2]
    code, stdout, err = call(capsys, "embed", *images, "--engine", "local")
    assert code == 2
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["path"] for r in rows] == [good1, good2]
    assert all(len(r["embedding"]) == 128 for r in rows)
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    for line, name in zip(lines, ["missing.png", "notes.jpg", "pipe.jpg"], strict=False):
        assert line.startswith("facexplain: error:") and name in line
    assert lines[-1] == "facexplain: 2 embedded, 3 failed"


def test_embed_all_good_exits_0_with_a_count(tmp_path, capsys):
    images = [_flat(tmp_path / f"g{i}.png", 60 + 30 * i) for i in range(3)]
    code, stdout, err = call(capsys, "embed", *images, "--engine", "local", "--batch", "2")
    assert code == 0 and len(stdout.splitlines()) == 3
    assert err.strip().splitlines() == ["facexplain: 3 embedded, 0 failed"]


def test_embed_with_only_bad_images_never_reaches_the_server(tmp_path, capsys):
    sky = _sky(tmp_path / "sky.png")
    code, stdout, err = call(capsys, "embed", sky, tmp_path / "missing.png", "--triton", NOWHERE)
    assert code == 2 and stdout == ""
    assert err.strip().splitlines()[-1] == "facexplain: 0 embedded, 2 failed"
