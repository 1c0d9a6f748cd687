"""Triton's side of the model repository: the one source of truth for the models' configs.

Each model folder holds its record and ONNX file (``models.store``: ``facexplain.json``,
``1/model.onnx``) and ``config.pbtxt``. From the record, :func:`render_config` writes both variants:

- ``gpu``: the Triton container's native onnxruntime backend on a GPU (optionally TensorRT), the
  ``config.pbtxt`` kept in ``model_repository/`` and mounted by ``docker-compose.yml``;
- ``embedded``: the Python backend running onnxruntime on the CPU (the only backend the pip-installed
  tritonserver has), generated into a separate folder by :func:`build_embedded_repository`.

The server-side CorrRISE scorer ``corrrise_scores`` (:func:`render_corrrise_config`) has the same two
variants: KIND_GPU instances that make masks and masked batches on the GPU when the Triton image's
Python has torch (``docker/triton/Dockerfile``), KIND_CPU instances on the NumPy path.

Slots (``arcface_r50``, ``magface_r50``, ``adaface_ir50``) are models whose weights the user
imports; until then they have a ``config.pbtxt`` but no record and no ONNX file. Batching
(:class:`BatchingConfig`) is Triton's and not part of the record: the measured project default
applies unless a caller (a benchmark) passes another.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_text
from ..models.store import SLOTS, ModelRecord, Slot, list_records, model_dir, onnx_path
from ..settings import get_settings
from ..spec import ChipSpec

__all__ = [
    "BatchingConfig",
    "render_config",
    "write_gpu_configs",
    "build_embedded_repository",
    "write_corrrise_model",
    "render_corrrise_config",
    "CORRRISE_MASK_ENGINES",
    "CORRRISE_MODEL",
]

#: The server-side CorrRISE scoring model (masks generated inside Triton, faces embedded by BLS).
CORRRISE_MODEL = "corrrise_scores"
#: ``mask_engine`` values of ``corrrise_scores`` (see ``corrrise_backend_model.choose_engine``).
CORRRISE_MASK_ENGINES = ("auto", "torch", "numpy")


def render_corrrise_config(
    variant: str, *, mask_engine: str = "auto", mask_device: str | None = None, instances: int = 2
) -> str:
    """``config.pbtxt`` text of ``corrrise_scores`` for the ``gpu`` variant (KIND_GPU instances:
    masks, masked batches and cosines on the GPU when the image's Python has torch with CUDA) or
    the ``embedded`` one (KIND_CPU: the NumPy path unless ``mask_engine`` is ``torch``).
    ``mask_device`` (e.g. ``"cpu"``, ``"cuda:1"``) overrides the instance's device for torch."""
    if variant not in ("gpu", "embedded"):
        raise InputError(f"config variant must be gpu or embedded, got {variant!r}")
    if mask_engine not in CORRRISE_MASK_ENGINES:
        raise InputError(f"mask_engine must be one of {', '.join(CORRRISE_MASK_ENGINES)}, got {mask_engine!r}")
    if not isinstance(instances, int) or instances < 1:
        raise InputError(f"instances must be a positive integer, got {instances!r}")
    kind = "KIND_GPU" if variant == "gpu" else "KIND_CPU"
    text = f"""name: "{CORRRISE_MODEL}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "image" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] }},
  {{ name: "reference" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "request" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "scores" data_type: TYPE_FP64 dims: [ -1 ] }},
  {{ name: "engine" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ count: {instances} kind: {kind} }} ]
parameters {{ key: "mask_engine" value: {{ string_value: "{mask_engine}" }} }}
"""
    if mask_device is not None:
        text += f'parameters {{ key: "mask_device" value: {{ string_value: "{mask_device}" }} }}\n'
    return text


@dataclass(frozen=True)
class BatchingConfig:
    """Triton batching settings of a model (chosen by measurement, docs/benchmarks.md)."""

    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    dynamic: bool = True


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
    batching: BatchingConfig | None = None,
) -> str:
    """``config.pbtxt`` text of a model for the ``gpu`` or ``embedded`` variant.

    ``tensorrt`` ("fp32" or "fp16") adds TensorRT as the GPU execution accelerator of onnxruntime;
    None (default) keeps plain CUDA onnxruntime. ``onnx_file`` is required for ``embedded``.
    ``batching`` defaults to the measured project default (:class:`BatchingConfig`).
    """
    if isinstance(record, Slot):
        # a slot's shape is the ArcFace family's: 112x112 RGB in, 512-d out
        record = ModelRecord(record.name, record.family, ChipSpec("arcface", 112), 512, description=record.description)
    b = batching if batching is not None else BatchingConfig()
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


def write_corrrise_model(
    folder: Path, variant: str = "gpu", *, mask_engine: str = "auto", mask_device: str | None = None
) -> None:
    """Write the ``corrrise_scores`` model into ``folder``: its config (:func:`render_corrrise_config`
    of ``variant``), its ``model.py`` and a copy of the mask generators it shares with the client
    and the device engine (the same code, so the same masks)."""
    text = render_corrrise_config(variant, mask_engine=mask_engine, mask_device=mask_device)
    pkg = Path(__file__).resolve().parents[1]
    version = folder / "1"
    copy = version / "facexplain_masks"  # its own name: the server's path may also hold the package
    copy.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.pbtxt", text)
    shutil.copyfile(Path(__file__).with_name("corrrise_backend_model.py"), version / "model.py")
    (copy / "__init__.py").write_text(
        '"""A copy of facexplain\'s mask generators (explainer_service/masks.py, masks_torch.py)."""\n'
    )
    for module in ("masks.py", "masks_torch.py", "errors.py"):
        shutil.copyfile(pkg / module, copy / module)


def write_gpu_configs(repository: Path | None = None, tensorrt: str | None = None) -> list[Path]:
    """(Re)write the GPU ``config.pbtxt`` of every recorded model and every slot, and the
    ``corrrise_scores`` model; return the config paths."""
    repo = repository if repository is not None else get_settings().model_repository
    write_corrrise_model(repo / CORRRISE_MODEL, "gpu")
    written = [repo / CORRRISE_MODEL / "config.pbtxt"]
    recorded = {r.triton_name: r for r in list_records(repo)}
    for slot in SLOTS:
        if slot.name not in recorded:
            path = repo / slot.name / "config.pbtxt"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, render_config(slot, "gpu", tensorrt=tensorrt))
            written.append(path)
    for record in recorded.values():
        path = model_dir(record.name, repo) / "config.pbtxt"
        atomic_write_text(path, render_config(record, "gpu", tensorrt=tensorrt))
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
    repo = repository if repository is not None else get_settings().model_repository
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
        text = render_config(
            record, "embedded", onnx_file=onnx.resolve(), intra_op_threads=intra_op_threads, batching=batching
        )
        (folder / "config.pbtxt").write_text(text)
        served.append(record.triton_name)
    if served:
        write_corrrise_model(tmp / CORRRISE_MODEL, "embedded")
        served.append(CORRRISE_MODEL)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return served
