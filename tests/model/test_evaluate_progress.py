"""`facexplain evaluate` under nohup/CI: progress as periodic log lines on a non-terminal stderr,
and a one-pair run reports no interval (n/a), never NaN."""

from __future__ import annotations

import csv
import json

import pytest

from explainer_service.cli import main

pytestmark = [pytest.mark.model, pytest.mark.shared]


def test_one_pair_without_a_terminal(lfw_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--dataset", f"lfw-aligned:{lfw_dir}", "--methods", "corrrise,rise", "--pairs", "1",
                 "--budget", "16", "--steps", "3", "--out", str(out), "--engine", "local",
                 "--chip-cache", str(tmp_path / "chips")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # stderr is not a terminal here: log lines, the last one at 100 %
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("evaluate")]
    assert lines and "2/2 (100 %" in lines[-1] and "rise" in lines[-1]
    for name in ("table.md", "table.csv", "evaluation.json"):
        assert "nan" not in (out / name).read_text().lower(), name
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert rows[0]["deletion_ci95_low"] == "n/a" and int(rows[0]["pairs"]) == 1
    assert json.loads((out / "evaluation.json").read_text())["rows"][0]["deletion_ci95"] is None
    assert "[n/a]" in (out / "table.md").read_text()
    # --no-progress: nothing of the kind
    assert main(["evaluate", "--dataset", f"lfw-aligned:{lfw_dir}", "--methods", "rise", "--pairs", "1",
                 "--budget", "16", "--steps", "3", "--out", str(out), "--engine", "local", "--no-progress",
                 "--chip-cache", str(tmp_path / "chips")]) == 0
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("evaluate")]
