"""Library values <-> API messages (``facexplain.v1``): pure functions, no I/O, no server.

The servicer, the workers' result writer, the typed client and the dashboard all convert through
here, so a value means the same thing on both sides of the wire:

- arrays: :func:`array_to_message` / :func:`array_from_message` (``TypedArray``: dtype enum,
  shape, little-endian C-order bytes; exact, float32 maps bit-for-bit). Unknown dtypes, shapes
  that do not match the bytes, or arrays that are not what the caller expects: InputError.
- parameters: :func:`param_to_message` / :func:`param_from_message` (one value),
  :func:`params_to_message` / :func:`params_from_message` (a result's, ordered) and :func:`request_params` (a request's
  ``map<string, ParamValue>`` checked against the method's declared types by
  ``methods.registry.parse_params``, exactly as the CLI's ``--param NAME=VALUE``).
- results: :func:`pair_result_to_message` / :func:`pair_result_from_message`
  (``results.PairResult``, maps and chips included or not), :func:`decision_to_message`.
- models and methods: :func:`model_info_to_message` (a ``ModelRecord``/``ModelSpec``/
  ``results.ModelInfo``), :func:`model_info_from_message`, :func:`method_info_to_message`,
  :func:`method_info_from_message`, :func:`list_methods_response`.
- audits: :func:`audit_row_to_message` / :func:`audit_row_from_message`,
  :func:`audit_summary_to_message` / :func:`audit_summary_from_message`, :func:`mean_ci_to_message` /
  :func:`mean_ci_from_message`, :func:`mean_curve_to_message` / :func:`mean_curve_from_message`
  (the plain JSON rows and summary ``worker.audit`` stores; read back in the same shapes, a
  metric's per-pair curve as its ``{"auc": ...}`` only, a summary's mean curve under its metric's
  ``curve``, a kept ``PairResult`` under its method's ``result``, the dropped pairs as
  ``{index, name, error}``).
- errors and jobs: :func:`error_to_message` (a job's ``JobError``: the status name of
  ``errors.grpc_status``), :func:`job_to_message` (the store's ``JobRecord`` as a ``Job``).

Messages go out as the generated classes of :mod:`explainer_service.api.pb`; anything read from a
message is validated (an InputError names the field), because messages come from the network.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FacexplainError, InputError, grpc_status, is_retryable
from ..methods.registry import MethodInfo, MethodParam, list_methods, parse_params
from ..models.store import ModelRecord
from ..results import FaceRecord, ModelInfo, PairResult, Timing
from ..spec import ChipSpec, ModelSpec
from ..uncertainty import ARRAY_KEYS as UNCERTAINTY_ARRAYS
from ..uncertainty import Uncertainty
from .pb import audit_pb2, service_pb2, types_pb2

if TYPE_CHECKING:  # the store is the server's: clients convert without importing it (or redis)
    from ..store.records import JobRecord

__all__ = [
    "DTYPES",
    "MAX_NDIM",
    "array_to_message",
    "array_from_message",
    "param_to_message",
    "param_from_message",
    "params_to_message",
    "params_from_message",
    "request_params",
    "explain_options",
    "uncertainty_options",
    "decision_to_message",
    "decision_from_message",
    "face_to_message",
    "face_from_message",
    "pair_result_to_message",
    "pair_result_from_message",
    "model_info_to_message",
    "model_info_from_message",
    "method_info_to_message",
    "method_info_from_message",
    "list_methods_response",
    "error_to_message",
    "job_to_message",
    "JOB_STATES",
    "JOB_KINDS",
    "mean_ci_to_message",
    "mean_ci_from_message",
    "mean_curve_to_message",
    "mean_curve_from_message",
    "audit_row_to_message",
    "audit_row_from_message",
    "audit_summary_to_message",
    "audit_summary_from_message",
]

#: The dtypes a TypedArray carries: enum value -> numpy dtype (little-endian).
DTYPES: Mapping[types_pb2.DType, np.dtype[Any]] = {
    types_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    types_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    types_pb2.DTYPE_UINT8: np.dtype("|u1"),
    types_pb2.DTYPE_INT32: np.dtype("<i4"),
    types_pb2.DTYPE_INT64: np.dtype("<i8"),
}
_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}
#: More dimensions than this is refused (no array of the API has more than 3).
MAX_NDIM = 8
_INT64 = (-(2**63), 2**63 - 1)

_DECISIONS = {
    "match": types_pb2.DECISION_MATCH,
    "non-match": types_pb2.DECISION_NON_MATCH,
    "unknown": types_pb2.DECISION_UNKNOWN,
}


# -- arrays ---------------------------------------------------------------------------------------


def array_to_message(array: np.ndarray, *, where: str = "array") -> types_pb2.TypedArray:
    """``array`` as a TypedArray: its exact values, little-endian, C order. InputError for a
    dtype the API does not carry (see :data:`DTYPES`) or more than :data:`MAX_NDIM` dimensions."""
    arr = np.asarray(array)
    code = _BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise InputError(f"{where}: dtype {arr.dtype} is not one of float32, float64, uint8, int32, int64")
    if arr.ndim > MAX_NDIM:
        raise InputError(f"{where}: {arr.ndim} dimensions (at most {MAX_NDIM})")
    data = np.ascontiguousarray(arr, DTYPES[code]).tobytes()
    return types_pb2.TypedArray(dtype=code, shape=[int(n) for n in arr.shape], data=data)


def array_from_message(
    msg: types_pb2.TypedArray,
    *,
    where: str = "array",
    dtype: Any = None,
    shape: tuple[int | None, ...] | None = None,
) -> np.ndarray:
    """The array a TypedArray holds (a writable copy, native byte order).

    ``dtype`` (e.g. ``np.float32``) and ``shape`` (None entries match any size) are what the
    caller expects. InputError naming ``where`` for an unknown dtype, a negative dimension, more
    than :data:`MAX_NDIM` dimensions, a byte count that does not match the shape, or an array that
    is not of the expected dtype and shape.
    """
    dt = DTYPES.get(msg.dtype)
    if dt is None:
        names = ", ".join(types_pb2.DType.Name(c) for c in DTYPES)
        raise InputError(f"{where}: dtype {int(msg.dtype)} is not one of {names}")
    dims = tuple(int(n) for n in msg.shape)
    if len(dims) > MAX_NDIM:
        raise InputError(f"{where}: {len(dims)} dimensions (at most {MAX_NDIM})")
    if any(n < 0 for n in dims):
        raise InputError(f"{where}: negative dimension in shape {list(dims)}")
    count = math.prod(dims)
    if count * dt.itemsize != len(msg.data):
        raise InputError(
            f"{where}: {len(msg.data)} bytes do not hold shape {list(dims)} of {dt.name} "
            f"({count * dt.itemsize} bytes expected)"
        )
    if dtype is not None and np.dtype(dtype) != dt.newbyteorder("="):
        raise InputError(f"{where}: expected {np.dtype(dtype).name}, got {dt.name}")
    if shape is not None and (
        len(shape) != len(dims) or any(want is not None and want != got for want, got in zip(shape, dims, strict=True))
    ):
        want = "(" + ", ".join("*" if n is None else str(n) for n in shape) + ")"
        raise InputError(f"{where}: expected shape {want}, got {tuple(dims)}")
    return np.frombuffer(msg.data, dt).reshape(dims).astype(dt.newbyteorder("="), copy=True)


def _opt_array(
    holder: Any, field: str, where: str, dtype: Any, shape: tuple[int | None, ...]
) -> np.ndarray | None:
    if not holder.HasField(field):
        return None
    return array_from_message(getattr(holder, field), where=f"{where}.{field}", dtype=dtype, shape=shape)


# -- parameters -----------------------------------------------------------------------------------


def param_to_message(value: Any, *, where: str = "param") -> types_pb2.ParamValue:
    """A parameter value (None, bool, int, float, str, or a list/tuple of those) as a ParamValue.
    InputError for anything else (a dict, an object) or an int outside int64."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return types_pb2.ParamValue(null_value=True)
    if isinstance(value, bool):
        return types_pb2.ParamValue(bool_value=value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise InputError(f"{where}: {value} does not fit a 64-bit integer")
        return types_pb2.ParamValue(int_value=value)
    if isinstance(value, float):
        return types_pb2.ParamValue(double_value=value)
    if isinstance(value, str):
        return types_pb2.ParamValue(string_value=value)
    if isinstance(value, (list, tuple)):
        items = [param_to_message(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
        return types_pb2.ParamValue(list_value=types_pb2.ParamList(values=items))
    raise InputError(f"{where}: {type(value).__name__} is not a parameter value (null, bool, number, text or a list)")


def param_from_message(msg: types_pb2.ParamValue, *, where: str = "param") -> Any:
    """The Python value of a ParamValue (a list for ``list_value``; ``text`` as its string).
    InputError for a value with no kind set."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InputError(f"{where}: no value set")
    if kind == "null_value":
        return None
    if kind == "list_value":
        return [param_from_message(v, where=f"{where}[{i}]") for i, v in enumerate(msg.list_value.values)]
    return getattr(msg, kind)


def params_to_message(params: Mapping[str, Any], *, where: str = "params") -> list[types_pb2.Param]:
    """A result's parameters (JSON values) as ordered ``Param`` messages, in ``params``' order."""
    return [types_pb2.Param(name=str(k), value=param_to_message(v, where=f"{where}.{k}")) for k, v in params.items()]


def params_from_message(params: Iterable[types_pb2.Param], *, where: str = "params") -> dict[str, Any]:
    """Ordered ``Param`` messages as plain values, in their order (lists stay lists); InputError
    for a name given twice or a value with no kind set."""
    out: dict[str, Any] = {}
    for p in params:
        if p.name in out:
            raise InputError(f"{where}: {p.name!r} given twice")
        out[p.name] = param_from_message(p.value, where=f"{where}.{p.name}")
    return out


def _as_text(msg: types_pb2.ParamValue, where: str) -> str:
    """A request's value as the CLI's ``--param`` text, so that one parser checks every type."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InputError(f"{where}: no value set")
    if kind in ("text", "string_value"):
        return str(getattr(msg, kind))
    if kind == "null_value":
        return "none"
    if kind == "bool_value":
        return "true" if msg.bool_value else "false"
    if kind == "int_value":
        return str(msg.int_value)
    if kind == "double_value":
        return repr(float(msg.double_value))
    items = msg.list_value.values
    if any(v.WhichOneof("kind") != "int_value" for v in items):
        raise InputError(f"{where}: a list parameter holds integers only")
    if not items:
        raise InputError(f"{where}: an empty list")
    return ",".join(str(v.int_value) for v in items)


def request_params(method: str, params: Mapping[str, types_pb2.ParamValue]) -> dict[str, Any]:
    """A request's parameters for method ``method``, as values of their declared types.

    Every value goes through ``methods.registry.parse_params`` (typed values as the text the CLI
    would take: an int ``64`` as ``"64"``, a list of ints as ``"7,14,28"``, null as ``"none"``),
    so the API accepts exactly what ``--param NAME=VALUE`` accepts: InputError for an unknown
    method or parameter, a value of the wrong type (a double for an int parameter, a bool for a
    number...). Ranges and ``Settings.limits`` are :func:`~explainer_service.methods.registry.check_params`'s
    (the caller knows the model's chip).
    """
    texts = {key: _as_text(params[key], f"params.{key}") for key in sorted(params)}
    return parse_params(method, texts)


def explain_options(request: Any) -> tuple[Any, Any]:
    """An ExplainRequest's early stopping (``worker.plan.Until``, None when ``until_agreement`` is
    0) and uncertainty options (``uncertainty.UncertaintyOptions``, None when both are 0, the
    defaults); InputError naming the field for a value out of range or ``max_masks`` without
    ``until_agreement`` (or the reverse)."""
    import math

    from ..worker.plan import Until

    agreement, max_masks = float(request.until_agreement), int(request.max_masks)
    until = None
    if agreement == 0.0:
        if max_masks:
            raise InputError("max_masks needs until_agreement (early stopping)")
    else:
        if not (math.isfinite(agreement) and 0.0 < agreement < 1.0):
            raise InputError(f"until_agreement must be in (0, 1), got {agreement!r}")
        if max_masks == 0:
            raise InputError("until_agreement needs max_masks (the most masks to draw)")
        if max_masks < 0:
            raise InputError(f"max_masks must be a positive integer, got {max_masks}")
        until = Until(agreement, max_masks)
    return until, uncertainty_options(request)


def uncertainty_options(request: Any) -> Any:
    """The ``fdr_q``/``ci_level`` of a request (ExplainRequest, SubmitAuditRequest) as
    ``uncertainty.UncertaintyOptions`` (None when both are 0, the defaults; one 0 takes its
    default); InputError naming the field for a value outside (0, 1)."""
    import math

    from ..uncertainty import UncertaintyOptions

    q, level = float(request.fdr_q), float(request.ci_level)
    for name, value in (("fdr_q", q), ("ci_level", level)):
        if value != 0.0 and not (math.isfinite(value) and 0.0 < value < 1.0):
            raise InputError(f"{name} must be in (0, 1), got {value!r}")
    if not (q or level):
        return None
    defaults = UncertaintyOptions()
    return UncertaintyOptions(q=q or defaults.q, level=level or defaults.level)


# -- decisions, alignment, results -----------------------------------------------------------------


def decision_to_message(decision: str) -> types_pb2.Decision:
    """``"match"``/``"non-match"``/``"unknown"`` as the Decision enum (InputError otherwise)."""
    try:
        return _DECISIONS[decision]
    except KeyError:
        raise InputError(f"decision must be one of {', '.join(_DECISIONS)}, got {decision!r}") from None


def decision_from_message(decision: int) -> str:
    """The Decision enum as the library's string (InputError for UNSPECIFIED or unknown)."""
    for name, code in _DECISIONS.items():
        if code == decision:
            return name
    raise InputError(f"decision: {decision} is not MATCH, NON_MATCH or UNKNOWN")


def face_to_message(face: FaceRecord, *, include_chip: bool = True) -> types_pb2.FaceAlignment:
    """How one image became its chip (the chip itself unless ``include_chip`` is False)."""
    msg = types_pb2.FaceAlignment(source=face.source, method=face.method, faces_found=face.faces_found)
    if face.face_box is not None:
        left, top, right, bottom = face.face_box
        msg.face_box.CopyFrom(types_pb2.FaceBox(left=left, top=top, right=right, bottom=bottom))
    if face.landmarks is not None:
        msg.landmarks.CopyFrom(array_to_message(np.asarray(face.landmarks, np.float64), where="landmarks"))
    if face.transform is not None:
        msg.transform.CopyFrom(array_to_message(np.asarray(face.transform, np.float64), where="transform"))
    if include_chip and face.chip is not None:
        msg.chip.CopyFrom(array_to_message(np.asarray(face.chip, np.uint8), where="chip"))
    msg.detector = face.detector or ""
    if face.confidence is not None:
        msg.confidence = float(face.confidence)
    for angle, degrees in (face.pose or {}).items():
        msg.pose[angle] = float(degrees)
    return msg


def face_from_message(msg: types_pb2.FaceAlignment, *, where: str = "face") -> FaceRecord:
    """Inverse of :func:`face_to_message`; InputError naming a malformed field."""
    box: tuple[int, int, int, int] | None = None
    if msg.HasField("face_box"):
        b = msg.face_box
        box = (int(b.left), int(b.top), int(b.right), int(b.bottom))
    if msg.faces_found < 0:
        raise InputError(f"{where}.faces_found: {msg.faces_found} is negative")
    return FaceRecord(
        source=msg.source,
        method=msg.method,
        faces_found=int(msg.faces_found),
        face_box=box,
        landmarks=_opt_array(msg, "landmarks", where, np.float64, (None, 2)),
        transform=_opt_array(msg, "transform", where, np.float64, (2, 3)),
        chip=_opt_array(msg, "chip", where, np.uint8, (None, None, 3)),
        detector=msg.detector or None,
        confidence=_finite(msg.confidence, f"{where}.confidence") if msg.HasField("confidence") else None,
        pose={str(k): _finite(v, f"{where}.pose.{k}") for k, v in msg.pose.items()} or None,
    )


def _model_info_of_result(info: ModelInfo) -> types_pb2.ModelInfo:
    msg = types_pb2.ModelInfo(
        name=info.name,
        chip=types_pb2.Chip(kind=info.chip.kind, size=info.chip.size),
        embedding_dim=info.embedding_dim,
        sha256=info.sha256 or "",
    )
    if info.threshold is not None:
        msg.threshold = float(info.threshold)
    return msg


def pair_result_to_message(result: PairResult, *, include_arrays: bool = True) -> types_pb2.PairResult:
    """A result as a message: every field of its summary and, with ``include_arrays`` (and when
    the result has them), the maps, per-perturbation scores and chips, exact."""
    msg = types_pb2.PairResult(
        model=result.model,
        method=result.method,
        score=float(result.score),
        decision=decision_to_message(result.decision),
        masks=int(result.masks),
        forward_passes=int(result.forward_passes),
        params=params_to_message(result.params),
        map_shape=list(result.map_shape),
        s_a_range=types_pb2.Range(low=result.s_a_range[0], high=result.s_a_range[1]),
        s_b_range=types_pb2.Range(low=result.s_b_range[0], high=result.s_b_range[1]),
        face_a=face_to_message(result.face_a, include_chip=include_arrays),
        face_b=face_to_message(result.face_b, include_chip=include_arrays),
        engine=result.engine or "",
        server_masks=bool(result.server_masks),
        timing=types_pb2.Timing(align_s=result.timing.align_s, explain_s=result.timing.explain_s),
        extra_json=json.dumps(result.extra, sort_keys=True) if result.extra else "",
    )
    if result.threshold is not None:
        msg.threshold = float(result.threshold)
    if result.model_info is not None:
        msg.model_info.CopyFrom(_model_info_of_result(result.model_info))
    if include_arrays:
        for name in ("s_a", "s_b", "scores_a", "scores_b"):
            value = getattr(result, name)
            if value is not None:
                getattr(msg, name).CopyFrom(array_to_message(np.asarray(value, np.float32), where=name))
    unc = result.uncertainty
    if unc is not None:
        msg.uncertainty_json = json.dumps(unc.summary(), sort_keys=True, allow_nan=False)
        if include_arrays and unc.has_arrays:
            for name, arr in unc.arrays().items():
                sent = arr.astype(np.uint8) if arr.dtype == bool else arr  # TypedArray carries no bool
                msg.uncertainty_arrays[name].CopyFrom(array_to_message(sent, where=name))
    return msg


def _uncertainty_from_message(msg: types_pb2.PairResult, where: str, shape: tuple[int, int]) -> Uncertainty | None:
    if not msg.uncertainty_json:
        if msg.uncertainty_arrays:
            raise InputError(f"{where}.uncertainty_arrays: sent without uncertainty_json")
        return None
    try:
        summary = json.loads(msg.uncertainty_json)
    except ValueError:
        raise InputError(f"{where}.uncertainty_json: not JSON") from None
    arrays: dict[str, np.ndarray] | None = None
    if msg.uncertainty_arrays:
        arrays = {}
        for name, kind in UNCERTAINTY_ARRAYS.items():
            if name not in msg.uncertainty_arrays:
                raise InputError(f"{where}.uncertainty_arrays: {name} is missing")
            got = array_from_message(msg.uncertainty_arrays[name], where=f"{where}.uncertainty_arrays[{name}]",
                                     dtype=np.uint8 if kind is np.bool_ else kind, shape=shape)
            arrays[name] = got.astype(bool) if kind is np.bool_ else got
        unknown = sorted(set(msg.uncertainty_arrays) - set(UNCERTAINTY_ARRAYS))
        if unknown:
            raise InputError(f"{where}.uncertainty_arrays: unknown array(s) {', '.join(unknown)}")
    return Uncertainty.from_summary(summary, f"{where}.uncertainty_json", arrays)


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise InputError(f"{where}: {value} is not a finite number")
    return float(value)


def pair_result_from_message(msg: types_pb2.PairResult, *, where: str = "result") -> PairResult:
    """Inverse of :func:`pair_result_to_message` (arrays present only if they were sent).
    InputError naming a malformed field: maps not (H, W) float32 of ``map_shape``, chips not
    (S, S, 3) uint8, a malformed parameter or ``extra_json``."""
    if len(msg.map_shape) != 2 or any(n < 0 for n in msg.map_shape):
        raise InputError(f"{where}.map_shape: expected [H, W], got {list(msg.map_shape)}")
    h, w = int(msg.map_shape[0]), int(msg.map_shape[1])
    try:
        extra = json.loads(msg.extra_json) if msg.extra_json else {}
    except ValueError:
        raise InputError(f"{where}.extra_json: not JSON") from None
    if not isinstance(extra, dict):
        raise InputError(f"{where}.extra_json: expected a JSON object")
    info = model_info_from_message(msg.model_info, where=f"{where}.model_info") if msg.HasField("model_info") else None
    face_a = face_from_message(msg.face_a, where=f"{where}.face_a")
    face_b = face_from_message(msg.face_b, where=f"{where}.face_b")
    result = PairResult(
        model=msg.model,
        method=msg.method,
        score=_finite(msg.score, f"{where}.score"),
        threshold=_finite(msg.threshold, f"{where}.threshold") if msg.HasField("threshold") else None,
        masks=int(msg.masks),
        forward_passes=int(msg.forward_passes),
        params=params_from_message(msg.params, where=f"{where}.params"),
        map_shape=(h, w),
        s_a_range=(float(msg.s_a_range.low), float(msg.s_a_range.high)),
        s_b_range=(float(msg.s_b_range.low), float(msg.s_b_range.high)),
        face_a=face_a,
        face_b=face_b,
        model_info=info,
        engine=msg.engine or None,
        server_masks=bool(msg.server_masks),
        timing=Timing(float(msg.timing.align_s), float(msg.timing.explain_s)),
        s_a=_opt_array(msg, "s_a", where, np.float32, (h, w)),
        s_b=_opt_array(msg, "s_b", where, np.float32, (h, w)),
        scores_a=_opt_array(msg, "scores_a", where, np.float32, (None,)),
        scores_b=_opt_array(msg, "scores_b", where, np.float32, (None,)),
        extra=extra,
        uncertainty=_uncertainty_from_message(msg, where, (h, w)),
    )
    if (result.s_a is None) != (result.s_b is None):
        raise InputError(f"{where}: s_a and s_b must be sent together")
    return result


# -- models and methods --------------------------------------------------------------------------


def model_info_to_message(
    model: ModelRecord | ModelSpec | ModelInfo,
    *,
    family: str = "",
    ready: bool = True,
    not_ready_reason: str = "",
    is_default: bool = False,
) -> types_pb2.ModelInfo:
    """What ListModels says about a model: a repository :class:`ModelRecord` (family, description
    and the weights' SHA-256 from its provenance), a :class:`ModelSpec` (``family`` given) or a
    result's :class:`ModelInfo`; readiness is the caller's (it knows the server)."""
    if isinstance(model, ModelRecord):
        sha = model.source.get("sha256")
        msg = _model_info_of_result(ModelInfo.from_spec(model.spec(), sha if isinstance(sha, str) else None))
        msg.family = model.family
        msg.description = model.description
    elif isinstance(model, ModelSpec):
        msg = _model_info_of_result(ModelInfo.from_spec(model))
        msg.family = family
        msg.description = model.description
    else:
        msg = _model_info_of_result(model)
        msg.family = family
    msg.ready = bool(ready)
    msg.not_ready_reason = "" if ready else not_ready_reason
    msg.is_default = bool(is_default)
    return msg


def model_info_from_message(msg: types_pb2.ModelInfo, *, where: str = "model_info") -> ModelInfo:
    """A result's :class:`ModelInfo` from the message (family and readiness are not part of it);
    InputError for a malformed chip or size."""
    try:
        chip = ChipSpec(msg.chip.kind, int(msg.chip.size))
    except InputError as e:
        raise InputError(f"{where}.chip: {e}") from None
    if msg.embedding_dim < 1:
        raise InputError(f"{where}.embedding_dim: {msg.embedding_dim} is not >= 1")
    threshold = _finite(msg.threshold, f"{where}.threshold") if msg.HasField("threshold") else None
    return ModelInfo(msg.name, chip, int(msg.embedding_dim), threshold, msg.sha256 or None)


def method_info_to_message(info: MethodInfo) -> types_pb2.MethodInfo:
    """One method of the registry (:func:`methods.list_methods`) as a message."""
    msg = types_pb2.MethodInfo(
        name=info.name,
        title=info.title,
        reference=info.reference,
        needs=info.needs,
        params=[
            types_pb2.MethodParam(
                name=p.name,
                type=p.type,
                default=param_to_message(p.default, where=f"{info.name}.{p.name}"),
                help=p.help,
            )
            for p in info.params
        ],
        seeded=info.seeded,
        chip_size=info.chip_size,
        forward_passes=info.forward_passes,
    )
    if info.budget_param is not None:
        msg.budget_param = info.budget_param
    return msg


def _default_from_message(msg: types_pb2.ParamValue, where: str) -> Any:
    value = param_from_message(msg, where=where)
    return tuple(value) if isinstance(value, list) else value


def method_info_from_message(msg: types_pb2.MethodInfo) -> MethodInfo:
    """Inverse of :func:`method_info_to_message` (list defaults become tuples, as in the configs)."""
    return MethodInfo(
        name=msg.name,
        title=msg.title,
        reference=msg.reference,
        needs=msg.needs,
        params=tuple(
            MethodParam(p.name, p.type, _default_from_message(p.default, f"{msg.name}.{p.name}"), p.help)
            for p in msg.params
        ),
        budget_param=msg.budget_param if msg.HasField("budget_param") else None,
        seeded=bool(msg.seeded),
        chip_size=int(msg.chip_size),
        forward_passes=int(msg.forward_passes),
    )


def list_methods_response(chip_size: int | None = None) -> service_pb2.ListMethodsResponse:
    """ListMethods' answer: every method of the registry, in the paper's order, with budgets on a
    ``chip_size`` chip (None: the default model's)."""
    return service_pb2.ListMethodsResponse(methods=[method_info_to_message(m) for m in list_methods(chip_size)])


# -- errors ---------------------------------------------------------------------------------------


def error_to_message(exc: BaseException) -> types_pb2.JobError:
    """A failed job's error: the gRPC status name of ``errors.grpc_status``, whether retrying may
    help, and the message. Errors of facexplain carry their own message (written for a person,
    never image bytes); any other exception is a bug and is named by its type only."""
    if isinstance(exc, FacexplainError):
        message = str(exc)
    else:
        message = f"internal error ({type(exc).__name__})"
    return types_pb2.JobError(code=grpc_status(exc), message=message, retryable=is_retryable(exc))


#: The store's job states (``store.records.JobState`` values) as the API's enum.
JOB_STATES: Mapping[str, types_pb2.JobState] = {
    "queued": types_pb2.JOB_STATE_QUEUED,
    "running": types_pb2.JOB_STATE_RUNNING,
    "done": types_pb2.JOB_STATE_SUCCEEDED,
    "failed": types_pb2.JOB_STATE_FAILED,
    "cancelled": types_pb2.JOB_STATE_CANCELLED,
}
#: The store's job kinds (``store.records.JobKind`` values) as the API's enum.
JOB_KINDS: Mapping[str, types_pb2.JobKind] = {"explain": types_pb2.JOB_KIND_EXPLAIN, "audit": types_pb2.JOB_KIND_AUDIT}
_RETRYABLE_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


def _set_time(field: Any, seconds: float) -> None:
    """Set a ``google.protobuf.Timestamp`` field (the store keeps milliseconds)."""
    field.FromNanoseconds(round(seconds * 1000) * 1_000_000)


def job_to_message(record: JobRecord, *, unit: str | None = None, attempts: int = 0) -> types_pb2.Job:
    """The store's record of a job as the API's ``Job``. ``unit`` names the progress unit
    (default: ``"pairs"`` for an audit, ``"masks"`` for a CorrRISE explanation, else
    ``"perturbations"``); an audit's methods are the record's comma-separated ``method``."""
    kind = str(record.kind.value)
    methods = [m for m in record.method.split(",") if m] if kind == "audit" else [record.method]
    if unit is None:
        from ..worker.plan import SHARDED_METHODS

        unit = "pairs" if kind == "audit" else "masks" if record.method in SHARDED_METHODS else "perturbations"
    msg = types_pb2.Job(
        id=record.id,
        kind=JOB_KINDS[kind],
        state=JOB_STATES[str(record.state.value)],
        progress=types_pb2.Progress(done=int(record.done), total=int(record.total), unit=unit),
        model=record.model,
        methods=methods,
        cancel_requested=bool(record.cancel_requested),
        attempts=int(attempts),
    )
    _set_time(msg.created_at, record.created_at)
    _set_time(msg.expires_at, record.expires_at)
    if record.started_at is not None:
        _set_time(msg.started_at, record.started_at)
    if record.finished_at is not None:
        _set_time(msg.finished_at, record.finished_at)
    if record.error is not None:
        msg.error.CopyFrom(
            types_pb2.JobError(
                code=record.error.status,
                message=record.error.message,
                retryable=record.error.status in _RETRYABLE_STATUSES,
            )
        )
    return msg


# -- audits ---------------------------------------------------------------------------------------
#
# The worker stores plain JSON (``worker.audit``): a row is ``{index, name, same, score (None when
# the pair failed), decision, correct, methods: [{method, explain_s, deletion?/insertion?: {auc,
# kept, scores}}], error: None | {status, message}}``; a summary's method has ``deletion`` /
# ``insertion`` ``{mean, ci_low, ci_high, n, curve}`` or None, ``curve`` the mean curve
# ``{fractions, accuracy, mean_score}`` (``worker.audit.mean_curve``; absent from summaries written
# before curves were kept). The per-pair curves stay on the server.


def _opt_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {type(value).__name__}")
    return _finite(float(value), where)


def mean_ci_to_message(value: Mapping[str, Any], *, where: str = "mean_ci") -> audit_pb2.MeanCI:
    """``{mean, ci_low, ci_high, n}`` (the interval None with fewer than two pairs) as a MeanCI."""
    msg = audit_pb2.MeanCI(mean=_finite(float(value["mean"]), f"{where}.mean"), n=int(value["n"]))
    low, high = _opt_float(value.get("ci_low"), f"{where}.ci_low"), _opt_float(value.get("ci_high"), f"{where}.ci_high")
    if low is not None:
        msg.ci_low = low
    if high is not None:
        msg.ci_high = high
    return msg


def mean_ci_from_message(msg: audit_pb2.MeanCI, *, where: str = "mean_ci") -> dict[str, Any]:
    """A MeanCI as ``{mean, ci_low, ci_high, n}`` (absent bounds None)."""
    if msg.n < 0:
        raise InputError(f"{where}.n: {msg.n} is negative")
    return {
        "mean": _finite(float(msg.mean), f"{where}.mean"),
        "ci_low": _finite(float(msg.ci_low), f"{where}.ci_low") if msg.HasField("ci_low") else None,
        "ci_high": _finite(float(msg.ci_high), f"{where}.ci_high") if msg.HasField("ci_high") else None,
        "n": int(msg.n),
    }


_CURVE_FIELDS = ("fractions", "accuracy", "mean_score")


def _checked_curve(values: Mapping[str, Any], where: str) -> dict[str, list[float]]:
    """A mean curve's three lists as floats, checked: one value per step (at least 2), finite,
    fractions non-decreasing in [0, 1], accuracy in [0, 1]; InputError naming ``where``."""
    out: dict[str, list[float]] = {}
    for key in _CURVE_FIELDS:
        raw = values.get(key)
        if raw is None or isinstance(raw, (str, bytes)):
            raise InputError(f"{where}.{key}: expected a list of numbers")
        try:
            floats = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise InputError(f"{where}.{key}: expected a list of numbers") from None
        out[key] = [_finite(v, f"{where}.{key}") for v in floats]
    lengths = {len(v) for v in out.values()}
    if len(lengths) != 1:
        raise InputError(f"{where}: fractions, accuracy and mean_score differ in length "
                         f"({', '.join(str(len(out[k])) for k in _CURVE_FIELDS)})")
    if lengths.pop() < 2:
        raise InputError(f"{where}: a curve needs at least 2 steps")
    fractions, accuracy = out["fractions"], out["accuracy"]
    if any(not 0.0 <= x <= 1.0 for x in fractions) or any(b < a for a, b in itertools.pairwise(fractions)):
        raise InputError(f"{where}.fractions: must rise from 0 to 1")
    if any(not 0.0 <= a <= 1.0 for a in accuracy):
        raise InputError(f"{where}.accuracy: must lie in [0, 1]")
    return out


def mean_curve_to_message(curve: Mapping[str, Any], *, where: str = "curve") -> audit_pb2.MeanCurve:
    """``{fractions, accuracy, mean_score}`` (``worker.audit.mean_curve``) as a MeanCurve."""
    return audit_pb2.MeanCurve(**_checked_curve(curve, where))


def mean_curve_from_message(msg: audit_pb2.MeanCurve, *, where: str = "curve") -> dict[str, list[float]]:
    """A MeanCurve as ``{fractions, accuracy, mean_score}`` (checked as it is sent)."""
    return _checked_curve({k: list(getattr(msg, k)) for k in _CURVE_FIELDS}, where)


def audit_row_to_message(
    row: Mapping[str, Any], *, results: Mapping[str, PairResult] | None = None, include_arrays: bool = True
) -> audit_pb2.AuditRow:
    """A stored audit row (see above) as an AuditRow (its ``methods`` may be absent: gallery rows);
    ``results``: the pair's kept results by method (``pair_archive``), each sent as its method's
    ``result`` (maps and chips unless ``include_arrays`` is false)."""
    where = f"row {row.get('index')}"
    msg = audit_pb2.AuditRow(
        index=int(row["index"]),
        name=str(row.get("name", "")),
        same=bool(row["same"]),
        decision=decision_to_message(str(row.get("decision", "unknown"))),
        correct=bool(row.get("correct", False)),
    )
    score = _opt_float(row.get("score"), f"{where}.score")
    if score is not None:
        msg.score = score
    for m in row.get("methods") or ():
        out = audit_pb2.MethodOutcome(method=str(m["method"]), explain_s=float(m.get("explain_s", 0.0)))
        for mode in ("deletion", "insertion"):
            curve = m.get(mode)
            if curve is not None:
                setattr(out, f"{mode}_auc", _finite(float(curve["auc"]), f"{where}.{m['method']}.{mode}"))
        kept = (results or {}).get(out.method)
        if kept is not None:
            out.result.CopyFrom(pair_result_to_message(kept, include_arrays=include_arrays))
        msg.methods.append(out)
    error = row.get("error")
    if error is not None:
        msg.error.CopyFrom(_row_error(error))
    return msg


def _row_error(error: Mapping[str, Any]) -> types_pb2.JobError:
    status = str(error["status"])
    return types_pb2.JobError(code=status, message=str(error["message"]), retryable=status in _RETRYABLE_STATUSES)


def audit_row_from_message(msg: audit_pb2.AuditRow) -> dict[str, Any]:
    """An AuditRow in the stored row's shape (a metric as ``{"auc": ...}``; ``score`` None for a
    failed pair; a kept PairResult under the method's ``result``)."""
    if msg.index < 0:
        raise InputError(f"row index {msg.index} is negative")
    where = f"row {msg.index}"
    failed = msg.HasField("error")
    methods: list[dict[str, Any]] = []
    for m in msg.methods:
        out: dict[str, Any] = {"method": m.method, "explain_s": float(m.explain_s)}
        for mode in ("deletion", "insertion"):
            if m.HasField(f"{mode}_auc"):
                out[mode] = {"auc": _finite(float(getattr(m, f"{mode}_auc")), f"{where}.{m.method}.{mode}")}
        if m.HasField("result"):
            out["result"] = pair_result_from_message(m.result, where=f"{where}.{m.method}.result")
        methods.append(out)
    return {
        "index": int(msg.index),
        "name": msg.name,
        "same": bool(msg.same),
        "score": None if failed else _finite(float(msg.score), f"{where}.score"),
        "decision": decision_from_message(msg.decision),
        "correct": bool(msg.correct),
        "methods": methods,
        "error": {"status": msg.error.code, "message": msg.error.message} if failed else None,
    }


_COUNTS = ("true_matches", "false_matches", "false_non_matches", "true_non_matches")


def audit_summary_to_message(summary: Mapping[str, Any]) -> audit_pb2.AuditSummary:
    """A stored audit summary (``worker.audit.summarize``) as an AuditSummary."""
    msg = audit_pb2.AuditSummary(
        pairs=int(summary["pairs"]),
        pairs_failed=int(summary.get("pairs_failed", 0)),
        accuracy=_finite(float(summary.get("accuracy", 0.0)), "summary.accuracy"),
    )
    for key in _COUNTS:
        setattr(msg, key, int(summary.get(key, 0)))
    threshold = _opt_float(summary.get("threshold"), "summary.threshold")
    if threshold is not None:
        msg.threshold = threshold
    for m in summary.get("methods") or ():
        entry = audit_pb2.MethodSummary(method=str(m["method"]),
                                        explain_pairs_per_s=float(m.get("explain_pairs_per_s", 0.0)))
        for mode in ("deletion", "insertion"):
            if m.get(mode) is not None:
                where = f"summary.{m['method']}.{mode}"
                getattr(entry, mode).CopyFrom(mean_ci_to_message(m[mode], where=where))
                if m[mode].get("curve") is not None:
                    getattr(entry, f"{mode}_curve").CopyFrom(mean_curve_to_message(m[mode]["curve"],
                                                                                    where=f"{where}.curve"))
        msg.methods.append(entry)
    msg.worst.extend(audit_row_to_message(r) for r in summary.get("worst") or ())
    for d in summary.get("dropped") or ():
        msg.dropped.append(audit_pb2.DroppedPair(index=int(d["index"]), name=str(d.get("name", "")),
                                                 error=_row_error(d["error"]), reason=str(d.get("reason") or "")))
    for reason, count in (summary.get("dropped_reasons") or {}).items():
        msg.dropped_reasons[str(reason)] = int(count)
    msg.detector = str(summary.get("detector") or "")
    stated = summary.get("uncertainty")
    if stated is not None:  # audits with kept maps: the options their uncertainty is stated at
        msg.fdr_q = _finite(float(stated["fdr_q"]), "summary.uncertainty.fdr_q")
        msg.ci_level = _finite(float(stated["ci_level"]), "summary.uncertainty.ci_level")
    return msg


def audit_summary_from_message(msg: audit_pb2.AuditSummary) -> dict[str, Any]:
    """An AuditSummary in the stored summary's shape (gallery rows without ``methods``; the dropped
    pairs as ``{index, name, error: {status, message}, reason}``, their count per reason, the
    detector)."""
    worst = []
    for r in msg.worst:
        row = audit_row_from_message(r)
        del row["methods"]
        worst.append(row)
    dropped = []
    for d in msg.dropped:
        if d.index < 0:
            raise InputError(f"summary.dropped: pair index {d.index} is negative")
        if not d.HasField("error"):
            raise InputError(f"summary.dropped: pair {d.index} has no error")
        dropped.append({"index": int(d.index), "name": d.name,
                        "error": {"status": d.error.code, "message": d.error.message},
                        **({"reason": d.reason} if d.reason else {})})
    reasons = {str(k): int(v) for k, v in msg.dropped_reasons.items()}
    if any(v < 0 for v in reasons.values()):
        raise InputError(f"summary.dropped_reasons: negative count in {reasons}")
    # summaries written before drop reasons and detectors were kept have neither: left out
    recent: dict[str, Any] = {"dropped_reasons": reasons} if reasons else {}
    if msg.detector:
        recent["detector"] = msg.detector
    if msg.HasField("fdr_q") and msg.HasField("ci_level"):
        recent["uncertainty"] = {"fdr_q": _finite(float(msg.fdr_q), "summary.fdr_q"),
                                 "ci_level": _finite(float(msg.ci_level), "summary.ci_level")}
    return {
        "pairs": int(msg.pairs),
        "pairs_failed": int(msg.pairs_failed),
        "threshold": _finite(float(msg.threshold), "summary.threshold") if msg.HasField("threshold") else None,
        "accuracy": _finite(float(msg.accuracy), "summary.accuracy"),
        **{k: int(getattr(msg, k)) for k in _COUNTS},
        "methods": [
            {
                "method": m.method,
                "explain_pairs_per_s": float(m.explain_pairs_per_s),
                **{mode: _metric_from_message(m, mode) for mode in ("deletion", "insertion")},
            }
            for m in msg.methods
        ],
        "worst": worst,
        "dropped": dropped,
        **recent,
    }


def _metric_from_message(m: audit_pb2.MethodSummary, mode: str) -> dict[str, Any] | None:
    """One metric of a MethodSummary: its MeanCI with, when sent, its mean curve under ``curve``;
    None when the metric was not asked."""
    if not m.HasField(mode):
        if m.HasField(f"{mode}_curve"):
            raise InputError(f"summary.{m.method}.{mode}_curve: a curve without its mean")
        return None
    where = f"summary.{m.method}.{mode}"
    out = mean_ci_from_message(getattr(m, mode), where=where)
    if m.HasField(f"{mode}_curve"):
        out["curve"] = mean_curve_from_message(getattr(m, f"{mode}_curve"), where=f"{where}_curve")
    return out
