"""Fixtures of the detector tests: real photos from ../shared (skipped, naming the path, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import SHARED, _need


@pytest.fixture(scope="session")
def cfp_dir() -> Path:
    """../shared/data/cfp-dev: Protocol/ and Data/Images/NNN/{frontal,profile}/NN.jpg (raw crops)."""
    return _need(SHARED / "data" / "cfp-dev")
