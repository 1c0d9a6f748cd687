"""MTCNN: a cascade of three small CNNs that finds faces and their five landmarks.

Zhang, Zhang, Li, Qiao, "Joint Face Detection and Alignment Using Multitask Cascaded Convolutional
Networks", IEEE Signal Processing Letters 23(10), 2016. Written here from the paper's architecture
(its Fig. 2) in PyTorch; the trained weights are those shipped inside the ``facenet-pytorch`` wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, state dicts converted from the authors' Caffe
models). ``make setup`` downloads that wheel without its dependencies (it would pin an old torch)
into ``.venv/share/facexplain/``; the weights are read straight out of the zip, checked by SHA-256,
nothing is downloaded at run time.

The cascade: P-Net, fully convolutional, scans an image pyramid for 12x12 face windows; R-Net
re-scores the candidates at 24x24 and O-Net at 48x48, which also gives the five landmarks -- eye
centres, nose tip, mouth corners, the semantics (and order) of the ArcFace template. Each stage
regresses its boxes and drops overlaps by non-maximum suppression.

Two facts of the converted weights (they come from the authors' MATLAB code, which fed transposed
images): the fully connected layers of R-Net and O-Net read their input flattened in
``(x, y, channel)`` order (channel fastest), and O-Net's ten landmark outputs are the five x then the five y, as
fractions of the box.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotReadyError

__all__ = [
    "MTCNN_WHEEL",
    "MTCNN_WHEEL_SHA256",
    "MtcnnFace",
    "mtcnn_detect",
    "mtcnn_wheel_path",
]

#: The wheel the weights come from (pinned: version and hash).
MTCNN_WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"
MTCNN_WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"

#: The paper's stage thresholds (face probability) and NMS overlaps, and the pyramid factor.
THRESHOLDS = (0.6, 0.7, 0.7)
NMS_IOU = (0.5, 0.7, 0.7)
PYRAMID_FACTOR = 0.709


@dataclass(frozen=True)
class MtcnnFace:
    """One face found by MTCNN.

    Attributes:
        box: ``(left, top, right, bottom)`` float image pixels.
        score: O-Net's face probability.
        keypoints: ``(5, 2)`` float64 image ``(x, y)``: left eye, right eye (as seen in the image),
            nose tip, left and right mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray


def mtcnn_wheel_path() -> Path:
    """Where ``make setup`` put the facenet-pytorch wheel: ``<venv>/share/facexplain/``.

    Raises:
        ModelNotReadyError: the wheel is missing.
    """
    path = Path(sys.prefix) / "share" / "facexplain" / MTCNN_WHEEL
    if not path.is_file():
        raise ModelNotReadyError(
            f"{path}: MTCNN weights missing; run `make setup` (it runs `pip download --no-deps "
            f"facenet-pytorch==2.6.0 -d {path.parent}`)"
        )
    return path


def mtcnn_detect(image: np.ndarray, *, min_face: int = 20) -> list[MtcnnFace]:
    """All faces MTCNN finds in an ``(H, W, 3)`` uint8 RGB image, best score first.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        min_face: the smallest face side searched, pixels (sets the pyramid's first scale).
    """
    torch = _torch()
    nets = _nets()
    h, w = image.shape[:2]
    img = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        boxes = _stage1(torch, nets[0], img, h, w, min_face)
        if len(boxes):
            boxes = _refine(torch, nets[1], img, boxes, 24, THRESHOLDS[1], NMS_IOU[1])
        if len(boxes):
            boxes, points = _stage3(torch, nets[2], img, boxes)
        else:
            points = np.zeros((0, 5, 2))
    order: list[int] = [int(i) for i in np.argsort(-boxes[:, 4], kind="stable")] if len(boxes) else []
    return [
        MtcnnFace(
            box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
            score=float(boxes[i, 4]),
            keypoints=points[i].astype(np.float64),
        )
        for i in order
    ]


# ---- the cascade ---------------------------------------------------------------------------------


def _normalise(torch: Any, x: Any) -> Any:
    return (x - 127.5) * 0.0078125


def _stage1(torch: Any, pnet: Any, img: Any, h: int, w: int, min_face: int) -> np.ndarray:
    """P-Net over the pyramid: ``(n, 5)`` boxes ``x1, y1, x2, y2, score``, regressed and squared."""
    fn = torch.nn.functional
    scale = 12.0 / min_face
    side = min(h, w) * scale
    found = []
    while side >= 12:
        hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
        x = _normalise(torch, fn.interpolate(img, size=(hs, ws), mode="area"))
        reg, prob = pnet(x)
        prob_np, reg_np = prob[0, 1].numpy(), reg[0].numpy()
        ys, xs = np.nonzero(prob_np > THRESHOLDS[0])
        if len(ys):
            score = prob_np[ys, xs]
            x1, y1 = (2 * xs + 1) / scale, (2 * ys + 1) / scale
            x2, y2 = (2 * xs + 12) / scale, (2 * ys + 12) / scale
            boxes = np.stack([x1, y1, x2, y2, score], axis=1)
            offsets = reg_np[:, ys, xs].T
            keep = _nms(boxes, NMS_IOU[0])
            found.append(np.concatenate([boxes[keep], offsets[keep]], axis=1))
        scale *= PYRAMID_FACTOR
        side *= PYRAMID_FACTOR
    if not found:
        return np.zeros((0, 5))
    cand = np.concatenate(found)
    cand = cand[_nms(cand[:, :5], 0.7)]
    return _square(_regress(cand[:, :5], cand[:, 5:9]))


def _refine(
    torch: Any, net: Any, img: Any, boxes: np.ndarray, size: int, threshold: float, iou: float
) -> np.ndarray:
    """R-Net: re-score and regress the candidates at 24x24."""
    reg, prob = net(_crops(torch, img, boxes, size))
    score = prob[:, 1].numpy()
    keep = score > threshold
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    offsets = reg.numpy()[keep]
    pick = _nms(boxes, iou)
    return _square(_regress(boxes[pick], offsets[pick]))


def _stage3(torch: Any, onet: Any, img: Any, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """O-Net: final score, box and five landmarks."""
    reg, marks, prob = onet(_crops(torch, img, boxes, 48))
    score = prob[:, 1].numpy()
    keep = score > THRESHOLDS[2]
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    offsets, marks_np = reg.numpy()[keep], marks.numpy()[keep]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    px = boxes[:, 0:1] + bw * marks_np[:, 0:5] - 1
    py = boxes[:, 1:2] + bh * marks_np[:, 5:10] - 1
    points = np.stack([px, py], axis=2)
    boxes = _regress(boxes, offsets)
    pick = _nms(boxes, NMS_IOU[2], mode="min")
    return boxes[pick], points[pick]


def _crops(torch: Any, img: Any, boxes: np.ndarray, size: int) -> Any:
    """Each box cut from the image (zeros outside it), resized to ``size``, normalised."""
    fn = torch.nn.functional
    _, _, h, w = img.shape
    out = []
    for x1, y1, x2, y2 in np.round(boxes[:, :4]).astype(int):
        x1, y1 = x1 - 1, y1 - 1
        bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
        patch = torch.zeros((1, 3, bh, bw))
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[:, :, sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[:, :, sy1:sy2, sx1:sx2]
        out.append(fn.interpolate(patch, size=(size, size), mode="area"))
    return _normalise(torch, torch.cat(out))


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the box regression: offsets are fractions of the box's width and height."""
    bw = boxes[:, 2] - boxes[:, 0] + 1
    bh = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += offsets[:, 0] * bw
    out[:, 1] += offsets[:, 1] * bh
    out[:, 2] += offsets[:, 2] * bw
    out[:, 3] += offsets[:, 3] * bh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box made square about its centre (side: the longer one)."""
    out = boxes.copy()
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(bw, bh)
    out[:, 0] = boxes[:, 0] + bw * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + bh * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _nms(boxes: np.ndarray, iou: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression on ``(n, >=5)`` boxes (score in column 4).

    ``mode="min"`` divides the overlap by the smaller box (a box inside another is dropped).
    """
    x1, y1, x2, y2, score = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= iou]
    return np.array(keep, dtype=np.int64)


# ---- the networks --------------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelNotReadyError(f"the MTCNN detector needs PyTorch ({exc}); run `make setup`") from None
    return torch


@lru_cache(maxsize=1)
def _nets() -> tuple[Any, Any, Any]:
    """P-Net, R-Net and O-Net as functions of a normalised ``(N, 3, H, W)`` batch (loaded once)."""
    torch = _torch()
    path = mtcnn_wheel_path()
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != MTCNN_WHEEL_SHA256:
        raise ModelNotReadyError(f"{path}: SHA-256 differs from facenet-pytorch 2.6.0's; run `make setup` again")
    with zipfile.ZipFile(io.BytesIO(raw)) as wheel:
        pnet, rnet, onet = (
            torch.load(io.BytesIO(wheel.read(f"facenet_pytorch/data/{n}.pt")), weights_only=True)
            for n in ("pnet", "rnet", "onet")
        )
    fn = torch.nn.functional

    def conv(w: dict[str, Any], name: str, x: Any, act: str) -> Any:
        return fn.prelu(fn.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"]), w[act])

    def dense(w: dict[str, Any], name: str, x: Any) -> Any:
        return fn.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

    def flat(x: Any) -> Any:  # the converted weights read (x, y, channel), channel fastest
        return x.permute(0, 3, 2, 1).flatten(1)

    def p_net(x: Any) -> tuple[Any, Any]:
        """12x12 proposals: 3 convs, then per window the box offsets and face probability."""
        w = pnet
        x = fn.max_pool2d(conv(w, "conv1", x, "prelu1.weight"), 2, 2, ceil_mode=True)
        x = conv(w, "conv3", conv(w, "conv2", x, "prelu2.weight"), "prelu3.weight")
        reg = fn.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"])
        return reg, torch.softmax(fn.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]), dim=1)

    def r_net(x: Any) -> tuple[Any, Any]:
        """24x24 refinement: box offsets and face probability."""
        w = rnet
        x = fn.max_pool2d(conv(w, "conv1", x, "prelu1.weight"), 3, 2, ceil_mode=True)
        x = fn.max_pool2d(conv(w, "conv2", x, "prelu2.weight"), 3, 2, ceil_mode=True)
        x = flat(conv(w, "conv3", x, "prelu3.weight"))
        x = fn.prelu(dense(w, "dense4", x), w["prelu4.weight"])
        return dense(w, "dense5_2", x), torch.softmax(dense(w, "dense5_1", x), dim=1)

    def o_net(x: Any) -> tuple[Any, Any, Any]:
        """48x48 output: box offsets, five landmarks (5 x then 5 y) and face probability."""
        w = onet
        x = fn.max_pool2d(conv(w, "conv1", x, "prelu1.weight"), 3, 2, ceil_mode=True)
        x = fn.max_pool2d(conv(w, "conv2", x, "prelu2.weight"), 3, 2, ceil_mode=True)
        x = fn.max_pool2d(conv(w, "conv3", x, "prelu3.weight"), 2, 2, ceil_mode=True)
        x = flat(conv(w, "conv4", x, "prelu4.weight"))
        x = fn.prelu(dense(w, "dense5", x), w["prelu5.weight"])
        return dense(w, "dense6_2", x), dense(w, "dense6_3", x), torch.softmax(dense(w, "dense6_1", x), dim=1)

    return p_net, r_net, o_net
