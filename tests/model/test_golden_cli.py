"""`facexplain explain` on the demo pair gives exactly what the code before the service refactor
gave: every array of maps.npz (sha256 of its bytes) and every summary value
(tests/fixtures/golden/demo_pair.json, made by the pre-refactor code at seed 0, N=500)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.cli import main
from explainer_service.demo import make_demo_pair
from explainer_service.results import PairResult

pytestmark = [pytest.mark.model, pytest.mark.slow]

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "demo_pair.json").read_text())
#: Values that depend on the run, not on the maps: where the images were and how long it took.
RUN_KEYS = {"engine", "seconds"}
PATH_KEYS = {"image_a", "image_b"}


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_demo_pair(tmp_path_factory.mktemp("demo") / "inputs")


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def assert_contains(actual: Any, golden: Any, where: str) -> None:
    """``actual`` equals ``golden``, where an object may have gained keys (never lost or changed one)."""
    if isinstance(golden, dict):
        assert isinstance(actual, dict), where
        for key, value in golden.items():
            assert key in actual, f"{where}.{key} is missing"
            assert_contains(actual[key], value, f"{where}.{key}")
    else:
        assert actual == golden, f"{where}: {actual!r} != golden {golden!r}"


def check_against(golden: dict[str, Any], out: Path, engine: str) -> None:
    summary = json.loads((out / "summary.json").read_text())
    for key, value in golden["summary"].items():
        if key in RUN_KEYS:
            continue
        if key in PATH_KEYS:
            assert Path(summary[key]).name == Path(value).name
            continue
        assert_contains(summary.get(key), value, key)
    assert summary["engine"] == engine
    assert summary["forward_passes"] == 2 * 500 + 2
    assert isinstance(summary["seconds"], float) and summary["seconds"] > 0
    with np.load(out / "maps.npz", allow_pickle=False) as maps:
        # the archive may have gained arrays (issue 11's uncertainty), never lost or changed one
        assert set(golden["arrays"]) <= set(maps.files)
        for key, digest in golden["arrays"].items():
            assert sha256(maps[key]) == digest, f"maps.npz[{key!r}] changed"
    # and what was written reads back as the same result
    back = PairResult.read(out)
    assert back.to_dict() == summary
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_local_is_the_golden_output(demo_pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = demo_pair
    out = tmp_path / "out"
    code = main(["explain", str(a), str(b), "--out", str(out), "--engine", "local", "--seed", "0",
                 "--masks", "500", "--no-progress"])
    assert code == 0
    check_against(GOLDEN["cli_local"], out, "local")


@pytest.mark.integration
def test_explain_embedded_triton_is_the_golden_output(demo_pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = demo_pair
    out = tmp_path / "out"
    code = main(["explain", str(a), str(b), "--out", str(out), "--seed", "0", "--masks", "500", "--no-progress"])
    assert code == 0
    check_against(GOLDEN["cli_auto"], out, "triton-embedded")
