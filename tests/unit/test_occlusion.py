"""Synthetic occluders: deterministic per (seed, index), distinct per kind, placed on the ArcFace
template, sized like a real occluder, never black, and the mask is exactly what changed; the
occluded dataset keeps labels and folds and gives the masks back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explainer_service.datasets import Dataset, load_pair_image, load_pairs_checked, read_dataset
from explainer_service.datasets.occluded import OccludedImage, occluded_dataset, occluder_mask
from explainer_service.errors import InputError
from explainer_service.occlusion import ARCFACE_TEMPLATE_112, OCCLUDER_KINDS, Occluder

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
IMG = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
_yy, _xx = np.mgrid[0:112, 0:112]
FACE = ((_xx + 0.5 - 56) / 46) ** 2 + ((_yy + 0.5 - 68) / 52) ** 2 <= 1  # the face of an aligned crop


def _at(mask: np.ndarray, point: np.ndarray) -> bool:
    x, y = (int(v) for v in point)
    return bool(mask[y, x])


def test_same_seed_and_index_give_identical_results_in_any_order():
    occ = Occluder("random", seed=7)
    later = [occ.occlude(IMG, i) for i in (3, 1, 2)]
    again = Occluder("random", seed=7)
    for i, (img, mask) in zip((3, 1, 2), later, strict=True):
        img2, mask2 = again.occlude(IMG, i)
        assert (img == img2).all() and (mask == mask2).all()


def test_seed_and_index_change_the_draw():
    base = Occluder("hand", seed=0).occlude(IMG, 0)[1]
    assert (Occluder("hand", seed=1).occlude(IMG, 0)[1] != base).any()
    assert (Occluder("hand", seed=0).occlude(IMG, 1)[1] != base).any()


def test_kinds_differ():
    for index in range(5):
        results = {k: Occluder(k, seed=3).occlude(IMG, index) for k in OCCLUDER_KINDS}
        for i, a in enumerate(OCCLUDER_KINDS):
            for b in OCCLUDER_KINDS[i + 1 :]:
                (ia, ma), (ib, mb) = results[a], results[b]
                assert (ma & mb).sum() / (ma | mb).sum() < 0.6, (index, a, b)
                assert (ia != ib).any(axis=2).mean() > 0.03, (index, a, b)


def test_random_is_one_of_the_kinds_and_equals_it():
    occ = Occluder("random", seed=11)
    drawn = [occ.kind_for(i) for i in range(40)]
    assert set(drawn) == set(OCCLUDER_KINDS)
    for i in range(4):
        img, mask = occ.occlude(IMG, i)
        img2, mask2 = Occluder(drawn[i], seed=11).occlude(IMG, i)
        assert (img == img2).all() and (mask == mask2).all()


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_area_placement_colour_and_mask_match(kind):
    occ = Occluder(kind, seed=5)
    for i in range(12):
        out, mask = occ.occlude(IMG, i)
        assert out.shape == IMG.shape and out.dtype == np.uint8 and mask.dtype == bool
        assert 0.03 <= mask.mean() <= 0.35, (i, mask.mean())  # a real occluder, not the whole face
        assert (mask & FACE).sum() >= 0.75 * mask.sum()  # on the face
        changed = (out != IMG).any(axis=2)
        assert not (changed & ~mask).any()  # nothing outside the mask changes
        assert changed.sum() >= 0.98 * mask.sum()  # and the mask is what changed
        px = out[mask].astype(np.float64)
        assert (px @ [0.299, 0.587, 0.114]).mean() > 60  # bright: visible to multiplicative masks
        assert (px.max(axis=1) < 40).mean() < 0.005  # no black


def test_placement_follows_the_template():
    le, re_, nose, ml, mr = ARCFACE_TEMPLATE_112
    mouth = (ml + mr) / 2
    for i in range(10):
        m = Occluder("mask", seed=2).occlude(IMG, i)[1]
        assert _at(m, nose + [0, 4]) and _at(m, mouth) and not _at(m, le) and not _at(m, re_)
        g = Occluder("glasses", seed=2).occlude(IMG, i)[1]
        assert _at(g, le) and _at(g, re_) and not _at(g, mouth) and not _at(g, nose + [0, 4])


def test_scales_with_image_size():
    big = np.repeat(np.repeat(IMG, 2, axis=0), 2, axis=1)
    for kind in OCCLUDER_KINDS:
        m112 = Occluder(kind, seed=9).occlude(IMG, 6)[1]
        m224 = Occluder(kind, seed=9).occlude(big, 6)[1]
        assert m224.shape == (224, 224)
        down = m224.reshape(112, 2, 112, 2).mean(axis=(1, 3)) >= 0.5
        assert (down & m112).sum() / (down | m112).sum() > 0.8, kind


def test_input_is_not_modified_and_errors_are_input_errors():
    before = IMG.copy()
    Occluder("object").occlude(IMG, 0)
    assert (IMG == before).all()
    with pytest.raises(InputError, match="occluder kind must be one of"):
        Occluder("scarf")
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        Occluder("mask", seed=-1)
    with pytest.raises(InputError, match="index must be a non-negative integer"):
        Occluder().occlude(IMG, -2)
    with pytest.raises(InputError, match="image to occlude"):
        Occluder().occlude(np.zeros((112, 112, 2), np.uint8), 0)


def test_occluded_dataset_keeps_labels_and_gives_masks_back():
    ds = read_dataset(f"lfw:{FIX / 'lfw'}")  # aligned112 fixture
    occ = Occluder("random", seed=4)
    od = occluded_dataset(ds, occ)
    assert od.aligned and len(od) == len(ds) and od.name == "lfw+occ-random-s4"
    assert [(p.same, p.fold, p.a) for p in od.pairs] == [(p.same, p.fold, p.a) for p in ds.pairs]
    for i in (0, 5):
        ref = od.pairs[i].b
        assert isinstance(ref, OccludedImage) and ref.source == ds.pairs[i].b and ref.index == i
        want_img, want_mask = occ.occlude(load_pair_image(ds.pairs[i].b), i)
        assert (load_pair_image(ref) == want_img).all()
        assert (occluder_mask(ref) == want_mask).all() and want_mask.any()
        assert occluder_mask(od.pairs[i].a) is None
        assert f"occluded:{occ.kind_for(i)}" in str(ref)
    loaded, report = load_pairs_checked(od)
    assert report.skipped == 0 and len(loaded) == len(ds)
    od_a = occluded_dataset(ds, occ, which="a")
    assert isinstance(od_a.pairs[0].a, OccludedImage) and od_a.pairs[0].b == ds.pairs[0].b


def test_occluded_bin_dataset_and_refusals():
    ds = read_dataset(f"bin:{FIX / 'bin' / 'tiny.bin'}")
    od = occluded_dataset(ds, Occluder("glasses", seed=1))
    img, mask = od.pairs[2].b.load_with_mask()
    assert img.shape == (40, 40, 3) and mask.shape == (40, 40) and mask.any()
    raw = Dataset("raw", ds.pairs, aligned=False)
    with pytest.raises(InputError, match="not ArcFace-aligned"):
        occluded_dataset(raw, Occluder())
    assert len(occluded_dataset(raw, Occluder(), allow_unaligned=True)) == len(ds)
    with pytest.raises(InputError, match="which must be 'a' or 'b'"):
        occluded_dataset(ds, Occluder(), which="c")  # type: ignore[arg-type]
