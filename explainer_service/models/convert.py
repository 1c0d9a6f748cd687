"""Setup-time conversion of the default model: dlib's .dat file -> cached ONNX model.

The model goes into the model repository (``model_repository/dlib_resnet_v1``): ``1/model.onnx``
and ``facexplain.json`` whose ``source`` records the .dat file's SHA-256 and the converter version;
a second run with the same source does nothing. Triton's ``config.pbtxt`` is not written here
(``serving.repository.write_gpu_configs``, run by ``facexplain setup``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_bytes
from .dlib_format import read_dlib_resnet
from .dlib_resnet import build_onnx
from .registry import DEFAULT_MODEL, DLIB_RESNET_V1
from .store import RECORD_FILE, ModelRecord, model_dir, package_model_file, write_record

__all__ = [
    "CONVERTER_VERSION",
    "package_model_file",
    "dlib_source_path",
    "default_model_dir",
    "convert_dlib",
    "ensure_default_model",
    "sha256_file",
]

#: Bump when the ONNX graph built from the same .dat changes.
CONVERTER_VERSION = 1
DLIB_DAT = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_source_path() -> Path:
    """dlib's face-recognition network file, as shipped by face_recognition_models."""
    return package_model_file(DLIB_DAT)


def default_model_dir(repository: Path | None = None) -> Path:
    """The default model's folder in the model repository."""
    return model_dir(DEFAULT_MODEL, repository)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_current(out_dir: Path, sha: str) -> bool:
    try:
        source = json.loads((out_dir / RECORD_FILE).read_bytes())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        isinstance(source, dict)
        and source.get("sha256") == sha
        and source.get("converter_version") == CONVERTER_VERSION
        and (out_dir / "1" / "model.onnx").is_file()
    )


def convert_dlib(source: Path, out_dir: Path) -> dict[str, Any]:
    """Convert a dlib ResNet .dat into ``out_dir/1/model.onnx`` and write its record beside it.

    Raises ModelFormatError, naming the file and the problem, for a corrupted or truncated file.
    The ONNX file is written atomically, so an interrupted run leaves no half-written model.
    Returns the record's ``source`` (provenance) entry.
    """
    t0 = time.perf_counter()
    net = read_dlib_resnet(source)
    model = build_onnx(net)
    version_dir = out_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(version_dir / "model.onnx", model.SerializeToString())
    info = {
        "file": str(source),
        "sha256": net.sha256,
        "converter": "facexplain dlib reader",
        "converter_version": CONVERTER_VERSION,
        "parameters": net.parameter_count(),
        "mean_rgb": list(net.mean_rgb),
        "dlib_dist_thresh": net.dist_thresh,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    spec = DLIB_RESNET_V1
    old = _read_threshold(out_dir)
    record = ModelRecord(
        name=spec.name,
        family="dlib",
        chip=spec.chip,
        embedding_dim=net.embedding_dim,
        threshold=spec.threshold if old is None else old,
        description=spec.description,
        source=info,
    )
    write_record(record, out_dir.parent)
    return info


def _read_threshold(out_dir: Path) -> float | None:
    """A threshold already recorded for this model (e.g. by `models calibrate`), kept on rebuild."""
    try:
        t = json.loads((out_dir / RECORD_FILE).read_bytes()).get("threshold")
        return None if t is None else float(t)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def ensure_default_model(force: bool = False, repository: Path | None = None) -> Path:
    """Path of the default model's ONNX file, converting it first if missing or stale."""
    source = dlib_source_path()
    out_dir = default_model_dir(repository)
    if force or not _is_current(out_dir, sha256_file(source)):
        convert_dlib(source, out_dir)
    return out_dir / "1" / "model.onnx"
