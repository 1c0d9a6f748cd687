"""Builds runnable models (ONNX graph, PyTorch module) from a parsed dlib ResNet.

Every model built here takes what the rest of facexplain sends a face model: a float32 batch
(N, 3, S, S) of RGB pixel values in [0, 255] at the chip size S, and returns (N, 128) embeddings.
dlib's input normalisation, x = (pixel - mean_rgb) / 256, is the first step of the graph, so it is
applied in exactly one place. Each conv is fused with the affine (folded batch-norm) after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .dlib_format import Affine, Conv, DlibResNet

__all__ = ["fold_affine", "build_onnx", "block_output_shapes", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def fold_affine(conv: Conv, affine: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of conv followed by y = gamma*x + beta, as one conv (float64 maths)."""
    g = affine.gamma.astype(np.float64)
    w = conv.weight.astype(np.float64) * g[:, None, None, None]
    b = conv.bias.astype(np.float64) * g + affine.beta.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - k) // stride


def block_output_shapes(net: DlibResNet) -> list[tuple[int, int]]:
    """(channels, side) after the stem and after each residual block, for a square chip."""
    s = _conv_out(net.chip_size, net.stem_conv.weight.shape[2], net.stem_conv.stride, 0)
    s = _conv_out(s, net.stem_pool[0], net.stem_pool[1], 0)
    c = net.stem_conv.weight.shape[0]
    shapes = [(c, s)]
    for b in net.blocks:
        k = b.conv1.weight.shape[2]
        side_block = _conv_out(s, k, b.conv1.stride, b.conv1.padding)
        cb = b.conv2.weight.shape[0]
        if b.down:
            side_skip = _conv_out(s, b.pool, b.pool, 0)
            s = max(side_block, side_skip)
        c = max(c, cb)
        shapes.append((c, s))
    return shapes


def build_onnx(net: DlibResNet, opset: int = 17) -> Any:
    """An ONNX ModelProto of the network with a dynamic batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def node(op: str, inputs: list[str], prefix: str, **attrs: Any) -> str:
        out = name(prefix)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(x: str, c: Conv, a: Affine, prefix: str) -> str:
        w, b = fold_affine(c, a)
        k = int(w.shape[2])
        p = c.padding
        return node(
            "Conv",
            [x, const(w, prefix + "_w"), const(b, prefix + "_b")],
            prefix,
            kernel_shape=[k, k],
            strides=[c.stride, c.stride],
            pads=[p, p, p, p],
        )

    mean = np.array(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = node("Sub", [INPUT_NAME, const(mean, "mean")], "center")
    x = node("Mul", [x, const(np.array(1 / 256, np.float32), "scale")], "scale")
    x = node("Relu", [conv(x, net.stem_conv, net.stem_affine, "stem")], "relu")
    k, s = net.stem_pool
    x = node("MaxPool", [x], "maxpool", kernel_shape=[k, k], strides=[s, s])
    shapes = block_output_shapes(net)
    for i, b in enumerate(net.blocks):
        c_in, side_in = shapes[i]
        c_out, side_out = shapes[i + 1]
        y = node("Relu", [conv(x, b.conv1, b.affine1, f"b{i}_c1")], f"b{i}_r1")
        y = conv(y, b.conv2, b.affine2, f"b{i}_c2")
        skip, c_skip, side_skip = x, c_in, side_in
        if b.down:
            skip = node(
                "AveragePool", [x], f"b{i}_pool", kernel_shape=[b.pool] * 2, strides=[b.pool] * 2
            )
            side_skip = _conv_out(side_in, b.pool, b.pool, 0)
        c_blk = b.conv2.weight.shape[0]
        side_blk = _conv_out(side_in, b.conv1.weight.shape[2], b.conv1.stride, b.conv1.padding)
        y = _pad_to(y, c_blk, side_blk, c_out, side_out, node, const, f"b{i}_padblk")
        skip = _pad_to(skip, c_skip, side_skip, c_out, side_out, node, const, f"b{i}_padskip")
        x = node("Relu", [node("Add", [y, skip], f"b{i}_add")], f"b{i}_out")
    x = node("GlobalAveragePool", [x], "gap")
    x = node("Flatten", [x], "flatten", axis=1)
    nodes.append(helper.make_node("MatMul", [x, const(net.fc, "fc")], [OUTPUT_NAME], name="fc"))

    size = net.chip_size
    graph = helper.make_graph(
        nodes,
        "dlib_resnet_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", net.embedding_dim])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="facexplain"
    )
    model.ir_version = min(model.ir_version, 8)
    meta = {
        "source_sha256": net.sha256,
        "chip_size": str(size),
        "input": "RGB float32 NCHW in [0,255]; normalised inside the graph",
        "mean_rgb": ",".join(f"{m:.6f}" for m in net.mean_rgb),
    }
    for k_, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k_, v
    onnx.checker.check_model(model)
    return model


def _pad_to(
    x: str,
    c: int,
    side: int,
    c_out: int,
    side_out: int,
    node: Callable[..., str],
    const: Callable[[np.ndarray, str], str],
    prefix: str,
) -> str:
    """Zero-pad (N, c, side, side) at the end of channels, rows and columns to (N, c_out, side_out)."""
    if (c, side) == (c_out, side_out):
        return x
    pads = np.array([0, 0, 0, 0, 0, c_out - c, side_out - side, side_out - side], np.int64)
    return node("Pad", [x, const(pads, prefix + "_pads")], prefix, mode="constant")
