"""Library values <-> API messages: exact round trips (maps bit for bit, over the wire too) and
malformed messages refused with an InputError naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from explainer_service.api import convert
from explainer_service.api.pb import service_pb2, types_pb2
from explainer_service.errors import (
    BackendUnavailableError,
    InputError,
    LimitExceededError,
    UnknownModelError,
)
from explainer_service.explanation import Explanation
from explainer_service.methods.registry import METHOD_NAMES, check_params, list_methods, parse_params
from explainer_service.models.registry import DLIB_RESNET_V1
from explainer_service.models.store import ModelRecord
from explainer_service.results import FaceRecord, ModelInfo, PairResult, Timing
from explainer_service.spec import ARCFACE_CHIP, DLIB_CHIP


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _wire(msg):
    """The message as the other side receives it (serialized and parsed)."""
    return type(msg).FromString(msg.SerializeToString())


# -- arrays ----------------------------------------------------------------------------------------

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38, np.nan], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (4, 4, 3), (2, 0, 3)])
def test_typed_arrays_round_trip_exactly(dtype, shape):
    rng = np.random.default_rng(7)
    a = (rng.standard_normal(shape) * 1000).astype(dtype)
    msg = _wire(convert.array_to_message(a))
    assert list(msg.shape) == list(shape)
    back = convert.array_from_message(msg, dtype=dtype, shape=shape)
    assert back.dtype == np.dtype(dtype) and back.shape == shape and _bits(back) == _bits(a)
    back[...] = 0  # a writable copy, not a view of the message's bytes
    assert _bits(convert.array_from_message(msg)) == _bits(a)


def test_float32_specials_and_nan_payloads_survive_bit_for_bit():
    a = SPECIAL.copy()
    a.view(np.uint32)[-1] = 0x7FC0_1234  # a NaN with a payload
    back = convert.array_from_message(_wire(convert.array_to_message(a)), dtype=np.float32)
    assert _bits(back) == _bits(a)


def test_big_endian_and_strided_input_is_sent_little_endian_c_order():
    a = np.arange(12, dtype=">f4").reshape(3, 4).T  # big-endian, not C-contiguous
    msg = convert.array_to_message(a)
    assert msg.dtype == types_pb2.DTYPE_FLOAT32
    assert msg.data == np.ascontiguousarray(a, "<f4").tobytes()
    assert np.array_equal(convert.array_from_message(msg), a)


@given(hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int32, np.int64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    elements=None,
))
def test_any_array_of_a_carried_dtype_round_trips(a):
    back = convert.array_from_message(_wire(convert.array_to_message(a)), dtype=a.dtype, shape=a.shape)
    assert back.shape == a.shape and _bits(back) == _bits(a)


@pytest.mark.parametrize("dtype", [np.float16, np.bool_, np.complex64, np.int16, np.uint16, object, "U3"])
def test_dtypes_the_api_does_not_carry_are_refused(dtype):
    with pytest.raises(InputError, match="maps: dtype"):
        convert.array_to_message(np.zeros(3, dtype), where="maps")


def test_too_many_dimensions_are_refused_both_ways():
    with pytest.raises(InputError, match="9 dimensions"):
        convert.array_to_message(np.zeros((1,) * 9, np.uint8))
    with pytest.raises(InputError, match="9 dimensions"):
        convert.array_from_message(types_pb2.TypedArray(dtype=types_pb2.DTYPE_UINT8, shape=[1] * 9, data=b"\0"))


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (types_pb2.TypedArray(shape=[2], data=b"\0" * 8), "dtype 0 is not one of"),
        (types_pb2.TypedArray(dtype=99, shape=[2], data=b"\0" * 8), "dtype 99"),
        (types_pb2.TypedArray(dtype=types_pb2.DTYPE_FLOAT32, shape=[-2], data=b""), "negative dimension"),
        (types_pb2.TypedArray(dtype=types_pb2.DTYPE_FLOAT32, shape=[3], data=b"\0" * 8), "8 bytes do not hold"),
        (types_pb2.TypedArray(dtype=types_pb2.DTYPE_FLOAT32, shape=[2**40, 2**40], data=b""), "do not hold"),
        (types_pb2.TypedArray(dtype=types_pb2.DTYPE_FLOAT32, shape=[2**62, 2**62, 0], data=b"\0"), "do not hold"),
    ],
)
def test_malformed_typed_arrays_are_refused(msg, match):
    with pytest.raises(InputError, match=match):
        convert.array_from_message(_wire(msg), where="s_a")


def test_an_array_that_is_not_what_the_caller_expects_is_refused():
    msg = convert.array_to_message(np.zeros((4, 5), np.float64))
    with pytest.raises(InputError, match=r"s_a: expected float32, got float64"):
        convert.array_from_message(msg, where="s_a", dtype=np.float32)
    with pytest.raises(InputError, match=r"s_a: expected shape \(4, 6\), got \(4, 5\)"):
        convert.array_from_message(msg, where="s_a", shape=(4, 6))
    with pytest.raises(InputError, match=r"expected shape \(\*, \*, 3\)"):
        convert.array_from_message(msg, shape=(None, None, 3))
    assert convert.array_from_message(msg, dtype=np.float64, shape=(None, 5)).shape == (4, 5)


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -3, 2**63 - 1, -(2**63), 0.5, -1e-300, math.inf, "pearson", "", [7, 14, 28], [], [1, "a", None, 2.5]],
)
def test_parameter_values_round_trip_with_their_types(value):
    back = convert.param_from_message(_wire(convert.param_to_message(value)))
    assert back == value and type(back) is type(value)


def test_tuples_and_numpy_scalars_are_parameter_values():
    assert convert.param_from_message(convert.param_to_message((7, 14))) == [7, 14]
    assert convert.param_from_message(convert.param_to_message(np.int64(5))) == 5
    assert convert.param_from_message(convert.param_to_message(np.float32(0.25))) == 0.25


@pytest.mark.parametrize(("value", "match"), [({"a": 1}, "dict is not a parameter value"), (2**63, "64-bit"),
                                              ([1, object()], r"p\[1\]: object")])
def test_values_that_are_not_parameters_are_refused(value, match):
    with pytest.raises(InputError, match=match):
        convert.param_to_message(value, where="p")


def test_a_parameter_without_a_value_is_refused():
    with pytest.raises(InputError, match="params.seed: no value set"):
        convert.request_params("corrrise", {"seed": types_pb2.ParamValue()})
    with pytest.raises(InputError, match="no value set"):
        convert.param_from_message(types_pb2.ParamValue())


def _pv(**kind):
    return types_pb2.ParamValue(**kind)


def test_request_params_accept_exactly_what_the_cli_accepts():
    typed = {
        "n_masks": _pv(int_value=64), "seed": _pv(int_value=3), "values": _pv(string_value="uniform"),
        "per_pixel": _pv(bool_value=True), "patch_size": _pv(null_value=True), "correlation": _pv(text="spearman"),
    }
    cli = {"n_masks": "64", "seed": "3", "values": "uniform", "per_pixel": "true", "patch_size": "none",
           "correlation": "spearman"}
    got = convert.request_params("corrrise", _wire(service_pb2.ExplainRequest(params=typed)).params)
    assert got == parse_params("corrrise", cli)
    assert got["n_masks"] == 64 and got["per_pixel"] is True and got["patch_size"] is None
    assert check_params("corrrise", DLIB_CHIP.size, **got) == 2 * 64 + 2
    xface = convert.request_params("xface", {"patch_sizes": _pv(list_value=types_pb2.ParamList(
        values=[_pv(int_value=7), _pv(int_value=14)])), "fill_value": _pv(int_value=3)})
    assert xface == {"patch_sizes": (7, 14), "fill_value": 3.0}
    assert convert.request_params("gradcam", {"layer": _pv(null_value=True)}) == {"layer": None}
    assert convert.request_params("rise", {"p": _pv(double_value=0.25)}) == {"p": 0.25}


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("corrrise", {"n_masks": _pv(double_value=64.0)}, "n_masks must be int"),
        ("corrrise", {"n_masks": _pv(bool_value=True)}, "n_masks must be int"),
        ("corrrise", {"n_masks": _pv(text="many")}, "n_masks must be int"),
        ("corrrise", {"per_pixel": _pv(int_value=2)}, "per_pixel must be bool"),
        ("corrrise", {"n_maks": _pv(int_value=5)}, "no parameter n_maks"),
        ("xface", {"patch_sizes": _pv(list_value=types_pb2.ParamList(values=[_pv(string_value="7")]))}, "integers only"),
        ("xface", {"patch_sizes": _pv(list_value=types_pb2.ParamList())}, "empty list"),
        ("nosuch", {}, "unknown method 'nosuch'"),
    ],
)
def test_request_params_of_the_wrong_type_are_refused_by_name(method, params, match):
    with pytest.raises(InputError, match=match):
        convert.request_params(method, params)


def test_limits_stay_check_params_job_with_the_models_chip():
    params = convert.request_params("corrrise", {"n_masks": _pv(int_value=10**9)})
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_MASKS"):
        check_params("corrrise", DLIB_CHIP.size, **params)


# -- results -------------------------------------------------------------------------------------


def _result(*, threshold=0.905, maps=True, detected=True, extra=None) -> PairResult:
    rng = np.random.default_rng(3)
    s_a = rng.uniform(-1, 1, (150, 150)).astype(np.float32)
    s_b = rng.uniform(-1, 1, (150, 150)).astype(np.float32)
    s_a[0, 0] = -0.0
    explanation = Explanation(
        s_a=s_a, s_b=s_b, score=0.91234567891, threshold=threshold, model="dlib-resnet-v1", masks=40,
        params={"n_masks": 40, "patches": 10, "patch_size": 40, "values": "uniform", "per_pixel": False,
                "clip_at_border": True, "seed": 7, "correlation": "pearson", "ratio": 0.1},
        scores_a=rng.standard_normal(40).astype(np.float32), scores_b=rng.standard_normal(40).astype(np.float32),
        forward_passes=82,
    )

    def face(name: str) -> FaceRecord:
        chip = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
        if not detected:
            return FaceRecord(source=name, method="pre-aligned", faces_found=0, chip=chip)
        return FaceRecord(
            source=name, method="detected", faces_found=2, face_box=(10, -3, 140, 150),
            landmarks=rng.uniform(0, 250, (5, 2)), transform=rng.standard_normal((2, 3)), chip=chip,
        )

    info = ModelInfo.from_spec(DLIB_RESNET_V1, "ab" * 32)
    result = PairResult.from_explanation(
        explanation, face("a.jpg"), face("b.png"), info if detected else None,
        engine="triton 127.0.0.1:8001" if detected else None, server_masks=detected,
        timing=Timing(0.123456789, 4.5),
    )
    if extra:
        result = PairResult(**{**result.__dict__, "extra": extra})
    if not maps:
        result = PairResult.from_dict(result.to_dict())
    return result


def _same_arrays(a: PairResult, b: PairResult) -> None:
    for name in ("s_a", "s_b", "scores_a", "scores_b"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape and _bits(x) == _bits(y), name
    for fa, fb in ((a.face_a, b.face_a), (a.face_b, b.face_b)):
        for name in ("chip", "landmarks", "transform"):
            x, y = getattr(fa, name), getattr(fb, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape and _bits(x) == _bits(y), name
        assert fa.face_box == fb.face_box


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"threshold": None}, {"detected": False}, {"extra": {"note": "newer writer", "n": [1, 2]}}],
    ids=["detected", "uncalibrated", "pre-aligned", "extra-keys"],
)
def test_pair_results_round_trip_exactly_over_the_wire(kwargs):
    result = _result(**kwargs)
    msg = _wire(convert.pair_result_to_message(result))
    assert msg.decision == convert.decision_to_message(result.decision)
    assert msg.HasField("threshold") is (result.threshold is not None)
    back = convert.pair_result_from_message(msg)
    assert back.to_dict() == result.to_dict()
    assert back.score == result.score and back.timing == result.timing and back.params == result.params
    assert back.model_info == result.model_info and back.extra == result.extra
    _same_arrays(back, result)
    assert back.explanation.decision == result.decision


def test_summary_only_results_leave_the_arrays_out():
    result = _result()
    msg = _wire(convert.pair_result_to_message(result, include_arrays=False))
    assert not msg.HasField("s_a") and not msg.face_a.HasField("chip") and msg.face_a.HasField("landmarks")
    assert len(msg.SerializeToString()) < 2000
    back = convert.pair_result_from_message(msg)
    assert not back.has_maps and back.face_a.chip is None
    assert back.to_dict() == result.to_dict()
    # a result read from a summary alone converts the same way
    summary = _result(maps=False)
    assert convert.pair_result_from_message(_wire(convert.pair_result_to_message(summary))).to_dict() == summary.to_dict()


def test_a_converted_result_writes_the_same_files(tmp_path):
    result = _result()
    back = convert.pair_result_from_message(_wire(convert.pair_result_to_message(result)))
    back.write(tmp_path / "api")
    result.write(tmp_path / "lib")
    read_api, read_lib = PairResult.read(tmp_path / "api"), PairResult.read(tmp_path / "lib")
    assert (tmp_path / "api" / "summary.json").read_bytes() == (tmp_path / "lib" / "summary.json").read_bytes()
    _same_arrays(read_api, read_lib)


def _mutated(**change) -> types_pb2.PairResult:
    msg = convert.pair_result_to_message(_result())
    for path, value in change.items():
        *parents, leaf = path.split("__")
        holder = msg
        for p in parents:
            holder = getattr(holder, p)
        if isinstance(value, types_pb2.TypedArray):
            getattr(holder, leaf).CopyFrom(value)
        elif isinstance(value, list):
            del getattr(holder, leaf)[:]
            getattr(holder, leaf).extend(value)
        else:
            setattr(holder, leaf, value)
    return msg


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"s_a": convert.array_to_message(np.zeros((150, 150), np.float64))}, r"result.s_a: expected float32"),
        ({"s_b": convert.array_to_message(np.zeros((150, 149), np.float32))}, r"result.s_b: expected shape \(150, 150\)"),
        ({"map_shape": [150]}, r"result.map_shape: expected \[H, W\]"),
        ({"face_a__chip": convert.array_to_message(np.zeros((150, 150), np.uint8))}, r"result.face_a.chip: expected shape"),
        ({"face_b__transform": convert.array_to_message(np.zeros((3, 3)))}, r"face_b.transform: expected shape \(2, 3\)"),
        ({"extra_json": "[1, 2]"}, "extra_json: expected a JSON object"),
        ({"extra_json": "{"}, "extra_json: not JSON"),
        ({"score": math.nan}, "result.score: nan is not a finite number"),
        ({"model_info__chip__kind": "square"}, "result.model_info.chip: chip kind"),
        ({"face_a__faces_found": -1}, "faces_found"),
    ],
)
def test_malformed_results_are_refused_naming_the_field(change, match):
    with pytest.raises(InputError, match=match):
        convert.pair_result_from_message(_wire(_mutated(**change)))


def test_maps_come_in_pairs():
    msg = convert.pair_result_to_message(_result())
    msg.ClearField("s_b")
    with pytest.raises(InputError, match="s_a and s_b must be sent together"):
        convert.pair_result_from_message(msg)


def test_decisions_map_both_ways():
    for name in ("match", "non-match", "unknown"):
        assert convert.decision_from_message(convert.decision_to_message(name)) == name
    with pytest.raises(InputError):
        convert.decision_to_message("maybe")
    with pytest.raises(InputError, match="not MATCH"):
        convert.decision_from_message(types_pb2.DECISION_UNSPECIFIED)


# -- models and methods ----------------------------------------------------------------------------


def test_model_records_specs_and_result_infos_become_model_messages():
    record = ModelRecord(
        name="arcface_r50", family="arcface", chip=ARCFACE_CHIP, embedding_dim=512, threshold=0.28,
        description="ArcFace r50", source={"sha256": "cd" * 32, "file": "backbone.pth"},
    )
    msg = _wire(convert.model_info_to_message(record, ready=False, not_ready_reason="not loaded on Triton"))
    assert (msg.name, msg.family, msg.chip.kind, msg.chip.size, msg.embedding_dim) == ("arcface_r50", "arcface", "arcface", 112, 512)
    assert msg.threshold == 0.28 and msg.sha256 == "cd" * 32 and msg.description == "ArcFace r50"
    assert not msg.ready and msg.not_ready_reason == "not loaded on Triton" and not msg.is_default
    assert convert.model_info_from_message(msg) == ModelInfo.from_spec(record.spec(), "cd" * 32)

    spec = _wire(convert.model_info_to_message(DLIB_RESNET_V1, family="dlib", is_default=True, not_ready_reason="x"))
    assert spec.family == "dlib" and spec.ready and spec.not_ready_reason == "" and spec.is_default and spec.sha256 == ""
    assert convert.model_info_from_message(spec) == ModelInfo.from_spec(DLIB_RESNET_V1)

    uncalibrated = ModelRecord(name="m", family="onnx", chip=ARCFACE_CHIP, embedding_dim=256)
    msg = _wire(convert.model_info_to_message(uncalibrated))
    assert not msg.HasField("threshold") and convert.model_info_from_message(msg).threshold is None
    with pytest.raises(InputError, match="embedding_dim"):
        convert.model_info_from_message(types_pb2.ModelInfo(name="m", chip=types_pb2.Chip(kind="dlib", size=150)))


def test_list_methods_covers_the_registry_and_round_trips():
    reply = _wire(convert.list_methods_response(chip_size=112))
    assert [m.name for m in reply.methods] == list(METHOD_NAMES)
    for info, msg in zip(list_methods(112), reply.methods, strict=True):
        assert convert.method_info_from_message(msg) == info
        assert msg.chip_size == 112 and msg.forward_passes == info.forward_passes
    corr = {m.name: m for m in reply.methods}["corrrise"]
    defaults = {p.name: convert.param_from_message(p.default) for p in corr.params}
    assert defaults["n_masks"] == 500 and defaults["patches"] == 10 and defaults["patch_size"] is None
    assert corr.budget_param == "n_masks" and corr.seeded
    assert not {m.name: m for m in reply.methods}["xface"].HasField("budget_param")


# -- errors --------------------------------------------------------------------------------------


def test_job_errors_carry_the_status_name_and_never_internals():
    err = convert.error_to_message(LimitExceededError("masks 10 is over the limit 5 (set FACEXPLAIN_MAX_MASKS)"))
    assert (err.code, err.retryable) == ("RESOURCE_EXHAUSTED", False) and "FACEXPLAIN_MAX_MASKS" in err.message
    assert convert.error_to_message(BackendUnavailableError("Triton down")).code == "UNAVAILABLE"
    assert convert.error_to_message(BackendUnavailableError("Triton down")).retryable
    assert convert.error_to_message(UnknownModelError("unknown model 'x'")).code == "NOT_FOUND"
    bug = convert.error_to_message(ValueError(b"\xff\xd8\xff raw image bytes"))
    assert (bug.code, bug.message, bug.retryable) == ("INTERNAL", "internal error (ValueError)", False)


def test_a_result_parameter_given_twice_is_refused():
    msg = convert.pair_result_to_message(_result())
    msg.params.append(types_pb2.Param(name="seed", value=types_pb2.ParamValue(int_value=1)))
    with pytest.raises(InputError, match="result.params: 'seed' given twice"):
        convert.pair_result_from_message(_wire(msg))


def test_job_records_of_the_store_become_job_messages():
    from explainer_service.store.records import JobError, JobKind, JobRecord, JobState

    running = JobRecord(
        id="ab" * 32, kind=JobKind.EXPLAIN, state=JobState.RUNNING, done=64, total=500, model="dlib-resnet-v1",
        method="corrrise", params={"n_masks": 500}, created_at=1_700_000_000.123, updated_at=1_700_000_001.0,
        expires_at=1_700_086_400.123, started_at=1_700_000_000.5, cancel_requested=True,
    )
    msg = _wire(convert.job_to_message(running, attempts=2))
    assert (msg.id, msg.kind, msg.state) == ("ab" * 32, types_pb2.JOB_KIND_EXPLAIN, types_pb2.JOB_STATE_RUNNING)
    assert (msg.progress.done, msg.progress.total, msg.progress.unit) == (64, 500, "masks")
    assert list(msg.methods) == ["corrrise"] and msg.cancel_requested and msg.attempts == 2
    assert msg.created_at.ToMilliseconds() == 1_700_000_000_123 and msg.expires_at.ToMilliseconds() == 1_700_086_400_123
    assert msg.HasField("started_at") and not msg.HasField("finished_at") and not msg.HasField("error")

    failed = JobRecord(
        id="audit-1", kind=JobKind.AUDIT, state=JobState.FAILED, done=3, total=10, model="m",
        method="corrrise,rise", params={}, created_at=1.0, updated_at=2.0, expires_at=3.0, started_at=1.5,
        finished_at=2.0, error=JobError.from_exception(BackendUnavailableError("Triton at 127.0.0.1:1 is down")),
    )
    msg = _wire(convert.job_to_message(failed))
    assert (msg.kind, msg.state, msg.progress.unit) == (types_pb2.JOB_KIND_AUDIT, types_pb2.JOB_STATE_FAILED, "pairs")
    assert list(msg.methods) == ["corrrise", "rise"] and msg.finished_at.ToMilliseconds() == 2000
    assert (msg.error.code, msg.error.retryable) == ("UNAVAILABLE", True) and "down" in msg.error.message
    assert {JobState(s) for s in convert.JOB_STATES} == set(JobState)
    assert {JobKind(k) for k in convert.JOB_KINDS} == set(JobKind)
    done = JobRecord(**{**failed.__dict__, "state": JobState.DONE, "error": None, "kind": JobKind.EXPLAIN,
                        "method": "lime"})
    msg = convert.job_to_message(done)
    assert msg.state == types_pb2.JOB_STATE_SUCCEEDED and msg.progress.unit == "perturbations"


def test_converting_does_not_import_the_store_or_redis():
    import subprocess
    import sys

    code = ("import sys, explainer_service.api.convert; "
            "print(sorted(m for m in sys.modules if m.startswith(('explainer_service.store', 'redis', 'celery'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _with_uncertainty() -> PairResult:
    from dataclasses import replace

    from explainer_service.uncertainty import Uncertainty

    result = _result()
    rng = np.random.default_rng(5)
    halves = tuple(rng.uniform(-1, 1, (150, 150)).astype(np.float32) for _ in range(4))
    unc = Uncertainty.of_maps(result.s_a, result.s_b, 40, halves_a=halves[:2], halves_b=halves[2:])
    assert unc.a.significant is not None and unc.a.significant.any() and not unc.a.significant.all()
    return replace(result, uncertainty=unc)


def test_a_maps_uncertainty_round_trips_exactly_and_summary_only_keeps_its_figures():
    result = _with_uncertainty()
    assert result.uncertainty is not None
    back = convert.pair_result_from_message(_wire(convert.pair_result_to_message(result)))
    assert back.uncertainty is not None and back.uncertainty.summary() == result.uncertainty.summary()
    want, got = result.uncertainty.arrays(), back.uncertainty.arrays()
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and _bits(got[name]) == _bits(want[name]), name
    short = convert.pair_result_from_message(_wire(convert.pair_result_to_message(result, include_arrays=False)))
    assert short.uncertainty is not None and not short.uncertainty.has_arrays
    assert short.uncertainty.summary() == result.uncertainty.summary()
    plain = convert.pair_result_from_message(_wire(convert.pair_result_to_message(_result())))
    assert plain.uncertainty is None


def test_malformed_uncertainty_is_refused_by_name():
    msg = _wire(convert.pair_result_to_message(_with_uncertainty()))
    bad = types_pb2.PairResult()
    bad.CopyFrom(msg)
    bad.uncertainty_json = "{not json"
    with pytest.raises(InputError, match="uncertainty_json: not JSON"):
        convert.pair_result_from_message(bad)
    bad.CopyFrom(msg)
    del bad.uncertainty_arrays["significant_b"]
    with pytest.raises(InputError, match="significant_b is missing"):
        convert.pair_result_from_message(bad)
    bad.CopyFrom(msg)
    bad.uncertainty_json = ""
    with pytest.raises(InputError, match="sent without uncertainty_json"):
        convert.pair_result_from_message(bad)
    bad.CopyFrom(msg)
    bad.uncertainty_arrays["ci_low_a"].CopyFrom(convert.array_to_message(np.zeros((3, 3), np.float32)))
    with pytest.raises(InputError, match=r"ci_low_a\]: expected shape"):
        convert.pair_result_from_message(bad)
