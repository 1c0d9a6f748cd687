"""Image loading: the first step of the pipeline (image -> alignment -> model -> maps).

Every image that enters facexplain, from a file or from memory, comes out of this module as one
kind of array: ``(H, W, 3)`` ``uint8`` RGB, C-contiguous, at least :data:`MIN_SIDE` pixels per side.

- EXIF orientation is applied (a phone photo stored sideways comes out upright).
- Grayscale, palette, CMYK, 16-bit and float images are converted to 8-bit RGB; 16-bit samples are
  scaled (65535 -> 255), not clipped.
- An alpha channel is composited over black (the same black that alignment uses outside the image).
- Bad input raises :class:`~explainer_service.errors.InputError` with a one-line message that names
  the file and the problem; no PIL exception escapes. The size is checked from the header, before
  the pixels are decoded, so a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

__all__ = ["MIN_SIDE", "MAX_PIXELS", "load_image", "image_from_array"]

#: Smallest accepted side, in pixels; a face in a smaller image cannot be aligned meaningfully.
MIN_SIDE = 32
#: Largest accepted image, in pixels (width * height); larger files are refused as likely
#: decompression bombs. Pass ``max_pixels`` to :func:`load_image` to change it per call.
MAX_PIXELS = 50_000_000

# Modes PIL can convert to RGB by itself (8 bits per sample).
_PIL_TO_RGB = {"RGB", "L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` ``uint8`` RGB.

    EXIF orientation is applied; grayscale, RGBA (alpha over black), palette, CMYK and 16-bit
    images are converted to 8-bit RGB. Multi-frame files (GIF, TIFF) give their first frame.

    Args:
        path: the image file (any format Pillow reads: JPEG, PNG, WebP, BMP, TIFF, GIF, ...).
        max_pixels: refuse images with more than this many pixels (checked from the header).

    Raises:
        InputError: missing file, directory, not an image, truncated or corrupted data, an image
            smaller than :data:`MIN_SIDE` or larger than ``max_pixels``. The message names the file.
    """
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if p.is_dir():
        raise InputError(f"{name}: is a directory")
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels <= 0:
        raise InputError(f"{name}: max_pixels must be a positive integer, got {max_pixels!r}")

    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice that. Below our own
            # limit the warning is noise; at or above it, both mean "too large".
            pil_limit = Image.MAX_IMAGE_PIXELS
            if pil_limit is not None and max_pixels > pil_limit:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:  # lazy: reads the header only
                _check_size(name, im.size, max_pixels)
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return _finish(name, _pil_to_rgb(im))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = max_pixels
        if Image.MAX_IMAGE_PIXELS is not None:
            limit = min(limit, 2 * Image.MAX_IMAGE_PIXELS)
        detail = _bomb_detail(exc)
        raise InputError(f"{name}: image too large ({detail}; limit {limit} px)") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image file (no image format recognised)") from None
    except PermissionError:
        raise InputError(f"{name}: cannot read (permission denied)") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory") from None
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except MemoryError:
        raise InputError(f"{name}: image too large to decode in memory") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        # Pillow reports truncated/corrupted data as OSError ("image file is truncated",
        # "broken data stream"), and bad headers/EXIF as SyntaxError/ValueError and friends.
        raise InputError(f"{name}: image is truncated or corrupted ({_short(exc)})") from None


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
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"{name}: integer image values must lie in [0, 255], got [{lo}, {hi}] ({arr.dtype})"
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


def _check_size(name: str, size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise InputError(f"{name}: image too large ({w}x{h} = {w * h} px; limit {max_pixels} px)")


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
