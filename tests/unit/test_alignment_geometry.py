"""Alignment's pure geometry without dlib: similarities recovered exactly, affines that invert and
compose, the warp, the measured constants; and the package layout (geometry never loads dlib)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from explainer_service.alignment import geometry
from explainer_service.alignment.geometry import (
    ARCFACE_112_TO_DLIB_150,
    ARCFACE_TEMPLATE_112,
    apply_transform,
    arcface_to_dlib_transform,
    compose_transforms,
    invert_transform,
    similarity_transform,
    warp_affine,
)
from explainer_service.errors import InputError


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_importing_the_package_and_geometry_loads_no_dlib():
    code = (
        "import sys; import explainer_service.alignment, explainer_service.alignment.geometry; "
        "import explainer_service.datasets; "
        "print('dlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_geometry_module_has_no_dlib_reference():
    import inspect

    assert "dlib" not in {name.split(".")[0] for name in vars(geometry)}
    assert "import dlib" not in inspect.getsource(geometry)


def test_similarity_transform_recovers_a_known_similarity():
    t = _similarity(1.7, 23.0, -4.0, 11.5)
    dst = apply_transform(t, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(similarity_transform(ARCFACE_TEMPLATE_112, dst), t, atol=1e-9)


def test_similarity_transform_never_reflects():
    mirrored = ARCFACE_TEMPLATE_112 * [-1.0, 1.0]
    t = similarity_transform(ARCFACE_TEMPLATE_112, mirrored)
    assert np.linalg.det(t[:, :2]) > 0


@pytest.mark.parametrize(
    "src, dst, pattern",
    [
        (np.zeros((5, 2)), np.ones((5, 2)), "coincide"),
        (np.zeros((1, 2)), np.zeros((1, 2)), "k >= 2"),
        (np.zeros((5, 3)), np.zeros((5, 3)), r"\(k, 2\)"),
        (np.zeros((5, 2)), np.zeros((4, 2)), r"\(k, 2\)"),
    ],
)
def test_similarity_transform_bad_points(src, dst, pattern):
    with pytest.raises(InputError, match=pattern):
        similarity_transform(src, dst)


def test_invert_and_compose_round_trip():
    t = _similarity(0.6, -40.0, 3.0, 7.0)
    u = _similarity(2.5, 10.0, -1.0, 0.5)
    pts = np.array([[0.0, 0.0], [10.0, -3.0], [55.5, 71.25]])
    np.testing.assert_allclose(apply_transform(invert_transform(t), apply_transform(t, pts)), pts, atol=1e-12)
    np.testing.assert_allclose(
        apply_transform(compose_transforms(u, t), pts), apply_transform(u, apply_transform(t, pts)), atol=1e-12
    )
    np.testing.assert_allclose(compose_transforms(invert_transform(t), t), np.eye(2, 3), atol=1e-12)


def test_warp_affine_identity_and_shift_are_exact():
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(img, np.eye(2, 3), 20), img)
    shifted = warp_affine(img, np.array([[1.0, 0.0, -3.0], [0.0, 1.0, -2.0]]), 10)
    np.testing.assert_array_equal(shifted, img[2:12, 3:13])
    # a chip that sees nothing of the image is black
    assert not warp_affine(img, np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]]), 8).any()


def test_arcface_to_dlib_transform_matches_the_measured_constant():
    np.testing.assert_allclose(arcface_to_dlib_transform(112, 150), ARCFACE_112_TO_DLIB_150, atol=1e-12)
    # a 224 crop to a 150 chip: the 112 map after halving the crop's coordinates
    half = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    np.testing.assert_allclose(
        arcface_to_dlib_transform(224, 150), compose_transforms(ARCFACE_112_TO_DLIB_150, half), atol=1e-12
    )


def test_constants_are_read_only():
    for name in ("ARCFACE_TEMPLATE_112", "DLIB5_IN_ARCFACE_112", "ARCFACE_112_TO_DLIB_150", "ARCFACE_112_FACE_BOX"):
        with pytest.raises(ValueError):
            getattr(geometry, name)[0] = 0
