"""Setup-time conversion of the default model: dlib's .dat file -> cached ONNX model.

The cache folder (``models_dir()/dlib-resnet-v1``) holds ``model.onnx`` and ``info.json`` with the
source file's SHA-256 and the converter version; a second run with the same source does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ..config import models_dir, package_model_file
from .dlib_format import read_dlib_resnet
from .dlib_resnet import build_onnx

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


def default_model_dir() -> Path:
    return models_dir() / "dlib-resnet-v1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_current(out_dir: Path, sha: str) -> bool:
    try:
        info = json.loads((out_dir / "info.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("source_sha256") == sha
        and info.get("converter_version") == CONVERTER_VERSION
        and (out_dir / "model.onnx").is_file()
    )


def convert_dlib(source: Path, out_dir: Path) -> dict:
    """Convert a dlib ResNet .dat into ``out_dir/model.onnx``; return the info written beside it.

    Raises ModelFormatError, naming the file and the problem, for a corrupted or truncated file.
    The ONNX file is written atomically, so an interrupted run leaves no half-written model.
    """
    t0 = time.perf_counter()
    net = read_dlib_resnet(source)
    model = build_onnx(net)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".onnx.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, out_dir / "model.onnx")
    info = {
        "model": "dlib-resnet-v1",
        "source": str(source),
        "source_sha256": net.sha256,
        "converter_version": CONVERTER_VERSION,
        "parameters": net.parameter_count(),
        "chip_size": net.chip_size,
        "mean_rgb": list(net.mean_rgb),
        "dlib_dist_thresh": net.dist_thresh,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_default_model(force: bool = False) -> Path:
    """Path of the default model's ONNX file, converting it first if missing or stale."""
    source = dlib_source_path()
    out_dir = default_model_dir()
    sha = sha256_file(source)
    if force or not _is_current(out_dir, sha):
        convert_dlib(source, out_dir)
    return out_dir / "model.onnx"
