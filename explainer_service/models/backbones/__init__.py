"""PyTorch backbones of the paper's face models, laid out so the official checkpoints load as they are.

- :mod:`.iresnet` — the "improved ResNet" of insightface's ``arcface_torch`` (ArcFace), also used,
  with its own batch-norm settings, by MagFace.
- :mod:`.adaface_ir` — the IR network of AdaFace's ``net.py`` (``input_layer``, ``body``,
  ``output_layer``).

Module and parameter names follow the upstream code exactly (so a state dict loads with
``strict=True``); only the construction code is our own. Every backbone maps a float32
(N, 3, 112, 112) tensor *already normalised the network's way* to (N, D) embeddings; the pixel
convention is applied by :class:`explainer_service.models.families.Preprocessed`.
Importing this package requires the optional ``torch`` extra.
"""

from __future__ import annotations

from .adaface_ir import ADAFACE_ARCHS, AdaFaceIR, BasicBlockIR
from .iresnet import IRESNET_ARCHS, IBasicBlock, IResNet

__all__ = [
    "ADAFACE_ARCHS",
    "AdaFaceIR",
    "BasicBlockIR",
    "IRESNET_ARCHS",
    "IBasicBlock",
    "IResNet",
]
