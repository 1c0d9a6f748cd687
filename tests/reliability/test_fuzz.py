"""Bad input (issue 9 section 5): >= 1000 generated malformed requests against a real
``facexplain api`` subprocess, each answered with the status its class allows and a readable
message; the server never answers INTERNAL or UNKNOWN, never dies, stays SERVING, and its memory
stays bounded. And the token and TLS options of ``facexplain api`` guard every call but health.

Requests go through RAW gRPC calls (bytes in, bytes out), so wrong types, undecodable messages,
missing fields and oversize messages are possible, not only what the typed client would send.
Hypothesis generates them (derandomized, no example database: the same requests on every run);
one strategy per malformed class, each with its table of allowed codes (:data:`ALLOWED`) and a
pattern the message must match. The server runs with small limits so that every class is cheap
and the memory bound means something: FACEXPLAIN_MAX_MESSAGE_BYTES 4 MiB,
FACEXPLAIN_MAX_IMAGE_BYTES 1 MiB, FACEXPLAIN_MAX_PIXELS 4 000 000.

Memory bound: the server's peak RSS (VmHWM) at the end may exceed its peak after a warm-up of
valid requests (model loaded, one Verify and one Explain done) and one photo without a face
(which loads the default detector's MTCNN stage and PyTorch, ~300 MB) by at most :data:`RSS_GROWTH_MIB`.
Why that much: requests are sent one at a time; the largest accepted request is two 1 MiB images
of up to 4 M pixels each (12 MB RGB decoded, a few copies while aligning: ~100 MB) inside one
4 MiB message; a bomb or a huge header is refused from the header, before any pixel is decoded.
A leak of a few KB per request over ~1200 requests stays far below; decoding a bomb (25 M pixels
and up) or buffering an oversize message would not.

The figures (requests per class, codes, peak RSS, duration) are written to ``fuzz.json`` under
``$FACEXPLAIN_RELIABILITY_OUT`` (else the test's temporary folder) and printed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from explainer_service.api.pb import audit_pb2, service_pb2, types_pb2
from explainer_service.datasets.kinds import DATASET_KINDS
from explainer_service.demo import make_demo_pair
from explainer_service.methods.registry import list_methods
from explainer_service.models.registry import DEFAULT_MODEL
from explainer_service.models.store import SLOTS
from explainer_service.processes import api_address, start_command, stop_groups
from explainer_service.store import EmbeddedRedis
from tests.integration.procs import left_after, marked_env

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
MAX_MESSAGE = 4 * MIB
MAX_IMAGE = 1 * MIB
MAX_PIXELS = 4_000_000
MAX_MASKS = 100_000  # the default FACEXPLAIN_MAX_MASKS
LIMITS = {
    "FACEXPLAIN_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
    "FACEXPLAIN_MAX_IMAGE_BYTES": str(MAX_IMAGE),
    "FACEXPLAIN_MAX_PIXELS": str(MAX_PIXELS),
}
#: Most the server's peak RSS may grow over the fuzzing, past its peak after the warm-up (see above).
RSS_GROWTH_MIB = 256
#: Requests the fuzzing must send and see answered (issue 9: at least 1000).
MIN_REQUESTS = 1000
CALL_TIMEOUT_S = 60.0
SERVICE = "/facexplain.v1.Facexplain/"
CALLS = ("Verify", "Explain", "WatchJob", "GetJob", "GetResult", "SubmitAudit", "CancelJob", "DeleteJob",
         "ListJobs", "ListModels", "ListMethods", "ListDatasetPairs", "GetDatasetPair")
JOB_REF_CALLS = ("GetJob", "CancelJob", "DeleteJob")

#: Malformed class -> the codes its requests may get. Every case of a class names its own subset
#: (e.g. masks <= 0 are INVALID_ARGUMENT, masks over the limit RESOURCE_EXHAUSTED); never INTERNAL
#: or UNKNOWN. OK appears where the malformed part may decode to a valid request (random bytes
#: that parse as an empty ListModels request) or where the service accepts and queues the request
#: by design (an audit's images are checked per pair by the workers: a bad pair becomes a row
#: with its error; a parameter value that is merely unusual but valid; ListDatasetPairs of a pair
#: list inside the allowed root that names images outside it: it lists names only, and
#: GetDatasetPair refuses to read those images).
ALLOWED: dict[str, frozenset[str]] = {
    "random message": frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OK"}),
    "wire tampering": frozenset({"INVALID_ARGUMENT"}),
    "random image bytes": frozenset({"INVALID_ARGUMENT", "OK"}),
    "truncated image": frozenset({"INVALID_ARGUMENT"}),
    "decompression bomb": frozenset({"RESOURCE_EXHAUSTED"}),
    "huge dimensions": frozenset({"RESOURCE_EXHAUSTED"}),
    "no face": frozenset({"INVALID_ARGUMENT"}),
    "wrong types": frozenset({"INVALID_ARGUMENT"}),
    "unknown model or method": frozenset({"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"}),
    "masks": frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}),
    "absurd parameters": frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "OK"}),
    "oversize message": frozenset({"RESOURCE_EXHAUSTED"}),
    "dataset escape": frozenset({"INVALID_ARGUMENT", "OK"}),
    "ids and pages": frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OK"}),
}
#: Examples Hypothesis generates per class (their sum is over MIN_REQUESTS).
EXAMPLES: dict[str, int] = {
    "random message": 150,
    "wire tampering": 80,
    "random image bytes": 90,
    "truncated image": 80,
    "decompression bomb": 30,
    "huge dimensions": 60,
    "no face": 60,
    "wrong types": 90,
    "unknown model or method": 100,
    "masks": 100,
    "absurd parameters": 80,
    "oversize message": 30,
    "dataset escape": 100,
    "ids and pages": 100,
}


class Case:
    """One request: its class, the call, the request's bytes, the codes it may get and a pattern
    (case-insensitive regex) its message must match when the code is not OK. (A plain class: its
    repr, which Hypothesis prints for a falsifying example, shows the start of the body only.)"""

    __slots__ = ("kind", "call", "body", "allowed", "says")

    def __init__(self, kind: str, call: str, body: bytes, allowed: frozenset[str], says: str = r"\S") -> None:
        self.kind, self.call, self.body, self.allowed, self.says = kind, call, body, allowed, says

    def __repr__(self) -> str:
        head = self.body[:120]
        more = f"... ({len(self.body)} bytes)" if len(self.body) > 120 else ""
        return f"Case({self.kind!r}, {self.call}, allowed={sorted(self.allowed)}, says={self.says!r}, body={head!r}{more})"


# -- the server ----------------------------------------------------------------------------------


@dataclass
class Served:
    address: str
    pid: int
    log: Path
    root: Path
    outside: Path


def _rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of process ``pid`` in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _dataset_root(tmp: Path, images: tuple[Path, Path]) -> tuple[Path, Path]:
    """An allowed root with ways out of it, and the folder outside it they lead to (a valid CSV
    dataset there: a spec that escaped would be read, not refused for being malformed)."""
    outside = tmp / "outside"
    outside.mkdir()
    for p in images:
        shutil.copy(p, outside / p.name)
    (outside / "pairs.csv").write_text(f"img1,img2,same\n{images[0].name},{images[1].name},1\n")
    root = tmp / "root"
    (root / "inside").mkdir(parents=True)
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "pairs-link.csv").symlink_to(outside / "pairs.csv")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "escape.csv").write_text(  # inside the root, naming images outside it
        f"img1,img2,same\n../outside/{images[0].name},{outside / images[1].name},1\n"
    )
    return root, outside


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_demo_pair(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, images: tuple[Path, Path]) -> Iterator[Served]:
    """``facexplain api --engine local`` with the small limits, its own redis-server, no worker."""
    tmp = tmp_path_factory.mktemp("fuzz")
    root, outside = _dataset_root(tmp, images)
    with EmbeddedRedis(tmp / "redis", startup_timeout=30) as redis:
        env, mark = marked_env(**LIMITS)
        log = tmp / "api.log"
        api = start_command(["api", "--redis", redis.url, "--engine", "local", "--port", "0", "--dataset-root",
                             str(root)], log, env=env)
        try:
            yield Served(api_address(log, api, timeout=120), api.pid, log, root, outside)
        finally:
            stop_groups([api])
        assert left_after(mark, 10) == []


def _out_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("FACEXPLAIN_RELIABILITY_OUT") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 * MIB)]
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options)
    return grpc.insecure_channel(address, options)


def send(channel: grpc.Channel, call: str, body: bytes, *, metadata: tuple[tuple[str, str], ...] = (),
         timeout: float = CALL_TIMEOUT_S) -> tuple[str, str]:
    """Send ``body`` as the request of ``call`` (raw bytes); ``(status name, message)``."""
    try:
        if call == "WatchJob":
            for _ in channel.unary_stream(SERVICE + call)(body, timeout=timeout, metadata=metadata):
                pass
        else:
            channel.unary_unary(SERVICE + call)(body, timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


# -- images --------------------------------------------------------------------------------------


def _encode(image: Any, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@dataclass(frozen=True)
class Faces:
    """The demo pair encoded as JPEG, PNG, GIF and BMP (image a) and JPEG (image b)."""

    jpeg: bytes
    png: bytes
    gif: bytes
    bmp: bytes
    jpeg_b: bytes


def _faces(images: tuple[Path, Path]) -> Faces:
    from PIL import Image

    a = Image.open(images[0]).convert("RGB")
    b = Image.open(images[1]).convert("RGB")
    return Faces(_encode(a, "JPEG", quality=90), images[0].read_bytes(), _encode(a.convert("P"), "GIF"),
                 _encode(a.resize((256, 256)), "BMP"), _encode(b, "JPEG", quality=90))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, depth: int) -> bytes:
    """A complete grayscale PNG of ``width`` x ``height`` zeros (``depth`` bits per sample): a few
    KB that decode to ``width * height`` pixels."""
    row = b"\0" * (1 + (width * depth + 7) // 8)
    packer = zlib.compressobj(9)
    rows_per_chunk = max(1, (4 * MIB) // len(row))
    parts = []
    for start in range(0, height, rows_per_chunk):
        parts.append(packer.compress(row * min(rows_per_chunk, height - start)))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def with_dimensions(faces: Faces, fmt: str, width: int, height: int) -> bytes:
    """A real image whose header claims ``width`` x ``height`` (the pixel data left as it was)."""
    if fmt == "jpeg":
        data = bytearray(faces.jpeg)
        sof = data.find(b"\xff\xc0")
        struct.pack_into(">HH", data, sof + 5, height, width)
    elif fmt == "png":
        data = bytearray(faces.png)
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    elif fmt == "gif":
        data = bytearray(faces.gif)
        struct.pack_into("<HH", data, 6, width, height)
    else:
        data = bytearray(faces.bmp)
        struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


# -- request builders ------------------------------------------------------------------------------


def _pair(a: bytes, b: bytes) -> types_pb2.ImagePair:
    return types_pb2.ImagePair(a=types_pb2.Image(data=a), b=types_pb2.Image(data=b))


def verify(a: bytes, b: bytes, model: str = "") -> bytes:
    return service_pb2.VerifyRequest(pair=_pair(a, b), model=model).SerializeToString()


def explain(a: bytes, b: bytes, *, model: str = "", method: str = "", params: dict[str, types_pb2.ParamValue] | None = None) -> bytes:
    request = service_pb2.ExplainRequest(pair=_pair(a, b), model=model, method=method)
    for key, value in (params or {}).items():
        request.params[key].CopyFrom(value)
    return request.SerializeToString()


def audit_inline(pairs: list[tuple[bytes, bytes]], *, model: str = "",
                 methods: list[tuple[str, dict[str, types_pb2.ParamValue]]] = ()) -> bytes:  # type: ignore[assignment]
    request = audit_pb2.SubmitAuditRequest(model=model)
    for a, b in pairs:
        request.pairs.pairs.add(pair=_pair(a, b), same=True)
    for name, params in methods:
        m = request.methods.add(name=name)
        for key, value in params.items():
            m.params[key].CopyFrom(value)
    return request.SerializeToString()


def audit_dataset(spec: str) -> bytes:
    return audit_pb2.SubmitAuditRequest(dataset=spec).SerializeToString()


def pv(**kind: Any) -> types_pb2.ParamValue:
    if "list_value" in kind:
        return types_pb2.ParamValue(list_value=types_pb2.ParamList(values=kind["list_value"]))
    return types_pb2.ParamValue(**kind)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


# -- strategies: one per malformed class -----------------------------------------------------------

_MODELS = {DEFAULT_MODEL} | {s.name for s in SLOTS}
_METHODS = {m.name: m for m in list_methods()}
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def random_messages() -> st.SearchStrategy[Case]:
    ok_when_empty = {"ListModels", "ListJobs", "ListMethods", "SubmitAudit"}

    def build(call: str, body: bytes) -> Case:
        allowed = ALLOWED["random message"] if call in ok_when_empty else frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})
        return Case("random message", call, body, allowed)

    return st.builds(build, st.sampled_from(CALLS), st.binary(min_size=1, max_size=1024))


def wire_tampering(faces: Faces) -> st.SearchStrategy[Case]:
    """Messages protobuf cannot take: a string field that is not UTF-8, a field cut short, a known
    field of the wrong wire type in a request that is refused either way."""
    bad_utf8 = st.binary(min_size=1, max_size=64).map(lambda b: b"\xff" + b)

    def not_utf8(call: str, junk: bytes) -> Case:
        number = 2 if call == "Verify" else 1  # VerifyRequest.model; JobRef/WatchJob/GetResult .id
        return Case("wire tampering", call, _field(number, 2, junk), ALLOWED["wire tampering"], r"not a valid")

    def cut(keep: int) -> Case:
        body = verify(faces.jpeg, b"not an image")
        return Case("wire tampering", "Verify", body[: 1 + keep % (len(body) - 1)], ALLOWED["wire tampering"],
                    r"not a valid|image")

    def wrong_wire(call: str, value: int) -> Case:
        # field 1 (JobRef.id, VerifyRequest.pair: length-delimited) sent as a varint
        return Case("wire tampering", call, _field(1, 0, _varint(value)), ALLOWED["wire tampering"],
                    r"not a valid|malformed|image|empty")

    return st.one_of(
        st.builds(not_utf8, st.sampled_from(("Verify", "GetJob", "WatchJob", "GetResult", "DeleteJob")), bad_utf8),
        st.builds(cut, st.integers(0, 10**9)),
        st.builds(wrong_wire, st.sampled_from(("Verify", "GetJob", "CancelJob", "GetResult")), st.integers(0, 2**63)),
    )


def random_image_bytes(faces: Faces) -> st.SearchStrategy[Case]:
    def build(call: str, first: bool, junk: bytes) -> Case:
        a, b = (junk, faces.jpeg_b) if first else (faces.jpeg, junk)
        label = "image a" if first else "image b"
        if call == "SubmitAudit":  # queued: the worker records the bad pair as a row with its error
            return Case("random image bytes", call, audit_inline([(a, b)]), frozenset({"OK"}))
        body = verify(a, b) if call == "Verify" else explain(a, b, params={"n_masks": pv(int_value=16)})
        return Case("random image bytes", call, body, frozenset({"INVALID_ARGUMENT"}),
                    rf"{label}: (not an image|empty|image is truncated|image too small)")

    return st.builds(build, st.sampled_from(("Verify", "Verify", "Explain", "SubmitAudit")), st.booleans(),
                     st.binary(min_size=1, max_size=2048))


def truncated_images(faces: Faces) -> st.SearchStrategy[Case]:
    def build(fmt: str, keep: int, call: str) -> Case:
        data = faces.jpeg if fmt == "jpeg" else faces.png
        cut = data[: keep % (len(data) - 200)]  # at least 200 bytes of pixel data lost
        body = verify(cut, faces.jpeg_b) if call == "Verify" else explain(cut, faces.jpeg_b)
        return Case("truncated image", call, body, ALLOWED["truncated image"],
                    r"image a: (image is truncated|not an image|empty|image too small)")

    return st.builds(build, st.sampled_from(("jpeg", "png")), st.integers(0, 10**9),
                     st.sampled_from(("Verify", "Verify", "Explain")))


def bombs() -> st.SearchStrategy[Case]:
    def build(width: int, height: int, depth: int, call: str) -> Case:
        if width * height <= MAX_PIXELS:
            height = MAX_PIXELS // width + 1
        data = png_bomb(width, height, depth)
        body = verify(data, data) if call == "Verify" else explain(data, data)
        return Case("decompression bomb", call, body, ALLOWED["decompression bomb"],
                    r"image a: image too large.*FACEXPLAIN_MAX_PIXELS")

    return st.builds(build, st.integers(400, 12_000), st.integers(400, 12_000), st.sampled_from((1, 8)),
                     st.sampled_from(("Verify", "Explain")))


def huge_dimensions(faces: Faces) -> st.SearchStrategy[Case]:
    bounds = {"jpeg": 65535, "gif": 65535, "png": 2**31 - 1, "bmp": 2**31 - 1}

    @st.composite
    def build(draw: Callable[..., Any]) -> Case:
        fmt = draw(st.sampled_from(sorted(bounds)))
        top = bounds[fmt]
        width = draw(st.integers(1, top))
        height = draw(st.integers(MAX_PIXELS // width + 1, top)) if MAX_PIXELS // width + 1 <= top else top
        if fmt == "bmp" and draw(st.booleans()):
            height = -height  # a top-down BMP
        data = with_dimensions(faces, fmt, width, height)
        first = draw(st.booleans())
        a, b = (data, faces.jpeg_b) if first else (faces.jpeg, data)
        label = "image a" if first else "image b"
        return Case("huge dimensions", "Verify", verify(a, b), ALLOWED["huge dimensions"], rf"{label}: image too large")

    return build()


def _blank_png() -> bytes:
    """A 200x200 grey photo: no face for any detector."""
    from PIL import Image

    return _encode(Image.new("RGB", (200, 200), (128, 128, 128)), "PNG")


def no_faces() -> st.SearchStrategy[Case]:
    @st.composite
    def build(draw: Callable[..., Any]) -> Case:
        import numpy as np
        from PIL import Image

        width = draw(st.integers(8, 320))
        height = draw(st.integers(8, 320))
        if width == height == 112:  # a 112x112 square is taken as an aligned ArcFace crop, not searched
            width = 113
        pattern = draw(st.sampled_from(("flat", "noise", "gradient", "stripes")))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if pattern == "flat":
            pixels = np.full((height, width, 3), draw(st.integers(0, 255)), np.uint8)
        elif pattern == "noise":
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        elif pattern == "gradient":
            ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
            pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
        else:
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[:: max(1, draw(st.integers(1, 16)))] = 255
        fmt = draw(st.sampled_from(("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")))
        data = _encode(Image.fromarray(pixels), fmt)
        return Case("no face", "Verify", verify(data, data), ALLOWED["no face"], r"image a: (no face|image too small)")

    return build()


def _wrong_values(type_name: str, empty_ok: bool = False) -> st.SearchStrategy[types_pb2.ParamValue]:
    """ParamValues that cannot be a value of ``type_name`` (as the CLI parses --param);
    ``empty_ok``: the empty list is a value of this tuple parameter (its default is empty, e.g.
    corrrise-plus's ``superpixels``), so it is not among them; nor is the empty text there or for
    an optional parameter (``X | None``: the empty text is None)."""
    junk_text = st.sampled_from(("abc", "1.5.2", "", "0x10", "--1", "[1]", "1e3x", "∞")).map(lambda t: pv(text=t))
    base = type_name.replace(" | None", "")
    if base != type_name or empty_ok:  # "" is None (or the empty tuple) as --param parses it: a value
        junk_text = junk_text.filter(lambda p: p.text != "")
    if base == "int":
        return st.one_of(junk_text, st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer()).map(
            lambda f: pv(double_value=f)), st.booleans().map(lambda b: pv(bool_value=b)),
            st.lists(st.integers(-5, 5), min_size=2, max_size=3).map(
                lambda v: pv(list_value=[pv(int_value=i) for i in v])),
            st.just(types_pb2.ParamValue()))
    if base == "float":
        return st.one_of(junk_text, st.booleans().map(lambda b: pv(bool_value=b)),
                         st.lists(st.integers(0, 5), min_size=2, max_size=3).map(
                             lambda v: pv(list_value=[pv(int_value=i) for i in v])),
                         st.just(types_pb2.ParamValue()))
    if base == "bool":
        return st.one_of(junk_text.filter(lambda p: p.text not in ("",)),
                         st.integers(2, 2**62).map(lambda i: pv(int_value=i)),
                         st.floats(0.1, 1e9).map(lambda f: pv(double_value=f)),
                         st.just(types_pb2.ParamValue()))
    # tuple[int, ...]
    return st.one_of(junk_text, st.floats(0.5, 9.5).map(lambda f: pv(double_value=f)),
                     st.lists(st.just(pv(string_value="x")), min_size=1, max_size=2).map(lambda v: pv(list_value=v)),
                     *(() if empty_ok else (st.just(pv(list_value=[])),)), st.just(types_pb2.ParamValue()))


def wrong_types(faces: Faces) -> st.SearchStrategy[Case]:
    typed = [(m.name, p.name, p.type, p.default == ()) for m in _METHODS.values() for p in m.params
             if p.type.replace(" | None", "") in ("int", "float", "bool", "tuple[int, ...]")]

    @st.composite
    def build(draw: Callable[..., Any]) -> Case:
        method, param, type_name, empty_ok = draw(st.sampled_from(typed))
        value = draw(_wrong_values(type_name, empty_ok))
        if draw(st.booleans()):
            body = explain(faces.jpeg, faces.jpeg_b, method=method, params={param: value})
            call = "Explain"
        else:
            body = audit_inline([(faces.jpeg, faces.jpeg_b)], methods=[(method, {param: value})])
            call = "SubmitAudit"
        return Case("wrong types", call, body, ALLOWED["wrong types"], rf"{re.escape(param)}")

    return build()


def unknown_names(faces: Faces) -> st.SearchStrategy[Case]:
    names = st.text(min_size=1, max_size=300).filter(lambda s: s not in _MODELS)

    def model(call: str, name: str) -> Case:
        if call == "Verify":
            body = verify(faces.jpeg, faces.jpeg_b, model=name)
        elif call == "Explain":
            body = explain(faces.jpeg, faces.jpeg_b, model=name)
        elif call == "SubmitAudit":
            body = audit_inline([(faces.jpeg, faces.jpeg_b)], model=name)
        else:
            body = service_pb2.ListMethodsRequest(model=name).SerializeToString()
        return Case("unknown model or method", call, body, frozenset({"NOT_FOUND"}), r"unknown model")

    def slot(call: str, name: str) -> Case:
        body = verify(faces.jpeg, faces.jpeg_b, model=name) if call == "Verify" else explain(
            faces.jpeg, faces.jpeg_b, model=name)
        return Case("unknown model or method", call, body, frozenset({"FAILED_PRECONDITION"}), r"no weights")

    def method(call: str, name: str) -> Case:
        if call == "Explain":
            body = explain(faces.jpeg, faces.jpeg_b, method=name)
        else:
            body = audit_inline([(faces.jpeg, faces.jpeg_b)], methods=[(name, {})])
        return Case("unknown model or method", call, body, frozenset({"INVALID_ARGUMENT"}), r"unknown method")

    return st.one_of(
        st.builds(model, st.sampled_from(("Verify", "Explain", "SubmitAudit", "ListMethods")), names),
        st.builds(slot, st.sampled_from(("Verify", "Explain")), st.sampled_from(sorted(s.name for s in SLOTS))),
        st.builds(method, st.sampled_from(("Explain", "SubmitAudit")),
                  st.text(min_size=1, max_size=200).filter(lambda s: s not in _METHODS)),
    )


def masks(faces: Faces) -> st.SearchStrategy[Case]:
    counted = [("corrrise", "n_masks", 1), ("rise", "n_masks", 1), ("lime", "n_samples", 2),
               ("corrrise", "budget", 1), ("lime", "budget", 2)]
    values = st.one_of(st.sampled_from((0, -1, 10**9, 2**63 - 1, -(2**63), MAX_MASKS + 1)),
                       st.integers(-(2**63), 0), st.integers(MAX_MASKS + 1, 2**63 - 1))

    @st.composite
    def build(draw: Callable[..., Any]) -> Case:
        method, param, least = draw(st.sampled_from(counted))
        n = draw(values)
        as_text = draw(st.booleans())
        value = pv(text=str(n)) if as_text else pv(int_value=n)
        if n < least:
            allowed, says = frozenset({"INVALID_ARGUMENT"}), r"(n_masks|n_samples) must be an integer >= "
        else:
            # the mask limit, or (RISE) the cells of its grids: either names the count and the limit
            allowed, says = frozenset({"RESOURCE_EXHAUSTED"}), r"(n_masks|n_samples|budget) \d+.* over (the limit )?\d+"
        if draw(st.booleans()):
            return Case("masks", "Explain", explain(faces.jpeg, faces.jpeg_b, method=method, params={param: value}),
                        allowed, says)
        return Case("masks", "SubmitAudit",
                    audit_inline([(faces.jpeg, faces.jpeg_b)], methods=[(method, {param: value})]), allowed, says)

    return build()


def absurd_parameters(faces: Faces) -> st.SearchStrategy[Case]:
    pairs = [(m.name, p.name) for m in _METHODS.values() for p in m.params] + [
        (m, g) for m in _METHODS for g in ("seed", "budget", "perturbations_per_eval")]
    pool = st.one_of(
        st.sampled_from((0, -1, 1, 2**63 - 1, -(2**63), 10**9)).map(lambda i: pv(int_value=i)),
        st.sampled_from((float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324, -1e-9)).map(
            lambda f: pv(double_value=f)),
        st.sampled_from(("", " ", "none", "x" * 5000, "7,14,28", "-1,-2", "0", "1" * 40)).map(lambda t: pv(text=t)),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4).map(
            lambda v: pv(list_value=[pv(int_value=i) for i in v])),
        st.just(pv(null_value=True)),
    )

    @st.composite
    def build(draw: Callable[..., Any]) -> Case:
        method, param = draw(st.sampled_from(pairs))
        params = {param: draw(pool)}
        if draw(st.booleans()):  # a second absurd parameter of the same method
            other = draw(st.sampled_from([p for m, p in pairs if m == method]))
            params[other] = draw(pool)
        return Case("absurd parameters", "Explain", explain(faces.jpeg, faces.jpeg_b, method=method, params=params),
                    ALLOWED["absurd parameters"])

    return build()


def oversize() -> st.SearchStrategy[Case]:
    def image_limit(call: str, size: int) -> Case:
        data = b"\x89PNG" + b"\0" * (size - 4)
        if call == "SubmitAudit":
            body = audit_inline([(data, b"x")])
        else:
            body = verify(data, b"x") if call == "Verify" else explain(data, b"x")
        return Case("oversize message", call, body, ALLOWED["oversize message"],
                    r"image.* over the limit .*FACEXPLAIN_MAX_IMAGE_BYTES")

    def message_limit(call: str, size: int) -> Case:
        data = b"\xff\xd8" + b"\1" * (size - 2)
        return Case("oversize message", call, verify(data, b"x") if call == "Verify" else explain(data, b"x"),
                    ALLOWED["oversize message"], r"larger than max")

    return st.one_of(
        st.builds(image_limit, st.sampled_from(("Verify", "Explain", "SubmitAudit")),
                  st.integers(MAX_IMAGE + 1, MAX_MESSAGE - 64 * 1024)),
        st.builds(message_limit, st.sampled_from(("Verify", "Explain")),
                  st.integers(MAX_MESSAGE + 1, MAX_MESSAGE + 2 * MIB)),
    )


def dataset_escapes(served: Served) -> st.SearchStrategy[Case]:
    kinds = [k for k in DATASET_KINDS] + [f"{k}-aligned" for k in DATASET_KINDS if k != "bin"]
    outside = str(served.outside)
    fixed = st.sampled_from((
        "..", "../", "../outside", "../outside/pairs.csv", "inside/../../outside/pairs.csv", "./../outside",
        "out", "out/pairs.csv", "out/", "pairs-link.csv", "passwd", "escape.csv", outside, f"{outside}/pairs.csv",
        "/", "/etc", "/etc/passwd", "/proc/self/environ", "/dev/zero", "//etc/passwd", "~", "~root/.ssh",
        "inside/../..", "inside/./../../outside", "%2e%2e/outside", "..\\outside", "\0", "inside\0/../..",
    ))
    ups = st.integers(1, 40).map(lambda k: "../" * k + "etc/passwd")
    long = st.integers(300, 5000).map(lambda n: "a/" * (n // 2))

    says = r"dataset|no such|outside|may not|kind|header|cannot|not a|found|NUL"
    refused = frozenset({"INVALID_ARGUMENT"})

    def build(call: str, kind: str, path: str) -> Case:
        spec = f"{kind}:{path}"
        if call == "ListDatasetPairs":  # reads the pair list only: escape.csv's list is inside the root
            body = service_pb2.ListDatasetPairsRequest(dataset=spec).SerializeToString()
            return Case("dataset escape", call, body, ALLOWED["dataset escape"] if path == "escape.csv" else refused,
                        says)
        if call == "GetDatasetPair":  # reads the pair's images: every way out is refused
            body = service_pb2.GetDatasetPairRequest(dataset=spec, index=0).SerializeToString()
            return Case("dataset escape", call, body, refused, says)
        return Case("dataset escape", "SubmitAudit", audit_dataset(spec), refused, says)

    return st.builds(build, st.sampled_from(("SubmitAudit", "SubmitAudit", "ListDatasetPairs", "GetDatasetPair")),
                     st.one_of(st.sampled_from(kinds), st.text(max_size=20)),
                     st.one_of(fixed, ups, long, st.text(max_size=200)))


def ids_and_pages() -> st.SearchStrategy[Case]:
    ids = st.one_of(st.text(max_size=200), st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
                    st.from_regex(r"[A-Za-z0-9_-]{129,200}", fullmatch=True))
    tokens = st.one_of(st.just(""), st.text(max_size=30), st.integers(0, 10**15).map(str))
    sizes = st.integers(-(2**31), 2**31 - 1)

    def id_verdict(job_id: str) -> tuple[frozenset[str], str]:
        if _JOB_ID.fullmatch(job_id):
            return frozenset({"NOT_FOUND"}), r"no job"
        return frozenset({"INVALID_ARGUMENT"}), r"malformed"

    def page_error(size: int, token: str) -> str | None:
        if size < 0 or size > 1000:
            return r"page_size"
        if token and not (token.isascii() and token.isdigit() and len(token) <= 12):
            return r"page_token"
        return None

    def job_ref(call: str, job_id: str) -> Case:
        body = service_pb2.JobRef(id=job_id).SerializeToString()
        return Case("ids and pages", call, body, *id_verdict(job_id))

    def watch(job_id: str) -> Case:
        return Case("ids and pages", "WatchJob", service_pb2.WatchJobRequest(id=job_id).SerializeToString(),
                    *id_verdict(job_id))

    def result(job_id: str, size: int, token: str) -> Case:
        body = service_pb2.GetResultRequest(id=job_id, page_size=size, page_token=token).SerializeToString()
        problem = page_error(size, token)
        if problem is not None:
            return Case("ids and pages", "GetResult", body, frozenset({"INVALID_ARGUMENT"}), problem)
        return Case("ids and pages", "GetResult", body, *id_verdict(job_id))

    def listing(size: int, token: str, state: int, kind: int) -> Case:
        body = service_pb2.ListJobsRequest(page_size=size, page_token=token, state=state, kind=kind).SerializeToString()
        problem = page_error(size, token)
        if problem is None and state not in range(6):
            problem = r"state"
        if problem is None and kind not in range(3):
            problem = r"kind"
        if problem is None:
            return Case("ids and pages", "ListJobs", body, frozenset({"OK"}))
        return Case("ids and pages", "ListJobs", body, frozenset({"INVALID_ARGUMENT"}), problem)

    def methods(chip: int) -> Case:
        body = service_pb2.ListMethodsRequest(chip_size=chip).SerializeToString()
        if chip < 0 or chip > 4096:
            return Case("ids and pages", "ListMethods", body, frozenset({"INVALID_ARGUMENT"}), r"chip_size")
        return Case("ids and pages", "ListMethods", body, frozenset({"OK", "INVALID_ARGUMENT"}), r"chip")

    enum = st.one_of(st.integers(0, 7), st.integers(-(2**31), 2**31 - 1))
    return st.one_of(
        st.builds(job_ref, st.sampled_from(JOB_REF_CALLS), ids),
        st.builds(watch, ids),
        st.builds(result, ids, st.one_of(st.integers(-5, 1005), sizes), tokens),
        st.builds(listing, st.one_of(st.integers(-5, 1005), sizes), tokens, enum, enum),
        st.builds(methods, st.one_of(st.integers(-5, 5000), st.integers(-(2**31), 2**31 - 1))),
    )


# -- the test ----------------------------------------------------------------------------------------


def _readable(message: str) -> bool:
    return bool(message.strip()) and "Traceback" not in message and message.isprintable()


def _checker(channel: grpc.Channel, kind: str, counts: Counter[str], codes: Counter[str]) -> Callable[[Case], None]:
    """Sends a case of ``kind`` and checks its answer (counted in ``counts`` and ``codes``)."""

    def check(case: Case) -> None:
        assert case.kind == kind and case.allowed <= ALLOWED[kind], case
        code, message = send(channel, case.call, case.body)
        counts[kind] += 1
        codes[code] += 1
        assert code not in ("INTERNAL", "UNKNOWN"), f"{case}: {code} {message}"
        assert code in case.allowed, f"{case}: got {code} {message!r}"
        if code != "OK":
            assert _readable(message), f"{case}: unreadable message {message!r}"
            assert re.search(case.says, message, re.IGNORECASE | re.DOTALL), f"{case}: message {message!r}"

    return check


def test_generated_malformed_requests_get_their_status(served: Served, images: tuple[Path, Path], tmp_path: Path) -> None:
    faces = _faces(images)
    strategies: dict[str, st.SearchStrategy[Case]] = {
        "random message": random_messages(),
        "wire tampering": wire_tampering(faces),
        "random image bytes": random_image_bytes(faces),
        "truncated image": truncated_images(faces),
        "decompression bomb": bombs(),
        "huge dimensions": huge_dimensions(faces),
        "no face": no_faces(),
        "wrong types": wrong_types(faces),
        "unknown model or method": unknown_names(faces),
        "masks": masks(faces),
        "absurd parameters": absurd_parameters(faces),
        "oversize message": oversize(),
        "dataset escape": dataset_escapes(served),
        "ids and pages": ids_and_pages(),
    }
    assert set(strategies) == set(ALLOWED) == set(EXAMPLES) and sum(EXAMPLES.values()) >= MIN_REQUESTS
    counts: Counter[str] = Counter()
    codes: dict[str, Counter[str]] = {kind: Counter() for kind in strategies}
    seconds: dict[str, float] = {}
    channel = _channel(served.address)
    try:
        # warm-up with valid requests: the model loaded, the baseline of the memory bound
        assert send(channel, "Verify", verify(faces.jpeg, faces.jpeg_b)) == ("OK", "")
        assert send(channel, "Explain", explain(faces.jpeg, faces.jpeg_b, params={"n_masks": pv(int_value=32)})) == ("OK", "")
        # and a photo without a face: the default detector's second stage (MTCNN, PyTorch) loaded
        blank = _blank_png()
        assert send(channel, "Verify", verify(blank, blank))[0] == "INVALID_ARGUMENT"
        warm = _rss_kib(served.pid)
        started = time.perf_counter()
        for kind, strategy in strategies.items():
            t0 = time.perf_counter()
            settings(
                max_examples=EXAMPLES[kind], database=None, derandomize=True, deadline=None,
                phases=(Phase.explicit, Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
            )(given(strategy)(_checker(channel, kind, counts, codes[kind])))()
            seconds[kind] = round(time.perf_counter() - t0, 2)
            assert counts[kind] >= EXAMPLES[kind], f"{kind}: only {counts[kind]} requests were generated"
        elapsed = time.perf_counter() - started

        # the server survived: alive, healthy, still answering, nothing logged as a failure
        assert Path(f"/proc/{served.pid}").exists(), "the API process died"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert send(channel, "Verify", verify(faces.jpeg, faces.jpeg_b)) == ("OK", "")
        log = served.log.read_text(errors="replace")
        assert "an API call failed" not in log and "Traceback" not in log, log[-3000:]
        end = _rss_kib(served.pid)
    finally:
        channel.close()
    total = sum(counts.values())
    growth_mib = (end["VmHWM"] - warm["VmHWM"]) / 1024
    report = {
        "requests": total,
        "per_class": dict(counts),
        "codes": {k: dict(v) for k, v in codes.items()},
        "seconds_per_class": seconds,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(total / elapsed, 1),
        "peak_rss_mib_after_warmup": round(warm["VmHWM"] / 1024, 1),
        "peak_rss_mib_at_end": round(end["VmHWM"] / 1024, 1),
        "rss_mib_at_end": round(end["VmRSS"] / 1024, 1),
        "peak_rss_growth_mib": round(growth_mib, 1),
        "peak_rss_growth_bound_mib": RSS_GROWTH_MIB,
        "limits": LIMITS,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
    }
    (_out_dir(tmp_path) / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nfuzz:", json.dumps(report))
    assert total >= MIN_REQUESTS
    assert growth_mib <= RSS_GROWTH_MIB, f"peak RSS grew {growth_mib:.0f} MiB over the fuzzing (bound {RSS_GROWTH_MIB})"


# -- security: token and TLS through `facexplain api --token-file --tls-cert --tls-key` ------------------


def _certificate(tmp: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl binary makes the test certificate (apt-get install openssl)"
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return key, cert


def test_token_and_tls_guard_every_call_but_health(tmp_path: Path, images: tuple[Path, Path]) -> None:
    """Every call of the service, without a token or with a wrong one, is UNAUTHENTICATED, whatever
    its bytes (a valid request, garbage, an oversize-looking one); health answers without a token;
    the token works over TLS; a plain-text client gets no connection."""
    token = "fuzz-" + uuid.uuid4().hex
    (tmp_path / "token").write_text(token + "\n")
    key, cert = _certificate(tmp_path)
    faces = _faces(images)
    bodies = {call: b"" for call in CALLS}
    bodies["Verify"] = verify(faces.jpeg, faces.jpeg_b)
    bodies["GetJob"] = service_pb2.JobRef(id="f" * 64).SerializeToString()
    with EmbeddedRedis(tmp_path / "redis", startup_timeout=30) as redis:
        env, mark = marked_env(**LIMITS)
        log = tmp_path / "api.log"
        api = start_command(["api", "--redis", redis.url, "--engine", "local", "--port", "0", "--token-file",
                             str(tmp_path / "token"), "--tls-cert", str(cert), "--tls-key", str(key)], log, env=env)
        try:
            address = api_address(log, api, timeout=120)
            assert "token required" in log.read_text() and "TLS" in log.read_text()
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            with _channel(address, credentials) as channel:
                refused = 0
                for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", token),)):
                    for call in CALLS:
                        for body in (bodies[call], b"\xff\xfe garbage", b"\x0a" + b"\x01" * 64):
                            code, message = send(channel, call, body, metadata=metadata)
                            assert code == "UNAUTHENTICATED", (call, metadata, code, message)
                            assert "token" in message
                            refused += 1
                assert refused == 3 * len(CALLS) * 3
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                good = (("authorization", f"Bearer {token}"),)
                assert send(channel, "ListModels", b"", metadata=good) == ("OK", "")
                assert send(channel, "GetJob", bodies["GetJob"], metadata=good)[0] == "NOT_FOUND"
                code, message = send(channel, "GetJob", b"\x0a\x02\xff\xfe", metadata=good)
                assert code == "INVALID_ARGUMENT" and "not a valid" in message
            with _channel(address) as plain:
                assert send(plain, "ListModels", b"", timeout=10)[0] == "UNAVAILABLE"
        finally:
            stop_groups([api])
        assert left_after(mark, 10) == []
