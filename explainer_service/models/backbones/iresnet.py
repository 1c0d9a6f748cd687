"""The iResNet backbone of insightface ``arcface_torch`` (ArcFace) and of MagFace.

Layout (the names the official state dicts use)::

    conv1, bn1, prelu                       stem: 3x3 conv, stride 1
    layer1..layer4 of IBasicBlock           each block: bn1, conv1, bn2, prelu, conv2 (stride), bn3
                                            block 0 of every layer also has downsample.0 (1x1 conv,
                                            stride 2) and downsample.1 (batch-norm)
    bn2, dropout, fc, features              BN2d -> flatten -> Linear(512*7*7, D) -> BN1d(D)

The two upstream copies differ only where a state dict cannot see it (checked against
deepinsight/insightface ``recognition/arcface_torch/backbones/iresnet.py`` and
IrvingMeng/MagFace ``models/iresnet.py``):

========== ============================== ===========================================
variant    batch-norm eps / momentum      head
========== ============================== ===========================================
arcface    1e-5 / 0.1 (PyTorch default)   flatten, Dropout(p=0), fc, features
magface    2e-5 / 0.9                     Dropout2d(p=0.4), flatten, fc, features
                                          (plus an unused AdaptiveAvgPool2d ``avgpool``)
========== ============================== ===========================================

In eval mode (the only mode facexplain uses) dropout is the identity, so the variants differ
by the batch-norm eps alone. The input is expected at 112x112, already normalised the family's
way (see ``families.PRESETS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["IRESNET_ARCHS", "DEFAULT_WIDTHS", "FC_SCALE", "IBasicBlock", "IResNet", "VARIANTS"]

#: Blocks per layer of each named depth (arcface_torch also names iresnet200).
IRESNET_ARCHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
#: Channels of layer1..layer4 in every official model (smaller widths are for tests).
DEFAULT_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
#: Spatial size of layer4's output for a 112x112 input (7x7), as upstream's ``fc_scale``.
FC_SCALE = 7 * 7
#: Batch-norm (eps, momentum) of each variant.
VARIANTS: dict[str, tuple[float, float]] = {"arcface": (1e-5, 0.1), "magface": (2e-5, 0.9)}


def _bn2d(channels: int, variant: str) -> nn.BatchNorm2d:
    eps, momentum = VARIANTS[variant]
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, 3x3 conv, BN, PReLU, 3x3 conv (stride), BN, + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, variant: str = "arcface") -> None:
        super().__init__()
        self.bn1 = _bn2d(inplanes, variant)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _bn2d(planes, variant)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = _bn2d(planes, variant)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                _bn2d(planes, variant),
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut: torch.Tensor = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """iResNet mapping (N, 3, 112, 112) normalised input to (N, num_features) embeddings.

    ``layers``: blocks per layer (see :data:`IRESNET_ARCHS`); ``widths``: channels per layer
    (the stem has ``widths[0]``); ``variant``: "arcface" or "magface" (see the module docstring).
    """

    #: Names of the batch-norms that close each residual branch (used by random initialisers).
    residual_bn_suffix = ".bn3"

    # The four stages are registered with setattr under the state-dict names; declared for mypy.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        layers: Sequence[int],
        *,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        num_features: int = 512,
        variant: str = "arcface",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown iresnet variant {variant!r}; expected one of {sorted(VARIANTS)}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("iresnet needs 4 layers and 4 widths")
        self.variant = variant
        self.layers_spec = tuple(int(n) for n in layers)
        self.widths = tuple(int(w) for w in widths)
        self.num_features = int(num_features)
        eps, momentum = VARIANTS[variant]

        self.conv1 = nn.Conv2d(3, self.widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = _bn2d(self.widths[0], variant)
        self.prelu = nn.PReLU(self.widths[0])
        inplanes = self.widths[0]
        for i, (blocks, planes) in enumerate(zip(self.layers_spec, self.widths, strict=True), start=1):
            seq = [IBasicBlock(inplanes, planes, 2, variant=variant)]
            seq += [IBasicBlock(planes, planes, 1, variant=variant) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*seq))
            inplanes = planes
        if variant == "magface":
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # defined (unused) upstream; no parameters
        self.bn2 = _bn2d(inplanes, variant)
        self.dropout: nn.Module = nn.Dropout2d(p=0.4) if variant == "magface" else nn.Dropout(p=0.0)
        self.fc = nn.Linear(inplanes * FC_SCALE, self.num_features)
        self.features = nn.BatchNorm1d(self.num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        if self.variant == "magface":
            x = torch.flatten(self.dropout(x), 1)
        else:
            x = self.dropout(torch.flatten(x, 1))
        embedding: torch.Tensor = self.features(self.fc(x))
        return embedding
