"""The CLI's front-door checks: input files, output folder, limits (no model needed)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import pytest

from explainer_service.cli.common import (
    LIMITED_OPTIONS,
    check_dataset_spec,
    check_input_files,
    check_limits,
    check_out_dir,
)
from explainer_service.errors import InputError, LimitExceededError
from explainer_service.settings import Limits


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    p = tmp_path / "a.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return p


def test_input_files_accepts_regular_files(image: Path) -> None:
    check_input_files([str(image), str(image)])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: "", "empty file name"),
        (lambda d: str(d / "missing.jpg"), "no such file"),
        (lambda d: str(d), "is a folder"),
        (lambda d: str(d / "a.jpg" / "x.jpg"), "no such file"),
        (lambda d: "/dev/null", "a device"),
    ],
)
def test_input_files_refuses(tmp_path: Path, image: Path, make, words: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        check_input_files([str(image), path])
    assert words in str(info.value)
    if path:
        assert path in str(info.value)


def test_input_files_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"x\.jpg: not a regular file \(a FIFO\)"):
        check_input_files([str(fifo)])


def test_input_files_refuses_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.jpg"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(InputError, match="a socket"):
            check_input_files([str(path)])


def test_input_files_refuses_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(InputError, match=r"empty\.png: empty file"):
        check_input_files([str(empty)])


def test_input_files_refuses_unreadable(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        image.chmod(0)
    else:  # root reads any file: stand in for the permission check
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match=r"a\.jpg: not readable"):
        check_input_files([str(image)])


def test_out_dir_created_and_left_clean(tmp_path: Path) -> None:
    out = check_out_dir(str(tmp_path / "new" / "deeper"))
    assert out.is_dir() and list(out.iterdir()) == []
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    assert check_out_dir(str(existing)) == existing
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: "", "empty folder name"),
        (lambda d: str(d / "a.jpg"), "exists and is not a folder"),
        (lambda d: str(d / "a.jpg" / "out"), "a folder on its path is a file"),
        (lambda d: "/proc/facexplain-out", "cannot create the folder"),
    ],
)
def test_out_dir_refuses(tmp_path: Path, image: Path, make, words: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        check_out_dir(path)
    assert words in str(info.value) and f"--out {path}".strip() in str(info.value)


def test_out_dir_refuses_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o500)
    else:  # root writes anywhere: stand in for the refused write

        def refuse(**kw: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("explainer_service.cli.common.tempfile.mkstemp", refuse)
    with pytest.raises(InputError, match=r"--out .*ro: not writable \(Permission denied\)"):
        check_out_dir(str(ro))


def test_dataset_spec_refuses_fifo_and_device(tmp_path: Path) -> None:
    fifo = tmp_path / "pairs.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"--dataset csv:.*pairs\.csv: not a regular file"):
        check_dataset_spec(f"csv:{fifo}")
    with pytest.raises(InputError, match="a device"):
        check_dataset_spec("bin:/dev/zero")
    check_dataset_spec(f"lfw:{tmp_path}")  # folders and missing paths are the reader's to judge
    check_dataset_spec(f"csv:{tmp_path / 'missing.csv'}")
    check_dataset_spec("no-colon")


def _ns(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_limits_accept_defaults_and_absent_options() -> None:
    check_limits(_ns())
    check_limits(_ns(masks=500, patches=10, patch_size=None, batch=None, seed=0, budget=None))
    check_limits(_ns(pairs=100, steps=11, threads=0, grpc_port=8001, http_port=8000, threshold=0.5))


@pytest.mark.parametrize("attr", sorted(LIMITED_OPTIONS))
@pytest.mark.parametrize("value", [10**9, 10**30])
def test_limits_refuse_huge_values_naming_option_and_variable(attr: str, value: int) -> None:
    option, field = LIMITED_OPTIONS[attr]
    with pytest.raises(LimitExceededError) as info:
        check_limits(_ns(**{attr: value}))
    text = str(info.value)
    assert option in text and str(value) in text and f"FACEXPLAIN_{field.upper()}" in text
    assert str(getattr(Limits(), field)) in text


def test_limits_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    check_limits(_ns(masks=2000))
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", "1000")
    with pytest.raises(LimitExceededError, match="--masks 2000 is over the limit 1000"):
        check_limits(_ns(masks=2000))
    monkeypatch.setenv("FACEXPLAIN_MAX_PAIRS", "10")
    with pytest.raises(LimitExceededError, match="--pairs 11"):
        check_limits(_ns(pairs=11))


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"masks": -1}, "--masks must be >= 0"),
        ({"masks": float("nan")}, "--masks must be a finite number"),
        ({"seed": -1}, "--seed must be an integer"),
        ({"seed": 2**63}, "--seed must be an integer"),
        ({"grpc_port": 99999}, "--grpc-port must be a port"),
        ({"http_port": 0}, "--http-port must be a port"),
        ({"threshold": float("nan")}, "--threshold must be a cosine"),
        ({"threshold": 2.0}, "--threshold must be a cosine"),
    ],
)
def test_limits_refuse_out_of_range(kw: dict[str, object], words: str) -> None:
    with pytest.raises(InputError, match=words.replace("*", r"\*")):
        check_limits(_ns(**kw))
