"""Grad-CAM on the real dlib ResNet twin: the activation gradients behind the maps agree with
central finite differences through a split forward, and the default layer gives usable maps."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch extra is part of `make test` setup")

from explainer_service.methods.gradcam import (  # noqa: E402
    DLIB_DEFAULT_LAYER,
    GradCAM,
    GradCAMConfig,
    GradCAMPlusPlus,
    GradTarget,
    similarity_gradients,
)
from explainer_service.models.registry import DEFAULT_MODEL, get_spec  # noqa: E402

pytestmark = pytest.mark.model

SIZE = 150


def smooth_chip(seed: int) -> np.ndarray:
    """A 150x150 RGB chip of smooth random blobs (a bilinear upsampling of 10x10 noise)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.uniform(30, 225, (1, 3, 10, 10)))
    big = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return big[0].permute(1, 2, 0).numpy().round().astype(np.uint8)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return smooth_chip(0), smooth_chip(1)


@pytest.fixture(scope="module")
def twin64():
    """A float64 copy of the twin for the finite differences (the method runs the float32 one)."""
    return copy.deepcopy(GradTarget.for_dlib().module).double()


def _x(chip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chip.astype(np.float64).transpose(2, 0, 1)[None].copy())


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def _check_fd(grad: np.ndarray, acts: torch.Tensor, rest, e_other: torch.Tensor) -> None:
    """Central differences of cos(rest(acts), e_other) at the largest-gradient and random entries."""
    flat = np.abs(grad).ravel()
    rng = np.random.default_rng(0)
    picks = list(np.argsort(flat)[::-1][:4]) + list(rng.choice(flat.size, 4, replace=False))
    scale = float(flat.max())
    assert scale > 0
    for idx in picks:
        c, i, j = np.unravel_index(idx, grad.shape)
        h = 1e-6  # float64: rounding ~1e-10, and small enough not to cross ReLU kinks
        up, down = acts.clone(), acts.clone()
        up[0, c, i, j] += h
        down[0, c, i, j] -= h
        with torch.no_grad():
            fd = (_cos(rest(up)[0], e_other) - _cos(rest(down)[0], e_other)) / (2 * h)
        assert abs(grad[c, i, j] - fd) <= 1e-4 * scale, (c, i, j, grad[c, i, j], fd)


def test_gradient_of_cosine_wrt_last_block_matches_finite_differences(pair, twin64):
    a, b = pair
    g = similarity_gradients(GradTarget.for_dlib("blocks.13"), a, b)
    assert g.activations.shape == (2, 256, 2, 2)
    with torch.no_grad():
        fa, fb = twin64.features(_x(a)), twin64.features(_x(b))
        ea, eb = twin64.head(fa)[0], twin64.head(fb)[0]
    np.testing.assert_allclose(g.activations[0], fa[0].numpy(), rtol=1e-4, atol=1e-5)
    _check_fd(g.gradients[0], fa, twin64.head, eb)  # A's map: B fixed
    _check_fd(g.gradients[1], fb, twin64.head, ea)  # B's map: A fixed
    assert g.score == pytest.approx(_cos(ea, eb), abs=1e-6)


def test_gradient_at_default_layer_matches_finite_differences(pair, twin64):
    a, b = pair
    g = similarity_gradients(GradTarget.for_dlib(), a, b)
    assert g.activations.shape == (2, 256, 4, 4)
    blocks = twin64.blocks

    def split(image: torch.Tensor) -> torch.Tensor:  # the twin's features() up to block 12
        x = (image - twin64.mean) / 256.0
        x = torch.nn.functional.max_pool2d(torch.relu(twin64.stem(x)), twin64.pool_k, twin64.pool_s)
        for blk in blocks[:13]:
            x = blk(x)
        return x

    def rest(x: torch.Tensor) -> torch.Tensor:
        return twin64.head(blocks[13](x))

    with torch.no_grad():
        aa, ab = split(_x(a)), split(_x(b))
        ea, eb = rest(aa)[0], rest(ab)[0]
    _check_fd(g.gradients[0], aa, rest, eb)
    _check_fd(g.gradients[1], ab, rest, ea)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_default_model_maps(pair, cls):
    a, b = pair
    method = cls.for_model()
    assert method.target.layer_name == DLIB_DEFAULT_LAYER
    e = method.attribute(a, b)
    spec = get_spec(DEFAULT_MODEL)
    assert (e.model, e.threshold, e.masks, e.method) == (spec.name, spec.threshold, 0, cls.name)
    assert e.params["layer_shape"] == [256, 4, 4]
    for m in (e.s_a, e.s_b):
        assert m.shape == (SIZE, SIZE) and m.dtype == np.float32 and np.isfinite(m).all()
        assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    # the 4x4 grid resolves more than the last block's 2x2 quadrants
    coarse = cls(GradTarget.for_dlib(), GradCAMConfig(layer="blocks.13")).attribute(a, b)
    assert coarse.params["layer_shape"] == [256, 2, 2]


def test_from_model_name_default():
    target = GradTarget.from_model_name(DEFAULT_MODEL)
    assert target.layer_name == DLIB_DEFAULT_LAYER and target.spec.chip.size == SIZE
    assert GradTarget.from_model_name(DEFAULT_MODEL, "blocks.9").layer_name == "blocks.9"
