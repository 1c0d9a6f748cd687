"""``facexplain models import``: bring a user's face model into the Triton model repository.

Official checkpoints of the paper's families (ArcFace ``backbone.pth``, MagFace ``.pth``, AdaFace
``.ckpt``) are loaded into their PyTorch backbones and exported to ONNX with their input convention
in front; any ONNX face model (e.g. insightface's, or the MobileFaceNets of ../shared) is wrapped as
is. Either way the result takes ``image`` RGB 0..255 and returns ``embedding``; it is checked
against its source (cosine >= 0.9999 on random chips) before it replaces anything, and its record
keeps the source file's SHA-256.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelFormatError
from ..fileio import atomic_write_bytes
from ..spec import ChipSpec
from .registry import DEFAULT_MODEL
from .store import ModelRecord, onnx_path, read_record, triton_name, write_record

__all__ = ["IMPORT_FAMILIES", "ImportResult", "import_model", "FIDELITY_MIN_COSINE"]

IMPORT_FAMILIES = ("arcface", "magface", "adaface", "onnx")
FIDELITY_MIN_COSINE = 0.9999


@dataclass(frozen=True)
class ImportResult:
    name: str
    path: Path
    embedding_dim: int
    chip: int
    min_cosine: float
    sha256: str
    unchanged: bool = False


def _convention(family: str, preset: str | None, channels: str | None, mean: Any, std: Any) -> Any:
    from .families import PRESETS, InputConvention

    if channels or mean is not None or std is not None:
        if not (channels and mean is not None and std is not None):
            raise InputError("--channels, --mean and --std go together (or use --preset)")
        return InputConvention(channels, _triple(mean, "--mean"), _triple(std, "--std"))
    name = preset or (family if family in PRESETS else None)
    if name is None:
        raise InputError(
            "an ONNX model needs its input convention: --preset "
            f"{'|'.join(PRESETS)} or --channels/--mean/--std"
        )
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def _triple(value: Any, option: str) -> tuple[float, float, float]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{option} must be one number or three comma-separated numbers, got {value!r}") from None
    if len(nums) == 1:
        nums *= 3
    if len(nums) != 3:
        raise InputError(f"{option} must be one number or three comma-separated numbers, got {value!r}")
    return (nums[0], nums[1], nums[2])


def _run_onnx(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x}
    return np.asarray(sess.run(None, feeds)[0], np.float64)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.min())


def _probe(chip: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, 3, chip, chip)).astype(np.float32)


def _from_checkpoint(family: str, path: Path, arch: str | None, convention: Any) -> tuple[bytes, dict[str, Any], float]:
    try:
        import torch
    except ImportError:
        raise InputError(f"importing a {family} checkpoint needs PyTorch (pip install 'facexplain[torch]')") from None
    from .families import DEFAULT_CHIP, export_onnx, load_official

    module, info = load_official(family, path, arch=arch)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        export_onnx(module, convention, out, chip=DEFAULT_CHIP)
        data = out.read_bytes()
    x = _probe(DEFAULT_CHIP)
    with torch.no_grad():
        ref = module(torch.from_numpy(convention.to_network(x))).double().numpy()
    cos = _min_cosine(_run_onnx(data, x), ref)
    info["chip"] = DEFAULT_CHIP
    return data, info, cos


def _from_onnx(path: Path, convention: Any) -> tuple[bytes, dict[str, Any], float]:
    import onnx

    from .convert import sha256_file
    from .onnx_wrap import onnx_input_info, wrap_onnx

    wrapped = wrap_onnx(path, convention)
    info = onnx_input_info(wrapped)
    data = wrapped.SerializeToString()
    chip = int(info["chip"])
    x = _probe(chip)
    original = onnx.load(str(path))
    ref = _run_onnx(original.SerializeToString(), convention.to_network(x).astype(np.float32))
    out = _run_onnx(data, x)
    if out.ndim != 2 or out.shape[0] != len(x):
        raise ModelFormatError(f"{path}: output of shape {out.shape} for {len(x)} images; expected (N, D)")
    cos = _min_cosine(out, ref)
    return data, {
        "family": "onnx",
        "embedding_dim": int(out.shape[1]),
        "chip": chip,
        "sha256": sha256_file(path),
        "path": str(path),
    }, cos


def import_model(
    path: str | Path,
    *,
    name: str,
    family: str,
    arch: str | None = None,
    preset: str | None = None,
    channels: str | None = None,
    mean: Any = None,
    std: Any = None,
    threshold: float | None = None,
    force: bool = False,
    repository: Path | None = None,
) -> ImportResult:
    """Check, convert and place a model (its ONNX file and record; Triton's ``config.pbtxt`` is
    ``serving.repository.write_gpu_configs``'s); see the module docstring. Raises InputError or
    ModelFormatError with a message naming the file and the problem; nothing is replaced then."""
    path = Path(path)
    if family not in IMPORT_FAMILIES:
        raise InputError(f"--family must be one of {', '.join(IMPORT_FAMILIES)}, got {family!r}")
    triton_name(name)  # validates the name
    if name in (DEFAULT_MODEL, triton_name(DEFAULT_MODEL)):
        raise InputError(f"{name!r} is the built-in default model; choose another --name")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InputError(f"--threshold is a cosine in [-1, 1], got {threshold}")
    convention = _convention(family, preset, channels, mean, std)
    from .convert import sha256_file

    sha = sha256_file(path)
    old = read_record(name, repository)
    target = onnx_path(name, repository)
    if old is not None and old.source.get("sha256") == sha and target.is_file() and threshold is None:
        return ImportResult(name, target, old.embedding_dim, old.chip.size, 1.0, sha, unchanged=True)
    if old is not None and old.source.get("sha256") != sha and not force:
        raise InputError(
            f"model {name!r} already holds another file ({old.source.get('path')}); use --force to replace it"
        )
    if family == "onnx":
        data, info, cos = _from_onnx(path, convention)
    else:
        data, info, cos = _from_checkpoint(family, path, arch, convention)
    if not cos >= FIDELITY_MIN_COSINE:
        raise ModelFormatError(
            f"{path}: the converted model disagrees with its source (min cosine {cos:.6f} < {FIDELITY_MIN_COSINE})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    keep_threshold = old.threshold if (old is not None and threshold is None) else threshold
    record = ModelRecord(
        name=name,
        family=info["family"],
        chip=ChipSpec("arcface", int(info["chip"])),
        embedding_dim=int(info["embedding_dim"]),
        threshold=keep_threshold,
        description=f"{info['family']} {info.get('arch', '')} imported from {path.name}".replace("  ", " "),
        source={
            "path": str(path.resolve()),
            "sha256": info["sha256"],
            "family": family,
            "arch": info.get("arch"),
            "convention": convention.to_dict(),
            "min_cosine_vs_source": round(cos, 8),
        },
    )
    write_record(record, repository)
    return ImportResult(name, target, record.embedding_dim, record.chip.size, cos, info["sha256"])
