"""Unit tests of explainer_service.images: a file becomes (H, W, 3) uint8 RGB or an InputError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explainer_service.errors import InputError, LimitExceededError
from explainer_service.images import MAX_PIXELS, MIN_SIDE, decode_image, image_from_array, load_image


def _pattern(h: int = 40, w: int = 60) -> np.ndarray:
    """(h, w, 3) uint8: left half red, right half blue, a green stripe on the top rows."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2 :, 2] = 255
    return a


def _save(tmp_path, name: str, im: Image.Image, **kw) -> str:
    path = tmp_path / name
    im.save(path, **kw)
    return str(path)


# ---- files that load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kw",
    [("a.jpg", {"quality": 95}), ("a.png", {}), ("a.bmp", {}), ("a.webp", {"lossless": True})],
)
def test_colour_file_loads_as_hw3_uint8(tmp_path, name, kw):
    src = _pattern()
    out = load_image(_save(tmp_path, name, Image.fromarray(src), **kw))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - src.astype(int)).mean() < 3  # JPEG: nearly; others: exactly


def test_png_is_exact(tmp_path):
    src = np.random.default_rng(0).integers(0, 256, (33, 35, 3), dtype=np.uint8)
    assert np.array_equal(load_image(_save(tmp_path, "r.png", Image.fromarray(src))), src)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    out = load_image(_save(tmp_path, "g.png", Image.fromarray(g, "L")))
    assert out.shape == (48, 64, 3)
    for c in range(3):
        assert np.array_equal(out[:, :, c], g)


def test_rgba_composited_over_black(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[:, :20, 3] = 255  # opaque left half
    a[:, 20:, 3] = 0  # transparent right half
    out = load_image(_save(tmp_path, "a.png", Image.fromarray(a, "RGBA")))
    assert out.shape == (40, 40, 3)
    assert tuple(out[5, 5]) == (200, 100, 50)
    assert tuple(out[5, 30]) == (0, 0, 0)


def test_palette_converts(tmp_path):
    src = _pattern()
    out = load_image(_save(tmp_path, "p.png", Image.fromarray(src).convert("P")))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert tuple(out[10, 5]) == (255, 0, 0) and tuple(out[10, 50]) == (0, 0, 255)


def test_palette_gif_with_transparency(tmp_path):
    im = Image.fromarray(_pattern()).convert("P")
    path = _save(tmp_path, "p.gif", im, transparency=int(np.asarray(im)[0, 0]))
    out = load_image(path)
    assert out.shape == (40, 60, 3)
    assert tuple(out[10, 5]) == (0, 0, 0)  # the transparent colour (red) is now black


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.zeros((40, 40), np.uint16)
    a[:, :10] = 65535
    a[:, 10:20] = 32768
    a[:, 20:30] = 257
    out = load_image(_save(tmp_path, "g16.png", Image.fromarray(a)))
    assert out.dtype == np.uint8 and out.shape == (40, 40, 3)
    assert [out[0, x, 0] for x in (0, 15, 25, 35)] == [255, 128, 1, 0]


def test_exif_orientation_6_is_applied(tmp_path):
    src = _pattern(40, 60)  # stored: 60 wide, 40 high, red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = _save(tmp_path, "rot.jpg", Image.fromarray(src), exif=exif.tobytes(), quality=95)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6
    out = load_image(path)
    assert out.shape == (60, 40, 3)  # upright: 40 wide, 60 high
    top, bottom = out[:25].reshape(-1, 3).mean(0), out[35:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # red (stored left) is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_pathlike_and_str_both_work(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_pattern()).save(path)
    assert np.array_equal(load_image(path), load_image(str(path)))


# ---- files that do not -----------------------------------------------------------------------


def _raises(path, match: str, **kw) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        load_image(path, **kw)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.jpg", "no such file")


def test_directory(tmp_path):
    _raises(tmp_path, "is a directory")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    _raises(path, "not an image file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _raises(path, "not an image file")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    _raises(path, "truncated or corrupted")


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "PNG")
    data = buf.getvalue()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    _raises(path, "truncated or corrupted")


def test_tiny_image(tmp_path):
    path = _save(tmp_path, "tiny.png", Image.new("RGB", (20, 18)))
    err = _raises(path, "image too small")
    assert f"20x18 px; need at least {MIN_SIDE} px per side" in str(err)


def test_image_over_max_pixels(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("RGB", (100, 80)))
    err = _raises(path, "image too large", max_pixels=5000)
    assert "100x80" in str(err) and "5000" in str(err)
    assert load_image(path, max_pixels=8000).shape == (80, 100, 3)  # exactly at the limit: fine


def test_pil_decompression_bomb_becomes_too_large(tmp_path, monkeypatch):
    path = _save(tmp_path, "bomb.png", Image.new("RGB", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _raises(path, "image too large")  # PIL's own DecompressionBombError (> 2x its limit)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    _raises(path, "image too large", max_pixels=5000)  # PIL's warning, under our limit
    assert MAX_PIXELS == 50_000_000


def test_bad_max_pixels(tmp_path):
    path = _save(tmp_path, "a.png", Image.new("RGB", (40, 40)))
    _raises(path, "max_pixels", max_pixels=0)


def test_empty_file_name_says_so():
    with pytest.raises(InputError, match="empty file name") as info:
        load_image("")
    assert "directory" not in str(info.value)


def test_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            load_image(fifo)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            outcome.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "load_image blocked on a FIFO"
    assert isinstance(outcome[0], InputError)
    assert str(fifo) in str(outcome[0]) and "FIFO" in str(outcome[0])


def test_device_is_refused():
    _raises("/dev/null", "character device")


def test_folder_under_a_file(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    _raises(blocker / "a.jpg", "no such file")


def test_nul_in_name():
    with pytest.raises(InputError, match="not a valid file name"):
        load_image("a\x00b.jpg")


def test_unreadable_file(tmp_path, monkeypatch):
    import os

    path = _save(tmp_path, "locked.png", Image.fromarray(_pattern()))

    def denied(*args, **kwargs):  # what open() does without read permission (root ignores modes)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", denied)
    _raises(path, "permission denied")


def test_pixel_limit_from_settings(tmp_path, monkeypatch):
    path = _save(tmp_path, "big.png", Image.new("RGB", (100, 80)))
    monkeypatch.setenv("FACEXPLAIN_MAX_PIXELS", "5000")
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_PIXELS") as info:
        load_image(path)
    assert str(path) in str(info.value) and "5000" in str(info.value)
    assert load_image(path, max_pixels=8000).shape == (80, 100, 3)  # an explicit limit wins
    monkeypatch.setenv("FACEXPLAIN_MAX_PIXELS", "8000")
    assert load_image(path).shape == (80, 100, 3)


# ---- bytes -----------------------------------------------------------------------------------


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_decode_equals_load(tmp_path, fmt):
    src = np.random.default_rng(4).integers(0, 256, (41, 37, 3), dtype=np.uint8)
    data = _encode(src, fmt)
    path = tmp_path / f"r.{fmt.lower()}"
    path.write_bytes(data)
    out = decode_image(data, "upload")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, src) and np.array_equal(out, load_image(path))
    assert np.array_equal(decode_image(bytearray(data)), src)
    assert np.array_equal(decode_image(memoryview(data)), src)


def test_decode_applies_the_same_conversions(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[:, :20, 3] = 255
    out = decode_image(_encode(a, "PNG"))
    assert tuple(out[5, 5]) == (200, 100, 50) and tuple(out[5, 30]) == (0, 0, 0)
    g16 = np.full((40, 40), 65535, np.uint16)
    assert decode_image(_encode(g16, "PNG"))[0, 0, 0] == 255


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty image data"),
        (b"hello, not an image", "not an image"),
        ("a string", "must be bytes"),
        (None, "must be bytes"),
    ],
)
def test_decode_bad_data(data, match):
    with pytest.raises(InputError, match=match) as info:
        decode_image(data, "field image_a")
    assert str(info.value).startswith("field image_a: ")


def test_decode_truncated_and_tiny():
    noise = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = _encode(noise, "PNG")
    with pytest.raises(InputError, match="truncated or corrupted"):
        decode_image(data[: len(data) // 2], "half.png")
    with pytest.raises(InputError, match="image too small"):
        decode_image(_encode(np.zeros((20, 18, 3), np.uint8), "PNG"), "tiny.png")


def test_decode_limits_bytes_and_pixels(monkeypatch):
    data = _encode(np.zeros((80, 100, 3), np.uint8), "PNG")
    with pytest.raises(LimitExceededError, match="image too large") as info:
        decode_image(data, "big.png", max_pixels=5000)
    assert "100x80" in str(info.value)
    monkeypatch.setenv("FACEXPLAIN_MAX_PIXELS", "5000")
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_PIXELS"):
        decode_image(data, "big.png")
    monkeypatch.delenv("FACEXPLAIN_MAX_PIXELS")
    with pytest.raises(LimitExceededError, match=f"{len(data)} bytes") as info:
        decode_image(data, "big.png", max_bytes=len(data) - 1)
    assert decode_image(data, max_bytes=len(data)).shape == (80, 100, 3)
    monkeypatch.setenv("FACEXPLAIN_MAX_IMAGE_BYTES", str(len(data) - 1))
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_IMAGE_BYTES"):
        decode_image(data, "big.png")


def test_decode_bomb_refused_before_decoding(monkeypatch):
    data = _encode(np.zeros((100, 100, 3), np.uint8), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(LimitExceededError, match="image too large"):
        decode_image(data, "bomb.png")


# ---- arrays ----------------------------------------------------------------------------------


def test_array_uint8_rgb_passes_through():
    a = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = image_from_array(a)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8 and np.array_equal(out, a)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_array_float_in_unit_or_byte_range(scale):
    a = np.linspace(0, 1, 40 * 40 * 3).reshape(40, 40, 3)
    out = image_from_array((a * scale).astype(np.float32))
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert np.abs(out.astype(float) - np.rint(a * 255)).max() <= 1


def test_array_gray_and_rgba_and_single_channel():
    g = np.full((40, 40), 77, np.uint8)
    assert np.all(image_from_array(g) == 77)
    assert image_from_array(g[:, :, None]).shape == (40, 40, 3)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255
    rgba[:, 20:, 3] = 0
    out = image_from_array(rgba)
    assert out.shape == (40, 40, 3) and out[0, 0, 0] == 100 and out[0, 30, 0] == 0


def test_array_bool_and_wide_ints():
    assert image_from_array(np.ones((40, 40), bool)).max() == 255
    assert image_from_array(np.full((40, 40, 3), 200, np.int64))[0, 0, 0] == 200


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((40, 40, 2), np.uint8), "shape"),
        (np.zeros((2, 40, 40, 3), np.uint8), "shape"),
        (np.zeros((20, 18, 3), np.uint8), r"image too small \(18x20 px"),
        (np.full((40, 40), np.nan), "NaN"),
        (np.full((40, 40), -0.5), r"\[0, 1\] or \[0, 255\]"),
        (np.full((40, 40), 300.0), r"\[0, 1\] or \[0, 255\]"),
        (np.full((40, 40), 256, np.int32), r"\[0, 255\]"),
        (np.array([["a"] * 40] * 40), "numeric"),
        (np.zeros((0, 40, 3), np.uint8), "empty"),
    ],
)
def test_array_errors_name_the_array(array, match):
    with pytest.raises(InputError, match=match) as info:
        image_from_array(array, name="probe.png")
    assert str(info.value).startswith("probe.png: ")
