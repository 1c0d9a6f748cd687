"""The disk cache of aligned chips: hits, keys that change with every input, and no crash on bad entries."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from explainer_service.chip_cache import ChipCache
from explainer_service.errors import FaceNotFoundError
from explainer_service.spec import ChipSpec

SPEC = ChipSpec("arcface", 16)


class _Aligned:
    def __init__(self, chip):
        self.chip = chip


class CountingAligner:
    """Stands in for Aligner: the 'chip' is a deterministic function of the image."""

    multiple_faces, upsample, pre_aligned, refine_landmarks = "largest", 1, "auto", True
    detector = "hog"

    def __init__(self, fail=False):
        self.calls = 0
        self.fail = fail

    def align(self, image, spec, name="<array>"):
        self.calls += 1
        if self.fail:
            raise FaceNotFoundError(f"{name}: no face found")
        return _Aligned(np.resize(image, (spec.size, spec.size, 3)).astype(np.uint8))


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (20, 20, 3), dtype=np.uint8)


def test_second_request_is_read_from_disk(tmp_path):
    aligner, img = CountingAligner(), _image()
    first = ChipCache(tmp_path).align(aligner, img, SPEC, "a.jpg")
    cache = ChipCache(tmp_path)  # a new process: only the files remain
    second = cache.align(aligner, img, SPEC, "a.jpg")
    np.testing.assert_array_equal(first, second)
    assert aligner.calls == 1 and (cache.hits, cache.misses) == (1, 0)


def test_key_changes_with_pixels_spec_and_settings():
    aligner, img = CountingAligner(), _image()
    base = ChipCache.key(img, SPEC, aligner)
    other_pixels = img.copy()
    other_pixels[0, 0, 0] ^= 1
    assert ChipCache.key(other_pixels, SPEC, aligner) != base
    assert ChipCache.key(img, ChipSpec("dlib", 16), aligner) != base
    assert ChipCache.key(img, ChipSpec("arcface", 18), aligner) != base
    refined_off = CountingAligner()
    refined_off.refine_landmarks = False
    assert ChipCache.key(img, SPEC, refined_off) != base
    other_detector = CountingAligner()
    other_detector.detector = "mtcnn"
    assert ChipCache.key(img, SPEC, other_detector) != base
    assert ChipCache.key(img.copy(), SPEC, CountingAligner()) == base


def test_corrupted_or_foreign_entry_is_aligned_again(tmp_path):
    aligner, img = CountingAligner(), _image()
    cache = ChipCache(tmp_path)
    good = cache.align(aligner, img, SPEC)
    path = cache.path(ChipCache.key(img, SPEC, aligner))
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(cache.align(aligner, img, SPEC), good)
    np.save(path, np.zeros((3, 3), np.float32))  # wrong shape and dtype
    np.testing.assert_array_equal(cache.align(aligner, img, SPEC), good)
    assert aligner.calls == 3
    np.testing.assert_array_equal(np.load(path), good)  # repaired on disk


def test_unwritable_cache_only_costs_speed(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # the cache root is a file: nothing can be stored under it
    aligner, cache = CountingAligner(), ChipCache(blocker / "chips")
    with caplog.at_level(logging.WARNING):
        a = cache.align(aligner, _image(), SPEC)
        b = cache.align(aligner, _image(), SPEC)
    np.testing.assert_array_equal(a, b)
    assert aligner.calls == 2
    assert sum("not writable" in r.message for r in caplog.records) == 1


def test_failures_propagate_and_are_not_cached(tmp_path):
    aligner = CountingAligner(fail=True)
    cache = ChipCache(tmp_path)
    for _ in range(2):
        with pytest.raises(FaceNotFoundError):
            cache.align(aligner, _image(), SPEC, "x.jpg")
    assert aligner.calls == 2 and not any(tmp_path.rglob("*.npy"))


def test_an_npz_archive_in_place_of_an_entry_is_aligned_again(tmp_path):
    aligner, img = CountingAligner(), _image()
    cache = ChipCache(tmp_path)
    good = cache.align(aligner, img, SPEC)
    path = cache.path(ChipCache.key(img, SPEC, aligner))
    with open(path, "wb") as f:
        np.savez(f, chip=good)  # np.load gives an NpzFile, not an array
    np.testing.assert_array_equal(cache.align(aligner, img, SPEC), good)
    assert aligner.calls == 2


def test_the_default_root_is_the_settings_chip_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEXPLAIN_HOME", str(tmp_path / "home"))
    assert ChipCache().root == tmp_path / "home" / "chips"


def test_entries_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        cache = ChipCache(tmp_path)
        cache.align(CountingAligner(), _image(), SPEC)
    finally:
        os.umask(old)
    (entry,) = tmp_path.rglob("*.npy")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644
    assert not list(tmp_path.rglob("*.tmp"))
