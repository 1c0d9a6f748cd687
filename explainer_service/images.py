"""Image loading: the first step of the pipeline (image -> alignment -> model -> maps).

Every image that enters facexplain, from a file or from memory, comes out of this module as one
kind of array: ``(H, W, 3)`` ``uint8`` RGB, C-contiguous, at least :data:`MIN_SIDE` pixels per side.

- EXIF orientation is applied (a phone photo stored sideways comes out upright).
- Grayscale, palette, CMYK, 16-bit and float images are converted to 8-bit RGB; 16-bit samples are
  scaled (65535 -> 255), not clipped.
- An alpha channel is composited over black (the same black that alignment uses outside the image).
- Bad input raises :class:`~explainer_service.errors.InputError` with a one-line message that names
  the file and the problem; no PIL exception escapes. The size is checked from the header, before
  the pixels are decoded, so a decompression bomb is refused without being decoded; the limits
  (pixels, encoded bytes) are ``Settings.limits`` and exceeding one raises
  :class:`~explainer_service.errors.LimitExceededError`.
- Only regular files are opened (checked with ``stat`` first): a FIFO named ``x.jpg``, a device or
  a directory is refused at once instead of blocking a worker.

Entry points: :func:`load_image` (a file), :func:`decode_image` (encoded bytes: an upload, a
dataset record, an API request) and :func:`image_from_array` (pixels already in memory).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, LimitExceededError
from .fileio import open_regular

__all__ = ["MIN_SIDE", "MAX_PIXELS", "load_image", "decode_image", "image_from_array"]

#: Smallest accepted side, in pixels; a face in a smaller image cannot be aligned meaningfully.
MIN_SIDE = 32
#: The default largest image, in pixels (width * height); larger images are refused as likely
#: decompression bombs. The limit in force is ``Settings.limits.max_pixels``
#: (``FACEXPLAIN_MAX_PIXELS``, default this value); ``max_pixels`` changes it per call.
MAX_PIXELS = 50_000_000

# Modes PIL can convert to RGB by itself (8 bits per sample).
_PIL_TO_RGB = {"RGB", "L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` ``uint8`` RGB.

    EXIF orientation is applied; grayscale, RGBA (alpha over black), palette, CMYK and 16-bit
    images are converted to 8-bit RGB. Multi-frame files (GIF, TIFF) give their first frame.
    Only regular files are opened: a FIFO, a device or a socket is refused without being read,
    so a call never blocks.

    Args:
        path: the image file (any format Pillow reads: JPEG, PNG, WebP, BMP, TIFF, GIF, ...).
        max_pixels: refuse images with more than this many pixels (checked from the header);
            None: ``Settings.limits.max_pixels`` (``FACEXPLAIN_MAX_PIXELS``).

    Raises:
        InputError: empty name, missing file, directory or other non-regular file, not an
            image, truncated or corrupted data, an image smaller than :data:`MIN_SIDE`.
        LimitExceededError: an image larger than the pixel limit (an InputError too).
        The message names the file.
    """
    name = _path_name(path)
    limit, from_settings = _pixel_limit(name, max_pixels)
    fd = open_regular(name)
    with os.fdopen(fd, "rb") as f:
        return _decode(f, name, limit, from_settings, what="image file")


def decode_image(
    data: bytes | bytearray | memoryview,
    name: str = "<bytes>",
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode an encoded image held in memory (the bytes of a JPEG, PNG... file) as ``(H, W, 3)``
    ``uint8`` RGB, with the same conversions and checks as :func:`load_image`.

    Args:
        data: the encoded image.
        name: names the image in error messages (a file name, a request field...).
        max_pixels: pixel limit (checked from the header, before decoding); None:
            ``Settings.limits.max_pixels`` (``FACEXPLAIN_MAX_PIXELS``).
        max_bytes: size limit of ``data``; None: ``Settings.limits.max_image_bytes``
            (``FACEXPLAIN_MAX_IMAGE_BYTES``).

    Raises:
        InputError: not bytes, empty, not an image, truncated or corrupted, too small.
        LimitExceededError: more bytes or pixels than the limits. The message starts with ``name``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{name}: encoded image must be bytes, got {type(data).__name__}")
    limit, from_settings = _pixel_limit(name, max_pixels)
    size = memoryview(data).nbytes
    if max_bytes is None:
        byte_limit = _settings_limit("max_image_bytes")
        hint = " (set FACEXPLAIN_MAX_IMAGE_BYTES to change it)"
    else:
        byte_limit = _positive_int(name, "max_bytes", max_bytes)
        hint = ""
    if size > byte_limit:
        raise LimitExceededError(
            f"{name}: encoded image of {size} bytes is over the limit {byte_limit} bytes{hint}"
        )
    if size == 0:
        raise InputError(f"{name}: empty image data")
    return _decode(io.BytesIO(data), name, limit, from_settings, what="image")


def image_from_array(array: Any, name: str = "<array>") -> np.ndarray:
    """Validate and convert an in-memory image to ``(H, W, 3)`` uint8 RGB, like :func:`load_image`.

    Accepted: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha
    composited over black); ``uint8``, any integer type with values in ``[0, 255]``, ``bool``, or
    float in ``[0, 1]`` (scaled by 255) or ``[0, 255]`` (a float image whose maximum exceeds 1 is
    taken as 0..255). An ``(H, W, 3)`` C-contiguous ``uint8`` array is returned as is (no copy).

    Raises:
        InputError: not an array, wrong shape or dtype, NaN/inf or out-of-range values, smaller
            than :data:`MIN_SIDE`. The message starts with ``name``.
    """
    try:
        arr = np.asarray(array)
    except Exception:  # noqa: BLE001 - anything that numpy cannot turn into an array
        raise InputError(f"{name}: not an image array ({type(array).__name__})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: image array must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(
            f"{name}: image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise InputError(f"{name}: image array is empty (shape {arr.shape})")

    if arr.dtype == np.uint8:
        pass
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind in "iu":
        ilo, ihi = int(arr.min()), int(arr.max())
        if ilo < 0 or ihi > 255:
            raise InputError(
                f"{name}: integer image values must lie in [0, 255], got [{ilo}, {ihi}] ({arr.dtype})"
            )
        arr = arr.astype(np.uint8)
    else:
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: image array contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 255.0:
            raise InputError(
                f"{name}: float image values must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]"
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)

    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = _composite_over_black(arr)
    return _finish(name, arr)


# ---------------------------------------------------------------------------------------------


def _path_name(path: Any) -> str:
    """The path as text for messages; InputError for something that is not a path."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InputError(f"image path must be a file name, got {type(path).__name__}")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise InputError(f"image path must be a file name, got {type(name).__name__}")
    if name == "":
        raise InputError("empty file name (an image path is needed)")
    return name


def _positive_int(name: str, what: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}: {what} must be a positive integer, got {value!r}")
    return int(value)


def _settings_limit(field: str) -> int:
    from .settings import get_settings

    return int(getattr(get_settings().limits, field))


def _pixel_limit(name: str, max_pixels: int | None) -> tuple[int, bool]:
    """The pixel limit in force and whether it came from the settings."""
    if max_pixels is None:
        return _settings_limit("max_pixels"), True
    return _positive_int(name, "max_pixels", max_pixels), False




def _decode(f: IO[bytes], name: str, max_pixels: int, from_settings: bool, *, what: str) -> np.ndarray:
    """Decode an open image stream: size from the header first, then the pixels."""
    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice that. Below our own
            # limit the warning is noise; at or above it, both mean "too large".
            pil_limit = Image.MAX_IMAGE_PIXELS
            if pil_limit is not None and max_pixels > pil_limit:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as opened:  # lazy: reads the header only
                _check_size(name, opened.size, max_pixels, from_settings)
                opened.load()
                upright: Image.Image = ImageOps.exif_transpose(opened) or opened
                return _finish(name, _pil_to_rgb(upright))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = max_pixels
        if Image.MAX_IMAGE_PIXELS is not None:
            limit = min(limit, 2 * Image.MAX_IMAGE_PIXELS)
        detail = _bomb_detail(exc)
        raise LimitExceededError(f"{name}: image too large ({detail}; limit {limit} px)") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an {what} (no image format recognised)") from None
    except PermissionError:
        raise InputError(f"{name}: cannot read (permission denied)") from None
    except MemoryError:
        raise InputError(f"{name}: image too large to decode in memory") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        # Pillow reports truncated/corrupted data as OSError ("image file is truncated",
        # "broken data stream"), and bad headers/EXIF as SyntaxError/ValueError and friends.
        raise InputError(f"{name}: image is truncated or corrupted ({_short(exc)})") from None


def _check_size(name: str, size: tuple[int, int], max_pixels: int, from_settings: bool) -> None:
    w, h = size
    if w * h > max_pixels:
        hint = " (set FACEXPLAIN_MAX_PIXELS to change it)" if from_settings else ""
        raise LimitExceededError(
            f"{name}: image too large ({w}x{h} = {w * h} px; limit {max_pixels} px){hint}"
        )


def _finish(name: str, rgb: np.ndarray) -> np.ndarray:
    """Check the minimum size of an (H, W, 3) uint8 array and make it C-contiguous."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"{name}: image too small ({w}x{h} px; need at least {MIN_SIDE} px per side)"
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode; 16-bit and float samples are rescaled, not clipped."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode == "P" and "transparency" in im.info:
        return _composite_over_black(np.asarray(im.convert("RGBA")))
    if mode in _WITH_ALPHA:
        return _composite_over_black(np.asarray(im.convert("RGBA")))
    if mode in _PIL_TO_RGB:
        return np.asarray(im.convert("RGB"))
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG/TIFF); PIL's own conversion to L would clip at 255.
        a = np.asarray(im).astype(np.float64)
        hi = 65535.0 if (mode.startswith("I;16") or a.max() > 255) else 255.0
        g = np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError("float image with NaN or infinite values")
        hi = 1.0 if a.max() <= 1.0 else 255.0
        g = np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))  # anything else PIL knows how to convert


def _composite_over_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8, colour * alpha / 255 (alpha over a black background)."""
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def _bomb_detail(exc: BaseException) -> str:
    # PIL's message: "Image size (N pixels) exceeds limit of M pixels, ..."
    text = str(exc)
    start = text.find("(")
    end = text.find(" pixels)", start)
    if start != -1 and end != -1 and text[start + 1 : end].isdigit():
        return f"{text[start + 1 : end]} px"
    return "over Pillow's decompression-bomb limit"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
