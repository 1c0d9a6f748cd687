"""Grad-CAM / Grad-CAM++ of the pair similarity on small torch nets whose answers are known.

Brute-force references use an explicit split forward (features, then head) for the gradients and
plain loops for the weights, the weighted sums and the bilinear upsampling, so they share no code
with ``explainer_service.methods.gradcam``. The real dlib twin is in tests/model/test_gradcam.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from explainer_service.errors import InputError, ModelNotReadyError  # noqa: E402
from explainer_service.methods.base import SaliencyMethod  # noqa: E402
from explainer_service.methods.gradcam import (  # noqa: E402
    GradCAM,
    GradCAMConfig,
    GradCAMPlusPlus,
    GradTarget,
    default_layer_name,
    gradcampp_weights,
    similarity_gradients,
)
from explainer_service.models import families  # noqa: E402
from explainer_service.spec import ChipSpec, ModelSpec  # noqa: E402

SIZE = 32


def spec(size: int = SIZE) -> ModelSpec:
    return ModelSpec("toy-torch", ChipSpec("arcface", size), 6, threshold=0.5)


class ToyNet(nn.Module):
    """conv 3x3 -> ReLU -> 4x4 average pool (``features``, (N, 5, 8, 8)) -> linear head (N, 6)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4))
        self.fc = nn.Linear(5 * 8 * 8, 6)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 128.0) / 64.0))


def toy_pair(seed: int = 1, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return a, b


def _x(chip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chip.astype(np.float32).transpose(2, 0, 1)[None].copy())


def reference_gradients(net: ToyNet, chip: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, h, w) activations of ``chip`` and d cos(head(acts), f(other)) / d acts, other fixed."""
    with torch.no_grad():
        e_other = net(_x(other))[0]
        acts = net.features((_x(chip) - 128.0) / 64.0)
    acts = acts.clone().requires_grad_(True)
    cos = F.cosine_similarity(net.head(acts)[0], e_other, dim=0)
    (g,) = torch.autograd.grad(cos, acts)
    return acts[0].detach().double().numpy(), g[0].double().numpy()


def bilinear_by_hand(m: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (h, w) to (size, size) with half-pixel centres (align_corners=False)."""
    h, w = m.shape

    def taps(n_in: int, o: int) -> tuple[int, int, float]:
        src = max((o + 0.5) * n_in / size - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    out = np.zeros((size, size))
    for r in range(size):
        r0, r1, lr = taps(h, r)
        for c in range(size):
            c0, c1, lc = taps(w, c)
            top = (1 - lc) * m[r0, c0] + lc * m[r0, c1]
            bottom = (1 - lc) * m[r1, c0] + lc * m[r1, c1]
            out[r, c] = (1 - lr) * top + lr * bottom
    return out


def brute_map(acts: np.ndarray, weights: np.ndarray, size: int, relu: bool = True) -> np.ndarray:
    c, h, w = acts.shape
    m = np.zeros((h, w))
    for k in range(c):
        for i in range(h):
            for j in range(w):
                m[i, j] += weights[k] * acts[k, i, j]
    if relu:
        m = np.maximum(m, 0)
    return bilinear_by_hand(m, size)


def brute_gradcam_weights(grads: np.ndarray) -> np.ndarray:
    c, h, w = grads.shape
    out = np.zeros(c)
    for k in range(c):
        total = 0.0
        for i in range(h):
            for j in range(w):
                total += grads[k, i, j]
        out[k] = total / (h * w)
    return out


def brute_gradcampp_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Chattopadhay et al. Eq. 19: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3); w = sum alpha relu(g)."""
    c, h, w = grads.shape
    out = np.zeros(c)
    for k in range(c):
        s = sum(acts[k, a, b] for a in range(h) for b in range(w))
        for i in range(h):
            for j in range(w):
                g = grads[k, i, j]
                denom = 2 * g**2 + s * g**3
                alpha = g**2 / denom if denom != 0 else 0.0
                out[k] += alpha * max(g, 0.0)
    return out


@pytest.fixture(scope="module")
def toy() -> GradTarget:
    return GradTarget.for_module(ToyNet(), "features", spec=spec())


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcam_equals_brute_force(toy, normalize):
    a, b = toy_pair()
    e = GradCAM(toy, GradCAMConfig(normalize=normalize)).attribute(a, b)
    for got, (chip, other) in ((e.s_a, (a, b)), (e.s_b, (b, a))):
        acts, grads = reference_gradients(toy.module, chip, other)
        want = brute_map(acts, brute_gradcam_weights(grads), SIZE)
        assert want.max() > 0
        if normalize:
            want = want / want.max()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_gradcampp_weights_equal_the_papers_formula_on_order_one_values():
    # gradients of order 1 so that the sum(A) g^3 term matters, zeros to hit the 0/0 case,
    # negative gradients (ignored by the ReLU) and signed activations
    rng = np.random.default_rng(3)
    acts = rng.normal(0.5, 1.0, (2, 4, 3, 5))
    grads = rng.normal(0.0, 1.0, (2, 4, 3, 5))
    grads[0, 1, 0, :2] = 0.0
    got = gradcampp_weights(acts, grads)
    for n in range(2):
        np.testing.assert_allclose(got[n], brute_gradcampp_weights(acts[n], grads[n]), rtol=1e-12)
    # with the third-order term dropped the weights would differ: the test sees the g^3 term
    naive = (np.maximum(grads, 0) / 2).sum(axis=(2, 3))
    assert np.abs(naive - got).max() > 1e-2


def test_gradcampp_equals_brute_force_on_toy(toy):
    a, b = toy_pair(seed=5)
    e = GradCAMPlusPlus(toy, GradCAMConfig(normalize=False)).attribute(a, b)
    g = similarity_gradients(toy, a, b)
    for n, (got, (chip, other)) in enumerate(((e.s_a, (a, b)), (e.s_b, (b, a)))):
        acts, grads = reference_gradients(toy.module, chip, other)
        np.testing.assert_allclose(g.activations[n], acts, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.gradients[n], grads, rtol=1e-4, atol=1e-6 * np.abs(grads).max())
        w = brute_gradcampp_weights(acts, grads)
        np.testing.assert_allclose(gradcampp_weights(acts[None], grads[None])[0], w, rtol=1e-10)
        want = brute_map(acts, w, SIZE)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert e.params["raw_max_a"] == pytest.approx(float(np.abs(e.s_a).max()), rel=1e-6)


def test_without_relu_maps_are_signed_and_scaled_by_the_largest_magnitude(toy):
    a, b = toy_pair(seed=2)
    raw = GradCAM(toy, GradCAMConfig(relu=False, normalize=False)).attribute(a, b)
    norm = GradCAM(toy, GradCAMConfig(relu=False)).attribute(a, b)
    acts, grads = reference_gradients(toy.module, a, b)
    want = brute_map(acts, brute_gradcam_weights(grads), SIZE, relu=False)
    np.testing.assert_allclose(raw.s_a, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    peak = np.abs(want).max()
    np.testing.assert_allclose(norm.s_a, want / peak, atol=1e-5)
    assert np.abs(norm.s_a).max() == pytest.approx(1.0, abs=1e-6)
    assert norm.params["raw_max_a"] == pytest.approx(peak, rel=1e-5)


# --------------------------------------------------------------------------- symmetry


def test_b_map_is_computed_with_a_fixed(toy):
    a, b = toy_pair(seed=7)
    ab = GradCAM(toy).attribute(a, b)
    ba = GradCAM(toy).attribute(b, a)
    # swapping the faces swaps the maps: each map treats the other face as a constant
    np.testing.assert_allclose(ab.s_b, ba.s_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ab.s_a, ba.s_b, rtol=1e-5, atol=1e-6)
    assert ab.score == pytest.approx(ba.score, abs=1e-9)
    assert not np.allclose(ab.s_a, ab.s_b)  # different faces, different maps
    # s_b is a function of B's activations and of d cos / d B-activations with f(A) a constant
    acts, grads = reference_gradients(toy.module, b, a)
    want = brute_map(acts, brute_gradcam_weights(grads), SIZE)
    np.testing.assert_allclose(ab.s_b, want / want.max(), rtol=1e-4, atol=1e-6)
    # had A's embedding not been detached in B's score, A's gradient would carry d cos_B / d A
    g = similarity_gradients(toy, a, b)
    ref_a = reference_gradients(toy.module, a, b)[1]
    np.testing.assert_allclose(g.gradients[0], ref_a, rtol=1e-4, atol=1e-6 * np.abs(ref_a).max())


# --------------------------------------------------------------------------- localisation

LOC = 48
R = (slice(4, 16), slice(28, 44))  # rows, cols: vertical stripes, the only region the head reads
Q = (slice(28, 40), slice(0, LOC))  # horizontal stripes everywhere along these rows: a distractor


class StripeNet(nn.Module):
    """features: [ReLU(Sobel-x), ReLU(Sobel-y)] pooled 4x4 -> (N, 2, 12, 12); the embedding is
    channel 0 (vertical edges) on the cells of R, plus a constant block, so it depends on R only."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 3, padding=1, padding_mode="replicate", bias=False)
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 3.0
        with torch.no_grad():
            conv.weight.copy_(torch.stack([sx.expand(3, 3, 3), sx.T.expand(3, 3, 3)]))
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4))
        mask = torch.zeros(1, 1, LOC // 4, LOC // 4)
        mask[..., R[0].start // 4 : R[0].stop // 4, R[1].start // 4 : R[1].stop // 4] = 1.0
        self.register_buffer("cells", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x / 255.0)
        v = (f[:, :1] * self.cells).flatten(1)
        return torch.cat([v, torch.full((len(x), 8), 2.0)], dim=1)


def stripes(contrast: float) -> np.ndarray:
    img = np.full((LOC, LOC, 3), 128.0)
    period = (np.arange(LOC) // 2) % 2 * 2 - 1  # -1 -1 +1 +1 ...
    img[R[0], R[1]] = 128 + contrast * period[None, R[1], None]
    img[Q[0], Q[1]] = 128 + contrast * period[Q[0], None, None]
    return img.astype(np.uint8)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_map_is_high_on_the_region_the_embedding_depends_on(cls):
    target = GradTarget.for_module(StripeNet(), "features", spec=spec(LOC))
    weak, strong = stripes(50), stripes(100)
    inside = np.zeros((LOC, LOC), bool)
    inside[R] = True
    near = np.zeros_like(inside)
    near[max(R[0].start - 8, 0) : R[0].stop + 8, R[1].start - 8 : R[1].stop + 8] = True
    # raising the weak face's vertical-edge activations in R brings it toward the strong one:
    # its map is high on R, whichever side of the pair it is on
    ab = cls(target).attribute(weak, strong)
    ba = cls(target).attribute(strong, weak)
    for m in (ab.s_a, ba.s_b):
        assert m.shape == (LOC, LOC) and m.max() == pytest.approx(1.0)
        assert m[inside].mean() > 0.5
        assert m[~near].max() < 0.05  # the distractor Q and the flat background stay dark
        top = np.argsort(m.ravel())[::-1][: inside.sum()]
        assert near.ravel()[top].mean() > 0.95
    # the strong face's stripes pull away from the weak face: no positive evidence; without the
    # ReLU, Grad-CAM's map is negative on R (Grad-CAM++ weighs positive gradients only: zero)
    assert ab.params["raw_max_b"] == 0.0 and not ab.s_b.any()
    signed = cls(target, GradCAMConfig(relu=False)).attribute(weak, strong).s_b
    if cls is GradCAM:
        assert signed[inside].mean() < -0.5 and np.abs(signed[~near]).max() < 0.05
    else:
        assert not signed.any()


def test_each_map_sees_the_other_face_only_through_its_embedding():
    # StripeNet reads R only: changing a face outside R leaves its embedding unchanged, so the
    # other face's map must not move, while the changed face's own activations do change
    target = GradTarget.for_module(StripeNet(), "features", spec=spec(LOC))
    a, b = stripes(50), stripes(100)
    b2 = b.copy()
    b2[Q] = np.random.default_rng(0).integers(0, 256, b2[Q].shape, dtype=np.uint8)
    e1 = GradCAM(target, GradCAMConfig(relu=False, normalize=False)).attribute(a, b)
    e2 = GradCAM(target, GradCAMConfig(relu=False, normalize=False)).attribute(a, b2)
    g1, g2 = similarity_gradients(target, a, b), similarity_gradients(target, a, b2)
    np.testing.assert_allclose(g1.embeddings[1], g2.embeddings[1], rtol=1e-6)
    assert not np.allclose(g1.activations[1], g2.activations[1])
    np.testing.assert_allclose(e1.s_a, e2.s_a, rtol=1e-6, atol=1e-12)
    assert e1.score == pytest.approx(e2.score, abs=1e-9)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_explanation_contract(toy, cls):
    a, b = toy_pair(seed=4)
    calls = []
    method = cls(toy)
    assert isinstance(method, SaliencyMethod)
    e = method.attribute(a, b, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    for m in (e.s_a, e.s_b):
        assert m.shape == (SIZE, SIZE) and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    with torch.no_grad():
        ea, eb = toy.module(_x(a))[0].double(), toy.module(_x(b))[0].double()
    assert e.score == pytest.approx(float(F.cosine_similarity(ea, eb, dim=0)), abs=1e-6)
    assert (e.threshold, e.model, e.masks, e.method) == (0.5, "toy-torch", 0, cls.name)
    assert e.params["layer"] == "features" and e.params["layer_shape"] == [5, 8, 8]
    assert e.params["relu"] is True and e.params["normalize"] is True
    assert e.params["raw_max_a"] > 0 and e.params["raw_max_b"] > 0
    assert e.summary()["method"] == cls.name


def test_identical_faces_have_vanishing_gradients(toy):
    # cos is at its maximum 1: the raw maps are rounding noise (documented; see raw_max_*)
    a, b = toy_pair()
    same = GradCAM(toy, GradCAMConfig(normalize=False)).attribute(a, a)
    other = GradCAM(toy, GradCAMConfig(normalize=False)).attribute(a, b)
    assert same.score == pytest.approx(1.0, abs=1e-6)
    assert same.params["raw_max_a"] < 1e-4 * other.params["raw_max_a"]


def test_layer_choice_in_config(toy):
    a, b = toy_pair()
    e = GradCAM(toy, GradCAMConfig(layer="features.1")).attribute(a, b)  # the ReLU, before pooling
    assert e.params["layer"] == "features.1" and e.params["layer_shape"] == [5, SIZE, SIZE]
    assert e.s_a.shape == (SIZE, SIZE)
    assert toy.layer_name == "features"  # the target itself is unchanged


@pytest.mark.slow
def test_works_on_arcface_backbone_with_random_weights():
    backbone = families.randomize_weights(families.build_backbone("arcface"), seed=0)
    target = GradTarget.for_module(families.Preprocessed(backbone, families.PRESETS["arcface"]))
    assert target.layer_name == "backbone.layer4" and target.spec.chip.size == 112
    a, b = toy_pair(seed=9, size=112)
    for cls in (GradCAM, GradCAMPlusPlus):
        e = cls(target).attribute(a, b)
        assert e.params["layer_shape"] == [512, 7, 7]
        for m in (e.s_a, e.s_b):
            assert m.shape == (112, 112) and np.isfinite(m).all()
            assert m.min() >= 0 and m.max() == pytest.approx(1.0)
        assert e.threshold is None and -1 <= e.score <= 1


def test_default_layers_of_the_families():
    tiny = dict(embedding_dim=16, widths=(4, 8, 12, 16))
    ada = families.build_backbone("adaface", "ir_18", **tiny)
    assert default_layer_name(ada) == f"body.{len(ada.body) - 1}"
    target = GradTarget.for_family("adaface", families.randomize_weights(ada, seed=1))
    assert target.layer_name == f"backbone.body.{len(ada.body) - 1}"
    e = GradCAM(target).attribute(*toy_pair(seed=3, size=112))
    assert e.params["layer_shape"] == [16, 7, 7] and np.isfinite(e.s_a).all()
    assert default_layer_name(families.build_backbone("magface", "iresnet18", **tiny)) == "layer4"
    with pytest.raises(InputError, match="no default Grad-CAM layer"):
        default_layer_name(ToyNet())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [dict(relu="yes"), dict(normalize=1), dict(layer=""), dict(layer=3)],
)
def test_bad_config(kwargs):
    with pytest.raises(InputError):
        GradCAMConfig(**kwargs)


def test_bad_layers(toy):
    with pytest.raises(InputError, match="no submodule"):
        GradCAM(toy, GradCAMConfig(layer="nope"))
    with pytest.raises(InputError, match="no submodule"):
        GradTarget.for_module(ToyNet(), "features.9")
    a, b = toy_pair()
    with pytest.raises(InputError, match=r"\(N, C, h, w\)"):
        GradCAM(toy, GradCAMConfig(layer="fc")).attribute(a, b)
    with pytest.raises(InputError, match="torch.nn.Module"):
        GradTarget.for_module(object(), "x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="GradTarget"):
        GradCAM("dlib")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="family"):
        GradTarget.for_family("facenet", ToyNet())


def test_bad_chips(toy):
    a, b = toy_pair()
    method = GradCAM(toy)
    bad = [
        (a[:-1], b),  # wrong size
        (a, b[..., :2]),  # two channels
        (a[..., 0], b),  # grey
        (a.astype(np.float32) * 2, b),  # out of [0, 255]
        (np.where(a > 0, np.nan, 0.0), b),  # not finite
        (a.astype(str), b),  # not numbers
    ]
    for chip_a, chip_b in bad:
        with pytest.raises(InputError, match="chip"):
            method.attribute(chip_a, chip_b)


def test_unknown_model_name():
    with pytest.raises(ModelNotReadyError):
        GradTarget.from_model_name("no-such-model")
