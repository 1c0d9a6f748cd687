"""Reader of dlib's serialization format for the face-recognition ResNet (``anet_type``).

Turns ``dlib_face_recognition_resnet_model_v1.dat`` into a small, framework-free description of
the network (:class:`DlibResNet`): NumPy weights plus the topology, which the file does not store
and which is recovered from the order of the layer records. The ONNX and PyTorch builders in this
package consume that description.

Format (learned from dlib's public sources, see ``../shared/docs/dlib-resnet-dat-format.md``):
integers are a control byte (low nibble = byte count, bit 7 = sign) followed by the little-endian
magnitude; floats are (int64 mantissa, int16 exponent); strings are a length then bytes; tensors are
version 2 + (n, k, nr, nc) + float32 data. The file is the loss block, a prefix of wrapper version
numbers, the input layer, then one record per layer from input to output, each followed by a
trailer of 3 bools and 3 (empty) tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError

__all__ = [
    "Conv",
    "Affine",
    "ResBlock",
    "DlibResNet",
    "read_dlib_resnet",
    "parse_dlib_resnet",
    "OFFICIAL_SHA256",
]

#: SHA-256 of ``dlib_face_recognition_resnet_model_v1.dat`` as shipped by face_recognition_models.
OFFICIAL_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution: weight (O, I, kh, kw) float32, bias (O,), stride and symmetric padding."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """Per-channel y = gamma * x + beta (dlib's folded batch norm); gamma, beta (C,) float32."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class ResBlock:
    """A residual block: conv1-affine1-relu-conv2-affine2, plus the skip path, then add and relu.

    ``down`` blocks (``ares_down``) have a stride-2 first conv and an average-pooled skip
    (``pool`` x ``pool`` window, stride ``pool``); both branches are zero-padded at the end of the
    channel, row and column axes to the larger shape before the add, as dlib's ``add_prev`` does.
    """

    conv1: Conv
    affine1: Affine
    conv2: Conv
    affine2: Affine
    down: bool
    pool: int = 0


@dataclass(frozen=True)
class DlibResNet:
    """The whole network: stem, residual blocks, global average pool and a bias-free FC layer.

    ``fc`` is (in, out) = (256, 128): the output is ``flatten(x) @ fc``. ``mean_rgb`` and
    ``chip_size`` describe dlib's input layer: x = (pixel - mean) / 256 on an RGB chip.
    """

    mean_rgb: tuple[float, float, float]
    chip_size: int
    stem_conv: Conv
    stem_affine: Affine
    stem_pool: tuple[int, int]  # (kernel, stride) of the max pool
    blocks: tuple[ResBlock, ...]
    fc: np.ndarray
    dist_thresh: float
    sha256: str = ""
    source: str = ""
    layer_tags: tuple[str, ...] = field(default=(), repr=False)

    @property
    def embedding_dim(self) -> int:
        return int(self.fc.shape[1])

    def parameter_count(self) -> int:
        """Number of float parameters read from the file (conv weights and biases, affine, fc)."""
        total = self.stem_conv.weight.size + self.stem_conv.bias.size
        total += self.stem_affine.gamma.size * 2
        for b in self.blocks:
            for c in (b.conv1, b.conv2):
                total += c.weight.size + c.bias.size
            total += (b.affine1.gamma.size + b.affine2.gamma.size) * 2
        return int(total + self.fc.size)


class _Truncated(ModelFormatError):
    """The file ended in the middle of a value."""


class _Reader:
    """Cursor over the bytes of a dlib-serialized file; every read names what it was reading."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.name}: {problem} while reading {what} at byte {self.pos}")

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise _Truncated(
                f"{self.name}: file ends after {len(self.data)} bytes while reading {what} (truncated?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int_(self, what: str = "an integer") -> int:
        ctrl = self._take(1, what)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            raise self.fail(what, f"invalid integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if ctrl & 0x80 else value

    def bool_(self, what: str = "a bool") -> bool:
        b = self._take(1, what)
        if b not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(what, f"invalid bool byte {b!r}")
        return b == b"1"

    def str_(self, what: str = "a string") -> str:
        n = self.int_(what)
        if not 0 <= n <= 4096:
            raise self.fail(what, f"implausible string length {n}")
        raw = self._take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(what, "non-ASCII string") from None

    def peek_str(self) -> str | None:
        """The string starting here, if the bytes here look like one; the cursor does not move."""
        pos = self.pos
        try:
            return self.str_()
        except _Truncated:
            raise
        except ModelFormatError:
            return None
        finally:
            self.pos = pos

    def float_(self, what: str = "a float") -> float:
        ctrl = self.data[self.pos] if self.pos < len(self.data) else 0
        if ctrl & 0x70:
            raise self.fail(what, "legacy ASCII float encoding (unsupported)")
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if exponent >= 32000:
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        version = self.int_(what)
        if version != 2:
            raise self.fail(what, f"unknown tensor version {version}")
        shape = tuple(self.int_(what) for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(what, f"negative tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
        version = self.int_(what)
        if version != 1:
            raise self.fail(what, f"unknown alias_tensor version {version}")
        return self.int_(what), self.int_(what), self.int_(what), self.int_(what)


_Pool = tuple[int, int, int, int]  # (window side, window side, stride, padding) of a square pool


def _read_trailer(r: _Reader, with_expansion: bool) -> None:
    for _ in range(3):
        r.bool_("a layer trailer flag")
    for _ in range(3):
        r.tensor("a layer trailer tensor")
    if with_expansion:
        r.int_("the input layer's sample expansion factor")


def _read_con(r: _Reader, tag: str) -> Conv:
    params = r.tensor("con weights")
    num_filters = r.int_("con num_filters")
    kh, kw = r.int_("con nr"), r.int_("con nc")
    sy, sx = r.int_("con stride_y"), r.int_("con stride_x")
    py, px = r.int_("con padding_y"), r.int_("con padding_x")
    f_alias = r.alias("con filters alias")
    b_alias = r.alias("con biases alias")
    for _ in range(4):
        r.float_("con learning-rate multipliers")
    use_bias = True
    if tag in ("con_5", "con_6"):
        use_bias = r.bool_("con use_bias")
    if tag == "con_6" and r.bool_("con use_relu"):
        raise r.fail("con use_relu", "fused relu in a con layer is not supported")
    out, cin, fh, fw = f_alias
    if (out, fh, fw) != (num_filters, kh, kw) or sy != sx or py != px:
        raise r.fail("con", f"inconsistent conv shape {f_alias} / {num_filters}x{kh}x{kw}")
    n_w = out * cin * kh * kw
    flat = params.reshape(-1)
    n_b = out if use_bias and b_alias[1] else 0
    if flat.size != n_w + n_b:
        raise r.fail("con", f"weights hold {flat.size} floats, the shape needs {n_w + n_b}")
    weight = flat[:n_w].reshape(out, cin, kh, kw).copy()
    bias = flat[n_w:].copy() if n_b else np.zeros(out, np.float32)
    return Conv(weight=weight, bias=bias, stride=sy, padding=py)


def _read_affine(r: _Reader, tag: str) -> Affine:
    if tag.startswith("bn_"):
        return _read_bn_as_affine(r)
    params = r.tensor("affine params")
    g_alias = r.alias("affine gamma alias")
    r.alias("affine beta alias")
    mode = r.int_("affine mode")
    disabled = r.bool_("affine disabled") if tag == "affine_2" else False
    k = g_alias[1] if mode == 0 else g_alias[1] * g_alias[2] * g_alias[3]
    flat = params.reshape(-1)
    if flat.size != 2 * k:
        raise r.fail("affine", f"params hold {flat.size} floats, expected {2 * k}")
    if disabled:
        return Affine(np.ones(k, np.float32), np.zeros(k, np.float32))
    return Affine(gamma=flat[:k].copy(), beta=flat[k:].copy())


def _read_bn_as_affine(r: _Reader) -> Affine:
    """dlib converts a bn_ record into an affine one while loading; do the same."""
    params = r.tensor("bn params")
    g_alias = r.alias("bn gamma alias")
    r.alias("bn beta alias")
    for what in ("bn means", "bn invstds", "bn running_means", "bn running_variances"):
        tensors = r.tensor(what)
        if what == "bn running_means":
            running_mean = tensors.reshape(-1)
        elif what == "bn running_variances":
            running_var = tensors.reshape(-1)
    r.int_("bn num_updates")
    r.int_("bn window")
    for _ in range(4):
        r.float_("bn multipliers")
    eps = r.float_("bn eps")
    k = g_alias[1] * g_alias[2] * g_alias[3]
    flat = params.reshape(-1).astype(np.float64)
    gamma = flat[:k] / np.sqrt(running_var.astype(np.float64) + eps)
    beta = flat[k:] - gamma * running_mean
    return Affine(gamma=gamma.astype(np.float32), beta=beta.astype(np.float32))


def _read_pool(r: _Reader) -> _Pool:
    nr, nc = r.int_("pool nr"), r.int_("pool nc")
    sy, sx = r.int_("pool stride_y"), r.int_("pool stride_x")
    py, px = r.int_("pool padding_y"), r.int_("pool padding_x")
    if nr != nc or sy != sx or py != px or py != 0:
        raise r.fail("pool", f"unsupported pool window {nr}x{nc} stride {sy},{sx} pad {py},{px}")
    return nr, nc, sy, py


def _read_fc(r: _Reader, tag: str) -> np.ndarray:
    num_outputs = r.int_("fc num_outputs")
    num_inputs = r.int_("fc num_inputs")
    params = r.tensor("fc params")
    r.alias("fc weights alias")
    r.alias("fc biases alias")
    bias_mode = r.int_("fc bias_mode")
    for _ in range(4):
        r.float_("fc multipliers")
    if tag == "fc_3":
        r.bool_("fc use_bias")
    flat = params.reshape(-1)
    if bias_mode != 1:
        raise r.fail("fc", "fc layers with a bias are not part of this network")
    if flat.size != num_inputs * num_outputs:
        raise r.fail("fc", f"params hold {flat.size} floats, expected {num_inputs * num_outputs}")
    return flat.reshape(num_inputs, num_outputs).copy()


#: A layer's payload by kind: con -> Conv, affine -> Affine, max_pool/avg_pool -> _Pool,
#: fc -> the (in, out) matrix, relu/add -> None.
_Payload = Conv | Affine | _Pool | np.ndarray | None
_Layer = tuple[str, _Payload]  # (kind, payload): kind in con, affine, relu, max_pool, avg_pool, add, fc


def _read_layers(r: _Reader, input_version: int) -> list[_Layer]:
    layers: list[_Layer] = []
    first = True
    while r.pos < len(r.data):
        tag = r.str_("a layer tag")
        if tag.startswith("con_"):
            layers.append(("con", _read_con(r, tag)))
        elif tag.startswith("affine_") or tag in ("bn_con2", "bn_fc2"):
            layers.append(("affine", _read_affine(r, tag)))
        elif tag in ("relu_", "relu_2"):
            if tag == "relu_2" and r.bool_("relu disabled"):
                raise r.fail("relu", "disabled relu layers are not supported")
            layers.append(("relu", None))
        elif tag in ("max_pool_2", "avg_pool_2"):
            layers.append((tag[:-2], _read_pool(r)))
        elif tag == "add_prev_":
            layers.append(("add", None))
        elif tag in ("fc_2", "fc_3"):
            layers.append(("fc", _read_fc(r, tag)))
        else:
            raise r.fail("a layer", f"unknown or unsupported layer tag {tag!r}")
        _read_trailer(r, with_expansion=first and input_version == 3)
        first = False
    return layers


def _assemble(
    layers: list[_Layer], name: str
) -> tuple[Conv, Affine, tuple[int, int], tuple[ResBlock, ...], np.ndarray]:
    """Recover the anet_type topology from the flat record list (the file stores no tags).

    Returns (stem conv, stem affine, stem max pool (kernel, stride), blocks, fc matrix).
    """
    kinds = [k for k, _ in layers]

    def bad(i: int, expected: str) -> ModelFormatError:
        got = kinds[i] if i < len(kinds) else "end of file"
        return ModelFormatError(
            f"{name}: layer {i} is {got}, expected {expected}; "
            "this is not dlib's face-recognition ResNet (anet_type)"
        )

    def expect(i: int, kind: str) -> _Payload:
        if i >= len(kinds) or kinds[i] != kind:
            raise bad(i, kind)
        return layers[i][1]

    # _read_layers pairs every kind with one payload type, so the isinstance checks below only
    # narrow the type; a mismatch would be a bug in this module, not a bad file.
    def conv(i: int) -> Conv:
        payload = expect(i, "con")
        if not isinstance(payload, Conv):
            raise TypeError(f"layer {i}: con payload is {type(payload).__name__}")
        return payload

    def affine(i: int) -> Affine:
        payload = expect(i, "affine")
        if not isinstance(payload, Affine):
            raise TypeError(f"layer {i}: affine payload is {type(payload).__name__}")
        return payload

    def pool(i: int, kind: str) -> _Pool:
        payload = expect(i, kind)
        if not isinstance(payload, tuple):
            raise TypeError(f"layer {i}: {kind} payload is {type(payload).__name__}")
        return payload

    def fc_matrix(i: int) -> np.ndarray:
        payload = expect(i, "fc")
        if not isinstance(payload, np.ndarray):
            raise TypeError(f"layer {i}: fc payload is {type(payload).__name__}")
        return payload

    stem_conv = conv(0)
    stem_affine = affine(1)
    expect(2, "relu")
    mp = pool(3, "max_pool")
    i = 4
    blocks: list[ResBlock] = []
    while i < len(kinds) and kinds[i] == "con":
        c1, a1 = conv(i), affine(i + 1)
        expect(i + 2, "relu")
        c2, a2 = conv(i + 3), affine(i + 4)
        if i + 5 < len(kinds) and kinds[i + 5] == "avg_pool":
            skip_pool = pool(i + 5, "avg_pool")
            expect(i + 6, "add")
            expect(i + 7, "relu")
            blocks.append(ResBlock(c1, a1, c2, a2, down=True, pool=skip_pool[0]))
            i += 8
        else:
            expect(i + 5, "add")
            expect(i + 6, "relu")
            blocks.append(ResBlock(c1, a1, c2, a2, down=False))
            i += 7
    gp = pool(i, "avg_pool")
    if gp[0] != 0:
        raise bad(i, "avg_pool_everything")
    fc = fc_matrix(i + 1)
    if i + 2 != len(kinds):
        raise bad(i + 2, "end of file")
    if not blocks:
        raise bad(4, "a residual block")
    return stem_conv, stem_affine, (mp[0], mp[2]), tuple(blocks), fc


def parse_dlib_resnet(data: bytes, name: str = "<bytes>") -> DlibResNet:
    """Parse the bytes of a dlib face-recognition ResNet file; raise ModelFormatError if invalid."""
    if len(data) < 32:
        raise ModelFormatError(f"{name}: only {len(data)} bytes; not a dlib network file")
    r = _Reader(data, name)
    try:
        if r.int_("the loss layer version") != 1:
            raise r.fail("the loss layer", "unexpected loss layer version")
        loss_tag = r.str_("the loss layer tag")
        if not loss_tag.startswith("loss_metric"):
            raise r.fail("the loss layer", f"loss {loss_tag!r} is not loss_metric; not a face network")
        r.float_("the loss margin")
        dist_thresh = r.float_("the loss distance threshold")
        versions: list[int] = []
        while True:
            s = r.peek_str()
            if s is not None and s.startswith("input"):
                break
            versions.append(r.int_("a layer wrapper version"))
            if versions[-1] not in (1, 2, 3) or len(versions) > 10000:
                raise r.fail("the layer wrapper versions", f"unexpected version {versions[-1]}")
        input_tag = r.str_("the input layer tag")
        if input_tag != "input_rgb_image_sized":
            raise r.fail("the input layer", f"input {input_tag!r} is not input_rgb_image_sized")
        mean = (r.float_("avg_red"), r.float_("avg_green"), r.float_("avg_blue"))
        nr, nc = r.int_("the input rows"), r.int_("the input columns")
        if nr != nc or nr <= 0:
            raise r.fail("the input size", f"non-square or empty input {nr}x{nc}")
        layers = _read_layers(r, versions[-1] if versions else 2)
    except IndexError:
        raise ModelFormatError(f"{name}: file ends early (truncated?)") from None
    stem_conv, stem_affine, stem_pool, blocks, fc = _assemble(layers, name)
    return DlibResNet(
        mean_rgb=mean,
        chip_size=nr,
        stem_conv=stem_conv,
        stem_affine=stem_affine,
        stem_pool=stem_pool,
        blocks=blocks,
        fc=fc,
        dist_thresh=dist_thresh,
        sha256=hashlib.sha256(data).hexdigest(),
        source=name,
        layer_tags=tuple(k for k, _ in layers),
    )


def read_dlib_resnet(path: str | Path) -> DlibResNet:
    """Read a dlib face-recognition ResNet ``.dat`` file; raise ModelFormatError if invalid."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{p}: cannot read model file ({e.strerror or e})") from None
    return parse_dlib_resnet(data, str(p))

