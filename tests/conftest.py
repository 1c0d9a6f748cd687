"""Shared fixtures and test policy.

Fixtures: where the real data of ../shared lives, and skips that name a missing path.
Policy: every test under tests/integration is marked `integration` (it starts servers); unit tests get a
shorter default timeout than the global one in pyproject.toml; Hypothesis runs without its per-example
deadline (a loaded 2-core CI machine makes timing meaningless) and, unless HYPOTHESIS_PROFILE says
otherwise, with the same examples on every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEXPLAIN_SHARED", ROOT.parent / "shared"))
TESTS = Path(__file__).resolve().parent
UNIT_TIMEOUT_S = 120

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is in the test extra; without it only its tests fail to import
    pass
else:
    _hypothesis_settings.register_profile("repeatable", deadline=None, derandomize=True, print_blob=True)
    _hypothesis_settings.register_profile("explore", deadline=None, max_examples=1000, print_blob=True)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks tests/integration as `integration`; gives unit tests without their own timeout a shorter one."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if TESTS / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        elif TESTS / "unit" in path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))


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
