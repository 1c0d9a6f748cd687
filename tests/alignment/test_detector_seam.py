"""The detector seam: names, validation, and the detection carried to the aligned face and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explainer_service.alignment import DEFAULT_DETECTOR, DETECTORS, DLIB_CHIP, Aligner, detect_face
from explainer_service.chip_cache import ChipCache
from explainer_service.errors import InputError
from explainer_service.images import load_image

pytestmark = [pytest.mark.shared]


def test_detectors_are_named_with_the_default_among_them():
    assert DETECTORS[0] == "hog" and DEFAULT_DETECTOR in DETECTORS
    assert len(set(DETECTORS)) == len(DETECTORS)


@pytest.mark.parametrize("make", [
    lambda: Aligner(detector="retinaface"),
    lambda: detect_face(np.zeros((50, 50, 3), np.uint8), detector="retinaface", upsample=0,
                        multiple_faces="largest"),
])
def test_unknown_detector_is_input_error_listing_the_choices(make):
    with pytest.raises(InputError) as info:
        make()
    msg = str(info.value)
    assert "'retinaface'" in msg and all(name in msg for name in DETECTORS) and "\n" not in msg


def test_aligned_face_records_the_detection(lfw_dir: Path):
    path = sorted((lfw_dir / "images").glob("*/*.jpg"))[0]
    for name in DETECTORS:
        aligner = Aligner(detector=name)
        assert aligner.detector == name and f"detector={name!r}" in repr(aligner)
        face = aligner.align_file(path, DLIB_CHIP)
        assert face.detection is not None
        assert face.detector == ("hog" if name == "auto" else name)  # a frontal photo: HOG finds it
        assert face.confidence is not None and np.isfinite(face.confidence)


def test_pre_aligned_face_has_no_detector(lfw_dir: Path):
    path = sorted((lfw_dir / "aligned112").glob("*/*.jpg"))[0]
    face = Aligner().align_file(path, DLIB_CHIP)
    assert face.detection is None and face.detector is None and face.confidence is None


def test_cache_key_differs_per_detector(lfw_dir: Path):
    img = load_image(sorted((lfw_dir / "images").glob("*/*.jpg"))[0])
    keys = {ChipCache.key(img, DLIB_CHIP, Aligner(detector=name)) for name in DETECTORS}
    assert len(keys) == len(DETECTORS)
