"""insightface verification ``.bin`` files (``lfw.bin``, ``cfp_fp.bin``, ...), read without running code.

A ``.bin`` is a pickle of ``(bins, issame_list)``; it is read by a restricted unpickler that builds
bytes, lists, bools, ints and numpy arrays and refuses every other global, so a crafted file cannot
run code. Its images stay encoded in memory (:class:`~explainer_service.datasets.sources.EncodedImage`).
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_bytes
from ..images import image_from_array
from .pairs import DEFAULT_FOLDS, Pair, consecutive_folds
from .sources import EncodedImage

__all__ = ["read_bin_pairs", "write_verification_bin"]


def _safe_codecs_encode(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    # Python 3 writes bytes into protocol 0-2 pickles as _codecs.encode(str, 'latin1').
    if (
        not isinstance(text, str)
        or str(encoding).lower().replace("-", "").replace("_", "") != "latin1"
        or rest
    ):
        raise pickle.UnpicklingError("_codecs.encode with arguments other than (str, 'latin1')")
    return text.encode("latin-1")


def _safe_bytes(*args: Any) -> bytes:
    # bytes() (an empty bytes object in protocol 0-2 pickles); bytes(n) could allocate any size.
    if args and not isinstance(args[0], (bytes, bytearray)):
        raise pickle.UnpicklingError("bytes() with an argument other than bytes")
    return bytes(*args[:1])


@functools.cache
def _bin_globals() -> dict[tuple[str, str], Any]:
    """The only globals a verification .bin may name: bytes helpers and numpy array rebuilding
    (images stored as ``cv2.imencode`` uint8 arrays, labels as numpy bools)."""
    allowed: dict[tuple[str, str], Any] = {
        ("_codecs", "encode"): _safe_codecs_encode,
        ("builtins", "bytes"): _safe_bytes,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _np_attr("_reconstruct")
        allowed[(f"{core}.multiarray", "scalar")] = _np_attr("scalar")
        allowed[(f"{core}.numeric", "_frombuffer")] = _np_attr("_frombuffer", "numeric")
    return {k: v for k, v in allowed.items() if v is not None}


def _np_attr(name: str, module: str = "multiarray") -> Any:
    for core in ("numpy._core", "numpy.core"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                mod = importlib.import_module(f"{core}.{module}")
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


class _Refused(pickle.UnpicklingError):
    pass


class _BinUnpickler(pickle.Unpickler):
    """An unpickler that builds lists, tuples, bytes, bools, ints and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module
        obj = _bin_globals().get((module, name))
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def read_bin_pairs(path: str | Path, *, folds: int = DEFAULT_FOLDS) -> list[Pair]:
    """An insightface verification ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``cplfw.bin``, ...).

    The file is a pickle of ``(bins, issame_list)``: ``bins`` holds two encoded images (JPEG/PNG
    bytes, or uint8 arrays as written by ``cv2.imencode``) per pair, consecutively; ``issame_list``
    one bool per pair. It is read with a restricted unpickler (``encoding='bytes'`` like
    insightface's ``load_bin``) that refuses every global other than bytes helpers and numpy array
    reconstruction, so a crafted file cannot run code. Images stay encoded in memory
    (:class:`EncodedImage` named ``<file>#<index>``) and are decoded by :func:`load_pair_image`.
    Folds: :func:`consecutive_folds` (10 consecutive folds, as insightface evaluates).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        with open(p, "rb") as f:
            payload = _BinUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise InputError(
            f"{p}: refused: the pickle asks for {e}, which a verification .bin never holds"
        ) from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - any failure of a corrupted pickle is bad input
        raise InputError(
            f"{p}: not a verification .bin pickle ({type(e).__name__}: {str(e)[:120]})"
        ) from None

    if not isinstance(payload, (tuple, list)) or len(payload) != 2:
        what = f"a {len(payload)}-tuple" if isinstance(payload, (tuple, list)) else type(payload).__name__
        raise InputError(f"{p}: expected a pickled (bins, issame_list), got {what}")
    bins, issame = payload
    if not isinstance(bins, (list, tuple)):
        raise InputError(f"{p}: bins must be a list of encoded images, got {type(bins).__name__}")
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1 or issame.dtype.kind not in "biu":
            raise InputError(f"{p}: issame_list must be a 1-d bool array, got {issame.dtype} {issame.shape}")
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise InputError(f"{p}: issame_list must be a list of bools, got {type(issame).__name__}")
    if len(bins) != 2 * len(issame):
        raise InputError(f"{p}: {len(bins)} images for {len(issame)} pairs (need two images per pair)")
    if not issame:
        raise InputError(f"{p}: no pairs")

    labels: list[bool] = []
    for k, v in enumerate(issame):
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1)):
            labels.append(bool(v))
        else:
            raise InputError(f"{p}: issame_list[{k}] is {v!r}, not a bool")
    refs: list[EncodedImage] = []
    for k, b in enumerate(bins):
        if isinstance(b, (bytes, bytearray)):
            data = bytes(b)
        elif (
            isinstance(b, np.ndarray)
            and b.dtype == np.uint8
            and (b.ndim == 1 or (b.ndim == 2 and 1 in b.shape))
        ):
            data = b.tobytes()
        else:
            what = f"{b.dtype} array {b.shape}" if isinstance(b, np.ndarray) else type(b).__name__
            raise InputError(f"{p}: bins[{k}] is {what}, not encoded image bytes")
        refs.append(EncodedImage(f"{p}#{k}", data))
    fold_of = consecutive_folds(len(labels), folds)
    return [Pair(refs[2 * i], refs[2 * i + 1], labels[i], fold_of[i]) for i in range(len(labels))]


def write_verification_bin(
    path: str | Path,
    images: Sequence[bytes | np.ndarray],
    issame: Sequence[bool],
    *,
    image_format: str = "PNG",
) -> Path:
    """Write an insightface-style verification ``.bin``: ``pickle((bins, issame_list))``.

    ``images`` holds two images per pair, consecutively: encoded bytes (kept as they are) or
    ``(H, W, 3)`` uint8 RGB arrays (encoded as ``image_format``, lossless PNG by default).
    """
    from PIL import Image

    if len(images) != 2 * len(issame):
        raise InputError(f"{path}: {len(images)} images for {len(issame)} pairs (need two per pair)")
    bins: list[bytes] = []
    for k, im in enumerate(images):
        if isinstance(im, (bytes, bytearray)):
            bins.append(bytes(im))
        else:
            buf = io.BytesIO()
            Image.fromarray(image_from_array(im, f"{path}: images[{k}]")).save(buf, format=image_format)
            bins.append(buf.getvalue())
    payload = pickle.dumps((bins, [bool(s) for s in issame]), protocol=pickle.HIGHEST_PROTOCOL)
    return atomic_write_bytes(path, payload)
