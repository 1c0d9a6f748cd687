"""The IR backbone of AdaFace (mk-minchul/AdaFace ``net.py``: ``Backbone(input_size, num_layers, 'ir')``).

Layout (the names the official ``.ckpt`` uses, under its ``model.`` prefix)::

    input_layer   Sequential(Conv2d(3, 64, 3, 1, 1, bias=False), BatchNorm2d(64), PReLU(64))
    body          Sequential of BasicBlockIR, stage by stage; the first block of each stage has
                  stride 2. Each block:
                    shortcut_layer  MaxPool2d(1, stride) when in_channel == depth (no parameters),
                                    else Sequential(Conv2d(in, depth, 1, stride, bias=False), BN2d)
                    res_layer       Sequential(BN2d(in), Conv2d(in, depth, 3, 1, 1), BN2d(depth),
                                               PReLU(depth), Conv2d(depth, depth, 3, stride, 1),
                                               BN2d(depth))
    output_layer  Sequential(BatchNorm2d(512), Dropout(0.4), Flatten(),
                             Linear(512 * 7 * 7, 512), BatchNorm1d(512, affine=False))

Batch-norms use PyTorch's defaults (eps 1e-5). Upstream's ``forward`` returns
``(x / ||x||, ||x||)``; ours returns the un-normalised ``x`` (N, 512): the same direction, with
the norm (AdaFace's quality proxy) kept in the vector. The input is expected at 112x112 in BGR
order, normalised as ``(x / 255 - 0.5) / 0.5`` (``families.PRESETS["adaface"]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ADAFACE_ARCHS", "DEFAULT_WIDTHS", "FC_SCALE", "BasicBlockIR", "AdaFaceIR"]

#: Blocks per stage of each named depth (``net.get_blocks``); "ir_101" is upstream's 100 layers.
ADAFACE_ARCHS: dict[str, tuple[int, int, int, int]] = {
    "ir_18": (2, 2, 2, 2),
    "ir_34": (3, 4, 6, 3),
    "ir_50": (3, 4, 14, 3),
    "ir_101": (3, 13, 30, 3),
}
DEFAULT_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
FC_SCALE = 7 * 7


class BasicBlockIR(nn.Module):
    """IR residual unit: ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.res_layer(x) + self.shortcut_layer(x)
        return out


class AdaFaceIR(nn.Module):
    """AdaFace IR network mapping (N, 3, 112, 112) normalised BGR input to (N, num_features).

    ``layers``: blocks per stage (see :data:`ADAFACE_ARCHS`); ``widths``: channels per stage
    (the stem has ``widths[0]``).
    """

    #: Names of the batch-norms that close each residual branch (used by random initialisers).
    residual_bn_suffix = ".res_layer.5"

    def __init__(
        self,
        layers: Sequence[int],
        *,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        num_features: int = 512,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("AdaFace IR needs 4 stages and 4 widths")
        self.layers_spec = tuple(int(n) for n in layers)
        self.widths = tuple(int(w) for w in widths)
        self.num_features = int(num_features)

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, self.widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(self.widths[0]),
            nn.PReLU(self.widths[0]),
        )
        units: list[nn.Module] = []
        in_channel = self.widths[0]
        for blocks, depth in zip(self.layers_spec, self.widths, strict=True):
            units.append(BasicBlockIR(in_channel, depth, 2))
            units += [BasicBlockIR(depth, depth, 1) for _ in range(blocks - 1)]
            in_channel = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(in_channel * FC_SCALE, self.num_features),
            nn.BatchNorm1d(self.num_features, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.output_layer(self.body(self.input_layer(x)))
        return embedding
