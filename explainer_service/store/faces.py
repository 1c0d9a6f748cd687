"""Aligned faces kept with an explain job, so that the worker does not align the pair again.

The API aligns both images at Explain time (to refuse a pair without a face before anything is
queued); :func:`faces_to_inputs` turns what it found into extra job inputs, next to the uploaded
images ``a`` and ``b``, and :func:`faces_from_inputs` reads them back in the worker. The bytes
are exact: each array (the ``(S, S, 3)`` uint8 chip, the ``(2, 3)`` float64 transform, the
``(k, 2)`` float64 landmarks) is stored raw (C order, little-endian) under a field of its own, and
one JSON field (:data:`FACES_INPUT`) holds the format, the chip and alignment options the faces
were made for, each array's dtype and shape and the rest of the
:class:`~explainer_service.results.FaceRecord` (method, faces found, face box). Nothing is
pickled. The job id stays the content hash of the uploaded images and the request: these inputs
are derived from them, never part of the hash.

The worker uses the stored faces only when they were made for the job's chip and alignment
options (:meth:`StoredFaces.matches`); otherwise, or when they are absent or damaged (InputError
from :func:`faces_from_inputs`), it aligns the uploaded images itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..results import FaceRecord
from ..spec import ChipSpec

__all__ = ["FACES_FORMAT", "FACES_INPUT", "FACE_NAMES", "StoredFaces", "faces_to_inputs", "faces_from_inputs"]

#: The JSON field that describes the stored faces (its presence means the API stored them).
FACES_INPUT = "faces"
#: Version tag of the stored layout; another tag is not read (the worker aligns instead).
FACES_FORMAT = "facexplain.faces/1"
#: The faces of a pair, in order: the job's inputs ``a`` and ``b``.
FACE_NAMES = ("a", "b")
#: Stored arrays of a face: name -> (dtype, required); the shapes are checked per name.
_ARRAYS: Mapping[str, tuple[str, bool]] = {"chip": ("|u1", True), "transform": ("<f8", True), "landmarks": ("<f8", False)}


def _field(face: str, array: str) -> str:
    return f"{FACES_INPUT}.{face}.{array}"


@dataclass(frozen=True)
class StoredFaces:
    """Both aligned faces of a job as the API found them.

    Attributes:
        chip: the chip the faces were cut for.
        align: the alignment options used (``{"face": ..., "aligned": ...}``).
        face_a, face_b: the faces, chips included.
        align_s: seconds the API spent decoding and aligning both images.
    """

    chip: ChipSpec
    align: Mapping[str, str]
    face_a: FaceRecord
    face_b: FaceRecord
    align_s: float

    def matches(self, chip: ChipSpec, align: Mapping[str, Any]) -> bool:
        """Whether these faces are what aligning the job's images for ``chip`` with ``align``
        would give (same chip kind and size, same alignment options)."""
        wanted = {str(k): str(v) for k, v in align.items()}
        return self.chip == chip and dict(self.align) == wanted


def faces_to_inputs(
    face_a: FaceRecord, face_b: FaceRecord, chip: ChipSpec, align: Mapping[str, Any], align_s: float = 0.0
) -> dict[str, bytes]:
    """The job inputs that keep ``face_a`` and ``face_b`` (both with their chip, cut for
    ``chip`` with the alignment options ``align``); InputError for a face without a chip or a
    chip of another size."""
    faces: dict[str, Any] = {}
    out: dict[str, bytes] = {}
    for name, face in zip(FACE_NAMES, (face_a, face_b), strict=True):
        if face.chip is None:
            raise InputError(f"face {name}: a stored face needs its chip")
        arrays: dict[str, Any] = {}
        for array, (dtype, _) in _ARRAYS.items():
            value = getattr(face, array)
            if value is None:
                continue
            data = np.ascontiguousarray(value, dtype=np.dtype(dtype))
            arrays[array] = {"dtype": dtype, "shape": list(data.shape)}
            out[_field(name, array)] = data.tobytes()
        if tuple(arrays["chip"]["shape"]) != (chip.size, chip.size, 3):
            raise InputError(f"face {name}: chip of shape {tuple(arrays['chip']['shape'])}, not a {chip.size} px chip")
        faces[name] = {
            "source": face.source,
            "method": face.method,
            "faces_found": int(face.faces_found),
            "face_box": None if face.face_box is None else [int(v) for v in face.face_box],
            "arrays": arrays,
            "detector": face.detector,
            "confidence": face.confidence,
            "pose": face.pose,
        }
    meta = {
        "format": FACES_FORMAT,
        "chip": {"kind": chip.kind, "size": int(chip.size)},
        "align": {str(k): str(v) for k, v in align.items()},
        "align_s": float(align_s),
        "faces": faces,
    }
    out[FACES_INPUT] = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
    return out


def _array(read: Callable[[str], bytes], name: str, array: str, spec: Any, chip: ChipSpec) -> np.ndarray:
    where = f"stored face {name} {array}"
    dtype, _ = _ARRAYS[array]
    if not isinstance(spec, dict) or spec.get("dtype") != dtype or not isinstance(spec.get("shape"), list):
        raise InputError(f"{where}: expected dtype {dtype} and a shape, got {spec!r:.120}")
    shape = tuple(spec["shape"])
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise InputError(f"{where}: malformed shape {shape!r:.80}")
    expected = {"chip": (chip.size, chip.size, 3), "transform": (2, 3)}.get(array)
    if (expected is not None and shape != expected) or (array == "landmarks" and (len(shape) != 2 or shape[1] != 2)):
        raise InputError(f"{where}: unexpected shape {shape}")
    data = read(_field(name, array))
    arr = np.frombuffer(data, dtype=np.dtype(dtype))
    if arr.size != int(np.prod(shape)):
        raise InputError(f"{where}: {len(data)} bytes do not hold a {dtype} array of shape {shape}")
    out = arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True)  # writable, native order
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise InputError(f"{where}: non-finite values")
    return out


def _detection(face: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The detector, confidence and pose of a stored face (absent in faces stored before they
    were recorded: None), checked like a summary's (``FaceRecord.from_dict``)."""
    probe = {"method": "detected", "faces_found": 0,
             **{k: face.get(k) for k in ("detector", "confidence", "pose")}}
    record = FaceRecord.from_dict(probe, "", f"stored face {name}")
    return {"detector": record.detector, "confidence": record.confidence, "pose": record.pose}


def faces_from_inputs(read: Callable[[str], bytes]) -> StoredFaces:
    """The faces stored by :func:`faces_to_inputs`, read through ``read(field) -> bytes`` (e.g.
    ``lambda f: store.get_input(job_id, f)``). InputError naming the problem when the fields are
    damaged or of another format (``read``'s own errors, e.g. NotFoundError, pass through)."""
    try:
        meta = json.loads(read(FACES_INPUT))
    except (ValueError, UnicodeDecodeError):
        raise InputError("stored faces: the description is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FACES_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(f"stored faces: format {found!r:.60}, expected {FACES_FORMAT!r}")
    try:
        chip = ChipSpec(str(meta["chip"]["kind"]), meta["chip"]["size"])
        align = meta["align"]
        if not isinstance(align, dict) or not all(isinstance(v, str) for v in align.values()):
            raise InputError(f"stored faces: alignment options {align!r:.80} are not names")
        align_s = meta["align_s"]
        if isinstance(align_s, bool) or not isinstance(align_s, (int, float)) or not align_s >= 0:
            raise InputError(f"stored faces: align_s {align_s!r:.40} is not a duration")
        records = []
        for name in FACE_NAMES:
            face = meta["faces"][name]
            arrays = face["arrays"]
            if not isinstance(arrays, dict) or set(arrays) - set(_ARRAYS):
                raise InputError(f"stored face {name}: unexpected arrays {sorted(arrays)!r:.80}")
            values = {
                array: _array(read, name, array, arrays[array], chip) if array in arrays else None
                for array, (_, required) in _ARRAYS.items()
                if required or array in arrays
            }
            missing = [a for a, (_, required) in _ARRAYS.items() if required and values.get(a) is None]
            if missing:
                raise InputError(f"stored face {name}: missing {', '.join(missing)}")
            box = face["face_box"]
            if box is not None and (not isinstance(box, list) or len(box) != 4
                                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
                raise InputError(f"stored face {name}: face_box {box!r:.80} is not four integers")
            faces_found = face["faces_found"]
            if isinstance(faces_found, bool) or not isinstance(faces_found, int) or faces_found < 0:
                raise InputError(f"stored face {name}: faces_found {faces_found!r:.40} is not a count")
            records.append(FaceRecord(
                source=str(face["source"]),
                method=str(face["method"]),
                faces_found=faces_found,
                face_box=None if box is None else (box[0], box[1], box[2], box[3]),
                landmarks=values.get("landmarks"),
                transform=values["transform"],
                chip=values["chip"],
                **_detection(face, name),
            ))
    except (KeyError, TypeError) as e:
        raise InputError(f"stored faces: the description lacks {e}") from None
    return StoredFaces(chip=chip, align=dict(align), face_a=records[0], face_b=records[1], align_s=float(align_s))
