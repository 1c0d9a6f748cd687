"""bench/bench_gpu_corrrise.py's command line: both modes parse and check their arguments (one
argparse line and exit 2 for a bad one) and ``--dry-run`` prints the plan without running anything.
The Triton mode's run against the embedded Triton is in tests/integration/test_triton_corrrise_engine.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_corrrise", ROOT / "bench" / "bench_gpu_corrrise.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_in_process_mode_defaults_and_dry_run(bench, capsys):
    args = bench.parse_args([])
    assert args.triton is None and args.models == ["dlib", "iresnet50"] and args.masks == 500 and args.device is None
    bench.main(["--dry-run", "--models", "dlib", "--masks", "64", "--device", "cpu"])
    plan = json.loads(capsys.readouterr().out)
    assert plan == {"mode": "in-process", "device": "cpu", "models": ["dlib"], "masks": 64, "pairs": 16, "reps": 5,
                    "per_eval": 512, "dtype": "float32", "tf32": False}


def test_triton_mode_parses_its_server_and_models(bench, capsys):
    args = bench.parse_args(["--triton", "triton:8001", "--triton-models", "dlib-resnet-v1,arcface-r50"])
    assert args.triton == "triton:8001" and args.triton_models == ["dlib-resnet-v1", "arcface-r50"]
    assert bench.parse_args(["--triton", "embedded"]).triton_models == ["dlib-resnet-v1"]
    bench.main(["--triton", "[::1]:8001", "--masks", "500", "--pairs", "8", "--reps", "3", "--dry-run"])
    plan = json.loads(capsys.readouterr().out)
    assert plan == {"mode": "triton", "triton": "[::1]:8001", "models": ["dlib-resnet-v1"], "masks": 500,
                    "pairs": 8, "reps": 3, "per_eval": 512}


@pytest.mark.parametrize(("argv", "message"), [
    (["--triton", "http://triton:8000"], "--triton: Triton address 'http://triton:8000'"),
    (["--triton", "triton:0"], "--triton: Triton address 'triton:0'"),
    (["--triton", "triton:8001", "--triton-models", ","], "--triton-models names no model"),
    (["--models", "dlib,resnet"], "--models must name dlib and/or iresnet50, got resnet"),
    (["--masks", "0"], "argument --masks: must be a positive integer, got 0"),
    (["--pairs", "many"], "argument --pairs: must be a positive integer, got 'many'"),
    (["--per-eval", "5"], "argument --per-eval: must be even"),
])
def test_bad_arguments_are_one_line_and_exit_2(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench_gpu_corrrise.py: error: ") and message in err[-1]
