"""The paper's face-model families (ArcFace, MagFace, AdaFace): input conventions, backbones,
readers of the official checkpoint files, and export to facexplain's one ONNX contract.

Every face model inside facexplain takes float32 (N, 3, S, S) **RGB pixel values in [0, 255]**
(input ``image``) and returns (N, D) embeddings (output ``embedding``). Each network's own
preprocessing -- channel order, mean, std -- is an :class:`InputConvention`, baked into the
exported graph by :class:`Preprocessed`, so it is applied in exactly one place.

Official formats read by :func:`load_official` (and written by :func:`save_official` for tests):

- ``arcface``: insightface ``arcface_torch`` ``backbone.pth`` / ``model.pt``, a plain state dict
  of the iResNet (``conv1.weight``, ``layer1.0.bn1.weight``, ..., ``features.weight``), keys
  sometimes prefixed ``module.`` (DDP); a resume checkpoint's ``state_dict_backbone`` also works.
- ``magface``: MagFace's ``torch.save({"epoch", "arch", "state_dict", "optimizer"})``; the backbone
  is under ``features.module.`` (DDP training, the released iResNet100) or ``module.features.``
  (DataParallel); the margin head ``parallel_fc.weight`` / ``module.fc.weight`` is ignored.
- ``adaface``: AdaFace's PyTorch-Lightning ``.ckpt``; ``state_dict`` holds ``model.input_layer.*``,
  ``model.body.N.*``, ``model.output_layer.*`` and the head ``head.kernel`` (+ ``head.t``,
  ``head.batch_mean``, ``head.batch_std``), which is ignored.

The architecture (blocks per stage, widths, embedding size) is read from the keys and shapes;
the backbone then loads with strict key matching. Only :class:`InputConvention`, :data:`PRESETS`
and the constants work without the optional ``torch`` extra.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..errors import InputError, ModelFormatError
from ..fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "InputConvention",
    "PRESETS",
    "FAMILIES",
    "DEFAULT_ARCH",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "DEFAULT_CHIP",
    "resolve_convention",
    "normalize_arch",
    "build_backbone",
    "randomize_weights",
    "load_official",
    "save_official",
    "Preprocessed",  # noqa: F822 - built on first access (module __getattr__), needs torch
    "export_onnx",
]

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
#: Chip size of every family here (the ArcFace 112x112 five-point template).
DEFAULT_CHIP = 112


@dataclass(frozen=True)
class InputConvention:
    """How a network wants its pixels: ``x_net = (x[channels] - mean) / std``.

    ``channels``: "rgb" or "bgr", the channel order the network expects; ``mean`` and ``std``:
    three values in the network's channel order, on the 0..255 pixel scale.
    """

    channels: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.channels not in ("rgb", "bgr"):
            raise InputError(f"input convention: channels must be 'rgb' or 'bgr', got {self.channels!r}")
        for field in ("mean", "std"):
            raw = getattr(self, field)
            try:
                values = tuple(float(v) for v in raw)
            except (TypeError, ValueError):
                raise InputError(f"input convention: {field} must be three numbers, got {raw!r}") from None
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InputError(f"input convention: {field} must be three finite numbers, got {raw!r}")
            object.__setattr__(self, field, values)
        if any(s <= 0 for s in self.std):
            raise InputError(f"input convention: std must be > 0, got {self.std}")

    @property
    def order(self) -> tuple[int, int, int]:
        """Indices into an RGB input giving the network's channels: (0, 1, 2) or (2, 1, 0)."""
        return (0, 1, 2) if self.channels == "rgb" else (2, 1, 0)

    def to_network(self, rgb: np.ndarray) -> np.ndarray:
        """Float32 network input from RGB 0..255 pixels, channels first: (N, 3, H, W) or (3, H, W)."""
        x = np.asarray(rgb, dtype=np.float32)
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise InputError(f"expected (N, 3, H, W) or (3, H, W) RGB pixels, got shape {x.shape}")
        shape = (3, 1, 1)
        x = x[..., list(self.order), :, :]
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return ((x - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputConvention:
        try:
            return cls(d["channels"], tuple(d["mean"]), tuple(d["std"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"input convention: needs channels, mean and std, got {dict(d)!r}") from exc


_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

#: Named conventions. The family names give the official preprocessing of each family.
PRESETS: dict[str, InputConvention] = {
    # insightface arcface_torch: cv2 BGR -> RGB, (x / 255 - 0.5) / 0.5
    "arcface": InputConvention("rgb", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # AdaFace inference.to_input: BGR, (x / 255 - 0.5) / 0.5
    "adaface": InputConvention("bgr", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # MagFace inference/gen_feat.py: cv2 BGR, ToTensor (x / 255); embeddings are NOT normalised
    # (their norm is MagFace's quality score)
    "magface": InputConvention("bgr", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    # e.g. ../shared/models/mobilefacenet-ms1mv3.onnx (PaddleX)
    "paddle-bgr128": InputConvention("bgr", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)),
    # e.g. ../shared/models/mobilefacenet-arcface-ms1m.onnx
    "imagenet": InputConvention("rgb", _IMAGENET_MEAN, _IMAGENET_STD),
}

FAMILIES: tuple[str, ...] = ("arcface", "magface", "adaface")
DEFAULT_ARCH: dict[str, str] = {"arcface": "iresnet50", "magface": "iresnet50", "adaface": "ir_50"}
#: Depths each family's official code defines (MagFace released 50 and 100; its code has all four).
_DEPTHS: dict[str, tuple[int, ...]] = {
    "arcface": (18, 34, 50, 100, 200),
    "magface": (18, 34, 50, 100),
    "adaface": (18, 34, 50, 101),
}


def resolve_convention(spec: str | InputConvention) -> InputConvention:
    """An :class:`InputConvention` from itself or a preset name."""
    if isinstance(spec, InputConvention):
        return spec
    try:
        return PRESETS[str(spec).lower()]
    except KeyError:
        raise InputError(f"unknown input convention {spec!r}; presets: {', '.join(PRESETS)}") from None


def _family(family: str) -> str:
    f = str(family).lower()
    if f not in FAMILIES:
        raise InputError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    return f


def normalize_arch(family: str, arch: str | None = None) -> str:
    """Canonical architecture name: "iresnet50" style for arcface/magface, "ir_50" for adaface.

    Accepts "r50", "50", "ir50", "ir_50", "iresnet50" (and "ir_100"/"r100" for AdaFace's IR-101);
    None gives the family's default.
    """
    family = _family(family)
    if arch is None:
        return DEFAULT_ARCH[family]
    m = re.fullmatch(r"(?:iresnet|ir_?|r)?(\d+)", str(arch).strip().lower())
    depth = int(m.group(1)) if m else -1
    if family == "adaface" and depth == 100:
        depth = 101
    if depth not in _DEPTHS[family]:
        known = ", ".join(_arch_name(family, d) for d in _DEPTHS[family])
        raise InputError(f"unknown {family} architecture {arch!r}; known: {known}")
    return _arch_name(family, depth)


def _arch_name(family: str, depth: int) -> str:
    return f"ir_{depth}" if family == "adaface" else f"iresnet{depth}"


def _arch_table(family: str) -> dict[str, tuple[int, int, int, int]]:
    from .backbones import ADAFACE_ARCHS, IRESNET_ARCHS

    table = ADAFACE_ARCHS if family == "adaface" else IRESNET_ARCHS
    names = {_arch_name(family, d) for d in _DEPTHS[family]}
    return {k: v for k, v in table.items() if k in names}


def _build(family: str, layers: Sequence[int], widths: Sequence[int], num_features: int) -> Any:
    from .backbones import AdaFaceIR, IResNet

    if family == "adaface":
        return AdaFaceIR(layers, widths=widths, num_features=num_features)
    return IResNet(layers, widths=widths, num_features=num_features, variant=family)


def build_backbone(
    family: str,
    arch: str | None = None,
    *,
    embedding_dim: int = 512,
    widths: Sequence[int] | None = None,
) -> torch.nn.Module:
    """A freshly initialised backbone of the family, in eval mode: (N, 3, 112, 112) -> (N, D).

    arcface: iresnet18/34/50/100/200 (default iresnet50); magface: iresnet18/34/50/100 (default
    iresnet50); adaface: ir_18/34/50/101 (default ir_50). ``widths`` (channels of the four stages,
    default 64, 128, 256, 512) exists for small test models; official models use the default.
    """
    family = _family(family)
    name = normalize_arch(family, arch)
    if embedding_dim < 1:
        raise InputError(f"embedding_dim must be >= 1, got {embedding_dim}")
    w = tuple(widths) if widths is not None else (64, 128, 256, 512)
    if len(w) != 4 or any(int(c) < 1 for c in w):
        raise InputError(f"widths must be four positive channel counts, got {widths!r}")
    backbone: torch.nn.Module = _build(family, _arch_table(family)[name], w, embedding_dim).eval()
    return backbone


def randomize_weights(module: torch.nn.Module, *, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter and batch-norm statistic with seeded random values (in place).

    For tests and demos without official weights: convolutions and linears get N(0, 1/fan_in),
    batch-norms random affine parameters and running statistics, PReLUs slopes in [0, 0.5]; the
    batch-norm closing each residual branch is scaled down so 100 blocks keep activations finite.
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    suffix = getattr(module, "residual_bn_suffix", None)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                normal(m.weight, (1.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    normal(m.bias, 0.05)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                scale = 0.2 if suffix and name.endswith(suffix) else 1.0
                if m.affine:
                    uniform(m.weight, 0.5 * scale, 1.5 * scale)
                    normal(m.bias, 0.1)
                if m.running_mean is not None and m.running_var is not None and m.num_batches_tracked is not None:
                    normal(m.running_mean, 0.1)
                    uniform(m.running_var, 0.5, 1.5)
                    m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.PReLU):
                uniform(m.weight, 0.0, 0.5)
    return module


# --------------------------------------------------------------------------- reading checkpoints


class _Opaque:
    """Inert stand-in for a class or function a checkpoint names that facexplain does not import.

    It records what the pickle gives it (arguments, items, state) and runs nothing.
    """

    origin = "?"
    args: tuple[Any, ...]
    items: dict[Any, Any]
    values: list[Any]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        self = object.__new__(cls)
        self.__dict__.update(args=args, items={}, values=[], state=None)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<opaque {self.origin}>"


@functools.cache
def _opaque_class(module: str, name: str) -> type:
    return type(f"Opaque_{name}", (_Opaque,), {"origin": f"{module}.{name}"})


@functools.cache
def _allowed_globals() -> dict[str, Any]:
    """What torch's weights-only unpickler allows (tensor rebuilders, dtypes, OrderedDict, ...)."""
    import collections

    import torch

    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - older/newer torch layouts
        allowed = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
            "torch.Size": torch.Size,
        }
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only weights-only-safe globals; anything else becomes an opaque stub."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get(f"{module}.{name}")
        return obj if obj is not None else _opaque_class(module, name)


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: the fallback for checkpoints with extra objects."""

    __name__ = "facexplain_restricted_pickle"
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _read_checkpoint(path: Path) -> tuple[Any, str]:
    """The unpickled file and how it was read: "weights_only", or "restricted" (see below).

    First ``torch.load(weights_only=True)``. Files that also pickle other objects (Lightning's
    hyper-parameters, argparse namespaces) are refused by it; they are read again with an
    unpickler that resolves only the same safe globals and turns any other into an inert stub,
    so no code named by the file runs.
    """
    import torch

    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "weights_only"
    except pickle.UnpicklingError as exc:
        refused = exc
    except Exception as exc:  # corrupted zip, truncated file, not a torch file at all
        raise ModelFormatError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    except Exception as exc:
        raise ModelFormatError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(refused)}; {_first_line(exc)})"
        ) from exc
    return obj, "restricted"


def _state_dict_of(obj: Any, path: Path) -> Mapping[str, Any]:
    import torch

    sd = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict_backbone", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                sd = obj[key]
                break
    if not isinstance(sd, Mapping) or not sd:
        raise ModelFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFormatError(f"{path}: not a state dict of tensors (entries {_few(bad)})")
    return sd


def _few(keys: Sequence[Any], n: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


#: A key every backbone of the family has, used to find the prefix the file adds.
_ANCHOR = {"arcface": "layer1.0.bn1.weight", "magface": "layer1.0.bn1.weight", "adaface": "input_layer.0.weight"}
#: Keys outside the backbone that the official files carry and that are ignored (margin heads).
_HEAD: dict[str, re.Pattern[str] | None] = {
    "arcface": None,
    "magface": re.compile(r"(module\.)?(fc|parallel_fc)\."),
    "adaface": re.compile(r"head\."),
}


def _split_backbone(
    family: str, sd: Mapping[str, Any], path: Path
) -> tuple[dict[str, Any], str, list[str]]:
    """(backbone state dict with the prefix stripped, the prefix, the ignored head keys)."""
    anchor = _ANCHOR[family]
    prefixes = sorted(
        {k[: -len(anchor)] for k in sd if k.endswith(anchor) and (k == anchor or k[-len(anchor) - 1] == ".")}
    )
    kind = "AdaFace IR" if family == "adaface" else "iresnet"
    if not prefixes:
        raise ModelFormatError(
            f"{path}: no {kind} backbone for family {family!r} (no key ends with {anchor!r}; "
            f"keys: {_few(list(sd))})"
        )
    if len(prefixes) > 1:
        raise ModelFormatError(f"{path}: several {kind} backbones (prefixes {_few(prefixes)})")
    prefix = prefixes[0]
    backbone = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    rest = [k for k in sd if not k.startswith(prefix)]
    pattern = _HEAD[family]
    head = [k for k in rest if pattern is not None and pattern.match(k)]
    stray = [k for k in rest if k not in set(head)]
    if stray:
        raise ModelFormatError(f"{path}: unexpected keys outside the {family} backbone: {_few(stray)}")
    return backbone, prefix, head


def _need(sd: Mapping[str, Any], key: str, path: Path) -> Any:
    try:
        return sd[key]
    except KeyError:
        raise ModelFormatError(f"{path}: missing key {key!r}") from None


def _infer_spec(
    family: str, sd: Mapping[str, Any], path: Path
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(blocks per stage, channels per stage, embedding size) from a backbone state dict."""
    if family == "adaface":
        found = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k))}
        if not found or found != set(range(len(found))):
            raise ModelFormatError(f"{path}: body blocks are not numbered 0..N-1 (found {sorted(found)[:8]})")
        depths = [int(_need(sd, f"body.{i}.res_layer.1.weight", path).shape[0]) for i in range(len(found))]
        layers: list[int] = []
        widths: list[int] = []
        for d in depths:
            if widths and widths[-1] == d:
                layers[-1] += 1
            else:
                widths.append(d)
                layers.append(1)
        fc = _need(sd, "output_layer.3.weight", path)
    else:
        layers, widths = [], []
        for i in range(1, 5):
            found = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
            if not found or found != set(range(len(found))):
                raise ModelFormatError(f"{path}: layer{i} blocks are not numbered 0..N-1 (found {sorted(found)[:8]})")
            layers.append(len(found))
            widths.append(int(_need(sd, f"layer{i}.0.conv1.weight", path).shape[0]))
        fc = _need(sd, "fc.weight", path)
    if len(layers) != 4:
        raise ModelFormatError(f"{path}: expected 4 stages of blocks, found {len(layers)} (channels {widths})")
    if fc.ndim != 2 or fc.shape[1] != widths[-1] * 49:
        raise ModelFormatError(
            f"{path}: final linear layer has shape {tuple(fc.shape)}, expected (D, {widths[-1] * 49}) "
            "for a 112x112 input"
        )
    return tuple(layers), tuple(widths), int(fc.shape[0])


def load_official(
    family: str, path: str | Path, *, arch: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The backbone stored in an official checkpoint file, in eval mode, and facts about it.

    ``arch`` (e.g. "iresnet100", "ir_101"): when given, the file must hold that architecture;
    when None it is inferred from the keys. Backbone keys must match exactly after the file's
    prefix is stripped (only ``num_batches_tracked`` entries, unused at inference, may be missing).
    info: family, arch, embedding_dim, keys (backbone tensors loaded), ignored_keys (head
    tensors), prefix, layers, widths, sha256, path, unpickler ("weights_only" or "restricted").
    Raises ModelFormatError for a corrupted file or a key layout that does not match, InputError
    for a missing file or an unknown family/arch.
    """
    family = _family(family)
    want = normalize_arch(family, arch) if arch is not None else None
    path = Path(path)
    obj, how = _read_checkpoint(path)
    sd = _state_dict_of(obj, path)
    backbone, prefix, head = _split_backbone(family, sd, path)
    layers, widths, dim = _infer_spec(family, backbone, path)
    table = _arch_table(family)
    name = next((k for k, v in table.items() if v == layers), None)
    if name is None:
        raise ModelFormatError(
            f"{path}: blocks per stage {layers} match no {family} architecture ({', '.join(table)})"
        )
    if want is not None and want != name:
        raise ModelFormatError(f"{path}: holds a {name}, not the {want} that was asked for")
    model = _build(family, layers, widths, dim)
    try:
        result = model.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:
        raise ModelFormatError(f"{path}: tensor shapes do not match {name} ({_first_line(exc)})") from exc
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {_few([prefix + k for k in missing])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {_few([prefix + k for k in result.unexpected_keys])}")
        raise ModelFormatError(f"{path}: keys do not match the {family} {name} layout: {'; '.join(parts)}")
    from .convert import sha256_file

    info = {
        "family": family,
        "arch": name,
        "embedding_dim": dim,
        "keys": len(backbone),
        "ignored_keys": len(head),
        "prefix": prefix,
        "layers": layers,
        "widths": widths,
        "sha256": sha256_file(path),
        "path": str(path),
        "unpickler": how,
    }
    return model.float().eval(), info


def _arch_of(family: str, module: Any) -> str:
    layers = tuple(getattr(module, "layers_spec", ()))
    return next((k for k, v in _arch_table(family).items() if v == layers), "custom")


def save_official(module: torch.nn.Module, family: str, path: str | Path) -> None:
    """Write ``module`` (a backbone of the family) in that family's official file layout.

    For tests without the real weights; mimics what the upstream training code saves:
    arcface: ``torch.save(backbone.state_dict())``; magface: the DDP trainer's
    ``{"epoch", "arch", "state_dict" (features.module.* + parallel_fc.weight), "optimizer"}``;
    adaface: a PyTorch-Lightning checkpoint (``model.*`` + ``head.*`` in ``state_dict``, plus
    epoch, global_step, optimizer_states, lr_schedulers, hyper_parameters, ...).
    """
    import collections

    import torch

    from .backbones import AdaFaceIR, IResNet

    family = _family(family)
    if family == "adaface":
        ok = isinstance(module, AdaFaceIR)
    else:
        ok = isinstance(module, IResNet) and module.variant == family
    if not ok:
        raise InputError(f"save_official: a {type(module).__name__} is not a {family} backbone")
    sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    arch = _arch_of(family, module)
    dim = int(cast(Any, module).num_features)
    g = torch.Generator().manual_seed(1)
    n_classes = 16

    def optimizer_state(n_params: int) -> dict[str, Any]:
        group = {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": False}
        return {"state": {}, "param_groups": [dict(group, params=list(range(n_params)))]}

    if family == "arcface":
        obj: Any = collections.OrderedDict(sd)
    elif family == "magface":
        state = collections.OrderedDict((f"features.module.{k}", v) for k, v in sd.items())
        state["parallel_fc.weight"] = torch.randn(dim, n_classes, generator=g)
        obj = {"epoch": 25, "arch": arch, "state_dict": state, "optimizer": optimizer_state(len(state))}
    else:
        state = collections.OrderedDict((f"model.{k}", v) for k, v in sd.items())
        state["head.kernel"] = torch.randn(dim, n_classes, generator=g)
        state["head.t"] = torch.zeros(1)
        state["head.batch_mean"] = torch.ones(1) * 20
        state["head.batch_std"] = torch.ones(1) * 100
        obj = {
            "epoch": 26,
            "global_step": 1000,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 26}}}},
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max'}": {
                    "monitor": "val_acc",
                    "best_model_score": torch.tensor(0.97),
                    "best_model_path": "experiments/last.ckpt",
                }
            },
            "optimizer_states": [optimizer_state(len(state))],
            "lr_schedulers": [{"milestones": collections.Counter({12: 1, 20: 1, 24: 1}), "gamma": 0.1,
                               "last_epoch": 26, "base_lrs": [0.1]}],
            "hparams_name": "kwargs",
            "hyper_parameters": {"arch": arch, "head": "adaface", "m": 0.4, "h": 0.333, "s": 64.0,
                                 "t_alpha": 0.01, "lr": 0.1, "epochs": 26},
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


# --------------------------------------------------------------------------- preprocessing + export


@functools.cache
def _preprocessed_class() -> type:
    import torch
    from torch import nn

    class Preprocessed(nn.Module):
        """A backbone behind its input convention: RGB 0..255 (N, 3, S, S) -> (N, D) embeddings.

        Computes ``backbone((image[:, order] - mean) / std)``; the constants are buffers that are
        not saved in the state dict (which is the backbone's, under ``backbone.``).
        """

        order: torch.Tensor
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self, backbone: nn.Module, convention: str | InputConvention) -> None:
            super().__init__()
            conv = resolve_convention(convention)
            self.backbone = backbone
            self.convention = conv
            self.flip = conv.channels == "bgr"
            self.register_buffer("order", torch.tensor(conv.order, dtype=torch.long), persistent=False)
            self.register_buffer("mean", torch.tensor(conv.mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(conv.std).view(1, 3, 1, 1), persistent=False)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = image.index_select(1, self.order) if self.flip else image
            embedding: torch.Tensor = self.backbone((x - self.mean) / self.std)
            return embedding

    Preprocessed.__module__ = __name__
    Preprocessed.__qualname__ = "Preprocessed"
    return Preprocessed


def __getattr__(name: str) -> Any:
    # Preprocessed is a torch.nn.Module: built on first use so this module imports without torch.
    if name == "Preprocessed":
        return _preprocessed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_onnx(
    module: torch.nn.Module,
    convention: str | InputConvention,
    path: str | Path,
    *,
    chip: int = DEFAULT_CHIP,
    opset: int = 17,
) -> None:
    """Write ``module`` (a bare backbone) with its convention in front as an ONNX file.

    The graph takes ``image`` float32 (batch, 3, chip, chip) RGB 0..255 with a dynamic batch axis
    and returns ``embedding`` (batch, D). The convention is also stored in the model's metadata
    (``facexplain.convention``). The file is checked with ``onnx.checker``. The module's
    train/eval mode is restored afterwards.
    """
    import json

    import onnx
    import torch

    conv = resolve_convention(convention)
    cls = _preprocessed_class()
    if isinstance(module, cls):
        raise InputError("export_onnx: pass the bare backbone; the convention is added here")
    if chip < 8:
        raise InputError(f"export_onnx: chip must be >= 8, got {chip}")
    path = Path(path)
    wrapped = cls(module, conv)
    was_training = module.training
    wrapped.eval()
    dummy = torch.rand(2, 3, chip, chip, generator=torch.Generator().manual_seed(0)) * 255
    try:
        with torch.no_grad():
            try:
                out = wrapped(dummy)
            except RuntimeError as exc:
                raise InputError(
                    f"export_onnx: the module does not take (N, 3, {chip}, {chip}) input ({_first_line(exc)})"
                ) from exc
            if out.ndim != 2:
                raise InputError(f"export_onnx: the module returns shape {tuple(out.shape)}, not (N, D)")
            path.parent.mkdir(parents=True, exist_ok=True)

            def write(tmp: str) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
                    torch.onnx.export(
                        wrapped,
                        (dummy,),
                        tmp,
                        dynamo=False,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                        opset_version=opset,
                        do_constant_folding=True,
                    )
                model = onnx.load(tmp)
                meta = {
                    "facexplain.input": f"{INPUT_NAME}: float32 (batch, 3, {chip}, {chip}) RGB 0..255",
                    "facexplain.convention": json.dumps(conv.to_dict()),
                }
                for key, value in meta.items():
                    entry = model.metadata_props.add()
                    entry.key, entry.value = key, value
                onnx.checker.check_model(model)
                onnx.save(model, tmp)

            atomic_write(path, write)
    finally:
        module.train(was_training)
