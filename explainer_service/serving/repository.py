"""The Triton model repository: one folder per face model, and the one source of truth for its configs.

Each model folder holds ``facexplain.json`` (its :class:`ModelRecord`: family, chip, embedding
size, threshold, provenance), ``1/model.onnx`` (every model takes float32 RGB NCHW pixels in
[0, 255] named ``image`` and returns ``embedding``: its preprocessing is inside the graph) and
``config.pbtxt``. From the record, :func:`render_config` writes both variants:

- ``gpu``: the Triton container's native onnxruntime backend on a GPU (optionally TensorRT), the
  ``config.pbtxt`` kept in ``model_repository/`` and mounted by ``docker-compose.yml``;
- ``embedded``: the Python backend running onnxruntime on the CPU (the only backend the pip-installed
  tritonserver has), generated into a separate folder by :func:`build_embedded_repository`.

Slots (``arcface_r50``, ``magface_r50``, ``adaface_ir50``) are models whose weights the user
imports; until then they have a ``config.pbtxt`` but no record and no ONNX file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import model_repository_dir
from ..errors import InputError, ModelNotReadyError
from ..spec import ChipSpec, ModelSpec

__all__ = [
    "ModelRecord",
    "Slot",
    "SLOTS",
    "BatchingConfig",
    "triton_name",
    "model_dir",
    "onnx_path",
    "read_record",
    "write_record",
    "list_records",
    "render_config",
    "write_gpu_configs",
    "build_embedded_repository",
    "write_corrrise_model",
    "CORRRISE_MODEL",
    "RECORD_FILE",
]

#: The server-side CorrRISE scoring model (masks generated inside Triton, faces embedded by BLS).
CORRRISE_MODEL = "corrrise_scores"
_CORRRISE_CONFIG = f"""name: "{CORRRISE_MODEL}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "image" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] }},
  {{ name: "reference" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "request" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "scores" data_type: TYPE_FP64 dims: [ -1 ] }}
]
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
"""

RECORD_FILE = "facexplain.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def triton_name(name: str) -> str:
    """The Triton model (folder) name of a facexplain model name: '-' becomes '_'."""
    if not _NAME.match(name):
        raise InputError(
            f"model name {name!r} must be 1-64 characters of a-z, 0-9, '-' and '_' (starting with a letter or digit)"
        )
    return name.replace("-", "_")


@dataclass(frozen=True)
class BatchingConfig:
    """Triton batching settings of a model (chosen by measurement, docs/benchmarks.md)."""

    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    dynamic: bool = True


@dataclass(frozen=True)
class ModelRecord:
    """What facexplain knows of a model in the repository (``facexplain.json``)."""

    name: str
    family: str
    chip: ChipSpec
    embedding_dim: int
    threshold: float | None = None
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    batching: BatchingConfig = field(default_factory=BatchingConfig)

    @property
    def triton_name(self) -> str:
        return triton_name(self.name)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            chip=self.chip,
            embedding_dim=self.embedding_dim,
            threshold=self.threshold,
            description=self.description,
        )

    def to_json(self) -> dict[str, Any]:
        """The persisted record; batching is not stored (the measured project default applies)."""
        d = asdict(self)
        d["chip"] = {"kind": self.chip.kind, "size": self.chip.size}
        del d["batching"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelRecord":
        return cls(
            name=d["name"],
            family=d["family"],
            chip=ChipSpec(d["chip"]["kind"], int(d["chip"]["size"])),
            embedding_dim=int(d["embedding_dim"]),
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
            description=d.get("description", ""),
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


def model_dir(name: str, repository: Path | None = None) -> Path:
    return (repository or model_repository_dir()) / triton_name(name)


def onnx_path(name: str, repository: Path | None = None) -> Path:
    return model_dir(name, repository) / "1" / "model.onnx"


def read_record(name: str, repository: Path | None = None) -> ModelRecord | None:
    """The record of a model, or None when the repository has none for that name."""
    path = model_dir(name, repository) / RECORD_FILE
    try:
        return ModelRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelNotReadyError(f"{path}: unreadable model record ({e})") from None


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_record(record: ModelRecord, repository: Path | None = None) -> Path:
    """Write ``facexplain.json`` and the GPU ``config.pbtxt`` of a model."""
    folder = model_dir(record.name, repository)
    _atomic_text(folder / RECORD_FILE, json.dumps(record.to_json(), indent=2) + "\n")
    _atomic_text(folder / "config.pbtxt", render_config(record, "gpu"))
    return folder


def list_records(repository: Path | None = None) -> list[ModelRecord]:
    """Every model with a record, sorted by name."""
    repo = repository or model_repository_dir()
    out = []
    if repo.is_dir():
        for folder in sorted(p for p in repo.iterdir() if (p / RECORD_FILE).is_file()):
            record = ModelRecord.from_json(json.loads((folder / RECORD_FILE).read_text()))
            out.append(record)
    return out


def _io_block(record: ModelRecord) -> str:
    s = record.chip.size
    return (
        "input [\n"
        f'  {{ name: "image" data_type: TYPE_FP32 dims: [ 3, {s}, {s} ] }}\n'
        "]\n"
        "output [\n"
        f'  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {record.embedding_dim} ] }}\n'
        "]\n"
    )


def _batching_block(b: BatchingConfig) -> str:
    if not b.dynamic:
        return ""
    preferred = ", ".join(str(v) for v in b.preferred_batch_sizes)
    return (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {b.max_queue_delay_us}\n"
        "}\n"
    )


def render_config(
    record: ModelRecord | Slot,
    variant: str,
    *,
    onnx_file: Path | None = None,
    intra_op_threads: int = 0,
    tensorrt: str | None = None,
) -> str:
    """``config.pbtxt`` text of a model for the ``gpu`` or ``embedded`` variant.

    ``tensorrt`` ("fp32" or "fp16") adds TensorRT as the GPU execution accelerator of onnxruntime;
    None (default) keeps plain CUDA onnxruntime. ``onnx_file`` is required for ``embedded``.
    """
    if isinstance(record, Slot):
        # a slot's shape is the ArcFace family's: 112x112 RGB in, 512-d out
        record = ModelRecord(record.name, record.family, ChipSpec("arcface", 112), 512, description=record.description)
    b = record.batching
    head = f'name: "{record.triton_name}"\n'
    if variant == "gpu":
        text = head + 'backend: "onnxruntime"\n' + f"max_batch_size: {b.max_batch_size}\n"
        text += _io_block(record) + _batching_block(b)
        text += f"instance_group [ {{ count: {b.instances} kind: KIND_GPU }} ]\n"
        if tensorrt is not None:
            if tensorrt not in ("fp32", "fp16"):
                raise InputError(f"tensorrt precision must be fp32 or fp16, got {tensorrt!r}")
            text += (
                "optimization { execution_accelerators { gpu_execution_accelerator: [ {\n"
                '  name: "tensorrt"\n'
                f'  parameters {{ key: "precision_mode" value: "{tensorrt.upper()}" }}\n'
                '  parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
                "} ] } }\n"
            )
        return text
    if variant == "embedded":
        if onnx_file is None:
            raise InputError("the embedded variant needs the ONNX file's path")
        text = head + 'backend: "python"\n' + f"max_batch_size: {b.max_batch_size}\n"
        text += _io_block(record) + _batching_block(b)
        text += f"instance_group [ {{ count: {b.instances} kind: KIND_CPU }} ]\n"
        text += (
            f'parameters {{ key: "onnx_file" value: {{ string_value: "{onnx_file}" }} }}\n'
            f'parameters {{ key: "intra_op_threads" value: {{ string_value: "{intra_op_threads}" }} }}\n'
            'parameters { key: "allow_spinning" value: { string_value: "0" } }\n'
        )
        return text
    raise InputError(f"config variant must be gpu or embedded, got {variant!r}")


def write_corrrise_model(folder: Path) -> None:
    """Write the ``corrrise_scores`` model into ``folder``: its config, its ``model.py`` and a copy
    of the mask generator it shares with the client (the same code, so the same masks)."""
    pkg = Path(__file__).resolve().parents[1]
    version = folder / "1"
    copy = version / "facexplain_masks"  # its own name: the server's path may also hold the package
    copy.mkdir(parents=True, exist_ok=True)
    _atomic_text(folder / "config.pbtxt", _CORRRISE_CONFIG)
    shutil.copyfile(Path(__file__).with_name("corrrise_backend_model.py"), version / "model.py")
    (copy / "__init__.py").write_text('"""A copy of facexplain\'s mask generator (explainer_service/masks.py)."""\n')
    for module in ("masks.py", "errors.py"):
        shutil.copyfile(pkg / module, copy / module)


def write_gpu_configs(repository: Path | None = None, tensorrt: str | None = None) -> list[Path]:
    """(Re)write the GPU ``config.pbtxt`` of every recorded model and every slot, and the
    ``corrrise_scores`` model; return the config paths."""
    repo = repository or model_repository_dir()
    write_corrrise_model(repo / CORRRISE_MODEL)
    written = [repo / CORRRISE_MODEL / "config.pbtxt"]
    recorded = {r.triton_name: r for r in list_records(repo)}
    for slot in SLOTS:
        if slot.name not in recorded:
            path = repo / slot.name / "config.pbtxt"
            _atomic_text(path, render_config(slot, "gpu", tensorrt=tensorrt))
            written.append(path)
    for record in recorded.values():
        path = model_dir(record.name, repo) / "config.pbtxt"
        _atomic_text(path, render_config(record, "gpu", tensorrt=tensorrt))
        written.append(path)
    return written


def build_embedded_repository(
    dest: Path,
    repository: Path | None = None,
    *,
    intra_op_threads: int = 0,
    batching: BatchingConfig | None = None,
) -> list[str]:
    """Generate the embedded (Python backend, CPU) repository in ``dest`` for every model whose ONNX
    file exists; return the Triton names served. ``dest`` is replaced as a whole. ``batching``
    overrides every model's batching settings (benchmarks)."""
    repo = repository or model_repository_dir()
    shim = Path(__file__).with_name("python_backend_model.py")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    served = []
    for record in list_records(repo):
        onnx = onnx_path(record.name, repo)
        if not onnx.is_file():
            continue
        folder = tmp / record.triton_name
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(shim, folder / "1" / "model.py")
        if batching is not None:
            record = replace(record, batching=batching)
        text = render_config(record, "embedded", onnx_file=onnx.resolve(), intra_op_threads=intra_op_threads)
        (folder / "config.pbtxt").write_text(text)
        served.append(record.triton_name)
    if served:
        write_corrrise_model(tmp / CORRRISE_MODEL)
        served.append(CORRRISE_MODEL)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return served
