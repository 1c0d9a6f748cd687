"""An audit as files (``audit_files``): pairs.csv has one line per pair with the values of the
rows (failed pairs with their error and no score; metric columns only where scored); summary.json
is the summary with the job; kept results land in pairs/<index>/<method>/ as the three files of
``facexplain explain``, with the maps unchanged."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.audit_files import (
    AUDIT_FORMAT,
    pair_folder,
    pairs_csv,
    summary_json,
    write_audit,
)
from explainer_service.errors import InputError
from explainer_service.explanation import Explanation
from explainer_service.models.registry import DLIB_RESNET_V1
from explainer_service.results import FaceRecord, ModelInfo, PairResult, Timing

ROWS: list[dict[str, Any]] = [
    {"index": 0, "name": "a|b", "same": True, "score": 0.8125, "decision": "match", "correct": True, "error": None,
     "methods": [{"method": "gradcam", "explain_s": 0.5, "deletion": {"auc": 12.5}, "insertion": {"auc": 80.25}},
                 {"method": "rise", "explain_s": 2.0}]},
    {"index": 1, "name": "c|d, quoted", "same": False, "score": 0.75, "decision": "match", "correct": False,
     "error": None, "methods": [{"method": "gradcam", "explain_s": 0.25, "deletion": {"auc": 30.0},
                                 "insertion": {"auc": 40.0}}, {"method": "rise", "explain_s": 1.0}]},
    {"index": 2, "name": "e|f", "same": True, "score": None, "decision": "unknown", "correct": False,
     "error": {"status": "INVALID_ARGUMENT", "message": "e: no face found"}, "methods": []},
]
SUMMARY = {"pairs": 3, "pairs_failed": 1, "threshold": 0.6, "accuracy": 0.5, "true_matches": 1, "false_matches": 1,
           "false_non_matches": 0, "true_non_matches": 0, "methods": [], "worst": [],
           "dropped": [{"index": 2, "name": "e|f", "error": ROWS[2]["error"]}]}


def _read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_pairs_csv_has_one_line_per_pair_with_its_values() -> None:
    text = pairs_csv(list(reversed(ROWS)), ["gradcam", "rise"])
    header = text.splitlines()[0].split(",")
    assert header == ["index", "name", "same", "score", "decision", "correct", "error", "gradcam.deletion",
                      "gradcam.insertion", "gradcam.explain_s", "rise.explain_s"]
    lines = _read_csv(text)
    assert [line["index"] for line in lines] == ["0", "1", "2"]
    assert lines[0]["same"] == "1" and lines[0]["correct"] == "1" and float(lines[0]["score"]) == 0.8125
    assert float(lines[0]["gradcam.deletion"]) == 12.5 and float(lines[0]["gradcam.insertion"]) == 80.25
    assert float(lines[0]["rise.explain_s"]) == 2.0
    assert lines[1]["name"] == "c|d, quoted" and lines[1]["correct"] == "0" and lines[1]["decision"] == "match"
    assert lines[2]["score"] == "" and lines[2]["gradcam.deletion"] == ""
    assert lines[2]["error"] == "INVALID_ARGUMENT: e: no face found"


def test_summary_json_is_the_summary_with_the_job() -> None:
    doc = json.loads(summary_json(SUMMARY, job_id="j1", model="dlib-resnet-v1", methods=["gradcam"]))
    assert doc["format"] == AUDIT_FORMAT and doc["job"] == {"id": "j1", "model": "dlib-resnet-v1",
                                                            "methods": ["gradcam"]}
    assert {k: v for k, v in doc.items() if k not in ("format", "job")} == SUMMARY
    with pytest.raises(InputError, match="not plain JSON"):
        summary_json({**SUMMARY, "accuracy": float("nan")}, job_id="j1", model="m", methods=[])


def test_pair_folders_sort_by_index_and_refuse_bad_names(tmp_path: Path) -> None:
    assert pair_folder(tmp_path, 7, 120, "gradcam") == tmp_path / "pairs" / "007" / "gradcam"
    assert pair_folder(tmp_path, 0, 1, "rise") == tmp_path / "pairs" / "0" / "rise"
    for index, method in ((3, "."), (3, "../x"), (-1, "rise"), (5, "rise")):
        with pytest.raises(InputError):
            pair_folder(tmp_path, index, 5, method)


def _result() -> PairResult:
    rng = np.random.default_rng(5)
    ex = Explanation(
        s_a=rng.uniform(-1, 1, (150, 150)).astype(np.float32), s_b=rng.uniform(-1, 1, (150, 150)).astype(np.float32),
        score=0.8125, threshold=0.6, model="dlib-resnet-v1", masks=1, method="gradcam", params={},
        scores_a=np.zeros(1, np.float32), scores_b=np.zeros(1, np.float32), forward_passes=4,
    )
    faces = [FaceRecord(f"a|b {s}", "pre-aligned", 0, chip=rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
             for s in "AB"]
    return PairResult.from_explanation(ex, faces[0], faces[1], ModelInfo.from_spec(DLIB_RESNET_V1), timing=Timing(0, 1))


def test_write_audit_writes_kept_results_and_the_two_files(tmp_path: Path) -> None:
    kept = _result()
    rows = [{**ROWS[0], "methods": [{**ROWS[0]["methods"][0], "result": kept}, ROWS[0]["methods"][1]]}, *ROWS[1:]]
    files = write_audit(tmp_path / "out", SUMMARY, iter(rows), job_id="j1", model="dlib-resnet-v1",
                        methods=["gradcam", "rise"], total=3)
    folder = tmp_path / "out" / "pairs" / "0" / "gradcam"
    assert files.rows == 3 and files.result_folders == (folder,)
    assert sorted(p.name for p in folder.iterdir()) == ["figure.png", "maps.npz", "summary.json"]
    back = PairResult.read(folder)
    assert back.s_a is not None and back.s_a.tobytes() == kept.s_a.tobytes()
    assert files.pairs.read_text() == pairs_csv(ROWS, ["gradcam", "rise"])
    assert json.loads(files.summary.read_text())["dropped"] == SUMMARY["dropped"]
