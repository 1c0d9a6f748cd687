"""Where facexplain keeps what setup builds (converted models), overridable by environment."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelNotReadyError

__all__ = ["home_dir", "model_repository_dir", "package_model_file"]


def home_dir() -> Path:
    """FACEXPLAIN_HOME, else $XDG_CACHE_HOME/facexplain, else ~/.cache/facexplain."""
    env = os.environ.get("FACEXPLAIN_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facexplain"


def model_repository_dir() -> Path:
    """The Triton model repository: FACEXPLAIN_MODEL_REPOSITORY, else ``model_repository/`` of this
    checkout, else FACEXPLAIN_HOME/model_repository (an installed package without a checkout)."""
    env = os.environ.get("FACEXPLAIN_MODEL_REPOSITORY")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[1] / "model_repository"
    if (checkout / "README.md").is_file():
        return checkout
    return home_dir() / "model_repository"


def package_model_file(filename: str) -> Path:
    """A model file shipped by the PyPI package face_recognition_models (dlib's networks).

    The package's ``__init__`` needs ``pkg_resources``, so it is located without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReadyError(
            "the package face_recognition_models is not installed (run `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ModelNotReadyError(f"{path}: missing from face_recognition_models")
    return path
