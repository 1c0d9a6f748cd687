"""PyTorch twin of dlib's face-recognition ResNet (for gradient-based methods such as Grad-CAM).

Same input contract as the ONNX model: float32 (N, 3, S, S) RGB pixels in [0, 255]. ``features``
returns the output of the last residual block (the "last convolutional block" of Grad-CAM).
Requires the optional ``torch`` extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dlib_format import Affine, Conv, DlibResNet, ResBlock
from .dlib_resnet import block_output_shapes, fold_affine

__all__ = ["build_torch"]


def build_torch(net: DlibResNet) -> Any:
    """A ``torch.nn.Module`` (eval mode, float32) equal to the network up to float rounding."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def make_conv(c: Conv, a: Affine) -> nn.Conv2d:
        w, b = fold_affine(c, a)
        out, cin, k, _ = w.shape
        m = nn.Conv2d(cin, out, k, stride=c.stride, padding=c.padding)
        bias = m.bias
        if bias is None:  # nn.Conv2d(bias=True), the default, always makes one
            raise RuntimeError("nn.Conv2d was built without a bias")
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w))
            bias.copy_(torch.from_numpy(b))
        return m

    class Block(nn.Module):
        def __init__(self, b: ResBlock, c_out: int, side_out: int) -> None:
            super().__init__()
            self.conv1 = make_conv(b.conv1, b.affine1)
            self.conv2 = make_conv(b.conv2, b.affine2)
            self.pool = b.pool if b.down else 0
            self.c_out, self.side_out = c_out, side_out

        def _pad(self, t: torch.Tensor) -> torch.Tensor:
            dc = self.c_out - t.shape[1]
            ds = self.side_out - t.shape[2]
            return F.pad(t, (0, ds, 0, ds, 0, dc)) if dc or ds else t

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv2(F.relu(self.conv1(x)))
            skip = F.avg_pool2d(x, self.pool, self.pool) if self.pool else x
            return F.relu(self._pad(y) + self._pad(skip))

    class DlibResNetModule(nn.Module):
        mean: torch.Tensor  # a buffer (register_buffer below): (1, 3, 1, 1) mean RGB

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
            self.stem = make_conv(net.stem_conv, net.stem_affine)
            self.pool_k, self.pool_s = net.stem_pool
            shapes = block_output_shapes(net)
            self.blocks = nn.ModuleList(
                Block(b, *shapes[i + 1]) for i, b in enumerate(net.blocks)
            )
            self.fc = nn.Linear(net.fc.shape[0], net.fc.shape[1], bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(net.fc.T)))

        def features(self, image: torch.Tensor) -> torch.Tensor:
            """Output of the last residual block, (N, 256, 2, 2) for a 150x150 chip."""
            x = (image - self.mean) / 256.0
            x = F.max_pool2d(F.relu(self.stem(x)), self.pool_k, self.pool_s)
            for blk in self.blocks:
                x = blk(x)
            return x

        def head(self, feats: torch.Tensor) -> torch.Tensor:
            """Embedding from the last block's output."""
            embedding: torch.Tensor = self.fc(feats.mean(dim=(2, 3)))
            return embedding

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(image))

    return DlibResNetModule().eval()
