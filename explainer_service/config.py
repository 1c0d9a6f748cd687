"""Where facexplain keeps what setup builds (converted models), overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home_dir", "models_dir"]


def home_dir() -> Path:
    """FACEXPLAIN_HOME, else $XDG_CACHE_HOME/facexplain, else ~/.cache/facexplain."""
    env = os.environ.get("FACEXPLAIN_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facexplain"


def models_dir() -> Path:
    """Folder of the converted models, one sub-folder per model name."""
    return home_dir() / "models"
