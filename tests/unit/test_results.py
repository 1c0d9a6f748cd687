"""Unit tests of explainer_service.results (one explained pair as a value) and of
pipeline.explain_pair on the toy model: round trips through a dict, bytes and files are exact;
damaged input is an InputError naming the problem; any method, images from paths, bytes, arrays
or aligned faces."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from explainer_service.alignment import AlignedFace, Aligner
from explainer_service.errors import InputError, LimitExceededError
from explainer_service.explanation import Explanation
from explainer_service.fileio import default_file_mode
from explainer_service.methods import check_params
from explainer_service.pipeline import align_image, explain_pair, model_info
from explainer_service.results import (
    RESULT_FORMAT,
    FaceRecord,
    ModelInfo,
    PairResult,
    Timing,
)
from explainer_service.spec import ChipSpec, ModelSpec
from tests.toy import ToyModel, toy_pair

PRE_ALIGNED = Aligner(pre_aligned="arcface")
ARRAY_KEYS = ("s_a", "s_b", "scores_a", "scores_b")


def explained(method: str = "corrrise", params: dict | None = None, **kw) -> tuple[PairResult, ToyModel]:
    model = ToyModel()
    a, b = toy_pair()
    params = {"budget": 16} if params is None else params
    return explain_pair(a, b, model, method, params, aligner=PRE_ALIGNED, **kw), model


def handmade() -> PairResult:
    """A result with every field set by hand (detected faces, a box, landmarks, odd floats)."""
    rng = np.random.default_rng(7)
    s_a = rng.uniform(-1, 1, (20, 20)).astype(np.float32)
    s_b = rng.uniform(-1, 1, (20, 20)).astype(np.float32)
    expl = Explanation(
        s_a=s_a, s_b=s_b, score=0.123456789123, threshold=0.5, model="m", masks=3, method="corrrise",
        params={"n_masks": 3, "sizes": (1, 2), "flag": True, "none": None, "np": np.int64(4)},
        scores_a=rng.normal(size=3).astype(np.float32), scores_b=rng.normal(size=3).astype(np.float32),
        forward_passes=8,
    )
    faces = [
        FaceRecord(
            source=f"/data/{n}.jpg", method="detected", faces_found=2, face_box=(1, 2, 30, 40),
            landmarks=rng.uniform(0, 50, (5, 2)), transform=rng.normal(size=(2, 3)),
            chip=rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
        )
        for n in ("a", "b")
    ]
    info = ModelInfo("m", ChipSpec("dlib", 20), 16, 0.5, "ab" * 32)
    return PairResult.from_explanation(
        expl, faces[0], faces[1], info, engine="triton 127.0.0.1:8001", server_masks=True,
        timing=Timing(align_s=0.1 + 1e-9, explain_s=2.0 / 3.0),
    )


def assert_same_arrays(x: PairResult, y: PairResult) -> None:
    for key in ARRAY_KEYS:
        ax, ay = getattr(x, key), getattr(y, key)
        assert ax.dtype == ay.dtype == np.float32 and np.array_equal(ax, ay), key
    for fx, fy in ((x.face_a, y.face_a), (x.face_b, y.face_b)):
        assert fx.chip.dtype == fy.chip.dtype == np.uint8 and np.array_equal(fx.chip, fy.chip)


# ---- the summary -----------------------------------------------------------------------------


def test_summary_has_the_explanation_summary_and_the_rest():
    result, _ = explained()
    d = result.to_dict()
    expl_summary = result.explanation.summary()
    for key, value in expl_summary.items():
        assert d[key] == value, key
    assert d["format"] == RESULT_FORMAT
    assert d["forward_passes"] == 34 and d["masks"] == 16
    assert d["image_a"] == "image_a" and d["alignment_a"]["method"] == "pre-aligned"
    assert d["model_info"]["name"] == "toy" and d["model_info"]["chip"] == {"kind": "arcface", "size": 32}
    assert d["seconds"] == round(d["timing"]["align_s"] + d["timing"]["explain_s"], 3)
    json.dumps(d)  # JSON-ready


@pytest.mark.parametrize("make", [handmade, lambda: explained()[0], lambda: explained("xface", {})[0]])
def test_dict_round_trip_is_exact(make):
    result = make()
    d = json.loads(json.dumps(result.to_dict()))
    back = PairResult.from_dict(d)
    assert back.to_dict() == d
    assert not back.has_maps and back.face_a.chip is None
    assert back.decision == result.decision
    with pytest.raises(InputError, match="no maps"):
        back.explanation  # noqa: B018 - the property raises


def test_handmade_dict_values():
    d = handmade().to_dict()
    assert d["score"] == 0.123457 and d["threshold"] == 0.5 and d["decision"] == "non-match"
    assert d["params"] == {"n_masks": 3, "sizes": [1, 2], "flag": True, "none": None, "np": 4}
    assert d["alignment_a"]["face_box"] == [1, 2, 30, 40] and len(d["alignment_a"]["landmarks"]) == 5
    assert d["model_info"]["sha256"] == "ab" * 32 and d["engine"] == "triton 127.0.0.1:8001"
    assert d["server_masks"] is True and d["timing"] == {"align_s": 0.1 + 1e-9, "explain_s": 2.0 / 3.0}


def test_unknown_keys_survive_and_old_summaries_read():
    d = handmade().to_dict()
    d["added_later"] = {"x": 1}
    assert PairResult.from_dict(d).to_dict()["added_later"] == {"x": 1}
    # a summary as the CLI wrote it before the result type: no format/timing/model_info/geometry
    old = {k: d[k] for k in ("model", "method", "score", "threshold", "decision", "masks", "params",
                             "map_shape", "s_a_range", "s_b_range", "image_a", "image_b", "engine",
                             "server_masks")}
    old["alignment_a"] = {"method": "detected", "faces_found": 2}
    old["alignment_b"] = {"method": "detected", "faces_found": 1}
    old["seconds"] = 12.5
    back = PairResult.from_dict(old)
    assert back.timing.total_s == 12.5 and back.model_info is None and back.forward_passes == 0
    again = back.to_dict()
    for key, value in old.items():
        if key.startswith("alignment"):
            assert {k: again[key][k] for k in value} == value
        else:
            assert again[key] == value, key


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("score"), "missing key 'score'"),
        (lambda d: d.update(score="high"), "summary.score"),
        (lambda d: d.update(score=float("nan")), "summary.score"),
        (lambda d: d.update(masks=1.5), "summary.masks"),
        (lambda d: d.update(map_shape=[20]), "map_shape"),
        (lambda d: d.update(format="facexplain.pair/99"), "unknown format"),
        (lambda d: d["alignment_a"].pop("faces_found"), "alignment_a: missing key 'faces_found'"),
        (lambda d: d["alignment_b"].update(transform=[[1, 2]]), "alignment_b.transform"),
        (lambda d: d["model_info"]["chip"].update(kind="round"), "chip kind"),
        (lambda d: d.update(params=[1, 2]), "summary.params"),
    ],
)
def test_bad_summary_is_an_input_error(change, match):
    d = handmade().to_dict()
    change(d)
    with pytest.raises(InputError, match=match):
        PairResult.from_dict(d)


def test_not_a_dict():
    with pytest.raises(InputError, match="expected an object"):
        PairResult.from_dict([1, 2])


# ---- the arrays ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [handmade, lambda: explained("rise")[0]])
def test_bytes_round_trip_is_exact(make):
    result = make()
    data = result.maps_to_bytes()
    summary = json.loads(json.dumps(result.to_dict()))
    back = PairResult.from_bytes(summary, data)
    assert back.has_maps and back.to_dict() == summary
    assert_same_arrays(result, back)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(
            ["chip_a", "chip_b", "s_a", "s_b", "similar_a", "dissimilar_a", "similar_b", "dissimilar_b",
             "scores_a", "scores_b"]
        )
        assert np.array_equal(npz["dissimilar_b"], np.maximum(-result.s_b, 0))
    e1, e2 = result.explanation, back.explanation
    assert np.array_equal(e1.s_a, e2.s_a) and e2.forward_passes == e1.forward_passes


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_damaged_archives_are_input_errors():
    result = handmade()
    summary = result.to_dict()
    arrays = result.arrays()
    with pytest.raises(InputError, match="not a readable .npz"):
        PairResult.from_bytes(summary, b"not a zip at all")
    with pytest.raises(InputError, match="not a readable .npz"):
        PairResult.from_bytes(summary, result.maps_to_bytes()[:200])
    with pytest.raises(InputError, match="expected the bytes"):
        PairResult.from_bytes(summary, "text")  # type: ignore[arg-type]
    missing = {k: v for k, v in arrays.items() if k != "s_b"}
    with pytest.raises(InputError, match="missing array 's_b'"):
        PairResult.from_bytes(summary, _npz(**missing))
    with pytest.raises(InputError, match="'s_a' is float64"):
        PairResult.from_bytes(summary, _npz(**{**arrays, "s_a": arrays["s_a"].astype(np.float64)}))
    with pytest.raises(InputError, match=r"'s_a' has shape \(10, 40\)"):
        PairResult.from_bytes(summary, _npz(**{**arrays, "s_a": arrays["s_a"].reshape(10, 40)}))
    with pytest.raises(InputError, match="'chip_b' has shape"):
        PairResult.from_bytes(summary, _npz(**{**arrays, "chip_b": arrays["chip_b"][:10]}))
    # an object array (pickled) is never loaded
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "scores_a": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(InputError):
        PairResult.from_bytes(summary, buf.getvalue())


def test_archive_is_compressed_npz():
    data = handmade().maps_to_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())


# ---- files -----------------------------------------------------------------------------------


def test_file_round_trip_is_exact(tmp_path):
    result, _ = explained()
    paths = result.write(tmp_path / "out")
    assert set(paths) == {"summary", "maps", "figure"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["figure.png", "maps.npz", "summary.json"]
    summary = json.loads(paths["summary"].read_text())
    assert summary == result.to_dict()
    assert paths["maps"].read_bytes() == result.maps_to_bytes()
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for p in paths.values():
        assert stat.S_IMODE(os.stat(p).st_mode) == default_file_mode()
    back = PairResult.read(tmp_path / "out")
    assert back.to_dict() == summary
    assert_same_arrays(result, back)
    alone = PairResult.read(tmp_path / "out", maps=False)
    assert not alone.has_maps and alone.to_dict() == summary


def test_figure_bytes_are_a_png():
    png = handmade().figure_png(dpi=40)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_read_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="summary.json: no such file"):
        PairResult.read(tmp_path)
    result, _ = explained()
    result.write(tmp_path)
    (tmp_path / "maps.npz").unlink()
    with pytest.raises(InputError, match="maps.npz: no such file"):
        PairResult.read(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(InputError, match="summary.json: not a JSON summary"):
        PairResult.read(tmp_path, maps=False)


def test_write_of_a_summary_alone_is_refused(tmp_path):
    back = PairResult.from_dict(handmade().to_dict())
    with pytest.raises(InputError, match="no aligned chips|no maps"):
        back.write(tmp_path / "o")


# ---- explain_pair --------------------------------------------------------------------------


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_any_input_kind_gives_the_same_maps(tmp_path):
    model = ToyModel()
    a, b = toy_pair()
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    pa.write_bytes(_png(a))
    pb.write_bytes(_png(b))
    face_a = PRE_ALIGNED.align(a, model.spec.chip)
    face_b = PRE_ALIGNED.align(b, model.spec.chip)
    params = {"budget": 12, "seed": 5}
    runs = {
        "arrays": explain_pair(a, b, model, "corrrise", params, aligner=PRE_ALIGNED),
        "bytes": explain_pair(_png(a), _png(b), model, "corrrise", params, aligner=PRE_ALIGNED),
        "paths": explain_pair(pa, str(pb), model, "corrrise", params, aligner=PRE_ALIGNED),
        "faces": explain_pair(face_a, face_b, model, "corrrise", params),
    }
    ref = runs["arrays"]
    for kind, r in runs.items():
        assert np.array_equal(r.s_a, ref.s_a) and np.array_equal(r.s_b, ref.s_b), kind
        assert r.params["seed"] == 5 and r.masks == 12, kind
    assert runs["paths"].face_a.source == str(pa) and runs["bytes"].face_a.source == "image_a"
    assert runs["arrays"].face_b.source == "image_b"
    assert runs["faces"].timing.align_s < runs["paths"].timing.align_s + 1.0


@pytest.mark.parametrize(
    "method,params",
    [("corrrise", {"budget": 8}), ("rise", {"budget": 8}), ("lime", {"budget": 8}), ("xface", {}),
     ("minplus", {"steps": 1})],
)
def test_every_perturbation_method_and_its_forward_passes(method, params):
    result, model = explained(method, params)
    assert result.method == method and result.model == "toy"
    assert result.forward_passes == model.images == check_params(method, 32, **params)
    assert result.s_a.shape == result.s_b.shape == (32, 32)
    assert result.engine is None and result.server_masks is False
    assert result.model_info == ModelInfo("toy", ChipSpec("arcface", 32), 0, 0.9, None)


def test_engine_and_progress_are_passed_on():
    seen: list[tuple[int, int]] = []
    result, _ = explained(progress=lambda done, total: seen.append((done, total)), engine="local")
    assert result.engine == "local" and result.to_dict()["engine"] == "local"
    assert seen and seen[-1][0] == seen[-1][1]


def test_requests_are_checked_before_any_model_call(monkeypatch):
    model = ToyModel()
    a, b = toy_pair()
    with pytest.raises(InputError, match="unknown method 'nope'"):
        explain_pair(a, b, model, "nope", aligner=PRE_ALIGNED)
    with pytest.raises(InputError, match="no parameter"):
        explain_pair(a, b, model, "rise", {"colour": 3}, aligner=PRE_ALIGNED)
    with pytest.raises(InputError, match="image_a: not an image"):
        explain_pair(b"garbage", b, model, aligner=PRE_ALIGNED)
    with pytest.raises(InputError, match="image_b: expected a file path"):
        explain_pair(a, 42, model, aligner=PRE_ALIGNED)  # type: ignore[arg-type]
    monkeypatch.setenv("FACEXPLAIN_MAX_MASKS", "10")
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_MASKS"):
        explain_pair(a, b, model, "corrrise", {"budget": 64}, aligner=PRE_ALIGNED)
    assert explain_pair(a, b, model, "corrrise", {"budget": 10}, aligner=PRE_ALIGNED).masks == 10
    assert model.images == 22  # the accepted request only


@pytest.mark.parametrize(
    "method,params,error,needle",
    [
        ("rise", {"perturbations_per_eval": 5000}, LimitExceededError, "perturbations_per_eval"),
        ("corrrise", {"patches": 10**9}, LimitExceededError, "patches"),
        ("lime", {"n_segments": 32 * 32 + 1}, InputError, "n_segments"),
        ("corrrise", {"patch_size": 33}, InputError, "patch_size"),
        ("lime", {"n_samples": 10**9}, LimitExceededError, "n_samples"),
    ],
)
def test_out_of_range_requests_are_refused_before_any_image_is_read(method, params, error, needle):
    model = ToyModel()
    with pytest.raises(error, match=needle):
        explain_pair(b"not even decoded", b"", model, method, params)
    assert model.calls == 0


def test_a_face_cut_for_another_chip_is_refused():
    face = AlignedFace(
        chip=np.zeros((150, 150, 3), np.uint8), spec=ChipSpec("dlib", 150), transform=np.eye(2, 3),
        source="x.jpg", method="detected", faces_found=1, face_box=None, landmarks=None,
    )
    with pytest.raises(InputError, match="x.jpg: aligned to a dlib chip of 150 px"):
        align_image(face, ChipSpec("arcface", 32))
    assert align_image(face, ChipSpec("dlib", 150)) is face


def test_model_info_reads_the_record_sha256(tmp_path, monkeypatch):
    from explainer_service.models.store import ModelRecord, write_record

    monkeypatch.setenv("FACEXPLAIN_MODEL_REPOSITORY", str(tmp_path))
    spec = ModelSpec("mine", ChipSpec("arcface", 112), 512, 0.3)
    assert model_info(spec).sha256 is None  # no record
    write_record(ModelRecord("mine", "arcface", spec.chip, 512, 0.3, source={"sha256": "cd" * 32}))
    assert model_info(spec) == ModelInfo("mine", spec.chip, 512, 0.3, "cd" * 32)
