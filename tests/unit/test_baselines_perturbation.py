"""The perturbation baselines (RISE, LIME, xFace, MinPlus) on the toy model: each method's defining
computation against a brute-force version, and the contract every method keeps (batching never
changes a map, seeds reproduce, maps are finite, the region the model uses ranks above the
background, bad options and chips raise InputError)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.methods.lime import (
    LIME,
    LIMEConfig,
    fit_weighted_ridge,
    lime_kernel_weights,
    lime_samples,
    segment_chip,
)
from explainer_service.methods.minplus import (
    MinPlus,
    MinPlusConfig,
    minplus_centres,
    minplus_forward_passes,
    minplus_gaussians,
    minplus_sigma,
)
from explainer_service.methods.rise import (
    RISE,
    RISEConfig,
    rise_cell_size,
    rise_grids,
    rise_masks,
    upsample_matrix,
)
from explainer_service.methods.xface import (
    XFace,
    XFaceConfig,
    gaussian_blur,
    xface_occlusion_count,
    xface_patch_sizes,
    xface_positions,
    xface_stride,
)
from explainer_service.models.base import to_model_input
from tests.toy import SIZE, Q, R, ToyModel, toy_pair


class RecordingToy(ToyModel):
    """The toy model, also recording the largest batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.max_batch = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.max_batch = max(self.max_batch, len(images))
        return super().embed(images)


def cos(u: np.ndarray, v: np.ndarray) -> float:
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def embed_one(model: ToyModel, image: np.ndarray) -> np.ndarray:
    return model.embed(to_model_input(np.asarray(image, np.float32)))[0]


def background() -> np.ndarray:
    sel = np.ones((SIZE, SIZE), bool)
    sel[R] = False
    sel[Q] = False
    return sel


def in_region(point, region) -> bool:
    y, x = point
    return region[0].start <= y < region[0].stop and region[1].start <= x < region[1].stop


# small, fast configs on the 32 px toy chips
SMALL = {
    "rise": lambda **kw: RISE(kw.pop("model"), RISEConfig(**{"n_masks": 300, "grid": 4, "seed": 1, **kw})),
    "lime": lambda **kw: LIME(
        kw.pop("model"),
        LIMEConfig(**{"n_samples": 200, "n_segments": 16, "compactness": 100.0, "seed": 1, **kw}),
    ),
    "xface": lambda **kw: XFace(kw.pop("model"), XFaceConfig(**{"patch_sizes": (4, 8), "stride": 2, **kw})),
    "minplus": lambda **kw: MinPlus(kw.pop("model"), MinPlusConfig(**{"steps": 4, **kw})),
}
METHODS = list(SMALL)


def make(name: str, model=None, **kw):
    return SMALL[name](model=model or ToyModel(), **kw)


# ------------------------------------------------------------------------------------------- RISE


def test_rise_masks_have_the_papers_statistics_shape_and_shift():
    from skimage.transform import resize

    cfg = RISEConfig(n_masks=400, grid=4, p=0.3, seed=5)
    masks = rise_masks(cfg, SIZE)
    assert masks.shape == (400, SIZE, SIZE) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert abs(masks.mean() - 0.3) < 0.02
    grids, shifts = rise_grids(cfg, SIZE)
    cell = rise_cell_size(SIZE, cfg.grid)
    assert cell == 8 and grids.shape == (400, 4, 4) and shifts.shape == (400, 2)
    assert abs(grids.mean() - 0.3) < 0.02
    assert shifts.min() == 0 and shifts.max() == cell - 1  # random shift in [0, C)
    up = (cfg.grid + 1) * cell
    for k in (0, 1, 17, 399):  # the paper's code: resize to (s+1)*C, crop at the shift
        dy, dx = shifts[k]
        big = resize(grids[k].astype(float), (up, up), order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose(masks[k], big[dy : dy + SIZE, dx : dx + SIZE], atol=1e-6)
    # a different shift of the same grid is a different mask; chunks reproduce the set exactly
    k = int(np.argmax(shifts.sum(1)))
    unshifted = upsample_matrix(4, up) @ grids[k].astype(float) @ upsample_matrix(4, up).T
    assert not np.allclose(masks[k], unshifted[:SIZE, :SIZE])
    np.testing.assert_array_equal(rise_masks(cfg, SIZE, 10, 30), masks[10:30])
    # the default p = 0.5 keeps half the pixels on average
    assert abs(rise_masks(RISEConfig(n_masks=300, seed=2), SIZE).mean() - 0.5) < 0.03


def test_upsample_matrix_is_skimage_bilinear_resize():
    from skimage.transform import resize

    rng = np.random.default_rng(0)
    for n_in, n_out in ((8, 171), (8, 135), (4, 40), (1, 3), (3, 17)):
        g = rng.random((n_in, n_in))
        w = upsample_matrix(n_in, n_out)
        ref = resize(g, (n_out, n_out), order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose(w @ g @ w.T, ref, atol=1e-12)


def test_rise_map_is_the_brute_force_weighted_average():
    a, b = toy_pair(2)
    model = ToyModel()
    cfg = RISEConfig(n_masks=24, grid=4, p=0.4, seed=3, perturbations_per_eval=5)
    ex = RISE(model, cfg).attribute(a, b)
    masks = rise_masks(cfg, SIZE).astype(np.float64)
    fa, fb = embed_one(model, a), embed_one(model, b)
    s_a = np.array([cos(embed_one(model, a * m[..., None]), fb) for m in masks])
    s_b = np.array([cos(embed_one(model, b * m[..., None]), fa) for m in masks])
    np.testing.assert_allclose(ex.scores_a, s_a, atol=1e-6)
    np.testing.assert_allclose(ex.scores_b, s_b, atol=1e-6)
    np.testing.assert_allclose(ex.s_a, np.tensordot(s_a, masks, 1) / (24 * 0.4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.s_b, np.tensordot(s_b, masks, 1) / (24 * 0.4), rtol=1e-5, atol=1e-6)
    assert math.isclose(ex.score, cos(fa, fb), rel_tol=1e-6)


# ------------------------------------------------------------------------------------------- LIME


def test_lime_ridge_equals_brute_force_weighted_least_squares():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(12, 3)).astype(float)
    y = rng.normal(size=12)
    w = rng.uniform(0.1, 1.0, size=12)
    for alpha in (0.0, 0.7, 1.0):
        b0, coef = fit_weighted_ridge(x, y, w, alpha)
        # argmin sum_k w_k (y_k - b - x_k.c)^2 + alpha |c|^2 as one augmented least-squares problem
        design = np.vstack([np.sqrt(w)[:, None] * np.hstack([np.ones((12, 1)), x]),
                            np.hstack([np.zeros((3, 1)), math.sqrt(alpha) * np.eye(3)])])
        target = np.concatenate([np.sqrt(w) * y, np.zeros(3)])
        sol = np.linalg.lstsq(design, target, rcond=None)[0]
        assert math.isclose(b0, sol[0], abs_tol=1e-10)
        np.testing.assert_allclose(coef, sol[1:], atol=1e-10)


def test_lime_kernel_is_limes_on_the_cosine_distance_to_all_ones():
    z = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    ones = np.ones(4)
    d = np.array([1 - (r @ ones) / (np.linalg.norm(r) * 2.0) if r.any() else 1.0 for r in z.astype(float)])
    np.testing.assert_allclose(lime_kernel_weights(z, 0.25), np.sqrt(np.exp(-(d**2) / 0.0625)))
    assert lime_kernel_weights(z, 0.25)[0] == 1.0


def test_lime_map_paints_the_brute_force_surrogate():
    a, b = toy_pair(1)
    model = ToyModel()
    cfg = LIMEConfig(n_samples=40, n_segments=16, compactness=100.0, seed=4, perturbations_per_eval=9)
    ex = LIME(model, cfg).attribute(a, b)
    fa, fb = embed_one(model, a), embed_one(model, b)
    for face, (chip, ref, got_map, got_scores) in enumerate(((a, fb, ex.s_a, ex.scores_a), (b, fa, ex.s_b, ex.scores_b))):
        seg = segment_chip(chip, cfg)
        f = int(seg.max()) + 1
        assert f >= 12 and np.array_equal(np.unique(seg), np.arange(f))  # superpixels 0..F-1
        z = lime_samples(40, f, 4, face)
        assert z[0].all() and 0.4 < z[1:].mean() < 0.6
        y = np.array([cos(embed_one(model, np.where(zk[seg][..., None], chip, 0)), ref) for zk in z])
        np.testing.assert_allclose(got_scores, y, atol=1e-6)
        assert math.isclose(y[0], ex.score, rel_tol=1e-6)  # sample 0 is the clean face
        w = lime_kernel_weights(z, 0.25)
        design = np.vstack([np.sqrt(w)[:, None] * np.hstack([np.ones((40, 1)), z]),
                            np.hstack([np.zeros((f, 1)), np.eye(f)])])  # alpha = 1
        sol = np.linalg.lstsq(design, np.concatenate([np.sqrt(w) * y, np.zeros(f)]), rcond=None)[0]
        np.testing.assert_allclose(got_map, sol[1:][seg], atol=1e-6)


def test_lime_mean_substrate_fills_superpixels_with_their_mean_colour():
    a, b = toy_pair()
    cfg = LIMEConfig(n_samples=10, n_segments=16, compactness=100.0, substrate="mean")
    lime = LIME(ToyModel(), cfg)
    seg = segment_chip(a, cfg)
    fill = lime._substrate(a.astype(np.float32), seg)
    for k in (0, 7):
        np.testing.assert_allclose(fill[seg == k], a[seg == k].mean(0)[None].repeat((seg == k).sum(), 0), rtol=1e-5)
    assert np.isfinite(lime.attribute(a, b).s_a).all()


# ------------------------------------------------------------------------------------------ xFace


@pytest.mark.parametrize(
    "size, patch, stride, expected",
    [(112, 7, 5, 441), (112, 14, 5, 400), (112, 28, 5, 289), (150, 9, 7, 441), (150, 38, 7, 256),
     (32, 8, 2, 144), (32, 31, 5, 1), (32, 32, 1, 0)],
)
def test_xface_occlusion_count_matches_formula_and_brute_force(size, patch, stride, expected):
    brute = sum(1 for _y in range(0, size - patch, stride) for _x in range(0, size - patch, stride))
    assert xface_occlusion_count(size, patch, stride) == expected == brute
    assert expected == max(0, math.ceil((size - patch) / stride)) ** 2
    assert len(xface_positions(size, patch, stride)) == expected


def test_xface_paper_sizes_scale_with_the_chip_and_the_model_sees_every_occlusion():
    assert xface_patch_sizes(XFaceConfig(), 112) == (7, 14, 28) and xface_stride(XFaceConfig(), 112) == 5
    assert xface_patch_sizes(XFaceConfig(), 150) == (9, 19, 38) and xface_stride(XFaceConfig(), 150) == 7
    assert xface_patch_sizes(XFaceConfig(), SIZE) == (2, 4, 8) and xface_stride(XFaceConfig(), SIZE) == 1
    model = ToyModel()
    a, b = toy_pair()
    ex = XFace(model, XFaceConfig(patch_sizes=(3, 6, 12), stride=3)).attribute(a, b)
    counts = [xface_occlusion_count(SIZE, p, 3) for p in (3, 6, 12)]
    assert ex.masks == sum(counts) == len(ex.scores_a) and ex.params["occlusions"] == counts
    assert model.images == 2 + 2 * sum(counts)


def test_xface_map_is_the_mean_deviation_over_covering_patches_and_high_in_r():
    a, b = toy_pair(3)
    model = ToyModel()
    patch, stride = 6, 4
    ex = XFace(model, XFaceConfig(patch_sizes=(patch,), stride=stride, smooth=False)).attribute(a, b)
    fa, fb = embed_one(model, a), embed_one(model, b)
    clean = cos(fa, fb)
    corners = [(y, x) for y in range(0, SIZE - patch, stride) for x in range(0, SIZE - patch, stride)]
    dev = []
    for y, x in corners:
        occ = a.astype(np.float32).copy()
        occ[y : y + patch, x : x + patch] = 0
        dev.append(((1 - cos(embed_one(model, occ), fb)) - (1 - clean)) / patch**2)
    brute = np.zeros((SIZE, SIZE))
    for i in range(SIZE):
        for j in range(SIZE):
            brute[i, j] = sum(d for (y, x), d in zip(corners, dev, strict=True) if y <= i < y + patch and x <= j < x + patch)
    np.testing.assert_allclose(ex.s_a, brute / len(corners), atol=1e-9)
    # occluding R (shared identity) raises the distance; the ignored background only gets the
    # deviations of patches that reach into R
    assert ex.s_a[R].mean() > 3 * np.abs(ex.s_a[background()]).mean() > 0
    assert np.all(ex.s_a[20:, :] == 0)  # no patch covering these rows reaches R (rows 4-13)
    # in B, occluding the bright occluder in Q makes B more like A: negative deviation
    assert ex.s_b[Q].mean() < 0


def test_xface_blur_is_cv2s_gaussian_blur():
    from scipy.ndimage import convolve1d

    img = np.random.default_rng(0).normal(size=(20, 20))
    k, sigma = 5, 5.0
    taps = np.exp(-((np.arange(k) - 2) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    ref = convolve1d(convolve1d(img, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")
    np.testing.assert_allclose(gaussian_blur(img, k, sigma), ref, atol=1e-12)


# ---------------------------------------------------------------------------------------- MinPlus


def test_minplus_removes_and_inserts_r_first_on_the_toy():
    a, b = toy_pair()
    res = MinPlus(ToyModel(), MinPlusConfig(steps=3)).run(a, b)
    for path in (res.minus_a, res.plus_a, res.minus_b, res.plus_b):
        assert len(path.order) == 3 and len(set(path.order.tolist())) == 3
        assert in_region(path.centres[0], R), (path.kind, path.centres[0])
    # removal lowers the score step after step; insertion raises it
    assert np.all(np.diff(res.minus_a.scores) < 0) and np.all(np.diff(res.plus_a.scores) > 0)
    assert res.minus_a.scores[0] == pytest.approx(res.score)


def test_minplus_step_is_the_brute_force_greedy_choice():
    a, b = toy_pair(4)
    model = ToyModel()
    cfg = MinPlusConfig(steps=2, perturbations_per_eval=13)
    res = MinPlus(model, cfg).run(a, b)
    fb = embed_one(model, b)
    g = minplus_gaussians(minplus_centres(cfg, SIZE), minplus_sigma(cfg, SIZE), SIZE)
    chip = a.astype(np.float64)
    removed = np.zeros((SIZE, SIZE))
    saliency = np.zeros((SIZE, SIZE))
    prev = res.score
    left = list(range(len(g)))
    for t in range(2):
        scores = [cos(embed_one(model, chip * (1 - (1 - (1 - removed) * (1 - g[c])))[..., None]), fb) for c in left]
        j = int(np.argmin(scores))
        c = left.pop(j)
        assert res.minus_a.order[t] == c
        assert res.minus_a.scores[t + 1] == pytest.approx(scores[j], abs=1e-9)
        saliency += (prev - scores[j]) * g[c]
        prev = scores[j]
        removed = 1 - (1 - removed) * (1 - g[c])
    np.testing.assert_allclose(res.minus_a.saliency, saliency, atol=1e-9)
    np.testing.assert_allclose(res.map_a(), res.minus_a.saliency + res.plus_a.saliency)


@pytest.mark.parametrize("mode", ["minplus", "minus", "plus"])
def test_minplus_forward_passes_and_modes(mode):
    model = ToyModel()
    a, b = toy_pair()
    ex = MinPlus(model, MinPlusConfig(steps=3, mode=mode, substrate="blur")).attribute(a, b)
    assert model.images == minplus_forward_passes(64, 3, mode) == ex.params["forward_passes"]
    assert np.isfinite(ex.s_a).all() and ex.s_a[R].mean() > ex.s_a[background()].mean()
    assert minplus_forward_passes(64, 10) == 2384


# ------------------------------------------------------------------------------- every method


@pytest.mark.parametrize("name", METHODS)
def test_batching_never_changes_the_maps(name):
    a, b = toy_pair(5)
    runs = []
    for per_eval in (1, 7, 64):
        model = RecordingToy()
        runs.append((make(name, model, perturbations_per_eval=per_eval).attribute(a, b), model))
        assert model.max_batch <= max(per_eval, 2)  # 2: the clean pair
    ref = runs[0][0]
    for ex, model in runs[1:]:
        np.testing.assert_array_equal(ex.s_a, ref.s_a)
        np.testing.assert_array_equal(ex.s_b, ref.s_b)
        np.testing.assert_array_equal(ex.scores_a, ref.scores_a)
        assert model.images == runs[0][1].images  # same work, fewer calls
        assert model.calls < runs[0][1].calls


@pytest.mark.parametrize("name", METHODS)
def test_seeded_runs_reproduce(name):
    a, b = toy_pair(6)
    first = make(name).attribute(a, b)
    again = make(name).attribute(a, b)
    np.testing.assert_array_equal(first.s_a, again.s_a)
    np.testing.assert_array_equal(first.s_b, again.s_b)
    if name in ("rise", "lime"):  # the random methods: another seed, other samples
        other = make(name, seed=2).attribute(a, b)
        assert not np.array_equal(other.s_a, first.s_a)


@pytest.mark.parametrize("name", METHODS)
def test_maps_are_finite_and_rank_r_above_the_background(name):
    a, b = toy_pair()
    model = ToyModel()
    seen = []
    ex = make(name, model).attribute(a, b, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == model.images - 2  # every perturbed image reported
    assert all(d1 < d2 for (d1, _), (d2, _) in zip(seen, seen[1:], strict=False))
    assert ex.method == name and ex.model == "toy" and ex.threshold == 0.9
    assert ex.score == pytest.approx(cos(embed_one(model, a), embed_one(model, b)))
    assert ex.masks > 0 and isinstance(ex.params, dict)
    for m in (ex.s_a, ex.s_b):
        assert m.shape == (SIZE, SIZE) and m.dtype == np.float32 and np.isfinite(m).all()
        assert m[R].mean() > m[background()].mean()
        # most of R ranks above the median background pixel
        assert (m[R] > np.median(m[background()])).mean() > 0.6


def test_documented_forward_pass_costs():
    a, b = toy_pair()
    for name, expected in (("rise", 2 + 2 * 300), ("lime", 2 + 2 * 200),
                           ("xface", 2 + 2 * (14**2 + 12**2)), ("minplus", minplus_forward_passes(64, 4))):
        model = ToyModel()
        make(name, model).attribute(a, b)
        assert model.images == expected, name


BAD_CONFIGS = [
    (RISEConfig, {"n_masks": 0}, "n_masks"),
    (RISEConfig, {"grid": 0}, "grid"),
    (RISEConfig, {"p": 0.0}, "p"),
    (RISEConfig, {"p": 1.5}, "p"),
    (RISEConfig, {"seed": -1}, "seed"),
    (RISEConfig, {"perturbations_per_eval": 0}, "perturbations_per_eval"),
    (RISEConfig, {"n_masks": 2.5}, "n_masks"),
    (LIMEConfig, {"n_samples": 1}, "n_samples"),
    (LIMEConfig, {"segmentation": "felzenszwalb"}, "segmentation"),
    (LIMEConfig, {"substrate": "noise"}, "substrate"),
    (LIMEConfig, {"kernel_width": 0}, "kernel_width"),
    (LIMEConfig, {"alpha": -1.0}, "alpha"),
    (LIMEConfig, {"n_segments": 0}, "n_segments"),
    (LIMEConfig, {"perturbations_per_eval": True}, "perturbations_per_eval"),
    (XFaceConfig, {"patch_sizes": ()}, "patch_sizes"),
    (XFaceConfig, {"patch_sizes": (7, 0)}, "patch_sizes"),
    (XFaceConfig, {"stride": 0}, "stride"),
    (XFaceConfig, {"fill_value": 300}, "fill_value"),
    (XFaceConfig, {"smooth": "yes"}, "smooth"),
    (MinPlusConfig, {"steps": 0}, "steps"),
    (MinPlusConfig, {"sigma": -2.0}, "sigma"),
    (MinPlusConfig, {"stride": 0}, "stride"),
    (MinPlusConfig, {"substrate": "noise"}, "substrate"),
    (MinPlusConfig, {"mode": "max"}, "mode"),
    (MinPlusConfig, {"blur_sigma": float("nan")}, "blur_sigma"),
]


@pytest.mark.parametrize("cls, kw, option", BAD_CONFIGS)
def test_bad_configs_raise_input_error_naming_the_option(cls, kw, option):
    with pytest.raises(InputError, match=option):
        cls(**kw)


def test_configs_that_do_not_fit_the_chip_raise_input_error():
    a, b = toy_pair()
    with pytest.raises(InputError, match="patch size"):
        XFace(ToyModel(), XFaceConfig(patch_sizes=(32,))).attribute(a, b)
    with pytest.raises(InputError, match="steps"):
        MinPlus(ToyModel(), MinPlusConfig(steps=65)).attribute(a, b)


@pytest.mark.parametrize("name", METHODS)
def test_bad_chips_raise_input_error(name):
    a, b = toy_pair()
    method = make(name)
    with pytest.raises(InputError, match="chip A"):
        method.attribute(a[:16], b)
    with pytest.raises(InputError, match="chip B"):
        method.attribute(a, b[..., :1])
    nan = a.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        method.attribute(nan, b)
    with pytest.raises(InputError, match="numbers"):
        method.attribute(a.astype(str), b)
