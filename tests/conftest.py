"""Shared fixtures: where the real data of ../shared lives, and skips that name a missing path."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("FACEXPLAIN_SHARED", ROOT.parent / "shared"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """../shared/data/lfw-dev: pairs.txt, images/ (raw 250x250) and aligned112/."""
    return _need(SHARED / "data" / "lfw-dev")
