"""PairDraw (K pairs spread over the folds, replacements for dropped ones), the drop reasons, and
prepare_pairs delivering K pairs when the dataset has them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from explainer_service.datasets import Pair, read_dataset
from explainer_service.datasets.draw import PairDraw, evenly_spread
from explainer_service.datasets.drops import DROP_REASONS, count_drops, describe_drops, drop_reason
from explainer_service.errors import FaceNotFoundError, InputError
from explainer_service.spec import ARCFACE_CHIP


def _pairs(per_fold: int, folds: int, *, mixed: bool = False) -> list[Pair]:
    """``per_fold`` pairs in each fold, grouped by fold; with ``mixed`` every other pair mismatched."""
    out = []
    for f in range(folds):
        for j in range(per_fold):
            out.append(Pair(Path(f"f{f}/a{j}.png"), Path(f"f{f}/b{j}.png"), not (mixed and j % 2), f))
    return out


def _deliver(draw: PairDraw, bad: set[int]) -> tuple[list[int], list[tuple[int, int | None]]]:
    """What prepare_pairs does with the draw: each chosen pair, or its replacements until one is
    good; returns the delivered indices and every (dropped, replacement) step."""
    delivered, steps = [], []
    for first in draw.chosen:
        index: int | None = first
        while index is not None:
            if index not in bad:
                delivered.append(index)
                break
            nxt = draw.replace(index)
            steps.append((index, nxt))
            index = nxt
    return delivered, steps


def test_the_first_choice_is_evaluates_historic_even_spread():
    n, k = 350, 40
    want = k + max(2, k // 10)
    old = np.unique(np.linspace(0, n - 1, want).round().astype(int))[:k]
    assert evenly_spread(n, k) == [int(i) for i in old]
    assert evenly_spread(5, 10) == [0, 1, 2, 3, 4] and evenly_spread(0, 3) == []
    draw = PairDraw(_pairs(35, 10), k)
    assert list(draw.chosen) == evenly_spread(n, k)
    assert {i // 35 for i in draw.chosen} == set(range(10))  # every fold


def test_replacements_keep_fold_and_label_and_k_is_delivered():
    pairs = _pairs(12, 5, mixed=True)
    draw = PairDraw(pairs, 10)
    bad = set(draw.chosen[::2])  # half the first choice fails
    delivered, steps = _deliver(draw, bad)
    assert len(delivered) == 10 and len(set(delivered)) == 10
    assert draw.replaced == len(steps) == 5 and draw.cross_fold == 0
    for dropped, by in steps:
        assert by is not None and by not in draw.chosen
        assert (pairs[by].fold, pairs[by].same) == (pairs[dropped].fold, pairs[dropped].same)
    # the delivered pairs keep the first choice's spread: same folds, same labels, in the same order
    assert [(pairs[i].fold, pairs[i].same) for i in delivered] == [(pairs[i].fold, pairs[i].same) for i in draw.chosen]


def test_replacements_are_deterministic_and_independent_of_order_of_calls_elsewhere():
    pairs = _pairs(20, 4)
    one, two = PairDraw(pairs, 8), PairDraw(pairs, 8)
    bad = set(range(0, 80, 3))
    assert _deliver(one, bad) == _deliver(two, bad)
    # not simply the next pair in the list: a fixed shuffle of the fold's unused pairs
    first = PairDraw(pairs, 8)
    picks = [first.replace(0) for _ in range(5)]
    assert all(p is not None and p < 20 for p in picks) and picks != sorted(picks)


def test_a_fold_without_spares_borrows_from_the_fold_with_most_left_and_counts_it():
    # fold 0 has 2 pairs (both chosen), fold 1 has 6, fold 2 has 3
    pairs = [Pair(Path(f"a{i}"), Path(f"b{i}"), True, f) for i, f in enumerate([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2])]
    draw = PairDraw(pairs, 11)
    assert draw.chosen == tuple(range(11)) and draw.replace(0) is None  # nothing unused at all

    draw = PairDraw(pairs, 3)
    chosen_folds = [pairs[i].fold for i in draw.chosen]
    assert chosen_folds == [0, 1, 1]
    by = draw.replace(draw.chosen[0])  # fold 0's other pair is unused: same fold
    assert by is not None and pairs[by].fold == 0 and draw.cross_fold == 0
    by = draw.replace(draw.chosen[0])  # fold 0 exhausted: fold 1 has the most left
    assert by is not None and pairs[by].fold == 1 and draw.cross_fold == 1


def test_shortfall_when_the_label_runs_out_and_other_labels_are_never_used():
    pairs = _pairs(3, 2, mixed=True)  # folds 0 and 1: matched, mismatched, matched
    draw = PairDraw(pairs, 2)
    assert draw.chosen == (0, 2)
    bad = {i for i, p in enumerate(pairs) if p.same}  # every matched pair fails
    delivered, steps = _deliver(draw, bad)
    assert delivered == []
    handed = [by for _, by in steps if by is not None]
    assert sorted(handed) == [3, 5] and draw.cross_fold == 1  # fold 1's matched pairs, never 1 or 4
    assert [by for _, by in steps].count(None) == 2 and draw.left(True) == 0 and draw.left(False) == 2


@given(
    folds=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    k=st.integers(1, 30),
    bad_seed=st.integers(0, 2**16),
)
def test_k_or_every_usable_pair_is_delivered(folds, k, bad_seed):
    pairs = [Pair(Path(f"a{i}"), Path(f"b{i}"), True, f) for i, f in enumerate(sorted(folds))]
    bad = {i for i in range(len(pairs)) if np.random.default_rng([bad_seed, i]).random() < 0.4}
    draw = PairDraw(pairs, k)
    delivered, steps = _deliver(draw, bad)
    assert len(delivered) == min(k, len(pairs) - len(bad))
    assert len(set(delivered)) == len(delivered) and not set(delivered) & bad
    handed = [by for _, by in steps if by is not None]
    assert len(handed) == len(set(handed)) and not set(handed) & set(draw.chosen)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be >= 1"):
        PairDraw(_pairs(2, 1), 0)


# --- drop reasons -------------------------------------------------------------------------------


def test_drop_reasons_from_errors_and_stage():
    assert drop_reason(InputError("x.jpg: cannot decode"), stage="load") == "unreadable"
    assert drop_reason(FaceNotFoundError("x.jpg: no face found (dlib HOG detector)"), stage="align") == "no_face"
    assert drop_reason(FaceNotFoundError("x.jpg: 2 faces found; choose one with ..."), stage="align") == "several_faces"
    assert drop_reason(InputError("x.jpg: not square"), stage="align") == "not_aligned"


def test_drop_counts_name_every_reason_and_describe_only_the_ones_seen():
    counts = count_drops(["no_face", "unreadable", "no_face"])
    assert list(counts) == list(DROP_REASONS) and counts["no_face"] == 2 and counts["several_faces"] == 0
    assert describe_drops(counts) == "3 dropped (1 unreadable image, 2 no face)"
    assert describe_drops(count_drops([])) == "none dropped"


# --- prepare_pairs with replacements ------------------------------------------------------------


def _folded_aligned_csv(tmp_path: Path) -> Path:
    """An aligned CSV set of 12 matched pairs in 3 folds (4 each): pair 0 (fold 0) has an
    unreadable B, pair 5 (fold 1) a non-square A; every other image is a good 112x112 crop."""
    rng = np.random.default_rng(0)
    rows = ["img1,img2,same,fold"]
    for i in range(12):
        for side in "ab":
            shape = (90, 112) if (i, side) == (5, "a") else (112, 112)
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / f"{side}{i}.png")
        rows.append(f"a{i}.png,b{i}.png,1,{i // 4}")
    (tmp_path / "b0.png").write_bytes(b"not an image")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.csv"


def test_prepare_pairs_replaces_dropped_pairs_from_their_fold(tmp_path):
    from explainer_service.datasets.prepare import prepare_pairs

    ds = read_dataset(f"csv-aligned:{_folded_aligned_csv(tmp_path)}")
    model = SimpleNamespace(spec=SimpleNamespace(chip=ARCFACE_CHIP))
    draw = PairDraw([p for p in ds.pairs if p.same], 6)
    assert 0 in draw.chosen and 5 in draw.chosen  # the two bad pairs are in the first choice
    prepared = prepare_pairs(ds, model, pairs=6)
    assert len(prepared.chips_a) == 6 and prepared.shortfall == 0
    assert prepared.dropped == {"unreadable": 1, "no_face": 0, "several_faces": 0, "not_aligned": 1}
    assert (prepared.replaced, prepared.cross_fold) == (2, 0)
    fold_of = {str(p.a): p.fold for p in ds.pairs}
    assert sorted(fold_of[a] for a, _ in prepared.names) == sorted(ds.pairs[i].fold for i in draw.chosen)
    assert str(tmp_path / "a0.png") not in {a for a, _ in prepared.names}
    assert prepared.summary() == ("6 matched pairs of 12; 2 dropped (1 unreadable image, 1 not aligned), "
                                  "2 replaced from the same fold")
    report = prepared.report()
    assert report["delivered"] == 6 and report["dropped_total"] == 2 and report["shortfall"] == 0
    again = prepare_pairs(ds, model, pairs=6)
    assert again.names == prepared.names  # deterministic


def test_prepare_pairs_says_when_the_dataset_has_fewer_usable_pairs(tmp_path):
    from explainer_service.datasets.prepare import prepare_pairs

    ds = read_dataset(f"csv-aligned:{_folded_aligned_csv(tmp_path)}")
    model = SimpleNamespace(spec=SimpleNamespace(chip=ARCFACE_CHIP))
    prepared = prepare_pairs(ds, model, pairs=20)
    assert len(prepared.chips_a) == 10 and prepared.shortfall == 10 and prepared.requested == 20
    assert "only 10 of the 20 pairs asked" in prepared.summary()
