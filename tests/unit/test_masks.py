"""Unit tests of explainer_service.masks (CorrRISE mask generation)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.masks import (
    PAPER_CHIP,
    PAPER_MASKS,
    PAPER_PATCH_SIZE,
    PAPER_PATCHES,
    MaskConfig,
    generate_masks,
    mask_coverage,
)

CONFIGS = {
    "uniform-clip": MaskConfig(n_masks=40, seed=3),
    "uniform-inside": MaskConfig(n_masks=40, seed=3, clip_at_border=False),
    "per-pixel": MaskConfig(n_masks=40, seed=3, per_pixel=True),
    "binary": MaskConfig(n_masks=40, seed=3, values="binary"),
    "binary-inside": MaskConfig(n_masks=40, seed=3, values="binary", clip_at_border=False),
}


def _coverage_probability(chip: int, side: int, patches: int, clip_at_border: bool) -> np.ndarray:
    """Exact probability (H, W) that a pixel is covered by at least one of the independent
    patches."""
    if clip_at_border:
        positions = chip + side - 1  # top-left in [-(S-1), chip-1]
        first = np.arange(-(side - 1), chip)
    else:
        positions = chip - side + 1  # top-left in [0, chip-S]
        first = np.arange(0, chip - side + 1)
    rows = np.arange(chip)
    # Number of top-left rows whose patch covers row i: first <= i < first + S.
    hits = ((first[None, :] <= rows[:, None]) & (rows[:, None] < first[None, :] + side)).sum(axis=1)
    assert hits.size == chip and positions == first.size
    one_patch = np.outer(hits, hits) / positions**2
    return 1.0 - (1.0 - one_patch) ** patches


# --- shape, dtype, values -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shape_dtype_and_range(name: str) -> None:
    masks = generate_masks(CONFIGS[name], 56)
    assert masks.shape == (40, 56, 56)
    assert masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert (masks == 1).any() and (masks < 1).any()  # both kept and covered pixels


def test_default_config_is_the_papers() -> None:
    config = MaskConfig()
    assert (config.n_masks, config.patches) == (PAPER_MASKS, PAPER_PATCHES) == (500, 10)
    assert config.patch_size_for(PAPER_CHIP) == PAPER_PATCH_SIZE == 30
    assert config.values == "uniform" and not config.per_pixel


@pytest.mark.parametrize("name", ["binary", "binary-inside"])
def test_binary_masks_hold_only_zero_and_one(name: str) -> None:
    masks = generate_masks(CONFIGS[name], 56)
    assert set(np.unique(masks).tolist()) == {0.0, 1.0}


def test_uniform_patches_have_one_value_each() -> None:
    masks = generate_masks(MaskConfig(n_masks=30, patches=4, seed=1), 56)
    for mask in masks:
        # 1 (background) plus at most one value per patch (fewer if a patch is hidden or cut off).
        assert 2 <= np.unique(mask).size <= 4 + 1


def test_a_later_patch_is_pasted_whole_over_an_earlier_one() -> None:
    """Two patches per mask: where they overlap, the winner's region is a full S x S square and the
    other's is not. The winner is the later patch, whose value is independent of the earlier one's,
    so it is the smaller of the two values about half of the time (always, were the masks combined
    by a minimum; never, by a maximum)."""
    side, chip = 6, 14
    config = MaskConfig(n_masks=600, patches=2, patch_size=side, clip_at_border=False, seed=2)
    smaller_wins = overlapping = 0
    for mask in generate_masks(config, chip):
        values = [v for v in np.unique(mask) if v != 1]
        if len(values) != 2:
            continue  # hidden patch (or equal values)
        sizes = {v: int(np.count_nonzero(mask == v)) for v in values}
        if sum(sizes.values()) == 2 * side * side:
            continue  # disjoint patches
        full = [v for v in values if sizes[v] == side * side]
        assert len(full) == 1  # exactly one solid square: the patch pasted last
        rows, cols = np.nonzero(mask == full[0])
        assert np.ptp(rows) == side - 1 and np.ptp(cols) == side - 1
        overlapping += 1
        smaller_wins += full[0] == min(values)
    assert overlapping > 100
    # Binomial(overlapping, 1/2): 0.5 +- 0.05 at 100 cases; 0.3..0.7 is 4 SE away.
    assert 0.3 < smaller_wins / overlapping < 0.7


def test_per_pixel_patch_has_many_distinct_values() -> None:
    config = MaskConfig(n_masks=5, patches=1, patch_size=12, per_pixel=True, clip_at_border=False)
    for mask in generate_masks(config, 40):
        covered = mask[mask != 1]
        assert covered.size == 12 * 12
        # 144 draws on float32's 2**24 grid in [0, 1): a collision is possible but rare.
        assert np.unique(covered).size >= 140


def test_patch_inside_chip_is_a_full_square() -> None:
    config = MaskConfig(n_masks=50, patches=1, patch_size=9, clip_at_border=False, seed=5)
    for mask in generate_masks(config, 30):
        rows, cols = np.nonzero(mask != 1)
        assert rows.size == 81
        assert rows.max() - rows.min() == 8 and cols.max() - cols.min() == 8


def test_clipped_patch_is_a_rectangle_touching_the_border_when_cut() -> None:
    config = MaskConfig(n_masks=200, patches=1, patch_size=9, seed=5)
    cut = 0
    for mask in generate_masks(config, 30):
        rows, cols = np.nonzero(mask != 1)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 1 <= height <= 9 and 1 <= width <= 9
        assert rows.size == height * width  # a solid rectangle
        if height < 9:
            assert rows.min() == 0 or rows.max() == 29
        if width < 9:
            assert cols.min() == 0 or cols.max() == 29
        cut += rows.size < 81
    # P(cut) = 1 - (22/38)**2 = 0.665; 200 masks give 133 +- 6.7 expected.
    assert 100 < cut < 170


# --- reproducibility and chunking -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_seed_same_masks_other_seed_other_masks(name: str) -> None:
    config = CONFIGS[name]
    first = generate_masks(config, 56)
    again = generate_masks(config, 56)
    np.testing.assert_array_equal(first, again)
    other = generate_masks(MaskConfig(**{**config.__dict__, "seed": config.seed + 1}), 56)
    assert not np.array_equal(first, other)
    # Masks of one set differ from each other.
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chunked_generation_is_bit_identical(name: str) -> None:
    config = CONFIGS[name]
    whole = generate_masks(config, 56)
    bounds = [0, 7, 7, 8, 23, 40]  # uneven pieces, one empty
    pieces = [generate_masks(config, 56, a, b) for a, b in itertools.pairwise(bounds)]
    assert pieces[1].shape == (0, 56, 56)
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    np.testing.assert_array_equal(generate_masks(config, 56, start=23), whole[23:])


def test_mask_k_does_not_depend_on_the_size_of_the_set() -> None:
    small = generate_masks(MaskConfig(n_masks=5, seed=9), 56)
    large = generate_masks(MaskConfig(n_masks=50, seed=9), 56)
    np.testing.assert_array_equal(small, large[:5])


# --- patch size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chip", "side"), [(112, 30), (150, 40), (56, 15), (224, 60), (2, 1), (1, 1)]
)
def test_patch_size_scales_with_the_chip(chip: int, side: int) -> None:
    assert MaskConfig().patch_size_for(chip) == side


def test_explicit_patch_size_is_used() -> None:
    config = MaskConfig(patch_size=7)
    assert config.patch_size_for(112) == 7
    assert config.patch_size_for(7) == 7
    with pytest.raises(InputError, match="patch_size"):
        config.patch_size_for(6)


# --- coverage statistics --------------------------------------------------------------------------

N_COVERAGE = 4000
CHIP, SIDE = 56, 15  # the paper's geometry at half scale


@pytest.fixture(scope="module")
def coverage_masks() -> dict[bool, np.ndarray]:
    return {
        clip: mask_coverage(
            generate_masks(MaskConfig(n_masks=N_COVERAGE, seed=11, clip_at_border=clip), CHIP)
        )
        for clip in (True, False)
    }


@pytest.mark.parametrize("clip", [True, False])
def test_coverage_matches_the_exact_probability(coverage_masks, clip: bool) -> None:
    """Each pixel's coverage count is Binomial(N, p) with p known exactly (independent patches).

    Per pixel the deviation is held to 6 standard errors sqrt(p (1-p) / N) (plus 1/N for pixels with
    tiny p, where the normal approximation is poor): P(|z| > 6) ~ 2e-9, times 3136 pixels < 1e-5.
    """
    expected = _coverage_probability(CHIP, SIDE, PAPER_PATCHES, clip)
    observed = coverage_masks[clip]
    stderr = np.sqrt(expected * (1 - expected) / N_COVERAGE)
    assert np.all(np.abs(observed - expected) <= 6 * stderr + 1.0 / N_COVERAGE)


def test_clipped_coverage_is_uniform_over_the_chip(coverage_masks) -> None:
    observed = coverage_masks[True]
    p = _coverage_probability(CHIP, SIDE, PAPER_PATCHES, True)
    assert np.ptp(p) < 1e-12  # uniform by construction
    p = float(p[0, 0])  # 1 - (1 - (15/70)**2)**10 = 0.372
    # Corner vs centre: two binomial proportions; their difference has a standard error of
    # sqrt(2 p (1-p) / N) = 0.0108 (they are positively correlated, which only lowers it): 5 SE.
    tol = 5 * np.sqrt(2 * p * (1 - p) / N_COVERAGE)
    centre = observed[CHIP // 2, CHIP // 2]
    for corner in (observed[0, 0], observed[0, -1], observed[-1, 0], observed[-1, -1]):
        assert abs(corner - centre) < tol
    # Border rows against the middle rows, averaged (many pixels: a tighter bound still holds).
    assert abs(observed[[0, -1]].mean() - observed[CHIP // 2 - 1 : CHIP // 2 + 1].mean()) < tol


def test_inside_coverage_leaves_the_corners_bare(coverage_masks) -> None:
    observed = coverage_masks[False]
    centre = observed[CHIP // 2, CHIP // 2]  # p = 1 - (1 - (15/42)**2)**10 = 0.75
    corners = observed[[0, 0, -1, -1], [0, -1, 0, -1]]  # p = 1 - (1 - 1/42**2)**10 = 0.0057
    assert centre > 0.7
    assert np.all(corners < 0.02)
    # Clipping at the border is what makes the difference.
    assert coverage_masks[True][0, 0] > 0.3


@pytest.mark.parametrize("clip", [True, False])
def test_covered_fraction_per_mask_matches_the_analytic_mean(clip: bool) -> None:
    """Mean over masks of the fraction of covered pixels, at the paper's geometry (112 px, 30 px).

    Expected value: the mean over pixels of the exact per-pixel coverage probability. Tolerance: the
    fraction is a function of P = 10 independent patches, each moving it by at most S**2/C**2 =
    0.0717, so by the Efron-Stein inequality its variance is at most P/2 * 0.0717**2 = 0.0257
    (sd <= 0.16); the mean over N = 1500 masks has sd <= 0.0041 and we allow 5 of them (0.021).
    Without overlaps a mask would cover P S**2 / C**2 = 0.717 of the chip (clip_at_border=False);
    overlaps make the real fraction smaller, which the test checks too.
    """
    n = 1500
    config = MaskConfig(n_masks=n, seed=21, clip_at_border=clip)
    masks = generate_masks(config, PAPER_CHIP)
    fraction = (masks != 1).mean(axis=(1, 2))
    expected = _coverage_probability(PAPER_CHIP, PAPER_PATCH_SIZE, PAPER_PATCHES, clip).mean()
    sd_bound = np.sqrt(PAPER_PATCHES / 2) * PAPER_PATCH_SIZE**2 / PAPER_CHIP**2
    assert abs(fraction.mean() - expected) < 5 * sd_bound / np.sqrt(n)
    no_overlap = PAPER_PATCHES * PAPER_PATCH_SIZE**2 / PAPER_CHIP**2
    assert fraction.mean() < no_overlap
    assert fraction.max() <= no_overlap + 1e-12  # a mask never covers more than P S^2 pixels


def test_mask_coverage_by_hand() -> None:
    masks = np.ones((4, 2, 3), dtype=np.float32)
    masks[0, 0, 0] = 0.0
    masks[1, 0, 0] = 0.5
    masks[2, 1, 2] = 0.999
    np.testing.assert_allclose(mask_coverage(masks), [[0.5, 0, 0], [0, 0, 0.25]])
    with pytest.raises(InputError, match="masks"):
        mask_coverage(np.ones((3, 3)))
    with pytest.raises(InputError, match="masks"):
        mask_coverage(np.ones((0, 3, 3)))


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"n_masks": 0}, "n_masks"),
        ({"n_masks": 2.5}, "n_masks"),
        ({"n_masks": True}, "n_masks"),
        ({"patches": 0}, "patches"),
        ({"patch_size": 0}, "patch_size"),
        ({"patch_size": 3.0}, "patch_size"),
        ({"values": "gaussian"}, "values"),
        ({"per_pixel": "yes"}, "per_pixel"),
        ({"values": "binary", "per_pixel": True}, "per_pixel"),
        ({"clip_at_border": 1}, "clip_at_border"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_config_raises_input_error_naming_the_option(kwargs: dict, option: str) -> None:
    with pytest.raises(InputError, match=option):
        MaskConfig(**kwargs)


@pytest.mark.parametrize(
    ("start", "stop"), [(-1, 5), (0, 11), (6, 5), (11, None), (0.0, 5), (0, 5.5)]
)
def test_bad_start_stop_raise_input_error(start, stop) -> None:
    with pytest.raises(InputError, match="start"):
        generate_masks(MaskConfig(n_masks=10), 20, start, stop)


@pytest.mark.parametrize("chip", [0, -3, 2.0, "112"])
def test_bad_chip_size_raises_input_error(chip) -> None:
    with pytest.raises(InputError, match="chip_size"):
        generate_masks(MaskConfig(n_masks=2), chip)


def test_patch_larger_than_chip_raises_input_error() -> None:
    with pytest.raises(InputError, match="patch_size"):
        generate_masks(MaskConfig(n_masks=2, patch_size=40), 39)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        MaskConfig().seed = 4  # type: ignore[misc]


# --- speed ----------------------------------------------------------------------------------------


def test_paper_set_at_150px_is_fast() -> None:
    """500 masks of 150 x 150: ~20-50 ms here. The 1 s bound guards against per-pixel Python loops
    (11 M pixels, several seconds) while leaving room for slow CI machines."""
    generate_masks(MaskConfig(n_masks=5), 150)  # warm up
    start = time.perf_counter()
    masks = generate_masks(MaskConfig(), 150)
    elapsed = time.perf_counter() - start
    assert masks.shape == (500, 150, 150)
    assert elapsed < 1.0, f"{elapsed:.3f} s"
