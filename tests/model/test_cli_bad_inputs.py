"""Generated bad and odd input to every command: each is refused at the front door.

The cases are generated, as a new user tried them (issue 8: 427 inputs over every command): every
kind of bad path (missing, empty name, folder, FIFO, device, empty file, text or random bytes named
.jpg, truncated JPEG/PNG, a PNG header claiming 100000x100000 pixels, a 1x1 image, a path under a
file) in every place a file is read; every bad number (0, -1, 10^9, 10^30, nan, abc, 1.5, empty)
for every numeric option; unusable --out folders; bad --triton addresses; unknown models, methods,
datasets, engines; malformed FACEXPLAIN_* variables.

Each case runs ``cli.main`` in-process (a model, where needed, in-process with ``--engine local``)
and must: exit with the right code (2 for bad input), print exactly one stderr line starting
``facexplain: error:`` that names the offending file, option or value, print no traceback, return
within a few seconds (before any server start or computation), and leave the pre-existing output
folder as it was. A few cases run ``python -m explainer_service.cli`` to show what reaches a
terminal.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer_service.cli import main
from explainer_service.settings import get_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
GOOD_CSV = FIXTURES / "csv" / "pairs.csv"
#: seconds a refused command may take (a model loaded in-process included; never a server start)
FAST_S = 8.0
#: a model name no case may leave behind in the repository
PROBE_MODEL = "h6-probe-model"


@dataclass(frozen=True)
class Case:
    """One command line; ``{name}`` in argv/needles is a file of the test world (see ``world``)."""

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    code: int = 2
    env: tuple[tuple[str, str], ...] = field(default=())


# --- the generator -------------------------------------------------------------------------

#: bad paths: world key -> words the error line must contain besides the path itself
BAD_PATHS: dict[str, tuple[str, ...]] = {
    "missing": ("no such file",),
    "empty_name": ("empty file name",),
    "folder": (),
    "fifo": ("FIFO",),
    "device": (),
    "zero_bytes": (),
    "text_jpg": (),
    "noise_png": (),
    "truncated_jpeg": (),
    "truncated_png": (),
    "huge_png": (),
    "tiny_png": (),
    "under_file": (),
}
if os.geteuid() != 0:  # root reads any file
    BAD_PATHS["unreadable"] = ()

#: the places a file is read, with the argv around it ({X}: the bad path)
EXPLAIN = ("explain", "--out", "{out}", "--engine", "local", "--masks", "8", "--no-progress")
FILE_PLACES: dict[str, tuple[str, ...]] = {
    "explain-a": ("explain", "{X}", "{good_b}", *EXPLAIN[1:]),
    "explain-b": ("explain", "{good_a}", "{X}", *EXPLAIN[1:]),
    "embed": ("embed", "{X}", "--engine", "local"),
    "import": ("models", "import", "{X}", "--name", PROBE_MODEL, "--family", "onnx", "--preset", "arcface"),
    "evaluate-csv": ("evaluate", "--dataset", "csv:{X}", "--out", "{out}", "--engine", "local",
                     "--pairs", "1", "--methods", "corrrise", "--budget", "8", "--no-progress", "--no-chip-cache"),
    "evaluate-bin": ("evaluate", "--dataset", "bin:{X}", "--out", "{out}", "--engine", "local",
                     "--pairs", "1", "--methods", "corrrise", "--budget", "8", "--no-progress", "--no-chip-cache"),
    "sanity-csv": ("sanity", "--dataset", "csv:{X}", "--out", "{out}", "--pairs", "1",
                   "--methods", "corrrise", "--budget", "8", "--no-chip-cache"),
    "calibrate-csv": ("models", "calibrate", "dlib-resnet-v1", "--dataset", "csv:{X}", "--engine", "local",
                      "--dry-run"),
}
#: image contents are judged only where images are read; the dataset and model readers see
#: them as malformed lists or model files
IMAGE_ONLY = {"tiny_png", "huge_png"}

BAD_NUMBERS = ("0", "-1", str(10**9), str(10**30), "nan", "abc", "1.5", "")
#: numeric options: (command argv with {V} for the value, the option, values that are valid)
EVALUATE = ("evaluate", "--dataset", f"csv:{GOOD_CSV}", "--out", "{out}", "--engine", "local",
            "--pairs", "1", "--methods", "corrrise", "--budget", "8", "--no-progress", "--no-chip-cache")
SANITY = ("sanity", "--dataset", f"csv:{GOOD_CSV}", "--out", "{out}", "--pairs", "1",
          "--methods", "corrrise", "--budget", "8", "--no-chip-cache")
NUMERIC: list[tuple[str, tuple[str, ...], str, frozenset[str]]] = [
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), "--masks", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), "--patches", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), "--patch-size", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), "--batch", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:-3], "--no-progress"), "--budget", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), "--seed", frozenset({"0", str(10**9)})),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:-3], "--no-progress", "--until-agreement", "0.9"),
     "--max-masks", frozenset()),
    ("explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:-3], "--no-progress", "--max-masks", "128"),
     "--until-agreement", frozenset()),
    ("embed", ("embed", "{good_a}", "--engine", "local"), "--batch", frozenset()),
    ("evaluate", EVALUATE, "--pairs", frozenset()),
    ("evaluate", EVALUATE, "--steps", frozenset()),
    ("evaluate", EVALUATE, "--budget", frozenset()),
    ("evaluate", EVALUATE, "--batch", frozenset()),
    ("evaluate", EVALUATE, "--seed", frozenset({"0", str(10**9)})),
    ("sanity", SANITY, "--pairs", frozenset()),
    ("sanity", SANITY, "--budget", frozenset()),
    ("sanity", SANITY, "--seed", frozenset({"0", str(10**9)})),
    ("sanity", SANITY, "--measure", frozenset({str(10**9), str(10**30), ""})),
    ("serve", ("serve",), "--grpc-port", frozenset()),
    ("serve", ("serve",), "--http-port", frozenset()),
    ("serve", ("serve", "--grpc-port", "1"), "--threads", frozenset({"0"})),
    ("import", ("models", "import", "{text_jpg}", "--name", PROBE_MODEL, "--family", "onnx"), "--threshold",
     frozenset({"0", "-1"})),
]

#: bad values of a method parameter given as --param NAME=VALUE, by its type
BAD_PARAM_VALUES = {
    "int": ("-1", "abc", "1.5", "nan", str(10**9), str(10**30)),
    "float": ("-1", "abc", "nan"),
}


def _param_cases() -> Iterator[Case]:
    """--param NAME=VALUE: every numeric parameter of every method (from the registry)."""
    from explainer_service.methods import list_methods

    base = ("explain", "{good_a}", "{good_b}", "--out", "{out}", "--engine", "local", "--no-progress")
    for info in list_methods():
        for param in info.params:
            kind = param.type.split("|")[0].strip()
            for value in BAD_PARAM_VALUES.get(kind, ()):
                if param.name == "seed" and value in (str(10**9), str(10**30)):
                    continue  # valid seeds of numpy's generators
                yield Case(f"param-{info.name}-{param.name}={value}",
                           (*base, "--method", info.name, "--param", f"{param.name}={value}"), (param.name,))
        yield Case(f"param-{info.name}-unknown", (*base, "--method", info.name, "--param", "nope_param=1"),
                   ("nope_param",))
    yield Case("param-no-equals", (*base, "--param", "n_masks"), ("n_masks",))


BAD_OUTS = {"file": "{text_jpg}", "proc": "/proc/facexplain-h6/out", "under_file": "{text_jpg}/out", "empty": ""}
OUT_PLACES: dict[str, tuple[str, ...]] = {
    "explain": ("explain", "{good_a}", "{good_b}", "--engine", "local", "--masks", "8", "--no-progress"),
    "evaluate": tuple(a for a in EVALUATE if a not in ("--out", "{out}")),
    "sanity": tuple(a for a in SANITY if a not in ("--out", "{out}")),
}

BAD_TRITON = ("h:99999", ":0", "", "a b", "http://h:8000", "h:abc", "[::1", "h:1:2")
TRITON_PLACES: dict[str, tuple[str, ...]] = {
    "explain": ("explain", "{good_a}", "{good_b}", "--out", "{out}", "--masks", "8", "--no-progress"),
    "embed": ("embed", "{good_a}"),
    "evaluate": tuple(a for a in EVALUATE if a not in ("--engine", "local")),
    "calibrate": ("models", "calibrate", "dlib-resnet-v1", "--dataset", f"csv:{GOOD_CSV}", "--dry-run"),
}

UNKNOWN: list[Case] = [
    Case("model-explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:], "--model", "nope-model"),
         ("nope-model",)),
    Case("model-embed", ("embed", "{good_a}", "--engine", "local", "--model", "nope-model"), ("nope-model",)),
    Case("model-evaluate", (*EVALUATE, "--model", "nope-model"), ("nope-model",)),
    Case("model-calibrate", ("models", "calibrate", "nope-model", "--dataset", f"csv:{GOOD_CSV}", "--dry-run"),
         ("nope-model",)),
    Case("method-explain", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:], "--method", "nope-method"),
         ("nope-method",)),
    Case("methods-evaluate", (*EVALUATE, "--methods", "corrrise,nope-method"), ("nope-method",)),
    Case("methods-evaluate-empty", (*EVALUATE, "--methods", ","), ("--methods",)),
    Case("methods-sanity", (*SANITY, "--methods", "nope-method"), ("nope-method",)),
    Case("dataset-kind", ("evaluate", "--dataset", "nope-kind:/tmp", "--out", "{out}", "--engine", "local"),
         ("nope-kind",)),
    Case("dataset-no-colon", ("evaluate", "--dataset", "lfw", "--out", "{out}", "--engine", "local"), ("lfw",)),
    Case("dataset-empty", ("evaluate", "--dataset", "", "--out", "{out}", "--engine", "local"), ("dataset",)),
    Case("dataset-missing", ("sanity", "--dataset", "lfw:{missing}", "--out", "{out}"), ("{missing}",)),
    Case("engine", ("embed", "{good_a}", "--engine", "nope-engine"), ("nope-engine",)),
    Case("family", ("models", "import", "{text_jpg}", "--name", PROBE_MODEL, "--family", "nope-family"),
         ("nope-family",)),
    Case("command", ("nope-command",), ("nope-command",)),
    Case("calibrate-images", ("models", "calibrate", "dlib-resnet-v1", "--dataset", f"csv:{GOOD_CSV}",
                              "--images", "nope-images"), ("nope-images",)),
    Case("engine-triton-without-address", ("embed", "{good_a}", "--engine", "triton"), ("--triton",)),
    Case("env-limit", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), ("FACEXPLAIN_MAX_MASKS", "abc"),
         env=(("FACEXPLAIN_MAX_MASKS", "abc"),)),
    Case("env-limit-low", ("explain", "{good_a}", "{good_b}", *EXPLAIN[1:]), ("--masks", "FACEXPLAIN_MAX_MASKS"),
         env=(("FACEXPLAIN_MAX_MASKS", "4"),)),
    Case("env-timeout", ("embed", "{good_a}", "--engine", "local"), ("FACEXPLAIN_REQUEST_TIMEOUT",),
         env=(("FACEXPLAIN_REQUEST_TIMEOUT", "-3"),)),
    Case("env-triton-url", ("explain", "{good_a}", "{good_b}", "--out", "{out}", "--masks", "8", "--no-progress"),
         ("FACEXPLAIN_TRITON_URL", "h:99999"), env=(("FACEXPLAIN_TRITON_URL", "h:99999"),)),
    # the default engine starts an embedded Triton: a bad image must be refused before that
    Case("default-engine-bad-image", ("explain", "{text_jpg}", "{good_b}", "--out", "{out}", "--no-progress"),
         ("{text_jpg}",)),
    Case("default-engine-no-face", ("explain", "{good_a}", "{tiny_png}", "--out", "{out}", "--no-progress"),
         ("{tiny_png}",)),
]


def generate() -> Iterator[Case]:
    """Every case, in a fixed order (no randomness: the same cases on every run)."""
    for place, argv in FILE_PLACES.items():
        for kind, words in BAD_PATHS.items():
            if kind in IMAGE_ONLY and not place.startswith(("explain", "embed")):
                continue
            needles = ("{" + kind + "}", *words)
            if kind == "empty_name":  # "csv:" is a dataset spec without a path
                needles = words if place.startswith(("explain", "embed", "import")) else ("dataset",)
            yield Case(f"path-{place}-{kind}", tuple(a.replace("{X}", "{" + kind + "}") for a in argv), needles)
    for command, argv, option, valid in NUMERIC:
        for value in BAD_NUMBERS:
            if value in valid:
                continue
            yield Case(f"number-{command}{option}={value or 'empty'}", (*argv, option, value), (option,))
    for command, argv in OUT_PLACES.items():
        for kind, out in BAD_OUTS.items():
            yield Case(f"out-{command}-{kind}", (*argv, "--out", out), ("--out", out))
    for command, argv in TRITON_PLACES.items():
        for address in BAD_TRITON:
            yield Case(f"triton-{command}-{address or 'empty'}", (*argv, "--triton", address), ("--triton",))
    for case in UNKNOWN:
        yield Case(f"unknown-{case.id}", case.argv, case.needles, case.code, case.env)
    yield from _param_cases()


CASES = list(generate())


# --- the world the cases point at -------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its data is one tiny row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("world")
    # 112x112: taken as already aligned (--aligned auto), so no detector is needed to accept them
    good_a, good_b = d / "good_a.jpg", d / "good_b.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(60, 200, (112, 112, 3), dtype=np.uint8)).save(good_a)
    Image.fromarray(rng.integers(60, 200, (112, 112, 3), dtype=np.uint8)).save(good_b)
    (d / "folder.jpg").mkdir()
    os.mkfifo(d / "fifo.jpg")
    (d / "zero.jpg").touch()
    (d / "notes.jpg").write_text("hello, I am a text file named .jpg\n")
    (d / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (d / "truncated.jpg").write_bytes(good_a.read_bytes()[:300])
    png = d / "full.png"
    Image.fromarray(np.full((112, 112, 3), 120, np.uint8)).save(png)
    (d / "truncated.png").write_bytes(png.read_bytes()[:80])
    (d / "huge.png").write_bytes(_png_claiming(100_000, 100_000))
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(d / "tiny.png")
    unreadable = d / "unreadable.jpg"
    shutil.copy(good_a, unreadable)
    unreadable.chmod(0)
    return {
        "good_a": str(good_a),
        "good_b": str(good_b),
        "missing": str(d / "missing.jpg"),
        "empty_name": "",
        "folder": str(d / "folder.jpg"),
        "fifo": str(d / "fifo.jpg"),
        "device": "/dev/null",
        "zero_bytes": str(d / "zero.jpg"),
        "text_jpg": str(d / "notes.jpg"),
        "noise_png": str(d / "noise.png"),
        "truncated_jpeg": str(d / "truncated.jpg"),
        "truncated_png": str(d / "truncated.png"),
        "huge_png": str(d / "huge.png"),
        "tiny_png": str(d / "tiny.png"),
        "under_file": str(d / "notes.jpg" / "x.jpg"),
        "unreadable": str(unreadable),
    }


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    """A pre-existing output folder holding one file of the user's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return out


@pytest.fixture(autouse=True)
def _no_ambient_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEXPLAIN_TRITON_URL", raising=False)


def _fill(text: str, world: dict[str, str], out: Path) -> str:
    for key, value in (*world.items(), ("out", str(out))):
        text = text.replace("{" + key + "}", value)
    return text




@pytest.mark.timeout(3 * FAST_S)  # a case accepted by mistake would start real work
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_fast(
    case: Case, world: dict[str, str], out_dir: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = get_settings().model_repository / PROBE_MODEL  # before the case's environment
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    argv = [_fill(a, world, out_dir) for a in case.argv]
    t0 = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == case.code, f"exit {code}, expected {case.code}: {argv}\n{err}"
    assert len(lines) == 1, f"expected one stderr line for {argv}, got:\n{err}"
    assert lines[0].startswith("facexplain: error: "), lines[0]
    assert "Traceback" not in err
    for needle in case.needles:
        assert _fill(needle, world, out_dir) in lines[0], f"{needle!r} not named in: {lines[0]}"
    assert seconds < FAST_S, f"refused only after {seconds:.1f} s: {argv}"
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"], f"{argv} wrote into --out"
    assert (out_dir / "keep.txt").read_text() == "mine"
    assert not probe.exists(), f"{argv} left model {PROBE_MODEL} in the repository"


def test_the_generator_covers_what_a_new_user_tried() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 200
    for command in ("explain", "embed", "evaluate", "sanity", "import", "calibrate", "serve"):
        assert any(command in i for i in ids), command


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FACEXPLAIN_TRITON_URL"}
    return subprocess.run([sys.executable, "-m", "explainer_service.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize(
    "args",
    [
        ("explain", "{fifo}", "{good_b}", "--out", "{out}"),
        ("explain", "{good_a}", "{good_b}", "--out", "{out}", "--masks", str(10**30)),
        ("embed", "{text_jpg}", "--triton", "h:99999"),
        ("evaluate", "--dataset", "csv:{fifo}", "--out", "{out}"),
        ("models", "import", "{folder}", "--name", PROBE_MODEL, "--family", "onnx"),
    ],
    ids=["explain-fifo", "explain-huge-masks", "embed-bad-triton", "evaluate-fifo-dataset", "import-folder"],
)
def test_a_terminal_sees_one_line(args: tuple[str, ...], world: dict[str, str], out_dir: Path) -> None:
    t0 = time.monotonic()
    proc = _run(*(_fill(a, world, out_dir) for a in args))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facexplain: error: "), proc.stderr
    assert time.monotonic() - t0 < 30
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]
