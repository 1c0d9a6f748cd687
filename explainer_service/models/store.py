"""The model record store: which face models the repository holds, and where their files are.

The model repository (``Settings.model_repository``) has one folder per model, named by
:func:`triton_name`, holding ``facexplain.json`` (its :class:`ModelRecord`: family, chip, embedding
size, threshold, provenance) and ``1/model.onnx`` (float32 RGB NCHW pixels in [0, 255] named
``image`` in, ``embedding`` out: the preprocessing is inside the graph). :data:`SLOTS` are the
models whose weights the user imports (the paper's three families); until then a slot has no
record and no ONNX file.

This module knows records and paths only: the Triton configs written beside them are
``serving.repository``'s. It sits below ``models.registry`` and ``serving``, and depends on
nothing of the package but ``spec``, ``errors``, ``settings`` and ``fileio``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelFormatError, ModelNotReadyError
from ..fileio import atomic_write_text
from ..settings import get_settings
from ..spec import ChipSpec, ModelSpec

__all__ = [
    "RECORD_FILE",
    "ModelRecord",
    "Slot",
    "SLOTS",
    "triton_name",
    "is_valid_name",
    "model_dir",
    "onnx_path",
    "read_record",
    "write_record",
    "list_records",
    "package_model_file",
]

#: The record's file name inside a model's folder.
RECORD_FILE = "facexplain.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def triton_name(name: str) -> str:
    """The Triton model (folder) name of a facexplain model name: '-' becomes '_'.

    InputError for a name that is not 1-64 characters of a-z, 0-9, '-' and '_'.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"model name {name!r} must be 1-64 characters of a-z, 0-9, '-' and '_' (starting with a letter or digit)"
        )
    return name.replace("-", "_")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a well-formed model name (see :func:`triton_name`)."""
    return isinstance(name, str) and _NAME.match(name) is not None


@dataclass(frozen=True)
class ModelRecord:
    """What facexplain knows of a model in the repository (``facexplain.json``).

    ``threshold`` is a cosine (None: not calibrated); ``source`` is the provenance (file,
    SHA-256, converter, conventions) as written by the converter or importer.
    """

    name: str
    family: str
    chip: ChipSpec
    embedding_dim: int
    threshold: float | None = None
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def triton_name(self) -> str:
        return triton_name(self.name)

    def spec(self) -> ModelSpec:
        """The pipeline's view of this model."""
        return ModelSpec(
            name=self.name,
            chip=self.chip,
            embedding_dim=self.embedding_dim,
            threshold=self.threshold,
            description=self.description,
        )

    def to_json(self) -> dict[str, Any]:
        """The persisted record (JSON-ready)."""
        d = asdict(self)
        d["chip"] = {"kind": self.chip.kind, "size": self.chip.size}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelRecord:
        """The record of a parsed ``facexplain.json``; KeyError/TypeError/ValueError (or an
        InputError from ChipSpec) on a malformed one."""
        threshold = d.get("threshold")
        return cls(
            name=str(d["name"]),
            family=str(d["family"]),
            chip=ChipSpec(str(d["chip"]["kind"]), int(d["chip"]["size"])),
            embedding_dim=int(d["embedding_dim"]),
            threshold=None if threshold is None else float(threshold),
            description=str(d.get("description", "")),
            source=dict(d.get("source") or {}),
        )


@dataclass(frozen=True)
class Slot:
    """A model the repository expects the user to import (the paper's three families)."""

    name: str
    family: str
    arch: str
    description: str


SLOTS: tuple[Slot, ...] = (
    Slot("arcface_r50", "arcface", "r50", "ArcFace iresnet50 (insightface arcface_torch), 112x112, 512-d"),
    Slot("magface_r50", "magface", "iresnet50", "MagFace iresnet50, 112x112, 512-d, norm = quality"),
    Slot("adaface_ir50", "adaface", "ir_50", "AdaFace IR-50, 112x112, 512-d"),
)


def _repository(repository: Path | None) -> Path:
    return repository if repository is not None else get_settings().model_repository


def model_dir(name: str, repository: Path | None = None) -> Path:
    """The folder of model ``name`` in ``repository`` (default: the configured repository)."""
    return _repository(repository) / triton_name(name)


def onnx_path(name: str, repository: Path | None = None) -> Path:
    """Where model ``name``'s ONNX file is (or would be)."""
    return model_dir(name, repository) / "1" / "model.onnx"


def _load(path: Path, raw: bytes | None = None) -> ModelRecord:
    try:
        data = json.loads(path.read_bytes() if raw is None else raw)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return ModelRecord.from_json(data)
    except (ValueError, KeyError, TypeError) as e:  # InputError (a bad chip) is a ValueError
        raise ModelFormatError(f"{path}: unreadable model record ({type(e).__name__}: {e})") from None


def read_record(name: str, repository: Path | None = None) -> ModelRecord | None:
    """The record of model ``name``, or None when the repository has none for that name.

    InputError for a malformed name; ModelFormatError for an unreadable record file.
    """
    path = model_dir(name, repository) / RECORD_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return _load(path, raw)


def write_record(record: ModelRecord, repository: Path | None = None) -> Path:
    """Write ``facexplain.json`` of a model atomically; return the model's folder.

    Only the record: the Triton ``config.pbtxt`` beside it is written by
    ``serving.repository.write_gpu_configs``.
    """
    folder = model_dir(record.name, repository)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RECORD_FILE, json.dumps(record.to_json(), indent=2) + "\n")
    return folder


def list_records(repository: Path | None = None) -> list[ModelRecord]:
    """Every model with a record, sorted by folder name; ModelFormatError for an unreadable one."""
    repo = _repository(repository)
    if not repo.is_dir():
        return []
    return [_load(p / RECORD_FILE) for p in sorted(repo.iterdir()) if (p / RECORD_FILE).is_file()]


def package_model_file(filename: str) -> Path:
    """A model file shipped by the PyPI package face_recognition_models (dlib's networks).

    ModelNotReadyError when the package or the file is missing. The package's ``__init__`` needs
    ``pkg_resources``, so it is located without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReadyError("the package face_recognition_models is not installed (run `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ModelNotReadyError(f"{path}: missing from face_recognition_models")
    return path
