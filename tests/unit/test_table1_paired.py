"""bench/table1_paired.py's report: ``--skip-incomplete`` leaves out, with a note, a (model, scenario)
without a finished reference run; without it the report refuses such a grid (one-line error)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from explainer_service.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [[f"p{i}_1", f"p{i}_2"] for i in range(5)]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("table1_paired", ROOT / "bench" / "table1_paired.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, method: str, dataset: str, deletion: list[float], insertion: list[float]) -> None:
    folder.mkdir(parents=True)
    meta = {"dataset": dataset, "model": "m", "steps": 11, "substrate": "zeros", "perturb": "probe",
            "threshold": 0.9, "pair_names": PAIRS}
    rows = [{"method": method, "forward_passes": 1002, "deletion_per_pair": deletion, "insertion_per_pair": insertion}]
    (folder / "evaluation.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def test_skip_incomplete_leaves_out_a_scenario_without_the_reference(bench: ModuleType, tmp_path: Path) -> None:
    lfw, cfp = "lfw:../shared/data/lfw-dev", "cfp-fp-aligned:../shared/data/cfp-dev"
    _write(tmp_path / "lfw" / "plus", "plus", lfw, [1, 2, 3, 4, 5], [80, 81, 82, 83, 84])
    _write(tmp_path / "lfw" / "lime", "lime", lfw, [5, 6, 7, 8, 10], [70, 70, 71, 72, 73])
    _write(tmp_path / "cfp" / "lime", "lime", cfp, [5, 6, 7, 8, 9], [50, 50, 51, 52, 53])
    with pytest.raises(InputError, match="no run of the reference method plus"):
        bench.report([str(tmp_path)], "plus", None)
    saved = tmp_path / "auc.json"
    text = bench.report([str(tmp_path)], "plus", saved, skip_incomplete=True)
    assert text.startswith("left out (no plus run): m, CFP-FP\n")
    assert "pairs: LFW 5." in text and "CFP-FP Deletion" not in text
    assert "| lime | 1,002 | -4.20 +- " in text  # plus minus lime, LFW Deletion: mean of -4,-4,-4,-4,-5
    assert sorted((r["method"], r["scenario"]) for r in json.loads(saved.read_text())) == [("lime", lfw), ("plus", lfw)]
